"""Commit the small files of a ``qparse reproduce --profile ccp`` run beside the CCP results.

Usage: ``python data_scripts/collect_ccp_reproduce.py RUN [OUT]`` (OUT defaults to ``results/ccp/reproduce``).

Copies (machine paths replaced by placeholders, as ``collect_ccp_results.clean`` does) the run's ``report.md``, ``run.json``, ``status.json`` and its result tables (Table 1, Table 2, Fig. 5,
the ablations, the parametric rows, the new-label table) and writes two summaries:

- ``timing.md``: each notebook's wall time with the load averages before and after it (how busy the two
  cores were), the total, and each model's training wall time and threads from its ``run.json``;
- ``compare.md``: the run's Table 1 avg F1 beside the committed rows of ``results/ccp`` (trained with the
  same profile at earlier commits), with the difference, and the committed three-seed spread where there is
  one: how far a full rerun moves the numbers.

Nothing of the dataset is copied (no photo, no label map of the corpus).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from qparse_lite.evaluation.report import ccp_seed_table, ccp_table1
from qparse_lite.io import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_ccp_results import clean  # noqa: E402  (the one path scrubber of the committed files)

ROOT = Path(__file__).resolve().parent.parent
TABLES = ["table1", "table2", "fig5", "table1_parametric", "ablations", "new_labels", "04_xi1_sweep_val"]


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def timing(run: Path) -> str:
    """``timing.md``: per-notebook wall time and load, the total, per-model training time."""
    status = json.loads((run / "status.json").read_text())
    rows = [{"notebook": k, "status": v.get("status"), "wall_s": v.get("wall_time_s"),
             "load before (1/5/15 min)": v.get("load_before"), "load after": v.get("load_after")}
            for k, v in status.items() if not k.startswith("_")]  # fmt: skip
    nb = pd.DataFrame(rows)
    total = float(nb.wall_s.fillna(0).sum())
    models = []
    for rec_path in sorted((run / "models").glob("*/run.json")):
        rec = json.loads(rec_path.read_text())
        models.append({"model": rec_path.parent.name,
                       "train wall s": rec.get("wall_time_total_s") or rec.get("train_s"),
                       "threads": rec.get("torch_threads") or rec.get("threads"),
                       "git": (rec.get("git_commit") or "")[:8]})  # fmt: skip
    done = all(r["status"] == "ok" for r in rows)
    head = (f"**Whole run: {total:.0f} s = {total / 3600:.2f} h** of notebook wall time"
            + ("" if done else " (**not complete**: see the status column)") + ".\n\n")
    return ("# Wall time of `qparse reproduce --profile ccp` on this machine\n\n" + head + _md(nb)
            + "\n\nTraining runs inside it (notebook 05 trains two side by side, one thread each):\n\n"
            + _md(pd.DataFrame(models)) + "\n")


#: The committed rows a reproduce run recomputes (results/ccp keys; the tuned and parametric rows are not in it).
RERUN_KEYS = ["wo-cross", "cross5", "cross54", "cross543", "mcnn", "cross54321", "siamese", "mcnn-wo-ss",
              "label-transfer", "mean-label-map"]  # fmt: skip


def _row_key(r: pd.Series) -> str:
    """Rows are matched on the paper's method (names of ours differ a little), else on our own name."""
    pm = r.get("paper_method")
    return pm if isinstance(pm, str) and pm else str(r.method)


def compare(run: Path, results: Path) -> str:
    """``compare.md``: the rerun's Table 1 avg F1 beside the committed rows."""
    t1 = pd.read_csv(run / "results" / "table1.csv")
    committed = ccp_table1(results)
    committed = committed[committed.key.isin(RERUN_KEYS)]
    by_key = {_row_key(r): r for _, r in committed.iterrows()}
    seeds = ccp_seed_table(results).set_index("method")
    rows = []
    for _, r in t1.iterrows():
        c = by_key.get(_row_key(r))
        s = seeds.loc[c.method] if c is not None and c.method in seeds.index else None
        rows.append({"method": r.method, "rerun avg F1": round(float(r.avg_f1), 2),
                     "committed (seed 0)": round(float(c.avg_f1), 2) if c is not None else None,
                     "Δ": round(float(r.avg_f1 - c.avg_f1), 2) if c is not None else None,
                     "committed 3 seeds (mean ± std)": f"{s['mean']:.2f} ± {s['std']:.2f}" if s is not None else ""})  # fmt: skip
    return ("# The rerun's Table 1 beside the committed rows\n\nSame profile, corpus (checksums equal) and seed 0; "
            "the committed models were trained at earlier commits of the training code, so the pairs drawn "
            "differ and so do the models: the difference is a rerun's spread, to read beside the seed spread. "
            "Label transfer and the mean label map have no training: they must agree exactly.\n\n"
            + _md(pd.DataFrame(rows)) + "\n")


def main(run: str, out: str | None = None) -> Path:
    run_p, out_p = Path(run), Path(out) if out else ROOT / "results" / "ccp" / "reproduce"
    out_p.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "status.json"):
        if (run_p / name).is_file():
            atomic_write_json(out_p / name, clean(json.loads((run_p / name).read_text())))
    if (run_p / "report.md").is_file():
        atomic_write_text(out_p / "report.md", clean((run_p / "report.md").read_text()))
    for name in TABLES:
        for ext in (".csv", ".md"):
            src = run_p / "results" / f"{name}{ext}"
            if src.is_file():
                atomic_write_text(out_p / src.name, clean(src.read_text()))
    atomic_write_text(out_p / "timing.md", timing(run_p))
    if (run_p / "results" / "table1.csv").is_file():
        atomic_write_text(out_p / "compare.md", compare(run_p, ROOT / "results" / "ccp"))
    return out_p


if __name__ == "__main__":
    print(main(*sys.argv[1:3]))
