"""``report.md``: this run's Table 1, Table 2 and Fig. 5 beside the paper's reported numbers.

The notebooks write their results into ``<run>/results/`` with these names (the contract):

- ``table1.csv``: ``method, paper_method, accuracy, fg_accuracy, avg_precision, avg_recall, avg_f1``
  (``paper_method`` is the row name in the paper's Table 1, empty when the paper has no such row), and
  optionally ``family``: :data:`FAMILIES` key of an M-CNN row (``scratch``: the paper's networks as published;
  ``trunk``: the same rows on the frozen ImageNet trunk, :mod:`qparse_lite.model.trunk`), empty for a baseline.
  A trunk row names the paper row of its from-scratch counterpart (``qparse_lite.model.mcnn.paper_row``), so
  one paper row may stand beside one row of each family;
- ``table2.csv``: ``method, paper_method`` (optionally ``family``) and one column of F1 per foreground label
  (``_`` for ``-``);
- ``fig5.csv``: ``k, avg_f1`` (the from-scratch default M-CNN); ``fig5_trunk.csv`` (optional): the same for
  the trunk family's default;
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

from qparse_lite.evaluation import reported
from qparse_lite.io import atomic_write_text

__all__ = ["side_by_side_table1", "side_by_side_table2", "side_by_side_fig5", "write_report", "committed_results",
           "FAMILIES", "T1_COLS", "md_table"]

T1_COLS = ["accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"]

FAMILIES: dict[str, str] = {"scratch": "from scratch (as published)", "trunk": "frozen ImageNet trunk"}
"""The ``family`` column's keys (``qparse_lite.model.mcnn.variant_family``) and how the report names them."""


def _family(r: pd.Series) -> str:
    """A row's family in words ("" for a baseline or a table without the column)."""
    f = r.get("family")
    return FAMILIES.get(f, f) if isinstance(f, str) else ""


def md_table(df: pd.DataFrame) -> str:
    """A table as Markdown, floats to 2 decimals (the reports' one format)."""
    return df.to_markdown(index=False, floatfmt=".2f")


def side_by_side_table1(ours: pd.DataFrame) -> pd.DataFrame:
    """Table 1: for each metric, this run, the paper, and the difference; with a ``family`` column, it is kept
    (in words, :data:`FAMILIES`) after ``method``, so each family's row stands beside the same paper row."""
    paper = reported.table1().set_index("method")
    families = "family" in ours.columns
    rows = []
    for _, r in ours.iterrows():
        pm = r.get("paper_method")
        pm = pm if isinstance(pm, str) and pm in paper.index else None
        row: dict[str, object] = {"method": r["method"], **({"family": _family(r)} if families else {}),
                                  "paper row": pm or "—"}  # fmt: skip
        for c in T1_COLS:
            row[f"{c} (run)"] = r[c]
            row[f"{c} (paper)"] = paper.loc[pm, c] if pm else float("nan")
        row["Δ avg_f1"] = r["avg_f1"] - row["avg_f1 (paper)"] if pm else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side_table2(ours: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per-label F1 on the labels both share: each run row, and under the run rows that stand for one
    paper row (one per family, with a ``family`` column: kept, in words), that paper row once."""
    paper = reported.table2().set_index("method")
    labels = [c for c in ours.columns if c in paper.columns]
    fam = ["family"] if "family" in ours.columns else []

    def key(r: pd.Series) -> str | None:
        pm = r.get("paper_method")
        return pm if isinstance(pm, str) and pm in paper.index else None

    rows, done, run_rows = [], set(), [r for _, r in ours.iterrows()]
    for i, r in enumerate(run_rows):
        pm = key(r)
        if pm in done:
            continue
        group = [r] if pm is None else [q for q in run_rows[i:] if key(q) == pm]
        for q in group:
            rows.append({"method": q["method"], **({"family": _family(q)} if fam else {}), "source": "run",
                         **{c: q[c] for c in labels}})  # fmt: skip
        if pm is not None:
            done.add(pm)
            rows.append({"method": pm, **({"family": ""} if fam else {}), "source": "paper",
                         **{c: paper.loc[pm, c] for c in labels}})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", *fam, "source", *labels])


def side_by_side_fig5(ours: pd.DataFrame, trunk: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fig. 5: avg F1 against K, with the two points the paper's text states; with ``trunk`` (the trunk
    family's default model swept over the same K), its avg F1 as ``avg_f1 (trunk run)`` beside this run's."""
    paper = reported.fig5().set_index("k")["avg_f1"]
    df = ours[["k", "avg_f1"]].rename(columns={"avg_f1": "avg_f1 (run)"}).copy()
    if trunk is not None:
        tr = trunk.set_index("k")["avg_f1"]
        df["avg_f1 (trunk run)"] = [tr.get(k, float("nan")) for k in df["k"]]
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
    trunk5 = pd.read_csv(res / "fig5_trunk.csv") if (res / "fig5_trunk.csv").exists() else None
    for name, title, fn in [
        ("table1.csv", "Table 1 — overall metrics (%)", side_by_side_table1),
        ("table2.csv", "Table 2 — per-label F1 (%)", side_by_side_table2),
        ("fig5.csv", "Fig. 5 — average F1 against K", lambda df: side_by_side_fig5(df, trunk5)),
    ]:
        parts.append(f"## {title}\n")
        if (res / name).exists():
            ours = pd.read_csv(res / name)
            if "family" in ours.columns and name != "fig5.csv":
                parts.append(f"Two families of M-CNN (`family`): {FAMILIES['scratch']} and the same rows on the "
                             f"{FAMILIES['trunk']} (qparse_lite.model.trunk); each row stands beside the paper row "
                             "it corresponds to.\n")  # fmt: skip
            parts.append(md_table(fn(ours)) + "\n")
        else:
            parts.append(f"_not produced in this run (`results/{name}` missing)_\n")
    for name, title in [("ablations.csv", "Ablations"), ("new_labels.csv", "New labels without retraining")]:
        if (res / name).exists():
            parts.append(f"## {title}\n\n" + md_table(pd.read_csv(res / name)) + "\n")
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
    if figs:
        parts.append("## Figures\n\n" + "\n".join(f"![{f.stem}](figures/{f.name})" for f in figs) + "\n")
    parts.append(
        "Reported numbers: Liu et al., CVPR 2015, Tables 1-2 and Fig. 5 (only K = 1 and K = 9 are stated "
        "in the text). Avg F1 is the mean of per-label F1 over all labels including background, the "
        "definition that reproduces the paper's arithmetic (see qparse_lite.metrics).\n"
    )
    return atomic_write_text(run_dir / "report.md", "\n".join(parts))


def committed_results(name: str = "ccp") -> Path:
    """The repository's committed results folder ``results/<name>`` (beside the package in a clone; it
    does not exist in an installed wheel, which ships no results)."""
    from qparse_lite.runinfo import PACKAGE_ROOT

    return Path(PACKAGE_ROOT) / "results" / name
