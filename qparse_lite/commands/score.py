"""``qparse score``: score a folder of predicted PNG label maps against a ground-truth folder (paper Sec. 4.1).

Prints a Table 1 row (accuracy, foreground accuracy, average precision / recall / F1) and a Table 2 row
(per-label F1) as Markdown, or with ``--json`` one JSON object and nothing else on stdout. ``avg_f1`` is
the definition that reproduces the paper's arithmetic (mean of per-label F1 with background included);
the other two definitions are printed beside it under their own names (see :mod:`qparse_lite.metrics`).
"""

from __future__ import annotations

import argparse
import json
import sys

from qparse_lite.commands.common import add_labels, add_progress, out_dir, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score predicted PNG label maps against ground truth (Table 1 and Table 2 metrics)",
        description="Matches the PNG label maps of --pred and --gt by file name, reads them as label ids "
        "(palette indices or gray values, never converted to RGB), accumulates one confusion matrix over all "
        "pixels and prints the paper's metrics in percent: a Table 1 row (accuracy, foreground accuracy, "
        "average precision, average recall, average F1 = mean of per-label F1 over all labels incl. "
        "background, the definition that reproduces the paper) and a Table 2 row (per-label F1). Labels "
        "absent from both prediction and ground truth are n/a (null) and left out of the averages.",
    )
    p.add_argument("--pred", required=True, help="folder of predicted label maps (*.png, one per image)")
    p.add_argument("--gt", required=True, help="folder of ground-truth label maps (*.png, same file names)")
    add_labels(p, required=True,
               help="label set of both folders: atr18 (ATR, 18 labels), ccp59 (CCP's 59 names) or "
                        "ccp-coarse (the kit's 16-label CCP set)")  # fmt: skip
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (all metrics in percent, null where undefined) instead "
                        "of Markdown")  # fmt: skip
    p.add_argument("--out", default=None, type=out_dir,
                   help="also write table1.csv/.md, table2.csv/.md, scores.json, confusion.csv and run.json "
                        "into this folder")  # fmt: skip
    p.add_argument("--method", default=None, help="row name in the tables (default: the --pred folder name)")
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from qparse_lite.evaluation.folders import confusion_from_dirs
    from qparse_lite.evaluation.tables import json_safe, markdown_table, write_table
    from qparse_lite.io import atomic_write_json, atomic_write_text
    from qparse_lite.labels import get_label_set
    from qparse_lite.metrics import F1_DEFINITIONS, scores, table1_row, table2_row
    from qparse_lite.runinfo import Stopwatch, run_record

    label_set = get_label_set(args.labels)
    method = args.method or Path(args.pred).resolve().name
    with Stopwatch() as sw:
        cm = confusion_from_dirs(args.pred, args.gt, label_set, progress=progress(args) is not False)
        sc = scores(cm, label_set)
    row1, row2 = table1_row(sc, method), table2_row(sc, method)
    payload = json_safe(
        {
            "method": method,
            **{k: v for k, v in sc.items() if k != "per_label"},
            "f1_definitions": F1_DEFINITIONS,
            "pred": str(args.pred),
            "gt": str(args.gt),
        }
    )
    if args.out:
        out = Path(args.out)
        write_table([row1], out, "table1")
        write_table([row2], out, "table2")
        atomic_write_json(out / "scores.json", payload)
        conf = pd.DataFrame(cm.matrix, index=label_set.names, columns=label_set.names)
        atomic_write_text(out / "confusion.csv", conf.rename_axis("gt\\pred").to_csv())
        atomic_write_json(
            out / "run.json",
            run_record(
                profile=None, seed=None, dataset=label_set.name, wall_time_s=sw.seconds,
                command="score", pred=str(args.pred), gt=str(args.gt), images=cm.images,
            ),
        )  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(payload, allow_nan=False) + "\n")
        return 0
    print(f"Scored {cm.images} image(s), {cm.pixels} pixels, label set {label_set.name} (percent).\n")
    print("Table 1 — avg_f1 = mean per-label F1 over all labels incl. background (the paper's definition)\n")
    print(markdown_table([row1]) + "\n")
    print("Table 2 — per-label F1 (n/a: label in neither prediction nor ground truth)\n")
    print(markdown_table([row2]) + "\n")
    print(
        f"Other F1 definitions: avg_f1_fg (foreground labels only) = {_fmt(sc['avg_f1_fg'])}, "
        f"f1_of_averages (harmonic mean of avg precision and recall) = {_fmt(sc['f1_of_averages'])}."
    )
    if args.out:
        print(f"Wrote tables, scores.json, confusion.csv and run.json to {args.out}")
    return 0


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"
