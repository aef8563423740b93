"""Metrics of the paper (qparse_lite.metrics): confusion matrix, scores, F1 definitions, the paper's arithmetic."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.evaluation import reported
from qparse_lite.evaluation.reported import reported_f1_arithmetic
from qparse_lite.evaluation.tables import json_safe, markdown_table, write_table
from qparse_lite.labels import ATR18, LabelSet
from qparse_lite.metrics import F1_DEFINITIONS, PAPER_F1, ConfusionMatrix, scores, table1_row, table2_row

DOCS_PAPER = Path(__file__).resolve().parents[1] / "docs" / "paper.md"
TOY = LabelSet("toy", ("background", "a", "b", "c"))


# -- confusion matrix ----------------------------------------------------------------------------------


def test_confusion_matrix_rows_are_ground_truth_and_accumulate():
    cm = ConfusionMatrix(3)
    gt = np.array([[0, 0, 1], [2, 2, 1]])
    pred = np.array([[0, 1, 1], [2, 0, 1]])
    cm.update(pred, gt)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_array_equal(cm.matrix, expected)
    cm.update(pred, gt)
    np.testing.assert_array_equal(cm.matrix, 2 * expected)
    assert cm.images == 2 and cm.pixels == 12
    both = cm + ConfusionMatrix.from_matrix(expected, images=1)
    np.testing.assert_array_equal(both.matrix, 3 * expected)
    assert both.images == 3


def test_confusion_matrix_bad_inputs():
    cm = ConfusionMatrix(3)
    with pytest.raises(QparseError, match="shape"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), source="x.png")
    with pytest.raises(QparseError, match=r"x\.png.*\[3, 7\]"):
        cm.update(np.array([[0, 3, 7]]), np.zeros((1, 3), int), source="x.png")
    with pytest.raises(QparseError, match="ground truth"):
        cm.update(np.zeros((1, 2), int), np.array([[-1, 0]]))
    with pytest.raises(ValueError):
        ConfusionMatrix(1)
    with pytest.raises(ValueError):
        ConfusionMatrix.from_matrix(np.zeros((2, 3)))
    with pytest.raises(QparseError, match="label set"):
        scores(ConfusionMatrix(3), TOY)


# -- scores on a hand-made matrix ----------------------------------------------------------------------


def _hand_matrix() -> np.ndarray:
    # rows = gt, cols = pred; labels bg, a, b, c. Label c occurs nowhere.
    return np.array(
        [
            [50, 5, 5, 0],  # bg: 60 px, 50 right
            [10, 20, 10, 0],  # a: 40 px, 20 right, 10 → b (fg confusion), 10 → bg
            [0, 0, 0, 0],  # b: never in ground truth, but predicted 15 times
            [0, 0, 0, 0],  # c: absent from both
        ]
    )


def test_scores_hand_computed():
    sc = scores(ConfusionMatrix.from_matrix(_hand_matrix()), TOY)
    assert sc["accuracy"] == pytest.approx(100 * 70 / 100)
    assert sc["fg_accuracy"] == pytest.approx(100 * 20 / 40)  # a→b counts as wrong
    pl = sc["per_label"]
    assert pl["background"]["precision"] == pytest.approx(100 * 50 / 60)
    assert pl["background"]["recall"] == pytest.approx(100 * 50 / 60)
    assert pl["a"]["precision"] == pytest.approx(100 * 20 / 25)
    assert pl["a"]["recall"] == pytest.approx(100 * 20 / 40)
    f1_a = 2 * 0.8 * 0.5 / 1.3
    assert pl["a"]["f1"] == pytest.approx(100 * f1_a)
    # predicted but never in ground truth: precision 0, recall 0/0 → 0, F1 0 (scored)
    assert pl["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "gt_pixels": 0, "pred_pixels": 15}
    # absent from both: NaN and excluded
    assert all(math.isnan(pl["c"][k]) for k in ("precision", "recall", "f1"))
    assert sc["scored_labels"] == ["background", "a", "b"]
    f1_bg = 50 / 60
    assert sc["avg_f1"] == pytest.approx(100 * (f1_bg + f1_a + 0) / 3)
    assert sc["avg_f1_fg"] == pytest.approx(100 * (f1_a + 0) / 2)
    avg_p = (50 / 60 + 0.8 + 0) / 3
    avg_r = (50 / 60 + 0.5 + 0) / 3
    assert sc["avg_precision"] == pytest.approx(100 * avg_p)
    assert sc["avg_recall"] == pytest.approx(100 * avg_r)
    assert sc["avg_precision_fg"] == pytest.approx(100 * 0.4)
    assert sc["avg_recall_fg"] == pytest.approx(100 * 0.25)
    assert sc["f1_of_averages"] == pytest.approx(100 * 2 * avg_p * avg_r / (avg_p + avg_r))
    assert sc["per_label_f1"]["a"] == pl["a"]["f1"]
    assert sc["pixels"] == 100 and sc["paper_f1"] == PAPER_F1 == "avg_f1"


def test_scores_missed_label_counts_as_zero():
    m = np.array([[10, 0], [5, 0]])  # label 1 in ground truth, never predicted
    sc = scores(m, LabelSet("two", ("background", "x")))
    assert sc["per_label"]["x"]["precision"] == 0 and sc["per_label"]["x"]["recall"] == 0
    assert sc["avg_f1"] == pytest.approx(100 * (2 * 10 / (10 + 15) + 0) / 2)
    assert sc["fg_accuracy"] == 0


def test_scores_without_foreground_is_nan_not_error():
    sc = scores(np.array([[7, 0], [0, 0]]), LabelSet("two", ("background", "x")))
    assert sc["accuracy"] == 100 and math.isnan(sc["fg_accuracy"]) and math.isnan(sc["avg_f1_fg"])
    assert sc["avg_f1"] == 100


def test_perfect_prediction_is_100_everywhere():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 18, (20, 20))
    sc = scores(ConfusionMatrix(18).update(gt, gt), ATR18)
    for k in (
        "accuracy",
        "fg_accuracy",
        "avg_precision",
        "avg_recall",
        "avg_f1",
        "avg_f1_fg",
        "f1_of_averages",
    ):
        assert sc[k] == pytest.approx(100)


@pytest.mark.parametrize("seed", range(5))
def test_f1_definitions_against_plain_formulas_and_mean_bound(seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, (30, 30))
    pred = np.where(rng.random(gt.shape) < 0.4, rng.integers(0, 4, gt.shape), gt)
    sc = scores(ConfusionMatrix(4).update(pred, gt), TOY)
    f1 = []
    for l in range(4):
        tp = np.sum((pred == l) & (gt == l))
        fp = np.sum((pred == l) & (gt != l))
        fn = np.sum((pred != l) & (gt == l))
        f1.append(2 * tp / (2 * tp + fp + fn))
    assert sc["avg_f1"] == pytest.approx(100 * np.mean(f1))
    assert sc["avg_f1_fg"] == pytest.approx(100 * np.mean(f1[1:]))
    p, r = sc["avg_precision"], sc["avg_recall"]
    assert sc["f1_of_averages"] == pytest.approx(2 * p * r / (p + r))
    # mean of F1_l ≤ mean of (P_l + R_l)/2 = (P̄ + R̄)/2 — the bound every Table 1 row must satisfy too
    assert sc["avg_f1"] <= (p + r) / 2 + 1e-9
    assert len({round(sc[k], 6) for k in F1_DEFINITIONS}) == 3  # three different numbers


# -- the paper's arithmetic (docs/paper.md §2) --------------------------------------------------------------


def _reported() -> tuple[pd.DataFrame, pd.DataFrame]:
    return reported.table1(), reported.table2()


def _docs_table(name: str) -> pd.DataFrame:
    """The Markdown table after ``<!-- name -->`` in docs/paper.md §6, parsed like the CSV."""
    text = DOCS_PAPER.read_text()
    lines = text[text.index(f"<!-- {name} -->"):].splitlines()[1:]
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[: next(
        i for i, ln in enumerate(lines) if not ln.startswith("|"))]]  # fmt: skip
    header, body = rows[0], rows[2:]
    csv = "\n".join(",".join(f'"{c}"' for c in r) for r in [header, *body])
    return pd.read_csv(io.StringIO(csv))


def test_packaged_reported_tables_equal_docs_paper():
    """The reported tables travel twice with the kit: package data (read by the code) and docs/paper.md §6
    (read by people). Both are the paper's numbers; they must agree to the last digit."""
    t1, t2 = _reported()
    pd.testing.assert_frame_equal(t1, _docs_table("table1"))
    pd.testing.assert_frame_equal(t2, _docs_table("table2"))
    pd.testing.assert_frame_equal(reported.deepfashion2_segm(), _docs_table("deepfashion2_segm"))
    assert len(t1) == len(t2) == 10 and list(t2.columns[1:]) == [
        reported.label_column(n) for n in ATR18.names[1:]
    ]


