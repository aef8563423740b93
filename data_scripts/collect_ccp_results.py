"""Collect finished CCP runs into ``results/ccp/`` (small files only) and write ``results/ccp/report.md``.

Each piece is copied from the folder a kit command wrote (``qparse evaluate --out``, ``qparse train --out``,
``qparse baseline train|finetune --out``), with every machine path replaced by
the placeholder of the command that made it (``CORPUS``, ``RUN``, ``DIR``), so the committed files name no
local folder. Usage (each flag repeatable; see results/ccp/README.md for the commands behind them)::

    python data_scripts/collect_ccp_results.py --eval KEY=EVAL_DIR --model KEY=RUN_DIR --copy SRC=NAME --report

``--dest DIR`` writes into another results folder (default ``results/ccp``). The fair-setting rerun (one
``qparse reproduce --profile ccp`` run and its seeds) is collected by ``collect_ccp_fair.py``, which calls
:func:`add_eval` and :func:`add_model` with its own destination and path patterns.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "results" / "ccp"

_PATHS = [
    (re.compile(r"/[^\s\"']*/datasets/clothing-co-parsing"), "DIR"),
    (re.compile(r"/tmp/exp/ccpF"), "CORPUS"),
    (re.compile(r"/tmp/exp/repro/corpus"), "CORPUS"),
    (re.compile(r"/tmp/[A-Za-z0-9_.-]+/(runs|eval)/[A-Za-z0-9_.-]+"), "RUN"),
    (re.compile(r"/tmp/wt[0-9a-z]*/results/ccp/models/mcnn"), "results/ccp/models/mcnn"),
    (re.compile(r"/tmp/[A-Za-z0-9_./-]+"), "OUT"),
    (re.compile(r"/work/main/"), ""),
    # the fair-setting rerun (issue 31): its run folder, its seeds' evaluations, its checkout
    (re.compile(r"/work/ccpfair/runs/ccp-fair/corpus"), "CORPUS"),
    (re.compile(r"/work/ccpfair/runs/ccp-fair"), "RUN"),
    (re.compile(r"/work/ccpfair/(runs/)?(ccp-fair-)?evals"), "EVALS"),
    (re.compile(r"/work/ccpfair/"), ""),
]

Patterns = Sequence[tuple[re.Pattern[str], str]]


def clean(obj: Any, extra: Patterns = ()) -> Any:
    """Replace machine paths inside strings of a JSON-like object by placeholders; ``extra`` patterns
    (``(compiled regex, placeholder)``, for instance a run folder given on the command line) go first."""
    if isinstance(obj, str):
        for pat, rep in [*extra, *_PATHS]:
            obj = pat.sub(rep, obj)
        return obj
    if isinstance(obj, dict):
        return {k: clean(v, extra) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v, extra) for v in obj]
    return obj


def _json(src: Path, dst: Path, extra: Patterns = ()) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(clean(json.loads(src.read_text()), extra), indent=1, allow_nan=True) + "\n")


def _same_pngs(src: Path, ref: Path) -> None:
    """Every PNG of ``src`` is byte-equal to the one of the same name in ``ref`` (every evaluation of a split
    writes the same ground truth)."""
    for p in src.glob("*.png"):
        if not (ref / p.name).is_file() or (ref / p.name).read_bytes() != p.read_bytes():
            raise SystemExit(f"{p}: ground truth differs from {ref / p.name}; not the committed test split")


def add_eval(key: str, src: Path, dest: Path = RESULTS, *, full: bool = False, extra: Patterns = ()) -> None:
    """From a `qparse evaluate` folder: tables/<key>_table1/2[_full].csv/.md (the ``_full`` ones where the
    folder has them), tables/<key>_scores.json (paths scrubbed, ``extra`` first), pred/<key>/; with ``full``,
    the full-resolution maps too, full/pred/<key>/. The ground truth must equal ``dest``'s gt/ (and full/gt/)."""
    t = dest / "tables"
    t.mkdir(parents=True, exist_ok=True)
    for n in ("table1", "table2", "table1_full", "table2_full"):
        for ext in ("csv", "md"):
            if n.endswith("_full") and not (src / f"{n}.{ext}").is_file():
                continue
            shutil.copy(src / f"{n}.{ext}", t / f"{key}_{n}.{ext}")
    _json(src / "scores.json", t / f"{key}_scores.json", extra)
    pairs = [(src / "pred", dest / "pred" / key, src / "gt", dest / "gt")]
    if full:
        pairs.append((src / "full" / "pred", dest / "full" / "pred" / key, src / "full" / "gt", dest / "full" / "gt"))
    for pred, dst, gt, ref in pairs:
        _same_pngs(gt, ref)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(pred, dst)
    if (src / "fig5.csv").is_file() and key == "mcnn":
        for ext in ("csv", "md", "png"):
            shutil.copy(src / f"fig5.{ext}", dest / f"fig5.{ext}")


def add_model(key: str, src: Path, dest: Path = RESULTS, *, extra: Patterns = ()) -> None:
    """models/<key>/run.json and log.csv (no checkpoint: only the default model's is committed)."""
    dst = dest / "models" / key
    dst.mkdir(parents=True, exist_ok=True)
    _json(src / "run.json", dst / "run.json", extra)
    if (src / "log.csv").is_file():
        shutil.copy(src / "log.csv", dst / "log.csv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=DIR")
    ap.add_argument("--model", action="append", default=[], metavar="KEY=DIR")
    ap.add_argument("--copy", action="append", default=[], metavar="SRC=NAME", help="copy a file into results/ccp")
    ap.add_argument("--report", action="store_true", help="write report.md and claims.csv")
    ap.add_argument("--dest", type=Path, default=RESULTS, help="the results folder (default results/ccp)")
    args = ap.parse_args(argv)
    dest = args.dest
    for item in args.eval:
        k, v = item.split("=", 1)
        add_eval(k, Path(v), dest)
    for item in args.model:
        k, v = item.split("=", 1)
        add_model(k, Path(v), dest)
    for item in args.copy:
        s, n = item.split("=", 1)
        (dest / n).parent.mkdir(parents=True, exist_ok=True)
        if s.endswith(".json"):
            _json(Path(s), dest / n)
        else:
            shutil.copy(s, dest / n)
    if args.report:
        from qparse_lite.evaluation.ccp_report import write_ccp_report

        print(write_ccp_report(dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
