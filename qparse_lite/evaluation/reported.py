"""The paper's reported numbers, shipped with the kit as package data (``qparse_lite/evaluation/reported/*.csv``; docs/paper.md §6).

``table1()``   Table 1 of Liu et al. 2015: accuracy, fg accuracy, avg precision/recall/F1 on ATR.
``table2()``   Table 2: per-label F1 on ATR (17 foreground labels).
``fig5()``     Fig. 5's two points stated in the text (F1 63.58 at K = 9, 56.92 at K = 1); the other
               points are only drawn in the figure and are not reproduced here.
``deepfashion2_segm()``  the DeepFashion2 note's per-subset AP_mask of Match R-CNN.

Every number returned here is *reported*, never measured by the kit.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = ["table1", "table2", "fig5", "deepfashion2_segm", "label_column"]


def _read(name: str) -> pd.DataFrame:
    with resources.files(__package__).joinpath("reported", name).open("r") as f:
        return pd.read_csv(f)


def table1() -> pd.DataFrame:
    """Table 1 as reported (percent)."""
    return _read("table1_reported.csv")


def table2() -> pd.DataFrame:
    """Table 2 as reported (per-label F1, percent); columns use ``_`` (``upper_clothes``)."""
    return _read("table2_reported.csv")


def fig5() -> pd.DataFrame:
    """The points of Fig. 5 (avg F1 against K) that the paper's text states."""
    return pd.DataFrame({"k": [1, 9], "avg_f1": [56.92, 63.58]})


def deepfashion2_segm() -> pd.DataFrame:
    """Match R-CNN's AP_mask per subset as reported in the DeepFashion2 note (fractions)."""
    return _read("deepfashion2_segm_reported.csv")


def label_column(name: str) -> str:
    """Kit label name → the column name of Table 2 (``left-shoe`` → ``left_shoe``)."""
    return name.replace("-", "_")


# -- the paper's own arithmetic ------------------------------------------------------------------------


def reported_f1_arithmetic(table1: pd.DataFrame, table2: pd.DataFrame) -> pd.DataFrame:
    """docs/paper.md §2's check, for every method of the reported tables (percent).

    Columns: ``avg_f1_reported`` (Table 1); ``mean_fg_f1`` = mean of the row's Table 2 foreground F1
    (what ``avg_f1_fg`` would give); ``f1_of_averages`` = 2·P̄·R̄/(P̄ + R̄) from Table 1's average
    precision P̄ and recall R̄; ``implied_background_f1`` = L·avg_f1 − (L−1)·mean_fg_f1, the background
    F1 that makes ``avg_f1`` (the mean over all L labels incl. background) equal the reported value;
    ``consistent`` = the implied background F1 is a valid F1 (0..100).
    """
    fg_cols = [c for c in table2.columns if c != "method"]
    L = len(fg_cols) + 1
    merged = table1.merge(table2, on="method", how="inner", validate="one_to_one")
    p, r = merged["avg_precision"].astype(float), merged["avg_recall"].astype(float)
    mean_fg = merged[fg_cols].astype(float).mean(axis=1)
    implied = L * merged["avg_f1"].astype(float) - (L - 1) * mean_fg
    return pd.DataFrame(
        {
            "method": merged["method"],
            "avg_f1_reported": merged["avg_f1"].astype(float),
            "mean_fg_f1": mean_fg,
            "f1_of_averages": 2 * p * r / (p + r),
            "implied_background_f1": implied,
            "consistent": (implied >= 0) & (implied <= 100),
        }
    )