def test_notes_section2_arithmetic_from_the_csvs():
    t1, t2 = _reported()
    row1 = t1.set_index("method").loc["M-CNN"]
    fg = t2.set_index("method").loc["M-CNN"].astype(float)
    assert len(fg) == 17
    mean_fg = fg.mean()
    assert round(mean_fg, 2) == 61.13  # avg_f1_fg ≠ Table 1's 62.81
    p, r = row1["avg_precision"], row1["avg_recall"]
    hm = 2 * p * r / (p + r)
    assert round(hm, 2) == 64.86  # f1_of_averages ≠ 62.81
    assert row1["avg_f1"] == 62.81
    implied_bg = 18 * 62.81 - 17 * mean_fg
    assert implied_bg == pytest.approx(91.4, abs=0.05)  # avg_f1 over 18 labels with bg ≈ 91.4: plausible
    # the same through the module's helper, for every row
    ar = reported_f1_arithmetic(t1, t2).set_index("method")
    assert ar.loc["M-CNN", "mean_fg_f1"] == pytest.approx(mean_fg)
    assert ar.loc["M-CNN", "f1_of_averages"] == pytest.approx(hm)
    assert ar.loc["M-CNN", "implied_background_f1"] == pytest.approx(implied_bg)
    assert len(ar) == len(t1) == 10


