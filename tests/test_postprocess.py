"""Post-processing stages of paper Sec. 3.3 (qparse_lite.parse.postprocess) on small hand-made inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.parse import postprocess as pp

# -- 1-2: label confidence and visibility --------------------------------------------------------------


def test_label_confidence_ignores_knn_images_lacking_the_label():
    # K = 3, L = 3. Label 1: only g_0 and g_2 contain it; g_1's (mean-image) pair predicts 0.0.
    c = np.array([[0.0, 0.9, 0.2], [0.0, 0.0, 0.6], [0.0, 0.7, 0.9]], np.float32)
    present = np.array([[True, True, False], [True, False, True], [True, True, True]])
    conf = pp.label_confidence(c, present)
    assert conf[1] == pytest.approx((0.9 + 0.7) / 2)  # not (0.9 + 0.0 + 0.7) / 3
    assert conf[2] == pytest.approx((0.6 + 0.9) / 2)  # g_0's 0.2 ignored
    assert conf.dtype == np.float32


def test_label_confidence_zero_when_no_knn_image_has_the_label():
    c = np.full((2, 3), 0.95, np.float32)
    present = np.array([[True, True, False], [True, True, False]])
    assert pp.label_confidence(c, present)[2] == 0.0


def test_label_confidence_shape_mismatch():
    with pytest.raises(ValueError):
        pp.label_confidence(np.zeros((2, 3)), np.zeros((3, 2), bool))


def test_visible_labels_threshold_is_strict_and_background_never_visible():
    conf = np.array([0.99, 0.81, 0.8, 0.79, 0.95])
    assert pp.visible_labels(conf, xi1=0.8).tolist() == [False, True, False, False, True]
    assert pp.visible_labels(conf, xi1=0.5).tolist() == [False, True, True, True, True]


# -- 3-5: moving boxes, warping masks, probability maps ------------------------------------------------


def test_move_box_inverts_the_training_displacement():
    size = (20, 30)  # H, W
    box_g = np.array([2.0, 3.0, 6.0, 8.0])
    box_i = np.array([10.0, 5.0, 14.0, 10.0])
    wh = np.array([30, 20, 30, 20], float)
    t = box_g / wh - box_i / wh  # t = U_g − U_I, W_g − W_I (normalised), as pairs.py trains it
    np.testing.assert_allclose(pp.move_box(box_g, t, size), box_i)


def test_move_box_different_source_size_and_clipping_and_corner_order():
    # g_k is 10×10, I is 20×40: the normalised box (0.2, 0.3, 0.6, 0.8) with t = 0 maps to I's scale
    out = pp.move_box(np.array([2, 3, 6, 8]), np.zeros(4), size=(20, 40), src_size=(10, 10))
    np.testing.assert_allclose(out, [8, 6, 24, 16])
    # moved off the left edge: clipped to [0, W]
    out = pp.move_box(np.array([2, 2, 6, 6]), np.array([0.5, 0, 0.5, 0]), size=(10, 10))
    np.testing.assert_allclose(out, [0, 2, 1, 6])
    # swapped corners are re-ordered
    out = pp.move_box(np.array([2, 2, 6, 6]), np.array([-0.4, 0, 0.4, 0]), size=(10, 10))
    np.testing.assert_allclose(out, [2, 2, 6, 6])
    # batched
    boxes = np.array([[2, 3, 6, 8], [0, 0, 10, 10]], float)
    assert pp.move_box(boxes, np.zeros((2, 4)), (10, 10)).shape == (2, 4)


def test_warp_mask_known_displacement_lands_where_expected():
    mask = np.zeros((20, 30), bool)
    mask[3:8, 2:6] = True  # l's region in g_k: box (2, 3, 6, 8)
    box_g = np.array([2.0, 3.0, 6.0, 8.0])
    t = np.array([(2 - 10) / 30, (3 - 5) / 20, (6 - 14) / 30, (8 - 10) / 20])
    dst = pp.move_box(box_g, t, (20, 30))
    out = pp.warp_mask(mask, box_g, dst, (20, 30))
    expected = np.zeros((20, 30), np.float32)
    expected[5:10, 10:14] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_warp_mask_scales_shape_inside_the_box():
    mask = np.zeros((8, 8), bool)
    mask[0:4, 0:2] = True  # left half of the 4×4 box (0, 0, 4, 4)
    out = pp.warp_mask(mask, np.array([0, 0, 4, 4]), np.array([8, 8, 16, 16]), (20, 20))
    assert out[8:16, 8:11].min() > 0.99  # left part of the doubled box
    assert out[8:16, 13:16].max() < 0.01  # right part
    assert out[:8].max() == 0 and out[16:].max() == 0 and out[:, :8].max() == 0  # nothing outside
    assert 0 <= out.min() and out.max() <= 1
    # an empty destination box gives nothing
    assert pp.warp_mask(mask, np.array([0, 0, 4, 4]), np.array([5, 5, 5, 9]), (20, 20)).max() == 0


def _two_neighbours():
    """Two 16×16 KNN label maps with label 1 (a 4×4 square) and label 2 (a 2×8 bar)."""
    labels = np.zeros((2, 16, 16), np.uint8)
    labels[0, 2:6, 2:6] = 1
    labels[1, 4:8, 4:8] = 1
    labels[0, 10:12, 4:12] = 2
    labels[1, 10:12, 4:12] = 2
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0, 1] = [2, 2, 6, 6]
    boxes[1, 1] = [4, 4, 8, 8]
    boxes[:, 2] = [4, 10, 12, 12]
    present = np.array([[True, True, True], [True, True, True]])
    return labels, boxes, present


def test_probability_maps_average_the_warped_masks():
    labels, boxes, present = _two_neighbours()
    t = np.zeros((2, 3, 4), np.float32)
    # move g_0's square to (8, 8, 12, 12) and g_1's to (8, 8, 12, 12) as well: M_1 = 1 there
    t[0, 1] = (boxes[0, 1] - [8, 8, 12, 12]) / 16
    t[1, 1] = (boxes[1, 1] - [8, 8, 12, 12]) / 16
    visible = np.array([False, True, False])
    M = pp.probability_maps(labels, boxes, t, present, visible, (16, 16))
    assert M.shape == (3, 16, 16) and M.dtype == np.float32
    assert M[1, 8:12, 8:12].min() > 0.99 and M[1].sum() == pytest.approx(16, abs=1e-3)
    assert M[0].max() == 0 and M[2].max() == 0  # background and invisible labels stay 0
    # disagreeing neighbours: g_1 left in place → each square gets 1/2
    t[1, 1] = 0
    M = pp.probability_maps(labels, boxes, t, present, visible, (16, 16))
    np.testing.assert_allclose(M[1, 8:12, 8:12], 0.5, atol=1e-6)
    np.testing.assert_allclose(M[1, 4:8, 4:8], 0.5, atol=1e-6)
    # confidence weights: g_1 counts 3× as much
    w = np.array([[0, 0.25, 1], [0, 0.75, 1]])
    M = pp.probability_maps(labels, boxes, t, present, visible, (16, 16), weights=w)
    np.testing.assert_allclose(M[1, 8:12, 8:12], 0.25, atol=1e-6)
    np.testing.assert_allclose(M[1, 4:8, 4:8], 0.75, atol=1e-6)


def test_probability_maps_skip_knn_images_without_the_label():
    labels, boxes, present = _two_neighbours()
    labels[1][labels[1] == 1] = 0
    present[1, 1] = False
    boxes[1, 1] = 0
    M = pp.probability_maps(labels, boxes, np.zeros((2, 3, 4)), present, np.array([0, 1, 1], bool), (16, 16))
    np.testing.assert_allclose(M[1, 2:6, 2:6], 1.0)  # g_0 alone, not halved by g_1
    assert M[1].sum() == pytest.approx(16)


# -- 6: foreground, seeds ------------------------------------------------------------------------------


def test_foreground_probability_and_rough_foreground():
    M = np.zeros((3, 4, 4), np.float32)
    M[0] = 0.9  # background row ignored
    M[1, 0, 0], M[2, 0, 0] = 0.3, 0.7
    M[1, 1, 1] = 0.5
    p = pp.foreground_probability(M)
    assert p[0, 0] == pytest.approx(0.7) and p[1, 1] == pytest.approx(0.5) and p[3, 3] == 0
    rough = pp.rough_foreground(p, xi2=0.5)
    assert rough[0, 0] and not rough[1, 1]  # strictly greater than ξ2


def test_seeds_erosion_square_filter():
    rough = np.zeros((40, 40), bool)
    rough[10:30, 12:28] = True  # 20×16 foreground block
    fg, bg = pp.seeds(rough, erosion=5)
    ys, xs = np.nonzero(fg)
    # a 5×5 window (offsets −2..+2) fits inside rows 10..29, cols 12..27 at rows 12..27, cols 14..25
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (12, 27, 14, 25)
    assert fg.sum() == 16 * 12
    # background: eroded away from the block, but not from the image border
    assert bg[0, 0] and bg[39, 39] and not bg[10:30, 12:28].any()
    assert not bg[9, 20] and not bg[8, 20] and bg[7, 20]
    assert not (fg & bg).any()
    fg1, _ = pp.seeds(rough, erosion=1)
    np.testing.assert_array_equal(fg1, rough)


def test_seeds_fallbacks_are_non_empty_and_disjoint():
    # a foreground thinner than the filter: erosion is halved until something survives
    rough = np.zeros((30, 30), bool)
    rough[10:13, 5:25] = True
    fg, bg = pp.seeds(rough, erosion=10)
    assert fg.any() and (fg <= rough).all() and bg.any()
    # no foreground at all: the maximum of p_fg (or the centre) becomes the fg seed, bg stays eroded bg
    p = np.zeros((30, 30), np.float32)
    p[7, 21] = 0.4
    fg, bg = pp.seeds(np.zeros((30, 30), bool), erosion=10, p_fg=p)
    assert fg.sum() == 1 and fg[7, 21] and bg.any() and not (fg & bg).any()
    fg, bg = pp.seeds(np.zeros((30, 30), bool), erosion=10)
    assert fg.sum() == 1 and fg[15, 15] and not bg[15, 15]
    # everything foreground: the image border becomes the bg seed
    fg, bg = pp.seeds(np.ones((30, 30), bool), erosion=10)
    assert bg.any() and bg[0, 0] and not (fg & bg).any() and fg.any()
    # tiny image
    fg, bg = pp.seeds(np.ones((2, 1), bool), erosion=10)
    assert fg.sum() == 1 and bg.sum() == 1


# -- 7: background probability ------------------------------------------------------------------------


def _two_region_image(h=32, w=64, edge=32, noise=4, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.float64)
    img[:, edge:] = (210, 190, 60)  # a strong colour edge at column `edge`
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


def test_background_probability_low_near_fg_high_near_bg():
    img = _two_region_image()
    fg = np.zeros((32, 64), bool)
    fg[12:20, 4:10] = True
    bg = np.zeros((32, 64), bool)
    bg[12:20, 54:60] = True
    p = pp.background_probability(img, fg, bg)
    assert p.shape == (32, 64) and p.dtype == np.float32
    assert p[fg].max() == 0 and p[bg].min() == 1
    assert p[:, :30].mean() < 0.2 and p[:, 34:].mean() > 0.8
    assert 0 <= p.min() and p.max() <= 1


def test_background_probability_respects_a_colour_edge():
    img = _two_region_image(edge=32)
    fg = np.zeros((32, 64), bool)
    fg[12:20, 22:28] = True  # fg seed 5 px left of the edge
    bg = np.zeros((32, 64), bool)
    bg[12:20, 58:62] = True  # bg seed far to the right
    geo = pp.background_probability(img, fg, bg, method="geodesic")
    spatial = pp.background_probability(img, fg, bg, method="spatial")
    # pixel (16, 34): 7 px from the fg seed, 24 px from the bg seed, but across the edge
    assert geo[16, 34] > 0.5
    assert spatial[16, 34] < 0.35  # without colour it would go to the fg side
    assert geo[16, 30] < 0.2  # same side as the fg seed: foreground


def test_background_probability_fast_enough_on_128():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    fg = np.zeros((128, 128), bool)
    fg[40:90, 50:80] = True
    bg = np.zeros((128, 128), bool)
    bg[:, :10] = True
    pp.background_probability(img, fg, bg)  # warm imports
    t0 = time.perf_counter()
    pp.background_probability(img, fg, bg)
    assert time.perf_counter() - t0 < 1.0  # ~0.02 s measured on 2 shared CPU cores


def test_background_probability_bad_inputs():
    img = _two_region_image()
    fg = np.zeros((32, 64), bool)
    bg = np.zeros((32, 64), bool)
    bg[0] = True
    with pytest.raises(ValueError, match="non-empty"):
        pp.background_probability(img, fg, bg)
    fg[0, 0] = True
    with pytest.raises(ValueError, match="overlap"):
        pp.background_probability(img, fg, bg)
    fg[0, 0] = False
    fg[5, 5] = True
    with pytest.raises(ValueError, match="unknown"):
        pp.background_probability(img, fg, bg, method="gsc")
    with pytest.raises(QparseError):
        pp.background_probability(img[..., 0], fg, bg)


# -- 8: MAP --------------------------------------------------------------------------------------------


def test_map_labels_picks_the_argmax():
    M = np.zeros((3, 2, 3), np.float32)
    M[0] = 5.0  # ignored: background comes from p_bg
    M[1] = [[0.9, 0.2, 0.4], [0.1, 0.6, 0.0]]
    M[2] = [[0.3, 0.8, 0.4], [0.2, 0.1, 0.0]]
    p_bg = np.array([[0.5, 0.5, 0.3], [0.7, 0.5, 0.0]], np.float32)
    out = pp.map_labels(M, p_bg)
    assert out.dtype == np.uint8
    # ties go to the lower id: (0, 2) 0.4 vs 0.4 → label 1; (1, 2) all 0 → background
    assert out.tolist() == [[1, 2, 1], [0, 1, 0]]
    # normalised reading: fg mass 1 − p_bg shared by M — at (0, 0): 0.5·0.75 = 0.375 < 0.5 → background
    out_n = pp.map_labels(M, p_bg, mode="normalised")
    assert out_n[0, 0] == 0 and out_n[0, 1] == 0 and out_n[0, 2] == 1
    with pytest.raises(ValueError):
        pp.map_labels(M, p_bg, mode="bayes")


# -- 9: superpixels ------------------------------------------------------------------------------------


def test_superpixel_vote_flips_isolated_minority_pixels():
    segments = np.zeros((6, 6), np.int32)
    segments[:, 3:] = 7  # two segments, non-consecutive ids
    labels = np.zeros((6, 6), np.uint8)
    labels[:, 3:] = 2
    labels[1, 1] = 3  # isolated minority pixels
    labels[4, 4] = 1
    labels[5, 5] = 0
    out = pp.superpixel_vote(labels, segments)
    expected = np.zeros((6, 6), np.uint8)
    expected[:, 3:] = 2
    np.testing.assert_array_equal(out, expected)
    # a tie goes to the lower id
    tie = pp.superpixel_vote(np.array([[1, 2]]), np.array([[0, 0]]), num_labels=3)
    assert tie.tolist() == [[1, 1]]


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "quickshift"])
def test_superpixels_follow_a_colour_edge(method):
    img = _two_region_image(h=32, w=48, edge=24, noise=2)
    seg = pp.superpixels(img, method=method, n_segments=12)
    assert seg.shape == (32, 48) and seg.dtype == np.int32
    assert seg.min() == 0 and np.array_equal(np.unique(seg), np.arange(seg.max() + 1))
    left, right = set(np.unique(seg[:, :23])), set(np.unique(seg[:, 25:]))
    assert not (left & right)  # no superpixel straddles the strong edge (±1 px)
    with pytest.raises(ValueError):
        pp.superpixels(img, method="ers")


# -- the stages chained --------------------------------------------------------------------------------


def test_chained_stages_xi1_removes_a_label_from_the_final_map():
    """Label 2 has confidence 0.7 < ξ1 = 0.8: it must not appear in the final map; label 1 must."""
    h = w = 32
    img = np.full((h, w, 3), 30, np.uint8)
    img[8:24, 8:24] = (200, 60, 60)  # the "person": label 1 region on I
    labels = np.zeros((3, h, w), np.uint8)
    for k in range(3):
        labels[k, 8:24, 8:24] = 1
        labels[k, 20:24, 8:24] = 2  # label 2 at the bottom of each KNN image
    present = np.zeros((3, 3), bool)
    present[:, :] = True
    boxes = np.zeros((3, 3, 4), np.float32)
    boxes[:, 1] = [8, 8, 24, 20]  # label 1 covers rows 8..19 of each g_k
    boxes[:, 2] = [8, 20, 24, 24]
    c = np.zeros((3, 3), np.float32)
    c[:, 1] = [0.9, 0.95, 0.85]
    c[:, 2] = [0.9, 0.6, 0.6]
    t = np.zeros((3, 3, 4), np.float32)
    conf = pp.label_confidence(c, present)
    visible = pp.visible_labels(conf, xi1=0.8)
    assert visible.tolist() == [False, True, False]
    M = pp.probability_maps(labels, boxes, t, present, visible, (h, w))
    p_fg = pp.foreground_probability(M)
    fg_seed, bg_seed = pp.seeds(pp.rough_foreground(p_fg, 0.5), erosion=3, p_fg=p_fg)
    p_bg = pp.background_probability(img, fg_seed, bg_seed)
    initial = pp.map_labels(M, p_bg)
    assert (initial[8:20, 8:24] == 1).all()  # label 1 where its masks were transferred
    assert (initial[20:24, 8:24] == 0).all()  # label 2's area: invisible → background
    assert (initial[:8] == 0).all() and (initial[24:] == 0).all()
    final = pp.superpixel_vote(initial, pp.superpixels(img, n_segments=16), num_labels=3)
    assert 2 not in final and (final[:4] == 0).all() and (final[10:18, 10:22] == 1).mean() > 0.5
    # with ξ1 lowered below 0.7 the label is visible and comes back
    vis_low = pp.visible_labels(conf, xi1=0.65)
    M2 = pp.probability_maps(labels, boxes, t, present, vis_low, (h, w))
    assert 2 in pp.map_labels(M2, p_bg)


# -- real data: the chain with oracle matching on CCP crops --------------------------------------------


def _boxes(labels: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    k = labels.shape[0]
    present = np.zeros((k, num_labels), bool)
    boxes = np.zeros((k, num_labels, 4), np.float32)
    for i in range(k):
        for l in np.unique(labels[i]):
            ys, xs = np.nonzero(labels[i] == l)
            present[i, l] = True
            boxes[i, l] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return present, boxes


def test_chain_with_oracle_matching_on_ccp(ccp_root):
    """c = 1[l ∈ I] and the true t: the chain must parse real CCP crops well; wrong t must hurt."""
    import scipy.io
    from PIL import Image

    from qparse_lite.labels import CCP_COARSE, ccp59_to_coarse_lut
    from qparse_lite.metrics import ConfusionMatrix, scores

    S, n, L = 64, 12, CCP_COARSE.num_labels
    lut = ccp59_to_coarse_lut()
    imgs, labs = [], []
    for i in range(1, n + 1):
        lab = lut[scipy.io.loadmat(ccp_root / f"annotations/pixel-level/{i:04d}.mat")["groundtruth"]]
        ys, xs = np.nonzero(lab)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) * 0.55
        box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
        with Image.open(ccp_root / f"photos/{i:04d}.jpg") as im:
            imgs.append(np.asarray(im.convert("RGB").crop(box).resize((S, S), Image.BILINEAR)))
        labs.append(np.asarray(Image.fromarray(lab).crop(box).resize((S, S), Image.NEAREST)))
    imgs, labs = np.stack(imgs), np.stack(labs)
    present_all, boxes_all = _boxes(labs, L)
    cms = {"oracle": ConfusionMatrix(L), "shifted": ConfusionMatrix(L)}
    for q in range(n):
        nb = np.array([k for k in range(n) if k != q][:9])
        present = present_all[nb].copy()
        present[:, 0] = False
        c = np.tile(present_all[q][None].astype(np.float32), (len(nb), 1))
        visible = pp.visible_labels(pp.label_confidence(c, present), 0.8)
        t_true = (boxes_all[nb] - boxes_all[q][None]) / S  # t = box_g − box_I (normalised)
        for name, t in (("oracle", t_true), ("shifted", t_true + np.array([0.3, 0.0, 0.3, 0.0]))):
            M = pp.probability_maps(labs[nb], boxes_all[nb], t, present, visible, (S, S))
            p_fg = pp.foreground_probability(M)
            fg, bg = pp.seeds(pp.rough_foreground(p_fg, 0.5), 3, p_fg)
            cms[name].update(pp.map_labels(M, pp.background_probability(imgs[q], fg, bg)), labs[q])
    good, bad = scores(cms["oracle"], CCP_COARSE), scores(cms["shifted"], CCP_COARSE)
    assert good["accuracy"] > 85 and good["fg_accuracy"] > 45 and good["avg_f1"] > 40
    assert bad["fg_accuracy"] < good["fg_accuracy"] - 15
