"""New labels without retraining (qparse_lite.evaluation.newlabels): label choice, thinned corpora, F1 summary, sweep."""

from __future__ import annotations

import numpy as np
import pytest

from qparse_lite.data.prepare import Corpus
from qparse_lite.errors import QparseError
from qparse_lite.evaluation.newlabels import (
    annotated_subset,
    choose_holdout_label,
    confidence_summary,
    corpus_with_label_fraction,
    evaluate_label,
    fraction_sweep,
    label_f1_summary,
    label_presence,
)
from qparse_lite.labels import ATR18, CCP_COARSE
from qparse_lite.metrics import ConfusionMatrix, scores
from qparse_lite.train.checkpoint import load_model

S = 8


def _corpus(label_set, presence: dict[int, int], n_train: int = 10, n_test: int = 4) -> Corpus:
    """``n_train`` train + ``n_test`` test maps; label ``l`` painted (one pixel row each) on the first
    ``presence[l]`` train images and on every test image."""
    n = n_train + n_test
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(n, S, S, 3), dtype=np.uint8)
    labels = np.zeros((n, S, S), np.uint8)
    for row, (lab, count) in enumerate(presence.items()):
        labels[:count, row, :] = lab
        labels[n_train:, row, :] = lab
    splits = {"train": np.arange(n_train), "test": np.arange(n_train, n)}
    return Corpus.from_arrays(images, labels, label_set, splits)


def test_label_presence_and_choice():
    c = _corpus(CCP_COARSE, {1: 2, 2: 6, 5: 4, 13: 10})
    pres = label_presence(c)
    assert pres[[0, 1, 2, 5, 13]].tolist() == [100.0, 20.0, 60.0, 40.0, 100.0] and pres[3] == 0
    # hair (60 %) and outerwear (40 %) are both 10 points from 50 %: the smaller id wins
    assert choose_holdout_label(c) == "hair"
    assert choose_holdout_label(c, target=30.0) == "hat"  # 20 % hat and 40 % outerwear tie too: id 1 < 5
    assert choose_holdout_label(c, target=0.0) == "hat"  # absent labels (0 %) are never chosen
    assert choose_holdout_label(c, fixed={"ccp-coarse": "bag"}) == "bag"
    assert choose_holdout_label(_corpus(ATR18, {2: 3})) == "bag"  # the fixed ATR-18 choice
    with pytest.raises(QparseError):
        choose_holdout_label(c, fixed={"ccp-coarse": "tail"})


def test_annotated_subset_nested_and_deterministic():
    c = _corpus(ATR18, {16: 8, 2: 10})
    with_label, keep0 = annotated_subset(c, "bag", 0.0)
    assert with_label.tolist() == list(range(8)) and keep0.size == 0
    subsets = [annotated_subset(c, "bag", f, seed=3)[1] for f in (0.25, 0.5, 1.0)]
    assert [len(s) for s in subsets] == [2, 4, 8]
    assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2]) == set(with_label)
    assert np.array_equal(annotated_subset(c, "bag", 0.5, seed=3)[1], subsets[1])
    with pytest.raises(ValueError, match="fraction"):
        annotated_subset(c, "bag", 1.5)
    with pytest.raises(QparseError, match="background"):
        annotated_subset(c, "background", 0.5)


def test_corpus_with_label_fraction_only_touches_the_label_on_dropped_train_images():
    c = _corpus(ATR18, {16: 8, 2: 10})
    orig = np.array(c.labels)
    cf = corpus_with_label_fraction(c, "bag", 0.5, seed=1)
    kept = cf.meta["label_fraction"]["kept"]
    assert len(kept) == 4 and cf.meta["label_fraction"]["images_with_label"] == 8
    new = np.asarray(cf.labels)
    changed = (new != orig).any((1, 2))
    assert sorted(np.flatnonzero(changed).tolist()) == sorted(set(range(8)) - set(kept))
    assert (new[orig != 16] == orig[orig != 16]).all()  # other labels untouched
    assert (new[changed][orig[changed] == 16] == 0).all()  # the label became background
    test = c.split("test")
    assert np.array_equal(new[test], orig[test])  # ground truth of the other splits untouched
    assert np.shares_memory(np.asarray(cf.images), np.asarray(c.images))  # images shared, not copied
    np.testing.assert_array_equal(cf.mean, c.mean)
    assert cf.ids == c.ids and all(np.array_equal(cf.split(s), c.split(s)) for s in ("train", "val", "test"))
    assert np.array_equal(np.asarray(corpus_with_label_fraction(c, "bag", 1.0).labels), orig)
    assert not (np.asarray(corpus_with_label_fraction(c, "bag", 0.0).labels)[c.split("train")] == 16).any()
    assert np.array_equal(np.asarray(c.labels), orig)  # the source corpus is not modified


