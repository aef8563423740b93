"""``qparse tune``: choose a run's post-processing on the validation split and write RUN/postprocess.json."""

from __future__ import annotations

import argparse

from qparse_lite.commands.common import add_device, add_features, add_progress, add_split, progress


def register(sub: argparse._SubParsersAction) -> None:
    from qparse_lite.parse.defaults import KNOBS

    p = sub.add_parser(
        "tune",
        help="choose the M-CNN's and label transfer's post-processing on the validation split; writes "
        "RUN/postprocess.json",
        description="Parses the validation split with the M-CNN of --model once and chooses its post-processing "
        "by coordinate ascent over a fixed grid (ξ1, displacement scale, SLIC segment count with 0 = none, ξ2; "
        "the paper's value first, ties keep it), and KNN label transfer's own four by the same ascent (rank power, "
        "background weight, minimum label share, segment count; the untuned value first). Writes "
        "MODEL/postprocess.json (values per method, the split, the grid, every score tried, a run record), "
        "which `qparse evaluate` and `qparse parse` use when no flag overrides a value. The test split is refused.",
    )
    p.add_argument("--model", required=True, help="a `qparse train` run folder (postprocess.json is written into it)")
    p.add_argument("--corpus", required=True, help="the prepared corpus the model was trained on (`qparse prepare`)")
    add_split(p, default="val", help="split to choose on (default val; test is refused)")
    p.add_argument("--k", type=int, default=None, help="KNN images per image (default: the run's profile's k_test)")
    add_features(p, help="retrieval features (default: the run's profile's)")
    p.add_argument("--only", action="append", choices=list(KNOBS), default=None,
                   help="tune only this method's values (repeatable; default: the M-CNN's and label transfer's)")  # fmt: skip
    p.add_argument("--knn-dir", default=None, help="neighbour cache folder (default MODEL/knn_tune)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (needs --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    add_device(p)
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from qparse_lite.data.prepare import Corpus
    from qparse_lite.evaluation.tuning import tune_run
    from qparse_lite.parse.defaults import KNOBS
    from qparse_lite.runinfo import get_device

    res = tune_run(
        args.model, Corpus.load(args.corpus), split=args.split, k=args.k, features=args.features,
        methods=tuple(args.only or KNOBS), device=get_device(args.device),
        knn_dir=args.knn_dir, limit=args.limit, progress=progress(args), write=not args.dry_run,
    )  # fmt: skip
    for method in ("mcnn", "label-transfer"):
        if method in res:
            e = res[method]
            edge = f"; at a grid end: {', '.join(e['grid_edges'])}" if e["grid_edges"] else ""
            print(f"{method}: {json.dumps(e['values'])} -> {args.split} avg F1 {e['score']['avg_f1']:.2f}{edge}")
    print(f"{res['run']['wall_time_s']:.0f} s; " + (f"wrote {res['file']}" if res["file"] else "nothing written (--dry-run)"))
    return 0
