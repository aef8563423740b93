"""Commit the small files of a ``qparse reproduce --profile ccp`` run beside the CCP results.

Usage: ``python data_scripts/collect_ccp_reproduce.py RUN [OUT]`` (OUT defaults to ``results/ccp/reproduce``;
``collect_ccp_fair.py`` calls :func:`main` with its own destination and path patterns).

Copies (machine paths replaced by placeholders, as ``collect_ccp_results.clean`` does) the run's ``report.md``,
``run.json``, ``status.json`` and its result tables (Table 1, Table 2, Fig. 5 of both families, the ablations,
the parametric rows, the new-label table) and writes ``timing.md``: each notebook's wall time with the load
averages before and after it (how busy the two cores were), the total, and each model's training wall time and
threads from its ``run.json``.

Since the fair-setting rerun (issue 31) every committed row of ``results/ccp`` comes from this same run, so the
run is no longer compared with older committed rows (the former ``compare.md``): its tables are the rows.

Nothing of the dataset is copied (no photo, no label map of the corpus).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from qparse_lite.io import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_ccp_results import clean  # noqa: E402  (the one path scrubber of the committed files)

ROOT = Path(__file__).resolve().parent.parent
TABLES = ["table1", "table2", "fig5", "fig5_trunk", "table1_parametric", "ablations", "new_labels",
          "04_xi1_sweep_val"]  # fmt: skip


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
    for rec_path in sorted((run / "models").glob("*/run.json")) + sorted((run / "seeds").glob("*/run.json")):
        rec = json.loads(rec_path.read_text())
        models.append({"model": f"{rec_path.parent.parent.name}/{rec_path.parent.name}",
                       "train wall s": rec.get("wall_time_total_s") or rec.get("train_s"),
                       "threads": rec.get("torch_threads") or rec.get("threads"),
                       "git": (rec.get("git_commit") or "")[:8]})  # fmt: skip
    done = all(r["status"] == "ok" for r in rows)
    head = (f"**Whole run: {total:.0f} s = {total / 3600:.2f} h** of notebook wall time"
            + ("" if done else " (**not complete**: see the status column)") + ".\n\n")
    return ("# Wall time of `qparse reproduce --profile ccp` on this machine\n\n" + head + _md(nb)
            + "\n\nThe training runs of the run and of its seeds (two side by side, one thread each: the notebooks'"
            + " own scheduler, or `data_scripts/ccp_train_models.py` before them):\n\n"
            + _md(pd.DataFrame(models)) + "\n" + _steps(run))


def _steps(run: Path) -> str:
    """The steps of ``data_scripts/reproduce_ccp.py`` (``RUN/reproduce_ccp.json``), per invocation; "" if none."""
    path = run / "reproduce_ccp.json"
    if not path.is_file():
        return ""
    out = ["\n## The steps of `data_scripts/reproduce_ccp.py`\n",
           "Each invocation (a stopped one is resumed by running the same command again) with its steps, side by"
           " side in two lanes; the load averages show how busy the two cores were.\n"]  # fmt: skip
    total = 0.0
    for i, inv in enumerate(json.loads(path.read_text())["invocations"], 1):
        steps = pd.DataFrame(inv["steps"])
        wall = inv.get("wall_s")
        total += wall or 0.0
        out.append(f"\n**Invocation {i}** (started {inv['started']}; "
                   + (f"{wall:.0f} s, {'complete' if inv.get('ok') else 'stopped or failed'}" if wall is not None
                      else "stopped before its end") + ")\n")  # fmt: skip
        if len(steps):
            out.append(_md(steps.drop(columns=["command"], errors="ignore")) + "\n")
    out.append(f"\nSum of the invocations' wall times: {total:.0f} s = {total / 3600:.2f} h.\n")
    return "\n".join(out)


def main(run: str, out: str | None = None, scrub: Callable[[Any], Any] = clean) -> Path:
    """Copy the run's records and tables into ``out`` (paths replaced by ``scrub``) and write ``timing.md``."""
    run_p, out_p = Path(run), Path(out) if out else ROOT / "results" / "ccp" / "reproduce"
    out_p.mkdir(parents=True, exist_ok=True)
    for name in ("run.json", "status.json", "reproduce_ccp.json"):
        if (run_p / name).is_file():
            atomic_write_json(out_p / name, scrub(json.loads((run_p / name).read_text())))
    if (run_p / "report.md").is_file():
        atomic_write_text(out_p / "report.md", scrub((run_p / "report.md").read_text()))
    for name in TABLES:
        for ext in (".csv", ".md"):
            src = run_p / "results" / f"{name}{ext}"
            if src.is_file():
                atomic_write_text(out_p / src.name, scrub(src.read_text()))
    atomic_write_text(out_p / "timing.md", scrub(timing(run_p)))
    return out_p


if __name__ == "__main__":
    print(main(*sys.argv[1:3]))
