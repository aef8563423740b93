"""``report.md``: this run's Table 1, Table 2 and Fig. 5 beside the paper's reported numbers.

The notebooks write their results into ``<run>/results/`` with these names (the contract):

- ``table1.csv``: ``method, paper_method, accuracy, fg_accuracy, avg_precision, avg_recall, avg_f1``
  (``paper_method`` is the row name in the paper's Table 1, empty when the paper has no such row);
- ``table2.csv``: ``method, paper_method`` and one column of F1 per foreground label (``_`` for ``-``);
- ``fig5.csv``: ``k, avg_f1``;
- ``ablations.csv`` (optional): ``ablation, setting, avg_f1, ...``;
- ``new_labels.csv`` (optional, notebook 06).

Differences are *this run minus the paper*. The quick profile runs on synthetic data, so its numbers
test the pipeline, not the paper's claims; the ccp profile uses CCP's coarse labels, whose label set
differs from ATR's (only the shared labels are compared in Table 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import reported
from .io import atomic_write_text

__all__ = ["side_by_side_table1", "side_by_side_table2", "side_by_side_fig5", "write_report"]

T1_COLS = ["accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"]


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".2f")


def side_by_side_table1(ours: pd.DataFrame) -> pd.DataFrame:
    """Table 1: for each metric, this run, the paper, and the difference."""
    paper = reported.table1().set_index("method")
    rows = []
    for _, r in ours.iterrows():
        pm = r.get("paper_method")
        pm = pm if isinstance(pm, str) and pm in paper.index else None
        row: dict[str, object] = {"method": r["method"], "paper row": pm or "—"}
        for c in T1_COLS:
            row[f"{c} (run)"] = r[c]
            row[f"{c} (paper)"] = paper.loc[pm, c] if pm else float("nan")
        row["Δ avg_f1"] = r["avg_f1"] - row["avg_f1 (paper)"] if pm else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side_table2(ours: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per-label F1, a 'run' row and a 'paper' row per method, on the labels both share."""
    paper = reported.table2().set_index("method")
    labels = [c for c in ours.columns if c in paper.columns]
    rows = []
    for _, r in ours.iterrows():
        pm = r.get("paper_method")
        rows.append({"method": r["method"], "source": "run", **{c: r[c] for c in labels}})
        if isinstance(pm, str) and pm in paper.index:
            rows.append({"method": pm, "source": "paper", **{c: paper.loc[pm, c] for c in labels}})
    return pd.DataFrame(rows, columns=["method", "source", *labels])


def side_by_side_fig5(ours: pd.DataFrame) -> pd.DataFrame:
    """Fig. 5: avg F1 against K, with the two points the paper's text states."""
    paper = reported.fig5().set_index("k")["avg_f1"]
    df = ours[["k", "avg_f1"]].rename(columns={"avg_f1": "avg_f1 (run)"}).copy()
    df["avg_f1 (paper)"] = [paper.get(k, float("nan")) for k in df["k"]]
    return df


def write_report(run_dir: str | Path, profile: str) -> Path:
    """Assemble ``<run>/report.md`` from ``<run>/results`` and ``run.json``; return its path."""
    run_dir = Path(run_dir)
    res = run_dir / "results"
    parts = [f"# qparse-lite reproduction report — profile `{profile}`\n"]
    rec_path = run_dir / "run.json"
    if rec_path.exists():
        rec = json.loads(rec_path.read_text())
        hw = rec.get("hardware", {})
        parts.append(
            "| run | value |\n|---|---|\n"
            f"| profile | {rec.get('profile')} |\n| seed | {rec.get('seed')} |\n"
            f"| dataset | {rec.get('dataset')} |\n| git commit | `{rec.get('git_commit')}` |\n"
            f"| hardware | {hw.get('processor')}, {hw.get('cpu_count')} cores, GPU: {hw.get('gpu', 'none')} |\n"
            f"| torch | {hw.get('torch')} |\n| wall time (notebooks) | {rec.get('wall_time_s')} s |\n"
            f"| finished | {rec.get('finished_at')} |\n"
        )
    if profile == "quick":
        parts.append(
            "> The quick profile runs on the kit's synthetic paper-doll people (ATR-18 labels, small images, "
            "a few minutes of CPU training). Its numbers check the pipeline end to end; they are not "
            "expected to equal the paper's, which come from ATR at 227×227 after ~50 GPU epochs.\n"
        )
    elif profile == "ccp":
        parts.append(
            "> The ccp profile runs on Clothing Co-Parsing with the kit's coarse label set; the paper's "
            "tables are on ATR-18, so Table 2 compares only the labels both sets share.\n"
        )
    for name, title, fn in [
        ("table1.csv", "Table 1 — overall metrics (%)", side_by_side_table1),
        ("table2.csv", "Table 2 — per-label F1 (%)", side_by_side_table2),
        ("fig5.csv", "Fig. 5 — average F1 against K", side_by_side_fig5),
    ]:
        parts.append(f"## {title}\n")
        if (res / name).exists():
            parts.append(_md(fn(pd.read_csv(res / name))) + "\n")
        else:
            parts.append(f"_not produced in this run (`results/{name}` missing)_\n")
    for name, title in [("ablations.csv", "Ablations"), ("new_labels.csv", "New labels without retraining")]:
        if (res / name).exists():
            parts.append(f"## {title}\n\n" + _md(pd.read_csv(res / name)) + "\n")
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
    if figs:
        parts.append("## Figures\n\n" + "\n".join(f"![{f.stem}](figures/{f.name})" for f in figs) + "\n")
    parts.append(
        "Reported numbers: Liu et al., CVPR 2015, Tables 1-2 and Fig. 5 (only K = 1 and K = 9 are stated "
        "in the text). Avg F1 is the mean of per-label F1 over all labels including background, the "
        "definition that reproduces the paper's arithmetic (see qparse_lite.metrics).\n"
    )
    return atomic_write_text(run_dir / "report.md", "\n".join(parts))
