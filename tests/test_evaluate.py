"""The evaluation harness, baselines and ``qparse evaluate`` (Table 1/2 rows, per-image maps, Fig. 5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qparse_lite.baselines.nonparametric import LabelTransfer, mean_label_map, transfer_votes
from qparse_lite.cli import main
from qparse_lite.evaluation.evaluate import FIG5_KS, evaluate_parser, k_sweep, tables
from qparse_lite.labels import ATR18


def test_mean_label_map_is_the_pixelwise_majority():
    labels = np.array([[[0, 1], [2, 2]], [[0, 1], [1, 2]], [[3, 3], [1, 0]]], np.uint8)
    assert mean_label_map(labels, 4).tolist() == [[0, 1], [1, 2]]


def test_transfer_votes_and_label_transfer():
    nb = np.array([[[1, 1], [0, 2]], [[1, 0], [0, 2]]], np.uint8)
    v = transfer_votes(nb, 3)
    assert v.shape == (3, 2, 2)
    np.testing.assert_allclose(v.sum(0), 1.0)
    assert v[1, 0, 1] == pytest.approx(0.5) and v[2, 1, 1] == pytest.approx(1.0)
    # with its own label map as the only neighbour and no smoothing, transfer reproduces it exactly
    gt = np.random.default_rng(0).integers(0, 5, (9, 9)).astype(np.uint8)
    lt = LabelTransfer(5, superpixel_method=None)
    assert (lt(np.zeros((9, 9, 3), np.uint8), gt[None]) == gt).all()


def _old_label_transfer(image, nb, num_labels, n_segments):
    """The transfer as it was before its knobs: votes weighted 1/(1+k), argmax, SLIC majority (None: no SLIC)."""
    from qparse_lite.parse.postprocess import superpixel_vote, superpixels

    pred = transfer_votes(nb, num_labels, 1.0 / (1.0 + np.arange(nb.shape[0]))).argmax(0).astype(np.uint8)
    if n_segments is None:
        return pred
    return superpixel_vote(pred, superpixels(image, method="slic", n_segments=n_segments), num_labels)


def test_label_transfer_defaults_reproduce_the_untuned_parse_bit_for_bit():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 24, 3)).astype(np.uint8)
    nb = rng.integers(0, 6, (7, 24, 24)).astype(np.uint8)
    for sp, ns in ((None, None), ("slic", 40)):
        want = _old_label_transfer(image, nb, 6, ns)
        got = LabelTransfer(6, sp, ns or 200)(image, nb)
        assert got.dtype == np.uint8 and np.array_equal(got, want), sp
    # the example tells the weightings apart: equal votes parse it differently
    assert not np.array_equal(LabelTransfer(6, None, rank_power=0.0)(image, nb), _old_label_transfer(image, nb, 6, None))
    # and the knobs at their defaults are a no-op on the decision, exactly
    v = LabelTransfer(6).votes(nb)
    assert np.array_equal(LabelTransfer(6, bg_weight=1.0, min_share=0.0).decide(v), v.argmax(0))


def test_rank_power_zero_gives_equal_votes_and_one_the_1_over_1_plus_k_weights():
    nb = np.array([1, 2, 2], np.uint8).reshape(3, 1, 1)  # the nearest says 1, the two others 2
    eq = LabelTransfer(3, None, rank_power=0.0)
    np.testing.assert_allclose(eq.votes(nb), transfer_votes(nb, 3))
    np.testing.assert_allclose(eq.votes(nb)[:, 0, 0], [0.0, 1 / 3, 2 / 3], rtol=1e-6)
    assert eq(np.zeros((1, 1, 3), np.uint8), nb)[0, 0] == 2  # equal votes: the majority
    w = np.array([1.0, 1 / 2, 1 / 3])
    np.testing.assert_allclose(LabelTransfer(3, None).votes(nb)[:, 0, 0], [0.0, w[0] / w.sum(), w[1:].sum() / w.sum()],
                               rtol=1e-6)  # fmt: skip
    assert LabelTransfer(3, None)(np.zeros((1, 1, 3), np.uint8), nb)[0, 0] == 1  # γ = 1: the nearest outweighs
    with pytest.raises(ValueError, match="rank_power"):
        LabelTransfer(3, rank_power=-1.0)


def test_bg_weight_below_one_turns_background_pixels_into_foreground_and_one_turns_none():
    # three pixels, five neighbours (equal votes): V_0 = 0.6 / 1.0 / 0.4 against label 3
    nb = np.array([[0, 0, 0, 3, 3], [0, 0, 0, 0, 0], [3, 3, 3, 0, 0]], np.uint8).T.reshape(5, 1, 3)
    image = np.zeros((1, 3, 3), np.uint8)
    base = LabelTransfer(4, None, rank_power=0.0)(image, nb)
    assert base.tolist() == [[0, 0, 3]]
    assert np.array_equal(LabelTransfer(4, None, rank_power=0.0, bg_weight=1.0)(image, nb), base)
    low = LabelTransfer(4, None, rank_power=0.0, bg_weight=0.5)(image, nb)
    assert low.tolist() == [[3, 0, 3]]  # 0.5 × 0.6 < 0.4: foreground; a pixel no neighbour calls foreground stays
    assert ((base > 0) <= (low > 0)).all()  # no foreground pixel turned background
    assert (LabelTransfer(4, None, rank_power=0.0, bg_weight=2.0)(image, nb) == 0).all()  # β > 1: the other way


def test_min_share_drops_a_rare_label_and_never_background():
    nb = np.zeros((3, 10, 10), np.uint8)
    nb[:, :, :5] = 3  # label 3 on half of the image: mean vote 0.5
    nb[:, 0, 9] = 4  # label 4 on one pixel: mean vote 0.01
    image = np.zeros((10, 10, 3), np.uint8)
    kept = LabelTransfer(5, None, min_share=0.005)(image, nb)
    assert kept[0, 9] == 4 and (kept[:, :5] == 3).all()
    dropped = LabelTransfer(5, None, min_share=0.05)(image, nb)
    assert dropped[0, 9] == 0 and (dropped[:, :5] == 3).all()  # the rare label is gone, the common one stays
    assert np.array_equal(np.delete(dropped, 9, 1), np.delete(kept, 9, 1))
    # background's share (here 0.1) is never dropped: its pixels stay background
    nb2 = np.full((3, 10, 10), 3, np.uint8)
    nb2[:, 0, :] = 0
    out = LabelTransfer(5, None, min_share=0.2)(image, nb2)
    assert (out[0] == 0).all() and (out[1:] == 3).all()


def test_coordinate_ascent_goes_in_grid_order_and_ties_keep_the_first_value():
    from qparse_lite.evaluation.evaluate import coordinate_ascent

    grid = {"a": [1, 0, 2], "b": [0, 5]}
    seen = []

    def score(s):
        seen.append(dict(s))
        return {"avg_f1": -((s["a"] - 2) ** 2) + (1.0 if s["b"] == 5 and s["a"] == 2 else 0.0)}

    chosen, table = coordinate_ascent(score, {"a": 1, "b": 0}, grid)
    assert chosen == {"a": 2, "b": 5}
    assert seen == [{"a": 1, "b": 0}, {"a": 0, "b": 0}, {"a": 2, "b": 0}, {"a": 2, "b": 0}, {"a": 2, "b": 5}]
    assert table.parameter.tolist() == ["a"] * 3 + ["b"] * 2 and table.value.tolist() == [1, 0, 2, 0, 5]
    flat, _ = coordinate_ascent(lambda s: {"avg_f1": 1.0}, {"a": 2, "b": 5}, grid)
    assert flat == {"a": 1, "b": 0}  # ties: the first of each list (the default)


def test_harness_scores_a_perfect_and_a_constant_parser(tiny_run):
    corpus, _ = tiny_run
    idx = corpus.split("test")
    perfect = evaluate_parser(lambda i: np.asarray(corpus.labels[i]), corpus, idx, corpus.label_set)
    assert perfect["accuracy"] == pytest.approx(100.0) and perfect["avg_f1"] == pytest.approx(100.0)
    bg = evaluate_parser(lambda i: np.zeros_like(corpus.labels[i]), corpus, idx, corpus.label_set)
    assert bg["fg_accuracy"] == pytest.approx(0.0) and bg["avg_f1"] < 10
    t1, t2 = tables([("perfect", "M-CNN", perfect)], corpus.label_set)
    assert list(t1.columns[:2]) == ["method", "paper_method"] and t1.avg_f1[0] == pytest.approx(100)
    assert "upper_clothes" in t2.columns  # the paper's CSV spelling


def test_the_w_o_ss_paper_row_is_the_callers_choice_not_a_tuned_zero(tiny_run, tmp_path):
    """A choice of 0 segments (values chosen on validation) is the M-CNN row; only superpixels switched off by
    the caller (the ablation, ``--superpixels none``) stands beside the paper's "M-CNN (w/o ss)"."""
    from qparse_lite.evaluation.evaluate import evaluate

    corpus, run = tiny_run
    kw = dict(method="mcnn", model=run, k=3, limit=2, full_resolution=False, progress=False)
    chosen = evaluate(corpus, tmp_path / "a", n_segments=0, **kw)
    off = evaluate(corpus, tmp_path / "b", superpixel_method=None, **kw)
    assert chosen["run"]["parser"]["superpixels"] is None and off["run"]["parser"]["superpixels"] is None
    assert (chosen["paper_method"], off["paper_method"]) == ("M-CNN", "M-CNN (w/o ss)")
    assert chosen["avg_f1"] == off["avg_f1"]  # the same parse: only the row it stands beside differs