def test_reported_rows_consistency():
    ar = reported_f1_arithmetic(*_reported()).set_index("method")
    t1 = reported.table1().set_index("method")
    # neither alternative definition reproduces any row's Table 1 F1 (all differ by > 0.5 points) ...
    assert ((ar["avg_f1_reported"] - ar["mean_fg_f1"]).abs() > 0.5).all()
    assert ((ar["avg_f1_reported"] - ar["f1_of_averages"]).abs() > 0.5).all()
    # ... while a mean over 18 labels with background gives a valid background F1 for all rows but one:
    assert not ar.loc["Siamese [2]", "consistent"]  # implied background F1 > 100: a paper inconsistency
    assert ar.loc["Siamese [2]", "implied_background_f1"] > 100
    assert ar.drop("Siamese [2]")["consistent"].all()
    assert ar.drop("Siamese [2]")["implied_background_f1"].between(75, 100).all()
    # and every row satisfies mean F1 ≤ (P̄ + R̄)/2 (F1 averaged over the same labels as P and R)
    assert (t1["avg_f1"] <= (t1["avg_precision"] + t1["avg_recall"]) / 2 + 1e-9).all()


# -- table rows and files ------------------------------------------------------------------------------


def test_table_rows_use_the_reported_csv_columns():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 18, (16, 16))
    sc = scores(ConfusionMatrix(18).update(rng.integers(0, 18, gt.shape), gt), ATR18)
    r1, r2 = table1_row(sc, "mine"), table2_row(sc, "mine")
    t1, t2 = reported.table1(), reported.table2()
    assert list(r1) == list(t1.columns)
    assert list(r2) == list(t2.columns)
    assert r1["method"] == r2["method"] == "mine"
    assert r1["avg_f1"] == sc["avg_f1"]
    assert r2["left_shoe"] == sc["per_label_f1"]["left-shoe"]
    # a row appends cleanly to the reported table
    both = pd.concat([t1, pd.DataFrame([r1])], ignore_index=True)
    assert both.shape == (len(t1) + 1, len(t1.columns))


def test_write_table_csv_and_markdown(tmp_path):
    rows = [{"method": "x", "avg_f1": 61.234, "hat": float("nan")}]
    csv, md = write_table(rows, tmp_path / "out", "table1")
    assert csv.read_text().splitlines() == ["method,avg_f1,hat", "x,61.23,"]
    text = md.read_text()
    assert "| method" in text and "61.23" in text and "n/a" in text
    assert markdown_table(pd.DataFrame(rows)).count("\n") == 2  # header, rule, one row


def test_json_safe_replaces_nan():
    out = json_safe({"a": float("nan"), "b": [np.float32(1.5), np.inf], "c": {"d": np.int64(3)}})
    assert out == {"a": None, "b": [1.5, None], "c": {"d": 3}}