def test_label_f1_summary_on_a_hand_made_matrix():
    gt = np.array([[0, 0, 2, 2], [0, 16, 16, 2]], np.uint8)
    pred = np.array([[0, 0, 2, 2], [0, 0, 16, 0]], np.uint8)
    sc = scores(ConfusionMatrix(ATR18.num_labels).update(pred, gt), ATR18)
    s = label_f1_summary(sc, "bag")
    assert s["label_f1"] == pytest.approx(100 * 2 / 3)  # TP 1, FN 1, FP 0
    f1_bg, f1_hair = 100 * 6 / 8, 100 * 4 / 5  # bg: TP 3, FP 2; hair: TP 2, FN 1
    assert s["other_avg_f1"] == pytest.approx((f1_bg + f1_hair) / 2)
    assert s["other_avg_f1_fg"] == pytest.approx(f1_hair)
    assert s["avg_f1"] == pytest.approx(sc["avg_f1"])
    with pytest.raises(QparseError):
        label_f1_summary(sc, "tail")


def _label_in_test(corpus) -> str:
    test, lab = np.asarray(corpus.split("test")), np.asarray(corpus.labels)
    return ATR18.names[max(ATR18.foreground, key=lambda i: int((lab[test] == i).sum()))]


def test_evaluate_label_matches_the_harness_and_its_cache_is_exact(tiny_run):
    from qparse_lite.evaluation.evaluate import evaluate_parser, make_parser_fn
    from qparse_lite.parse.parser import MCNNParser

    corpus, run = tiny_run
    name = _label_in_test(corpus)
    test, train = np.asarray(corpus.split("test")), np.asarray(corpus.split("train"))
    nb = np.stack([np.roll(train, -r)[:4] for r in range(len(test))])  # different neighbours per image
    model, tn, _ = load_model(run)
    kw = {"xi1": 0.0, "erosion": 2, "n_segments": 40}
    parser = MCNNParser(model, tn, corpus, **kw)
    summary, per_image = evaluate_label(parser, corpus, name, nb, 3)
    ref = evaluate_parser(make_parser_fn("mcnn", corpus, "test", nb, 3, parser), corpus, test, ATR18)
    assert summary["label_f1"] == pytest.approx(ref["per_label_f1"][name]) and summary["images"] == len(test)
    assert summary["avg_f1"] == pytest.approx(ref["avg_f1"])
    assert list(per_image.columns) == ["index", "has_label", "knn_with_label", "confidence", "visible"]
    lid = ATR18.index(name)
    has = [(np.asarray(corpus.labels[nb[r][:3]]) == lid).any((1, 2)).sum() for r in range(len(test))]
    assert per_image.knn_with_label.tolist() == has
    assert per_image.confidence.isna().tolist() == [h == 0 for h in has]
    # a cache filled on the 0 % and 100 % copies serves the 50 % copy exactly where its neighbours agree
    cache: dict = {}
    for f in (0.0, 1.0):
        cf = corpus_with_label_fraction(corpus, name, f, seed=2)
        evaluate_label(MCNNParser(model, tn, cf, **kw), cf, name, nb, 3, cache=cache)
    half = corpus_with_label_fraction(corpus, name, 0.5, seed=2)
    fresh = evaluate_label(MCNNParser(model, tn, half, **kw), half, name, nb, 3)
    cached = evaluate_label(MCNNParser(model, tn, half, **kw), half, name, nb, 3, cache=cache)
    assert fresh[0] == pytest.approx(cached[0])
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(fresh[1], cached[1])


def test_fraction_sweep_zero_annotations_cannot_parse_the_label(tiny_run):
    corpus, run = tiny_run
    test, lab = np.asarray(corpus.split("test")), np.asarray(corpus.labels)
    name = _label_in_test(corpus)  # the label most visible in the test split
    label = ATR18.index(name)
    nb = np.tile(np.asarray(corpus.split("train"))[:3], (len(test), 1))
    model, tn, _ = load_model(run)
    df = fraction_sweep(
        corpus, name, [0.0, 1.0], nb, 3, model=model, target_norm=tn, model_name="A", trained_on_label=False,
        parser_kw={"xi1": 0.0, "erosion": 2}, label_transfer=True, n_segments=40,
    )  # fmt: skip
    assert len(df) == 4 and list(df.model) == ["A", "KNN label transfer"] * 2
    assert set(df.n_test_images) == {len(test)} and set(df.label) == {name}
    zero = df[df.annotated_fraction == 0.0]
    assert (zero.label_f1 == 0.0).all() and (zero.annotated_images == 0).all()  # in GT, never predicted
    full = df[df.annotated_fraction == 1.0]
    n_with = int(sum((lab[i] == label).any() for i in corpus.split("train")))
    assert (full.annotated_images == n_with).all()
    assert df[["label_f1", "other_avg_f1", "avg_f1"]].notna().all().all()
    with pytest.raises(ValueError):
        fraction_sweep(corpus, name, [0.0], nb, 3)


