"""``qparse photos list|ground-truth|presence``: score the raw-photo path on a split's original photos.

The raw-photo evaluation (:mod:`qparse_lite.evaluation.photos`) in three commands around ``qparse parse``::

    qparse photos list --dataset ccp --data-root DIR --split test > photos.txt
    qparse parse $(cat photos.txt) --model RUN --corpus CORPUS --out PARSED --json
    qparse photos ground-truth --dataset ccp --data-root DIR --split test --out GT
    qparse score --pred PARSED --gt GT --labels ccp-coarse --json
    qparse photos presence --pred PARSED --gt GT --labels ccp-coarse --json
"""

from __future__ import annotations

import argparse
import json

from qparse_lite.commands.common import (
    add_data_root,
    add_dataset,
    add_labels,
    add_progress,
    add_split,
    progress,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "photos",
        help="the raw-photo evaluation: list a split's original photos, export their full-size ground "
        "truth, score label presence",
    )
    ps = p.add_subparsers(dest="photos_command", metavar="ACTION", required=True)
    a = ps.add_parser("list", help="print the photo files of a split, one per line (for qparse parse)")
    _dataset_args(a)
    a.set_defaults(func=_list)
    g = ps.add_parser("ground-truth", help="write OUT/<id>.png: the split's full-resolution label maps")
    _dataset_args(g)
    g.add_argument("--out", required=True, help="output folder (palette PNGs that qparse score reads)")
    add_progress(g)
    g.set_defaults(func=_gt)
    r = ps.add_parser("presence", help="label presence per label: precision, recall, balanced accuracy")
    r.add_argument("--pred", required=True, help="folder of predicted label maps (qparse parse --out)")
    r.add_argument("--gt", required=True, help="folder of ground-truth label maps (same file names)")
    add_labels(r, default="ccp-coarse")
    r.add_argument("--json", action="store_true", help="print the table and summary as JSON")
    r.set_defaults(func=_presence)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    add_dataset(p, help="the dataset whose original photos are parsed (ccp; a dataset with photo files)")
    add_data_root(p, required=True)
    add_labels(p, default="ccp-coarse")
    add_split(p)


def _dataset(args: argparse.Namespace):
    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.errors import QparseError

    kw = {"labels": args.labels} if args.dataset == "ccp" else {}
    ds = get_dataset(args.dataset, root=args.data_root, **kw)
    if not hasattr(ds, "paths"):
        raise QparseError(f"qparse photos: the {args.dataset} dataset has no photo files to parse. Fix: --dataset ccp")
    return ds


def _list(args: argparse.Namespace) -> int:
    from qparse_lite.evaluation.photos import split_photos

    for path in split_photos(_dataset(args), args.split):
        print(path)
    return 0


def _gt(args: argparse.Namespace) -> int:
    from qparse_lite.evaluation.photos import export_ground_truth

    ids = export_ground_truth(_dataset(args), args.split, args.out, progress=progress(args))
    print(f"wrote {len(ids)} ground-truth maps to {args.out}")
    return 0


def _presence(args: argparse.Namespace) -> int:
    from qparse_lite.evaluation.photos import presence_summary, presence_table
    from qparse_lite.evaluation.tables import json_safe
    from qparse_lite.labels import get_label_set

    table = presence_table(args.pred, args.gt, get_label_set(args.labels))
    summary = presence_summary(table)
    if args.json:
        print(json.dumps(json_safe({"per_label": table.to_dict(orient="records"), "summary": summary})))
    else:
        print(table.to_markdown(index=False, floatfmt=".1f"))
        print(json.dumps(json_safe(summary)))
    return 0
