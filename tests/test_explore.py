"""Data exploration helpers: overlays with a label filter, label statistics, the widget explorer, figures."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from qparse_lite.data.prepare import Corpus
from qparse_lite.data.statistics import (
    coarse_mapping_table,
    keep_labels,
    label_pixel_counts,
    label_statistics,
)
from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18, CCP59_NAMES, CCP_COARSE
from qparse_lite.retrieval.quality import label_overlap_at_k, overlap_at_ks
from qparse_lite.viz.explore import (
    draw_example,
    draw_label_statistics,
    draw_neighbours,
    draw_overlay_grid,
    draw_palette,
    explorer,
    overlay_labels,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HAT, UPPER, PANTS, LARM, RARM = 1, 4, 6, 14, 15


def _maps() -> np.ndarray:
    """Three 4×4 maps with known counts."""
    a = np.zeros((4, 4), np.uint8)
    a[0, :] = HAT  # 4 px hat
    a[1:3, :2] = UPPER  # 4 px upper
    b = np.zeros((4, 4), np.uint8)
    b[:, 0] = LARM  # 4 px left arm
    b[:, 3] = RARM  # 4 px right arm
    c = np.full((4, 4), PANTS, np.uint8)  # 16 px pants
    return np.stack([a, b, c])


def _corpus(n: int = 12, s: int = 16) -> Corpus:
    """A tiny in-memory corpus: image i is a person wearing outfit i % 3 (distinct label sets)."""
    rng = np.random.default_rng(0)
    labels = np.zeros((n, s, s), np.uint8)
    for i in range(n):
        labels[i, 2:6, 4:12] = UPPER
        labels[i, 6:14, 4:12] = (PANTS, UPPER, PANTS)[i % 3]
        if i % 3 == 2:
            labels[i, 0:2, 5:11] = HAT
    images = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
    return Corpus.from_arrays(images, labels, ATR18, {"train": range(0, 8), "val": [8, 9], "test": [10, 11]})


# ---------------------------------------------------------------------------------------------------
# overlays
# ---------------------------------------------------------------------------------------------------


def test_keep_labels_filters_to_background():
    a = _maps()[0]
    assert keep_labels(a, None) is a
    kept = keep_labels(a, [HAT])
    assert set(np.unique(kept)) == {0, HAT}
    assert (kept == HAT).sum() == 4 and kept.dtype == a.dtype
    assert not keep_labels(a, []).any()


def test_overlay_labels_alpha_and_filter():
    lab = _maps()[0]
    img = np.full((4, 4, 3), 100, np.uint8)
    np.testing.assert_array_equal(overlay_labels(img, lab, ATR18, alpha=0.0), img)
    full = overlay_labels(img, lab, ATR18, alpha=1.0)
    np.testing.assert_array_equal(full[0, 0], ATR18.palette[HAT])
    np.testing.assert_array_equal(full[1, 0], ATR18.palette[UPPER])
    np.testing.assert_array_equal(full[3, 3], img[3, 3])  # background untouched
    only_hat = overlay_labels(img, lab, ATR18, alpha=1.0, keep=[HAT])
    np.testing.assert_array_equal(only_hat[0, 0], ATR18.palette[HAT])
    np.testing.assert_array_equal(only_hat[1, 0], img[1, 0])  # filtered label left as the photo
    half = overlay_labels(img, lab, ATR18, alpha=0.5)
    np.testing.assert_array_equal(half[0, 0], np.round(0.5 * 100 + 0.5 * ATR18.palette[HAT].astype(float)))
    with pytest.raises(ValueError, match="alpha"):
        overlay_labels(img, lab, ATR18, alpha=1.5)
    with pytest.raises(QparseError, match="outside the label set"):
        overlay_labels(img, np.full((4, 4), 40, np.uint8), ATR18)


# ---------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------


def test_label_pixel_counts_order_and_chunks():
    maps = _maps()
    L = ATR18.num_labels
    counts = label_pixel_counts(maps, L)
    assert counts.shape == (3, L) and counts.dtype == np.int64
    assert counts[0, HAT] == 4 and counts[0, UPPER] == 4 and counts[0, 0] == 8
    assert counts[1, LARM] == counts[1, RARM] == 4 and counts[2, PANTS] == 16
    np.testing.assert_array_equal(counts.sum(1), 16)
    # unsorted indices and chunk=1 give rows in the order of the indices
    sub = label_pixel_counts(maps, L, indices=[2, 0, 2], chunk=1)
    np.testing.assert_array_equal(sub, counts[[2, 0, 2]])
    assert label_pixel_counts(maps, L, indices=[]).shape == (0, L)
    with pytest.raises(ValueError, match="outside"):
        label_pixel_counts(maps, 5)


def test_label_statistics_values():
    maps = _maps()
    stats = label_statistics(maps, {"train": [0, 1], "test": [2]}, ATR18)
    assert list(stats.columns) == ["split", "id", "label", "pixel_pct", "image_pct", "images", "split_images"]
    assert len(stats) == 2 * ATR18.num_labels
    np.testing.assert_allclose(stats.groupby("split").pixel_pct.sum(), 100.0)
    tr = stats[stats.split == "train"].set_index("id")
    assert tr.pixel_pct[HAT] == pytest.approx(100 * 4 / 32)
    assert tr.pixel_pct[0] == pytest.approx(100 * 16 / 32)  # 8 + 8 background pixels
    assert tr.image_pct[HAT] == 50 and tr.image_pct[0] == 100 and tr.images[LARM] == 1
    assert tr.label[LARM] == "left-arm" and (tr.split_images == 2).all()
    te = stats[stats.split == "test"].set_index("id")
    assert te.pixel_pct[PANTS] == 100 and te.image_pct[0] == 0 and te.image_pct[PANTS] == 100
    empty = label_statistics(maps, {"val": []}, ATR18)
    assert (empty.pixel_pct == 0).all() and (empty.images == 0).all()


def test_coarse_mapping_table_covers_every_name_once():
    t = coarse_mapping_table()
    assert len(t) == CCP_COARSE.num_labels and list(t.coarse) == list(CCP_COARSE.names)
    assert t.n.sum() == len(CCP59_NAMES)
    listed = [x.rsplit(" (", 1)[0] for cell in t["ccp59 names (id)"] for x in cell.split(", ")]
    assert sorted(listed) == sorted(CCP59_NAMES)
    assert t.set_index("coarse").loc["background", "ccp59 names (id)"] == "null (0)"


# ---------------------------------------------------------------------------------------------------
# figures and the widget
# ---------------------------------------------------------------------------------------------------


def test_figures_draw():
    maps = _maps()
    imgs = [np.full((4, 4, 3), 90, np.uint8)] * 3
    ax = draw_palette(ATR18)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == ATR18.num_labels and "14 left-arm  ↔ 15" in texts
    fig = draw_overlay_grid(imgs, maps, ATR18, titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 2 * 2 * 2
    fig = draw_example(imgs[0], maps[1], ATR18, keep=[LARM])
    assert "1 filtered out" in fig.axes[2].get_title()
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert legend == ["14 left-arm"]
    stats = label_statistics(maps, {"train": [0, 1], "test": [2]}, ATR18)
    fig = draw_label_statistics(stats, ATR18)
    assert len(fig.axes[1].get_xticklabels()) == ATR18.num_labels - 1
    plt.close("all")


def test_explorer_widget_updates():
    pytest.importorskip("ipywidgets")
    corpus = _corpus()
    box = explorer(corpus, split="test")
    c = box.controls
    assert c["split"].value == "test" and c["index"].max == 1
    assert c["labels"].value == tuple(ATR18.foreground)
    c["labels"].value = (HAT,)
    c["alpha"].value = 0.2
    c["split"].value = "train"
    assert c["index"].max == 7
    c["index"].value = 5
    c["split"].value = "val"
    assert c["index"].max == 1 and c["index"].value == 1
    out = box.children[1]
    assert len(out.outputs) == 1 and "text/plain" in out.outputs[0]["data"]  # one figure, replaced on redraw
    plt.close("all")


def test_draw_neighbours_and_overlap_at_ks():
    corpus = _corpus()
    queries = corpus.split("test")  # 10 (outfit 1), 11 (outfit 2)
    same = np.array([[1, 4, 7], [2, 5, 8]])  # same outfits
    other = np.array([[0, 2, 3], [0, 1, 3]])  # mostly other outfits
    fig = draw_neighbours(corpus, queries, same, k=2, distances=np.zeros((2, 3)))
    assert len(fig.axes) == 2 * 3
    assert fig.axes[1].get_title().startswith("1: p=1.00")
    plt.close("all")
    df = overlap_at_ks(corpus, queries, {"same": same, "other": other}, ks=(1, 3))
    assert list(df.columns) == ["features", "K", "precision", "recall", "iou", "pairs"]
    s = df.set_index(["features", "K"])
    assert s.loc[("same", 3), "precision"] == 100 and s.loc[("same", 3), "pairs"] == 6
    ref = label_overlap_at_k(corpus, queries, other[:, :3])
    assert s.loc[("other", 3), "precision"] == pytest.approx(100 * ref["precision"])
    assert s.loc[("other", 3), "iou"] == pytest.approx(100 * ref["iou"])
    with pytest.raises(ValueError, match="K = 5"):
        overlap_at_ks(corpus, queries, {"same": same}, ks=(5,))
    with pytest.raises(ValueError, match="rows"):
        overlap_at_ks(corpus, queries[:1], {"same": same}, ks=(1,))