def test_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from qparse_lite.evaluation.newlabels import draw_parse_rows, plot_fraction_sweep

    sweep = pd.DataFrame({
        "model": ["A"] * 3 + ["KNN label transfer"] * 3, "annotated_fraction": [0.0, 0.5, 1.0] * 2,
        "label_f1": [0.0, 20.0, 30.0, 0.0, 10.0, 15.0], "other_avg_f1": [50.0] * 6,
    })  # fmt: skip
    ax = plot_fraction_sweep(sweep, "bag", {"B": 40.0})
    assert len(ax.lines) == 3 and [t.get_text() for t in ax.get_xticklabels()] == ["0", "50", "100"]
    assert ax.lines[2].get_ydata()[0] == 40.0
    plt.close(ax.figure)
    c = _corpus(ATR18, {16: 8, 2: 10})
    maps = [np.asarray(c.labels[i]) for i in range(2)]
    fig = draw_parse_rows([np.asarray(c.images[i]) for i in range(2)], {"gt": maps, "A": maps}, ATR18, "bag",
                          titles={"A": ["x", "y"]})  # fmt: skip
    assert len(fig.axes) == 6 and fig.axes[2].get_title() == "A\nx"
    assert len(fig.legends[0].get_texts()) == 2  # hair and bag
    plt.close(fig)


def test_confidence_summary_on_hand_made_rows():
    import pandas as pd

    rows = pd.DataFrame({
        "has_label": [True, True, False, False, True], "knn_with_label": [2, 1, 3, 1, 0],
        "confidence": [0.9, 0.4, 0.5, 0.2, np.nan], "visible": [True, False, True, False, False],
    })  # fmt: skip
    s = confidence_summary(rows)  # the last image has no KNN region of the label: left out
    assert s["images_with_knn_region"] == 4
    assert s["auc"] == pytest.approx(0.75)  # pairs (0.9>0.5, 0.9>0.2, 0.4<0.5, 0.4>0.2): 3 of 4
    assert s["conf_with"] == pytest.approx(0.65) and s["conf_without"] == pytest.approx(0.35)
    assert s["visible_with"] == 50.0 and s["visible_without"] == 50.0
    assert np.isnan(confidence_summary(rows[rows.has_label])["auc"])


def test_a_trunk_model_sweeps_like_it_parses_the_corpus(tmp_path):
    """``fraction_sweep`` takes a trunk M-CNN too (``make_parser`` gives its ``TrunkParser``): the corpus copies
    share the feature crops the trunk reads, so a 100 % copy matches exactly as the corpus itself does, and the
    sweep's 100 % row is ``evaluate_label`` on the corpus."""
    import torch

    from qparse_lite.model.mcnn import build_model
    from qparse_lite.parse.parser import TrunkParser
    from qparse_lite.train.pairs import TargetNorm
    from qparse_lite.train.trunk_cache import trunk_maps

    F = 64
    c = _corpus(ATR18, {16: 6, 2: 10, 4: 8}, n_train=10, n_test=3)
    c.feature_images = np.random.default_rng(1).integers(0, 255, size=(len(c.images), F, F, 3), dtype=np.uint8)
    cf = corpus_with_label_fraction(c, "bag", 1.0)
    assert cf.feature_images is c.feature_images and cf.images_for(F) is c.feature_images
    torch.manual_seed(0)
    m = build_model("trunk-cross54", input_size=F, num_labels=ATR18.num_labels).eval()
    m.set_projection(trunk_maps(c, F, folder=tmp_path / "cache", progress=False).pca)
    kw = {"xi1": 0.0, "erosion": 1, "n_segments": 0, "superpixel_method": None}
    nb = np.tile(np.asarray(c.split("train"))[:4], (len(c.split("test")), 1))
    i = int(c.split("test")[0])
    for a, b in zip(TrunkParser(m, TargetNorm(), c, **kw).match(np.asarray(c.images[i]), nb[0], c.feature_images[i]),
                    TrunkParser(m, TargetNorm(), cf, **kw).match(np.asarray(cf.images[i]), nb[0], cf.feature_images[i]),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    df = fraction_sweep(c, "bag", [0.0, 1.0], nb, 4, model=m, target_norm=TargetNorm(), model_name="A'",
                        parser_kw={"xi1": 0.0, "erosion": 1}, superpixel_method=None)  # fmt: skip
    assert list(df.model) == ["A'", "A'"] and df.label_f1.iloc[0] == 0.0
    full, _ = evaluate_label(TrunkParser(m, TargetNorm(), c, **kw), c, "bag", nb, 4)
    assert df.label_f1.iloc[1] == pytest.approx(full["label_f1"]) and df.avg_f1.iloc[1] == pytest.approx(full["avg_f1"])
