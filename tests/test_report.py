"""``qparse_lite.evaluation.report``: this run's tables beside the paper's reported numbers, and ``report.md``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from qparse_lite.evaluation import reported
from qparse_lite.evaluation.report import (
    side_by_side_fig5,
    side_by_side_table1,
    side_by_side_table2,
    write_report,
)

T1 = ["accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"]


def _table1() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"method": "mcnn", "paper_method": "M-CNN", "accuracy": 90.0, "fg_accuracy": 70.0,
             "avg_precision": 60.0, "avg_recall": 61.0, "avg_f1": 60.81},
            {"method": "oracle-knn", "paper_method": float("nan"), "accuracy": 95.0, "fg_accuracy": 80.0,
             "avg_precision": 70.0, "avg_recall": 71.0, "avg_f1": 70.0},
            {"method": "typo", "paper_method": "M-CNN (no such row)", "accuracy": 1.0, "fg_accuracy": 1.0,
             "avg_precision": 1.0, "avg_recall": 1.0, "avg_f1": 1.0},
        ]
    )  # fmt: skip


def test_table1_side_by_side_pairs_each_run_row_with_its_paper_row():
    df = side_by_side_table1(_table1())
    assert list(df["method"]) == ["mcnn", "oracle-knn", "typo"]
    assert list(df["paper row"]) == ["M-CNN", "—", "—"]  # unknown paper rows are not matched by accident
    paper = reported.table1().set_index("method").loc["M-CNN"]
    m = df.iloc[0]
    for c in T1:
        assert m[f"{c} (run)"] == _table1().iloc[0][c]
        assert m[f"{c} (paper)"] == paper[c]
    assert m["avg_f1 (paper)"] == 62.81
    assert m["Δ avg_f1"] == pytest.approx(60.81 - 62.81)  # run minus paper
    for i in (1, 2):
        assert math.isnan(df.iloc[i]["avg_f1 (paper)"]) and math.isnan(df.iloc[i]["Δ avg_f1"])


def test_table2_side_by_side_keeps_only_the_shared_labels():
    ours = pd.DataFrame(
        [{"method": "mcnn", "paper_method": "M-CNN", "hat": 50.0, "left_shoe": 40.0, "outerwear": 30.0},
         {"method": "new", "paper_method": "", "hat": 10.0, "left_shoe": 20.0, "outerwear": 5.0}]
    )  # fmt: skip
    df = side_by_side_table2(ours)
    assert list(df.columns) == ["method", "source", "hat", "left_shoe"]  # outerwear: not an ATR label
    assert list(zip(df["method"], df["source"], strict=True)) == [("mcnn", "run"), ("M-CNN", "paper"),
                                                                 ("new", "run")]  # fmt: skip
    paper = reported.table2().set_index("method").loc["M-CNN"]
    assert df.iloc[1]["hat"] == paper["hat"] == 80.77
    assert df.iloc[1]["left_shoe"] == paper["left_shoe"]
    assert df.iloc[0]["hat"] == 50.0


def test_fig5_side_by_side_has_the_two_stated_points_only():
    df = side_by_side_fig5(pd.DataFrame({"k": [1, 3, 9], "avg_f1": [40.0, 45.0, 50.0], "extra": [0, 0, 0]}))
    assert list(df.columns) == ["k", "avg_f1 (run)", "avg_f1 (paper)"]
    assert df["avg_f1 (paper)"].iloc[0] == 56.92 and df["avg_f1 (paper)"].iloc[2] == 63.58
    assert math.isnan(df["avg_f1 (paper)"].iloc[1])  # K = 3 is only drawn in the paper's figure
    assert list(df["avg_f1 (run)"]) == [40.0, 45.0, 50.0]


def test_write_report_with_every_part(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    _table1().to_csv(res / "table1.csv", index=False)
    pd.DataFrame([{"method": "mcnn", "paper_method": "M-CNN", "hat": 50.0}]).to_csv(res / "table2.csv", index=False)
    pd.DataFrame({"k": [1, 9], "avg_f1": [40.0, 50.0]}).to_csv(res / "fig5.csv", index=False)
    pd.DataFrame([{"ablation": "superpixels", "setting": "off", "avg_f1": 48.0}]).to_csv(
        res / "ablations.csv", index=False
    )
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "05_table1.png").write_bytes(b"\x89PNG")
    rec = {"profile": "quick", "seed": 7, "dataset": "synthetic", "git_commit": "abc123",
           "hardware": {"processor": "x86_64", "cpu_count": 2, "torch": "2.x"}, "wall_time_s": 12.5,
           "finished_at": "2026-01-01T00:00:00"}  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(rec))
    path = write_report(tmp_path, "quick")
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert text.startswith("# qparse-lite reproduction report — profile `quick`")
    assert "| seed | 7 |" in text and "`abc123`" in text and "2 cores, GPU: none" in text
    assert "synthetic paper-doll people" in text  # the quick profile's warning
    for title in ("## Table 1", "## Table 2", "## Fig. 5", "## Ablations", "## Figures"):
        assert title in text
    assert "not produced in this run" not in text and "## New labels" not in text
    assert "62.81" in text and "-2.00" in text  # paper's M-CNN avg F1 and Δ = 60.81 − 62.81
    assert "56.92" in text and "63.58" in text
    assert "![05_table1](figures/05_table1.png)" in text
    assert "| superpixels | off" in text


def test_write_report_says_what_is_missing(tmp_path):
    (tmp_path / "results").mkdir()
    text = write_report(tmp_path, "ccp").read_text()
    for name in ("table1.csv", "table2.csv", "fig5.csv"):
        assert f"_not produced in this run (`results/{name}` missing)_" in text
    assert "coarse label set" in text and "synthetic" not in text  # the ccp note, not the quick one
    assert "| seed |" not in text and "## Figures" not in text  # no run.json, no figures folder


def test_only_yamaguchi_is_a_reported_only_row_of_table1():
    """Notebook 05 §2: every row of the paper's Table 1 has a counterpart in the kit (the Table 1 variants,
    the w/o-ss parse and the KNN label transfer beside PaperDoll) except Yamaguchi et al. [29]."""
    from qparse_lite.model.mcnn import PAPER_NAMES

    t1 = reported.table1().set_index("method")
    kit_rows = {*PAPER_NAMES.values(), "M-CNN (w/o ss)", "PaperDoll [28]"}
    assert kit_rows <= set(t1.index)
    assert sorted(set(t1.index) - kit_rows) == ["Yamaguchi et al. [29]"]
    assert t1.loc["Yamaguchi et al. [29]", "avg_f1"] == 41.80


# -- both M-CNN families in one run (notebook 05: the paper's networks from scratch and on the ImageNet trunk) --
def _two_families() -> pd.DataFrame:
    from qparse_lite.model.mcnn import method_name, paper_row

    rows = [("mcnn", "scratch", 60.0), ("wo-cross", "scratch", 58.0), ("trunk-mcnn", "trunk", 50.0),
            ("trunk-wo-cross", "trunk", 52.0)]  # fmt: skip
    out = [{"method": method_name(v), "paper_method": paper_row(v), "family": fam, "accuracy": 90.0,
            "fg_accuracy": 70.0, "avg_precision": f1, "avg_recall": f1, "avg_f1": f1, "hat": f1 / 2}
           for v, fam, f1 in rows]  # fmt: skip
    out.append({"method": "KNN label transfer (PaperDoll-like)", "paper_method": "PaperDoll [28]", "family": "",
                "accuracy": 80.0, "fg_accuracy": 50.0, "avg_precision": 40.0, "avg_recall": 40.0, "avg_f1": 40.0,
                "hat": 10.0})  # fmt: skip
    return pd.DataFrame(out)


def test_table1_puts_each_family_beside_the_same_paper_row():
    df = side_by_side_table1(_two_families())
    assert list(df.columns[:3]) == ["method", "family", "paper row"]
    assert list(df["method"]) == ["M-CNN", "M-CNN (w/o cross)", "M-CNN, ImageNet trunk",
                                  "M-CNN (w/o cross), ImageNet trunk", "KNN label transfer (PaperDoll-like)"]  # fmt: skip
    assert list(df["paper row"]) == ["M-CNN", "M-CNN (w/o cross)", "M-CNN", "M-CNN (w/o cross)", "PaperDoll [28]"]
    assert list(df["family"]) == ["from scratch (as published)"] * 2 + ["frozen ImageNet trunk"] * 2 + [""]
    paper = reported.table1().set_index("method").avg_f1
    assert df["avg_f1 (paper)"].iloc[2] == paper["M-CNN"] == df["avg_f1 (paper)"].iloc[0]
    assert df["Δ avg_f1"].iloc[2] == pytest.approx(50.0 - paper["M-CNN"])
    assert df["Δ avg_f1"].iloc[3] == pytest.approx(52.0 - paper["M-CNN (w/o cross)"])


def test_table2_shows_a_paper_row_once_under_its_rows_of_both_families():
    df = side_by_side_table2(_two_families())
    assert list(df.columns) == ["method", "family", "source", "hat"]
    assert list(zip(df["method"], df["source"], strict=True)) == [
        ("M-CNN", "run"), ("M-CNN, ImageNet trunk", "run"), ("M-CNN", "paper"),
        ("M-CNN (w/o cross)", "run"), ("M-CNN (w/o cross), ImageNet trunk", "run"), ("M-CNN (w/o cross)", "paper"),
        ("KNN label transfer (PaperDoll-like)", "run"), ("PaperDoll [28]", "paper"),
    ]  # fmt: skip
    assert list(df["hat"].iloc[:2]) == [30.0, 25.0]
    assert df["hat"].iloc[2] == reported.table2().set_index("method").loc["M-CNN", "hat"]


def test_fig5_with_the_trunk_familys_sweep():
    ours = pd.DataFrame({"k": [1, 3, 9], "avg_f1": [40.0, 45.0, 50.0]})
    df = side_by_side_fig5(ours, pd.DataFrame({"k": [1, 3, 9], "avg_f1": [30.0, 35.0, 38.0]}))
    assert list(df.columns) == ["k", "avg_f1 (run)", "avg_f1 (trunk run)", "avg_f1 (paper)"]
    assert list(df["avg_f1 (trunk run)"]) == [30.0, 35.0, 38.0] and df["avg_f1 (paper)"].iloc[2] == 63.58


def test_write_report_renders_both_families(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    t = _two_families()
    t.drop(columns="hat").to_csv(res / "table1.csv", index=False)  # as ws.save_table writes them
    t[["method", "paper_method", "family", "hat"]].to_csv(res / "table2.csv", index=False)
    pd.DataFrame({"k": [1, 9], "avg_f1": [40.0, 50.0]}).to_csv(res / "fig5.csv", index=False)
    pd.DataFrame({"k": [1, 9], "avg_f1": [31.0, 37.0]}).to_csv(res / "fig5_trunk.csv", index=False)
    text = write_report(tmp_path, "quick").read_text()
    table1 = text.split("## Table 1")[1].split("## Table 2")[0]
    assert "| method" in table1 and "| family" in table1 and "frozen ImageNet trunk" in table1
    line = next(ln for ln in table1.splitlines() if ln.startswith("| M-CNN, ImageNet trunk "))
    assert "| frozen ImageNet trunk" in line and "| M-CNN " in line and "62.81" in line and "-12.81" in line
    assert text.count("| M-CNN (w/o cross), ImageNet trunk ") == 2  # Table 1 and Table 2
    assert "avg_f1 (trunk run)" in text and "37.00" in text
    lt = next(ln for ln in table1.splitlines() if ln.startswith("| KNN label transfer"))
    assert "nan" not in lt.split("|")[2]  # a baseline's empty family is blank, not "nan"
