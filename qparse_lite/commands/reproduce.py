"""``qparse reproduce``: the whole reproduction, notebook by notebook, with papermill."""

from __future__ import annotations

import argparse

from qparse_lite.commands.common import add_data_root, add_device, add_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run every notebook in order (papermill) and write report.md beside the paper's numbers",
        description="Runs notebooks/NN_*.ipynb in order into runs/<profile>-<timestamp>/ with executed "
        "notebooks, HTML copies, results, figures and report.md (Table 1, Table 2, Fig. 5 beside the paper).",
    )
    add_profile(p, help="experiment scale (quick: synthetic data, CPU, no download)")
    p.add_argument("--out", default=None, help="run folder (default runs/<profile>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="skip notebooks already complete in --out (default: the newest run of the profile)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    add_data_root(p, help="dataset root for the ccp/atr profiles")
    add_device(p)
    p.add_argument("--notebooks", nargs="*", default=None, help="run only these notebooks (e.g. 00 03)")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from qparse_lite.pipeline.reproduce import reproduce

    reproduce(
        args.profile, args.out, resume=args.resume, seed=args.seed, data_root=args.data_root,
        device=args.device, notebooks=args.notebooks, timeout_s=args.timeout,
    )  # fmt: skip
    return 0
