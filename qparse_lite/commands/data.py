"""``qparse data``: download and verify the real datasets, and write their split id lists."""

from __future__ import annotations

import argparse

from qparse_lite.commands.common import (
    add_data_root,
    add_dataset,
    add_labels,
    add_progress,
    profile_default,
    progress,
)

DOWNLOADABLE = ("ccp", "atr")
"""The datasets ``data download``/``verify`` know (a subset of :data:`qparse_lite.data.datasets.DATASETS`)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="download / verify a dataset (ccp, atr) or write a dataset's split id lists",
        description="Dataset housekeeping. `download` fetches and verifies a dataset (resumable; a folder that "
        "already verifies is used as is, offline and without writing), `verify` checks one against its "
        "checksums, `splits` writes the deterministic train/val/test id lists.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    d = dsub.add_parser("download", help="download a dataset and verify every file",
                        description="ccp: the upstream archive of commit fe34fb7 (photos 0001-1004, pixel-level "
                        "annotations, label_list.mat, LICENSE), each file checked against the shipped SHA-256 list. "
                        "atr: the Hugging Face Parquet export (default) or instructions for the Google Drive archive.")  # fmt: skip
    _add_downloadable(d)
    add_data_root(d, required=True, help="dataset folder to fill (or an existing verified copy)")
    d.add_argument("--source", choices=["parquet", "archive"], default="parquet",
                   help="atr only: parquet (Hugging Face mattmdjaga/human_parsing_dataset, default) or archive "
                        "(the Google Drive 'humanparsing' archive, fetched by hand)")  # fmt: skip
    d.add_argument(
        "--url", default=None, help="ccp only: archive URL (default: the GitHub archive of commit fe34fb7)"
    )
    d.add_argument(
        "--keep-archive", action="store_true", help="ccp only: keep the downloaded zip in DATA_ROOT/.download/"
    )
    add_progress(d)
    d.set_defaults(func=_download)

    v = dsub.add_parser("verify", help="check a dataset folder against its checksums",
                        description="ccp: every file against the shipped SHA-256 list; atr: the SHA256SUMS written at "
                        "download (Parquet) or the image/label pairing (archive).")  # fmt: skip
    _add_downloadable(v)
    add_data_root(v, required=True, help="dataset folder")
    add_progress(v)
    v.set_defaults(func=_verify)

    s = dsub.add_parser("splits", help="write the train/val/test id lists of a dataset",
                        description="Writes OUT/train.txt, OUT/val.txt, OUT/test.txt (one id per line): the kit's "
                        "deterministic split (synthetic 80/10/10 by index, CCP 804/100/100, ATR 6000/700/1000 by a "
                        "seeded permutation of the sorted ids).")  # fmt: skip
    add_dataset(s)
    add_data_root(s, help="dataset folder (ccp, atr)")
    s.add_argument("--out", required=True, help="folder for the id lists")
    add_labels(s, help="ccp: ccp-coarse (default) or ccp59 (does not change the split)")
    s.add_argument("--n", type=int, default=None,
                   help=f"synthetic: number of images (default: the quick profile's, {profile_default('n_images')})")  # fmt: skip
    s.add_argument("--seed", type=int, default=0, help="synthetic: generator seed (default 0)")
    s.add_argument(
        "--split-seed", type=int, default=0, help="ccp/atr: seed of the split permutation (default 0)"
    )
    s.set_defaults(func=_splits)


def _add_downloadable(p: argparse.ArgumentParser) -> None:
    """``--dataset ccp|atr`` (required), the spelling every subcommand uses; the old positional
    ``qparse data download ccp`` still parses, with a warning naming ``--dataset``."""
    p.add_argument("legacy_dataset", nargs="?", choices=_downloadable(), default=None, metavar="",
                   help=argparse.SUPPRESS)  # fmt: skip
    add_dataset(p, required=False, names=tuple(_downloadable()), help="which dataset (required)")


def _resolve_dataset(args: argparse.Namespace) -> str:
    """The dataset of ``download``/``verify``: ``--dataset``, or the deprecated positional (one warning)."""
    import sys

    from qparse_lite.errors import QparseError

    if args.legacy_dataset is not None:
        if args.dataset is not None and args.dataset != args.legacy_dataset:
            raise QparseError(f"two datasets given ({args.legacy_dataset!r} and --dataset {args.dataset!r}); pass only --dataset")
        print(f"qparse: `qparse data {args.data_command} {args.legacy_dataset}` is deprecated; use --dataset "
              f"{args.legacy_dataset}", file=sys.stderr)  # fmt: skip
        args.dataset = args.legacy_dataset
    if args.dataset is None:
        raise QparseError(f"qparse data {args.data_command}: which dataset? Fix: add --dataset "
                          f"{'|'.join(_downloadable())}")  # fmt: skip
    return args.dataset


def _downloadable() -> list[str]:
    from qparse_lite.data.datasets import DATASETS

    assert set(DOWNLOADABLE) <= set(DATASETS)
    return list(DOWNLOADABLE)


def _download(args: argparse.Namespace) -> int:
    from qparse_lite.data.download import CCP_URL, download_atr, download_ccp

    if _resolve_dataset(args) == "ccp":
        root = download_ccp(
            args.data_root, url=args.url or CCP_URL, keep_archive=args.keep_archive, progress=progress(args)
        )
        print(f"CCP ready and verified at {root}")
    else:
        root = download_atr(args.data_root, source=args.source, progress=progress(args))
        print(f"ATR ({args.source}) ready at {root}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from qparse_lite.data.download import verify_atr, verify_ccp

    if _resolve_dataset(args) == "ccp":
        n = verify_ccp(args.data_root, progress=progress(args))
        print(f"{args.data_root}: all {n} CCP files match their SHA-256")
    else:
        info = verify_atr(args.data_root, progress=progress(args))
        print(f"{args.data_root}: ATR ok: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    return 0


def _splits(args: argparse.Namespace) -> int:
    from qparse_lite.data.datasets import get_dataset

    kw: dict = {}
    if args.dataset == "synthetic":
        kw = {"n": args.n or profile_default("n_images"), "seed": args.seed}
    else:
        kw = {"split_seed": args.split_seed}
        if args.labels:
            kw["labels"] = args.labels
    ds = get_dataset(args.dataset, root=args.data_root, **kw)
    paths = ds.write_splits(args.out)
    sizes = {k: len(v) for k, v in ds.splits().items()}
    print(f"{ds.name} ({ds.version}): " + ", ".join(f"{k} {n} -> {paths[k]}" for k, n in sizes.items()))
    return 0
