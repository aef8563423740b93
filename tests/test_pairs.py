"""Pairs and targets on hand-made label maps (qparse_lite.train.pairs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18
from qparse_lite.train.pairs import DeviceCorpus, TargetNorm, image_to_input, knn_region, label_presence_boxes
from qparse_lite.train.sampler import PairSampler

S = 20
L = ATR18.num_labels
LEFT_ARM, RIGHT_ARM = ATR18.index("left-arm"), ATR18.index("right-arm")


def _rect(lab: np.ndarray, label: int, x0: int, y0: int, x1: int, y1: int) -> None:
    """Label pixels x0..x1-1 × y0..y1-1."""
    lab[y0:y1, x0:x1] = label


def _corpus(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, S, S, 3), dtype=np.uint8)
    labels = np.zeros((n, S, S), np.uint8)
    mean = np.full((S, S, 3), 100.0, np.float32) + rng.random((S, S, 3), dtype=np.float32)
    return images, labels, mean


def test_boxes_exact():
    lab = np.zeros((1, S, S), np.uint8)
    _rect(lab[0], 3, 4, 2, 10, 7)  # columns 4..9, rows 2..6
    present, boxes = label_presence_boxes(torch.as_tensor(lab), L)
    assert present[0].tolist() == [i in (0, 3) for i in range(L)]
    np.testing.assert_allclose(boxes[0, 3].numpy(), [4 / S, 2 / S, 10 / S, 7 / S], rtol=0, atol=1e-7)
    assert boxes[0, 5].abs().sum() == 0  # absent label: zero box
    # a full-image label is (0, 0, 1, 1)
    full = np.full((1, S, S), 2, np.uint8)
    np.testing.assert_allclose(label_presence_boxes(torch.as_tensor(full), L)[1][0, 2].numpy(), [0, 0, 1, 1])


def test_knn_region_absent_is_exact_mean_and_targets():
    images, labels, mean = _corpus(3)
    _rect(labels[0], 3, 2, 2, 8, 8)  # I has label 3 and 4
    _rect(labels[0], 4, 10, 10, 15, 18)
    _rect(labels[1], 3, 5, 4, 12, 9)  # g has label 3 only
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=False)
    mu = data.mean
    # g_kl of an absent label is exactly the mean image
    R = knn_region(data.images[[1]], data.labels[[1]], torch.tensor([4]), mu)
    assert torch.equal(R[0], mu)
    assert torch.equal(image_to_input(R, mu), torch.zeros_like(R))
    # kept pixels are g_k's, the rest the mean
    R3 = knn_region(data.images[[1]], data.labels[[1]], torch.tensor([3]), mu)[0]
    keep = torch.as_tensor(labels[1] == 3)
    assert torch.equal(R3[:, keep], data.images[1].float()[:, keep])
    assert torch.equal(R3[:, ~keep], mu[:, ~keep])

    sampler = PairSampler(data, [0], [[1, 2]], augment=False, batch_size=4)
    from qparse_lite.train.pairs import PairIndex

    z = torch.zeros(3, dtype=torch.long)
    idx = PairIndex(torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1]), torch.tensor([3, 4, 5]), z, z, z, z)
    b = sampler.materialise(idx)
    assert b.c.tolist() == [1.0, 1.0, 0.0]  # c = 1 iff I contains l (whatever g_k holds)
    assert b.has_t.tolist() == [True, False, False]  # t only where both contain l
    np.testing.assert_allclose(b.t[0].numpy(), np.array([5 - 2, 4 - 2, 12 - 8, 9 - 8]) / S, atol=1e-6)
    assert b.t[1:].abs().sum() == 0
    assert torch.equal(b.R[1], torch.zeros_like(b.R[1])) and torch.equal(b.R[2], b.R[1])  # mean image
    assert torch.equal(b.I[0], image_to_input(data.images[0], mu))


def test_mirror_swaps_left_right_and_mirrors_boxes():
    images, labels, mean = _corpus(1)
    _rect(labels[0], LEFT_ARM, 1, 3, 6, 12)
    _rect(labels[0], 3, 8, 0, 11, 2)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    n = data.n
    m = data.row(torch.tensor([0]), torch.tensor([1]))[0]  # variant 1 = mirrored
    assert data.present[0, LEFT_ARM] and not data.present[0, RIGHT_ARM]
    assert data.present[m, RIGHT_ARM] and not data.present[m, LEFT_ARM]  # left arm became the right arm
    b0, bm = data.boxes[0, LEFT_ARM], data.boxes[m, RIGHT_ARM]
    np.testing.assert_allclose(bm.numpy(), [1 - b0[2], b0[1], 1 - b0[0], b0[3]], atol=1e-6)
    np.testing.assert_allclose(data.boxes[m, 3].numpy(), [1 - 11 / S, 0, 1 - 8 / S, 2 / S], atol=1e-6)
    assert torch.equal(data.images[n], data.images[0].flip(-1))
    assert data.num_variants == 4 and data.images.shape[0] == 4 * n


def test_zoom_shrinks_boxes_toward_centre():
    images, labels, mean = _corpus(1)
    Sb = 60
    images = np.random.default_rng(1).integers(0, 256, size=(1, Sb, Sb, 3), dtype=np.uint8)
    labels = np.zeros((1, Sb, Sb), np.uint8)
    mean = np.full((Sb, Sb, 3), 90.0, np.float32)
    _rect(labels[0], 3, 0, 0, 30, 60)  # the left half
    _rect(labels[0], 6, 40, 48, 58, 60)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    z = data.row(torch.tensor([0]), torch.tensor([2]))[0]  # variant 2 = ×1.2, not mirrored
    for lab in (3, 6):
        b, bz = data.boxes[0, lab].numpy(), data.boxes[z, lab].numpy()
        np.testing.assert_allclose(bz, 0.5 + (b - 0.5) / 1.2, atol=1.5 / Sb)
        assert (np.abs(bz - 0.5) <= np.abs(b - 0.5) + 1e-6).all()  # every corner moves toward the centre
        assert bz[2] - bz[0] < b[2] - b[0] and bz[3] - bz[1] < b[3] - b[1]  # and the box shrinks
    # the border is the (rounded) mean image and background
    assert (data.labels[z, 0] == 0).all() and (data.images[z, :, 0, :] == 90).all()
    assert data.present[z].tolist() == data.present[0].tolist()


def _random_corpus(n: int = 40, seed: int = 0):
    """People-like random maps: each image holds a random subset of labels as rectangles."""
    rng = np.random.default_rng(seed)
    images, labels, mean = _corpus(n, seed)
    freq = np.linspace(0.95, 0.1, L - 1)  # label 1 common ... label 17 rare
    for i in range(n):
        for lab in range(1, L):
            if rng.random() < freq[lab - 1]:
                x0, y0 = rng.integers(0, S - 4, 2)
                _rect(labels[i], lab, x0, y0, x0 + rng.integers(1, 4), y0 + rng.integers(1, 4))
    return images, labels, mean


def _knn(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n)[:k] for _ in range(n)])  # may contain the query itself


def test_stratified_sampler_balanced_labels_negative_fraction_and_no_self_pairs():
    images, labels, mean = _random_corpus()
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    knn = _knn(len(images), 10)
    sampler = PairSampler(
        data, np.arange(len(images)), knn, sampler="stratified", neg_fraction=0.3, empty_fraction=0.1, seed=3
    )
    idx = sampler.draw(40_000)
    assert not (idx.query == idx.knn).any()  # no pair of an image with itself
    c, t, has_t = sampler.targets(idx)
    neg = (c == 0).float().mean().item()
    # c = 0 comes from the neg stratum (30 %) and from empty pairs whose l ∉ I
    assert 0.3 <= neg <= 0.4
    assert abs((idx.stratum == 1).float().mean().item() - 0.3) < 0.01
    # targets agree with the strata exactly when nothing is zoomed (zoom-out may drop a 1-pixel rectangle)
    region = (idx.stratum != 2) & (idx.zoom_i == 0) & (idx.zoom_g == 0)
    assert torch.equal(idx.stratum[region] == 1, c[region] == 0)
    pos = (idx.stratum == 0) & region
    assert has_t[pos].all() and not has_t[idx.stratum == 1].any()
    lab = idx.label[idx.stratum == 0]  # ~24 000 positive pairs
    freq = torch.bincount(lab, minlength=L)[1:].float()
    freq = freq / freq.sum()
    assert freq.max() / freq.min() < 1.25  # near-uniform although the corpus frequencies span 0.95..0.1
    # the natural frequencies (label_power = 1) are far from uniform
    nat = PairSampler(data, np.arange(len(images)), knn, sampler="stratified", label_power=1.0, seed=3).draw(20_000)
    f2 = torch.bincount(nat.label[nat.stratum == 0], minlength=L)[1:].float()
    assert f2.max() / f2.min() > 5


def test_mirrored_pairs_keep_stratum():
    images, labels, mean = _random_corpus(seed=4)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    sampler = PairSampler(data, np.arange(40), _knn(40, 8, 4), neg_fraction=0.4, empty_fraction=0.0)
    idx = sampler.draw(5000)
    assert 0.4 < idx.flip.float().mean() < 0.6 and 0.4 < idx.zoom_i.float().mean() < 0.6
    c, _, has_t = sampler.targets(idx)
    # mirroring keeps the stratum exactly (the region's label is mirrored with the pair); zoom-out can drop
    # a 1-pixel region at this tiny size, so compare where I is not zoomed
    keep = (idx.zoom_i == 0) & (idx.flip == 1)
    assert keep.sum() > 1000
    assert torch.equal(c[keep], (idx.stratum[keep] == 0).float())
    assert (c == (idx.stratum == 0).float()).float().mean() > 0.97


def test_seeded_batches_and_state():
    images, labels, mean = _random_corpus(20)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    knn = _knn(20, 5)
    a = PairSampler(data, np.arange(20), knn, batch_size=8, pairs_per_epoch=32, seed=7)
    b = PairSampler(data, np.arange(20), knn, batch_size=8, pairs_per_epoch=32, seed=7)
    ba, bb = list(a), list(b)
    assert len(ba) == 4
    for x, y in zip(ba, bb, strict=True):
        assert torch.equal(x.I, y.I) and torch.equal(x.R, y.R) and torch.equal(x.t, y.t)
    st = a.state_dict()
    nxt = next(iter(a))
    b.load_state_dict(st)
    assert torch.equal(next(iter(b)).R, nxt.R)
    c = PairSampler(data, np.arange(20), knn, batch_size=8, pairs_per_epoch=32, seed=8)
    assert not torch.equal(next(iter(c)).I, ba[0].I)
    # ranks draw disjoint streams; validation pairs are fixed by their seed
    r1 = PairSampler(data, np.arange(20), knn, batch_size=8, seed=7, rank=1, world_size=2)
    assert not torch.equal(r1.draw(64).query, PairSampler(data, np.arange(20), knn, seed=7).draw(64).query)
    v1, v2 = a.fixed_pairs(50, 123), b.fixed_pairs(50, 123)
    assert all(torch.equal(x, y) for x, y in zip(v1, v2, strict=True))
    assert sum(len(x.c) for x in a.iter_pairs(v1, 16)) == 50


def test_target_norm_roundtrip_and_fit():
    images, labels, mean = _random_corpus(30)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    sampler = PairSampler(data, np.arange(30), _knn(30, 6))
    tn = sampler.fit_target_norm(20_000)
    c, t, has_t = sampler.targets(sampler.draw(20_000))
    cn, tn_ = tn.normalise(c, t)
    assert abs(cn.mean().item()) < 0.05 and abs(cn.std().item() - 1) < 0.05
    assert (tn_[has_t].mean(0).abs() < 0.05).all() and ((tn_[has_t].std(0) - 1).abs() < 0.05).all()
    c2, t2 = tn.denormalise(cn, tn_)
    torch.testing.assert_close(c2, c, atol=1e-5, rtol=0)
    torch.testing.assert_close(t2, t, atol=1e-5, rtol=0)
    tn3 = TargetNorm.from_state_dict(tn.state_dict())
    assert torch.equal(tn3.t_std, tn.t_std) and torch.equal(tn3.c_mean, tn.c_mean)
    assert TargetNorm.from_state_dict(tn.as_dict()).c_std.item() == pytest.approx(tn.c_std.item())


def test_holdout_and_bad_input():
    images, labels, mean = _corpus(2)
    _rect(labels[0], 5, 0, 0, 5, 5)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=False, holdout=5)
    assert not data.present[:, 5].any() and data.present[0, 0]
    with pytest.raises(QparseError):
        PairSampler(data, [0, 1], [[1]])  # KNN rows do not match the queries
    bad = labels.copy()
    bad[0, 0, 0] = 40
    with pytest.raises(QparseError, match="outside the label set"):
        DeviceCorpus.from_arrays(images, bad, mean, ATR18)


# -- the natural sampler on a hand-made KNN table ------------------------------------------------------

HAT, HAIR, BAG = ATR18.index("hat"), ATR18.index("hair"), ATR18.index("bag")


def _hand_made():
    """6 images: hair everywhere, hat in 0-2, bag in 0 and 5 only; KNN rows written by hand.

    Region candidates (i, k, l) with l ∈ ϕ(g_k), counted by hand from the table below:
    hair: 12 pos, 0 neg (every image has hair); hat: the KNN rows hit hat images 8 times, 2 of them from a
    query with a hat (0 → 1, 1 → 0: pos) and 6 from queries 3-5 (neg); bag: 5 hits, 1 pos (5 → 0), 4 neg.
    """
    images, labels, mean = _corpus(6)
    for i in range(6):
        _rect(labels[i], HAIR, 2, 0, 8, 3)
    for i in (0, 1, 2):
        _rect(labels[i], HAT, 4, 4, 8, 6)
    for i in (0, 5):
        _rect(labels[i], BAG, 10, 10, 14, 16)
    knn = np.array([[1, 3], [0, 4], [3, 5], [0, 1], [2, 0], [0, 2]])
    return images, labels, mean, knn


def _count_by_hand(labels: np.ndarray, knn: np.ndarray) -> dict[int, tuple[int, int]]:
    out = {}
    for lab in (HAIR, HAT, BAG):
        pos = neg = 0
        for q, row in enumerate(knn):
            for g in row:
                if (labels[g] == lab).any():
                    if (labels[q] == lab).any():
                        pos += 1
                    else:
                        neg += 1
        out[lab] = (pos, neg)
    return out


def test_natural_sampler_keeps_each_labels_rate_and_balances_labels():
    images, labels, mean, knn = _hand_made()
    hand = _count_by_hand(labels, knn)
    assert hand == {HAIR: (12, 0), HAT: (2, 6), BAG: (1, 4)}  # the docstring's count
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=False)
    s = PairSampler(data, np.arange(6), knn, augment=False, seed=1)
    rates = s.expected_rates()
    for lab, (pos, neg) in hand.items():
        assert rates[ATR18.names[lab]]["natural_pos_rate"] == pytest.approx(pos / (pos + neg))
        assert rates[ATR18.names[lab]]["sampled_pos_rate"] == pytest.approx(pos / (pos + neg))
        assert rates[ATR18.names[lab]]["share"] == pytest.approx(1 / 3)  # 3 labels with candidates
    n = 60_000
    for idx in (s.draw(n), s.draw_grouped(n // 4, 4)):
        c, _, has_t = s.targets(idx)
        assert set(idx.label.unique().tolist()) == {HAIR, HAT, BAG} and (idx.stratum < 2).all()  # no empty
        for lab, (pos, neg) in hand.items():
            m = idx.label == lab
            assert abs(m.float().mean().item() - 1 / 3) < 0.015  # labels balanced
            assert abs(c[m].mean().item() - pos / (pos + neg)) < 0.015  # ... at their natural rates
        assert torch.equal(has_t, c.bool())
    # the stratified sampler forces the same rate on every label instead
    old = PairSampler(data, np.arange(6), knn, augment=False, sampler="stratified", empty_fraction=0.0)
    r_old = old.expected_rates()
    # (pos: 60 % over hair, hat, bag; neg: 40 % over hat, bag → P(c = 1 | hat) = 0.2 / (0.2 + 0.2))
    assert r_old["hat"]["sampled_pos_rate"] == pytest.approx(0.5)
    assert r_old["bag"]["sampled_pos_rate"] == pytest.approx(0.5)  # although bag's natural rate is 1/5
    assert r_old["hat"]["natural_pos_rate"] == 2 / 8 and r_old["bag"]["natural_pos_rate"] == 1 / 5
    c, _, _ = old.targets(old.draw(n))
    assert abs(c.mean().item() - 0.6) < 0.015


def test_empty_stratum_is_dropped_or_given_a_learnable_target():
    images, labels, mean, knn = _hand_made()
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=False)
    s = PairSampler(data, np.arange(6), knn, augment=False, empty_fraction=0.1, seed=2)
    assert s.empty_target == "zero"
    idx = s.draw(40_000)
    empty = idx.stratum == 2
    assert abs(empty.float().mean().item() - 0.1) < 0.01
    c, _, has_t = s.targets(idx)
    assert (c[empty] == 0).all() and not has_t[empty].any()  # a blank region never matches: learnable
    # the per-label natural rates among real regions are unchanged
    rates = s.expected_rates()
    assert rates["hat"]["sampled_pos_rate"] == pytest.approx(2 / 8)
    m = (idx.label == HAT) & ~empty
    assert abs(c[m].mean().item() - 2 / 8) < 0.02
    # Eq. (1) as written (c = 1[l ∈ ϕ(I)]) stays available
    s2 = PairSampler(data, np.arange(6), knn, augment=False, empty_fraction=0.1, empty_target="label")
    idx2 = s2.draw(5000)
    c2, _, _ = s2.targets(idx2)
    e2 = idx2.stratum == 2
    in_i = data.present[idx2.query, idx2.label]
    assert torch.equal(c2[e2].bool(), in_i[e2]) and c2[e2].any()
    with pytest.raises(QparseError, match="empty_target"):
        PairSampler(data, np.arange(6), knn, augment=False, empty_target="maybe")
    with pytest.raises(QparseError, match="unknown pair sampler"):
        PairSampler(data, np.arange(6), knn, augment=False, sampler="uniform")


def test_grouped_batches_share_the_test_image_and_keep_the_pair_distribution():
    images, labels, mean = _random_corpus(seed=5)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    knn = _knn(40, 8, 5)
    s = PairSampler(data, np.arange(40), knn, batch_size=64, group_size=16, seed=4)
    b = next(iter(s))
    idx = b.index
    assert b.R.shape[0] == 64 and b.group.shape == (64,) and b.I.shape[0] <= 4
    q = idx.query.reshape(4, 16)
    assert (q == q[:, :1]).all()  # one test image per group ...
    assert (idx.zoom_i.reshape(4, 16) == idx.zoom_i.reshape(4, 16)[:, :1]).all()  # ... one variant of it
    assert (idx.flip.reshape(4, 16) == idx.flip.reshape(4, 16)[:, :1]).all()
    # I[group[b]] is pair b's test image exactly
    ref = s.materialise(idx)
    assert torch.equal(b.I[b.group], ref.I) and torch.equal(b.R, ref.R) and torch.equal(b.c, ref.c)
    # the grouped draw has the same marginal over (label, stratum) as independent pairs
    a, g = s.draw(80_000), s.draw_grouped(5000, 16)
    key = lambda x: torch.bincount(x.stratum * L + x.label, minlength=3 * L).double() / len(x)  # noqa: E731
    assert (key(a) - key(g)).abs().max() < 0.01
    qa = torch.bincount(a.query, minlength=40).double() / len(a)
    qg = torch.bincount(g.query, minlength=40).double() / len(g)
    assert (qa - qg).abs().max() < 0.01
    with pytest.raises(QparseError, match="group_size"):
        PairSampler(data, np.arange(40), knn, batch_size=64, group_size=24)


def test_scored_pairs_are_every_label_of_the_first_k_neighbours():
    images, labels, mean, knn = _hand_made()
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=False)
    s = PairSampler(data, np.arange(6), knn, augment=False)
    idx = s.scored_pairs(k=1)
    expect = sorted(
        (q, int(knn[q, 0]), lab) for q in range(6) for lab in range(1, L) if (labels[knn[q, 0]] == lab).any()
    )
    got = sorted(zip(idx.query.tolist(), idx.knn.tolist(), idx.label.tolist(), strict=True))
    assert got == expect
    assert (idx.zoom_i == 0).all() and (idx.flip == 0).all() and (idx.stratum < 2).all()
    capped = s.scored_pairs(max_pairs=7, seed=0)
    assert len(capped) <= 7 and len(capped) > 0
    per_q = {q: sum(1 for x in got if x[0] == q) for q in range(6)}
    full = s.scored_pairs()
    for q in set(capped.query.tolist()):  # whole images are kept
        assert (capped.query == q).sum() == (full.query == q).sum()
    assert per_q


def test_translate_moves_pixels_and_boxes_exactly():
    from qparse_lite.train.pairs import label_box, translate

    images, labels, mean = _corpus(2)
    _rect(labels[0], 3, 4, 2, 10, 7)
    _rect(labels[1], 5, 0, 10, 6, 20)  # touches the left and bottom border
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=False)
    shift = torch.tensor([[3, -2], [-2, 1]])
    img, lab = translate(data.images, data.labels, shift, data.mean)
    assert img.dtype == torch.uint8 and lab.dtype == data.labels.dtype
    # out(y, x) = in(y − dy, x − dx): image 0 moved right 3 and up 2
    assert torch.equal(img[0, :, 0 : S - 2, 3:], data.images[0, :, 2:, : S - 3])
    mu8 = data.mean.round().to(torch.uint8)
    assert torch.equal(img[0, :, :, :3], mu8[:, :, :3]) and torch.equal(img[0, :, S - 2 :], mu8[:, S - 2 :])
    assert (lab[0, S - 2 :] == 0).all()
    has, box = label_box(lab, torch.tensor([3, 5]))
    assert has.tolist() == [True, True]
    np.testing.assert_allclose(box[0].numpy(), np.array([4 + 3, 2 - 2, 10 + 3, 7 - 2]) / S, atol=1e-6)
    # a region pushed past the frame is clipped to it (the box of the pixels that remain)
    np.testing.assert_allclose(box[1].numpy(), np.array([0, 11, 4, 20]) / S, atol=1e-6)
    # zero shift is the identity; label_box agrees with label_presence_boxes
    img0, lab0 = translate(data.images, data.labels, torch.zeros(2, 2, dtype=torch.long), data.mean)
    assert torch.equal(img0, data.images) and torch.equal(lab0, data.labels)
    p, b = label_presence_boxes(data.labels, L)
    h0, b0 = label_box(data.labels, torch.tensor([3, 5]))
    assert torch.equal(h0, p[[0, 1], [3, 5]]) and torch.equal(b0, b[[0, 1], [3, 5]])


def test_shifted_batches_have_targets_of_the_moved_label_maps():
    from qparse_lite.train.pairs import label_box, translate

    images, labels, mean = _random_corpus(seed=3)
    data = DeviceCorpus.from_arrays(images, labels, mean, ATR18, augment=True)
    knn = _knn(40, 8, 3)
    with pytest.raises(QparseError, match="shift"):
        PairSampler(data, np.arange(40), knn, shift=0.5)
    for gs in (1, 16):
        s = PairSampler(data, np.arange(40), knn, batch_size=64, group_size=gs, seed=2, shift=0.15)
        assert s.shift_px == 3
        st = s.state_dict()
        b = s.next_batch()
        s.load_state_dict(st)
        b2 = s.next_batch()  # the offsets come from the sampler's generator: resume draws the same
        assert torch.equal(b.I, b2.I) and torch.equal(b.R, b2.R) and torch.equal(b.t, b2.t)
        plain = s.materialise(b.index, grouped=gs > 1)
        assert not torch.equal(plain.I, b.I)  # the batch was moved
        # zero offsets reproduce the unshifted batch exactly
        z_i, z_g = torch.zeros(len(b.I), 2, dtype=torch.long), torch.zeros(len(b.R), 2, dtype=torch.long)
        zero = s.materialise(b.index, gs > 1, z_i, z_g)
        for x, y in zip(zero, plain, strict=False):
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y)
    # explicit offsets: c, t, has_t are those of the moved label maps, R is g_k moved and masked
    s = PairSampler(data, np.arange(40), knn, batch_size=64, seed=2)
    idx = s.draw(64)
    rI, rG, lab = s._rows(idx)
    g = torch.Generator().manual_seed(0)
    sh_i, sh_g = torch.randint(-4, 5, (64, 2), generator=g), torch.randint(-4, 5, (64, 2), generator=g)
    b = s.materialise(idx, False, sh_i, sh_g)
    _, li = translate(data.images[rI], data.labels[rI], sh_i, data.mean)
    gi, lg = translate(data.images[rG], data.labels[rG], sh_g, data.mean)
    in_i, box_i = label_box(li, lab)
    in_g, box_g = label_box(lg, lab)
    assert torch.equal(b.has_t, in_i & in_g) and torch.equal(b.c, in_i.float())
    torch.testing.assert_close(b.t[b.has_t], (box_g - box_i)[b.has_t])
    torch.testing.assert_close(b.R, image_to_input(knn_region(gi, lg, lab, data.mean), data.mean))
    moved = (sh_i != 0).any(1) & b.has_t
    assert moved.any() and not torch.equal(b.t[moved], s.materialise(idx).t[moved])
