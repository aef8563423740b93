"""Collect finished CCP runs into ``results/ccp/`` (small files only) and write ``results/ccp/report.md``.

Each piece is copied from the folder a kit command wrote (``qparse evaluate --out``, ``qparse train --out``,
``qparse baseline train|finetune --out``), with every machine path replaced by
the placeholder of the command that made it (``CORPUS``, ``RUN``, ``DIR``), so the committed files name no
local folder. Usage (each flag repeatable; see results/ccp/README.md for the commands behind them)::

    python data_scripts/collect_ccp_results.py --eval KEY=EVAL_DIR --model KEY=RUN_DIR --copy SRC=NAME --report
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
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
]


def clean(obj: Any) -> Any:
    """Replace machine paths inside strings of a JSON-like object by placeholders."""
    if isinstance(obj, str):
        for pat, rep in _PATHS:
            obj = pat.sub(rep, obj)
        return obj
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    return obj


def _json(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(clean(json.loads(src.read_text())), indent=1, allow_nan=True) + "\n")


def add_eval(key: str, src: Path) -> None:
    """tables/<key>_table1/2.csv/.md, tables/<key>_scores.json, pred/<key>/ from a `qparse evaluate` folder."""
    t = RESULTS / "tables"
    t.mkdir(parents=True, exist_ok=True)
    for n in ("table1", "table2"):
        for ext in ("csv", "md"):
            shutil.copy(src / f"{n}.{ext}", t / f"{key}_{n}.{ext}")
    _json(src / "scores.json", t / f"{key}_scores.json")
    dst = RESULTS / "pred" / key
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src / "pred", dst)
    gt = RESULTS / "gt"
    for p in (src / "gt").glob("*.png"):  # every evaluation of the split writes the same ground truth
        if not (gt / p.name).is_file() or (gt / p.name).read_bytes() != p.read_bytes():
            raise SystemExit(f"{p}: ground truth differs from {gt / p.name}; not the committed test split")
    if (src / "fig5.csv").is_file() and key == "mcnn":
        for ext in ("csv", "md", "png"):
            shutil.copy(src / f"fig5.{ext}", RESULTS / f"fig5.{ext}")


def add_model(key: str, src: Path) -> None:
    """models/<key>/run.json and log.csv (no checkpoint: only the default model's is committed)."""
    dst = RESULTS / "models" / key
    dst.mkdir(parents=True, exist_ok=True)
    _json(src / "run.json", dst / "run.json")
    if (src / "log.csv").is_file():
        shutil.copy(src / "log.csv", dst / "log.csv")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=DIR")
    ap.add_argument("--model", action="append", default=[], metavar="KEY=DIR")
    ap.add_argument("--copy", action="append", default=[], metavar="SRC=NAME", help="copy a file into results/ccp")
    ap.add_argument("--report", action="store_true", help="write report.md and claims.csv")
    args = ap.parse_args(argv)
    for item in args.eval:
        k, v = item.split("=", 1)
        add_eval(k, Path(v))
    for item in args.model:
        k, v = item.split("=", 1)
        add_model(k, Path(v))
    for item in args.copy:
        s, n = item.split("=", 1)
        (RESULTS / n).parent.mkdir(parents=True, exist_ok=True)
        if s.endswith(".json"):
            _json(Path(s), RESULTS / n)
        else:
            shutil.copy(s, RESULTS / n)
    if args.report:
        from qparse_lite.evaluation.report import write_ccp_report

        print(write_ccp_report(RESULTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