def test_k_sweep_columns(tiny_run):
    corpus, _ = tiny_run
    idx = corpus.split("test")[:3]
    df = k_sweep(lambda i, k: np.asarray(corpus.labels[i]) * (k > 1), corpus, idx, corpus.label_set, (1, 3))
    assert df.k.tolist() == [1, 3] and df.avg_f1[1] == pytest.approx(100) and df.avg_f1[0] < df.avg_f1[1]


def test_evaluate_cli_mcnn_tables_maps_fig5_and_score_agree(tiny_run, tmp_path, capsys):
    corpus, run = tiny_run
    out = tmp_path / "ev"
    rc = main(["evaluate", "--model", str(run), "--corpus", str(corpus.path), "--split", "test", "--k", "3",
               "--out", str(out), "--fig5", "--limit", "4", "--xi1", "0.3", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    t1 = pd.read_csv(out / "table1.csv")
    assert t1.method[0] == "M-CNN" and t1.paper_method[0] == "M-CNN"
    assert set(pd.read_csv(out / "table2.csv").columns) >= {"hat", "left_shoe"}
    assert (out / "table1.md").is_file() and (out / "fig5.png").is_file()
    fig5 = pd.read_csv(out / "fig5.csv")
    assert fig5.k.tolist() == list(FIG5_KS)
    assert len(list((out / "pred").glob("*.png"))) == 4 == len(list((out / "gt").glob("*.png")))
    sc = json.loads((out / "scores.json").read_text())
    assert sc["run"]["git_commit"] and sc["run"]["images"] == 4 and sc["run"]["parser"]["xi1"] == 0.3
    # fig5 at K = 3 is the same evaluation as the table at K = 3
    assert fig5.set_index("k").avg_f1[3] == pytest.approx(t1.avg_f1[0], abs=0.01)
    capsys.readouterr()
    assert main(["score", "--pred", str(out / "pred"), "--gt", str(out / "gt"), "--labels", "atr18", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["avg_f1"] == pytest.approx(sc["avg_f1"], abs=1e-6)
    assert scored["accuracy"] == pytest.approx(sc["accuracy"], abs=1e-6)


@pytest.mark.parametrize("method", ["label-transfer", "mean-label-map"])
def test_evaluate_cli_baselines(tiny_run, tmp_path, method):
    corpus, _ = tiny_run
    out = tmp_path / method
    assert main(["evaluate", "--method", method, "--corpus", str(corpus.path), "--k", "3", "--out", str(out)]) == 0
    t1 = pd.read_csv(out / "table1.csv")
    assert 0 < t1.avg_f1[0] < 100
    assert str(t1.paper_method.astype(object).fillna("")[0]) == ("PaperDoll [28]" if method == "label-transfer" else "")


def test_evaluate_cli_errors(tiny_run, tmp_path, capsys):
    corpus, run = tiny_run
    assert main(["evaluate", "--corpus", str(corpus.path), "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--corpus", str(corpus.path),
                 "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "--method", "label-transfer", "--corpus", str(corpus.path), "--fig5",
                 "--out", str(tmp_path / "z")]) == 2  # fmt: skip
    assert "--fig5" in capsys.readouterr().err
    assert main(["evaluate", "--method", "mean-label-map", "--corpus", str(corpus.path), "--lt-bg-weight", "0.5",
                 "--out", str(tmp_path / "w")]) == 2  # fmt: skip
    assert "--lt-bg-weight" in capsys.readouterr().err and not (tmp_path / "w" / "scores.json").exists()
    # the M-CNN's knobs given to a baseline are refused too, before any parse (not silently ignored)
    assert main(["evaluate", "--method", "label-transfer", "--corpus", str(corpus.path), "--xi1", "0.3",
                 "--displacement-scale", "0.5", "--out", str(tmp_path / "v")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "xi1 (--xi1), displacement_scale (--displacement-scale)" in err and "--method mcnn" in err
    assert not (tmp_path / "v" / "scores.json").exists()
    assert ATR18.name == corpus.label_set.name


def test_split_neighbours_cache_is_keyed_by_everything_that_changes_it(tmp_path, monkeypatch):
    """Changed features, K or extractor settings recompute; the same settings reuse the file."""
    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import Corpus, prepare_corpus
    from qparse_lite.retrieval import search as retrieval
    from qparse_lite.retrieval.search import split_neighbours

    corpus = Corpus.load(prepare_corpus(get_dataset("synthetic", n=40, size=64, seed=2), 32, tmp_path / "c",
                                        progress=False))  # fmt: skip
    calls = []
    real = retrieval.corpus_knn
    monkeypatch.setattr(retrieval, "corpus_knn", lambda *a, **k: calls.append(a[3].name) or real(*a, **k))
    a = split_neighbours(corpus, "test", 3, "hog-color", tmp_path / "knn", name="knn_test.npz")
    again = split_neighbours(corpus, "test", 3, "hog-color", tmp_path / "knn", name="knn_test.npz")
    assert calls == ["hog-color"] and np.array_equal(a, again)  # reused
    k4 = split_neighbours(corpus, "test", 4, "hog-color", tmp_path / "knn", name="knn_test.npz")
    assert k4.shape[1] == 4 and calls == ["hog-color"] * 2  # another K: recomputed
    orc = split_neighbours(corpus, "test", 4, "oracle", tmp_path / "knn", name="knn_test.npz")
    assert calls[-1] == "oracle" and orc.shape == k4.shape  # other features: recomputed
    # the same name and K but another extractor configuration (here: an edited header) is stale too
    res = retrieval.KNNResult.load(tmp_path / "knn" / "knn_test.npz")
    res.header["extractor"] = {**res.header["extractor"], "grid": 4}
    res.save(tmp_path / "knn" / "knn_test.npz")
    split_neighbours(corpus, "test", 4, "oracle", tmp_path / "knn", name="knn_test.npz")
    assert len(calls) == 4


def test_grid_edges_names_choices_at_an_end_of_their_grid():
    from qparse_lite.evaluation.evaluate import grid_edges

    grid = {"xi1": [0.8, 0.5, 0.6], "xi2": [0.5, 0.0, 0.3], "displacement_scale": [1.0, 0.0, 0.5],
            "n_segments": [200, 50, 400], "superpixel_method": ["slic", None]}  # fmt: skip
    inside = {"xi1": 0.6, "xi2": 0.3, "displacement_scale": 0.5, "n_segments": 200, "superpixel_method": None}
    assert grid_edges(inside, grid) == []
    # ends of the grid are named; an end that is the parameter's own bound (ξ2 = 0, scale 0) is not
    ends = {"xi1": 0.5, "xi2": 0.0, "displacement_scale": 1.0, "n_segments": 400, "superpixel_method": "slic"}
    assert grid_edges(ends, grid) == ["xi1", "displacement_scale", "n_segments"]
