"""``qparse train``: train an M-CNN variant on label-balanced pairs (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import ast
from typing import Any

from qparse_lite.commands.common import (
    add_data_root,
    add_device,
    add_profile,
    add_progress,
    add_variant,
    progress,
)


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    from qparse_lite.errors import QparseError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QparseError(f"--set {item!r}: expected FIELD=VALUE (e.g. --set pairs_per_epoch=2048)")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an M-CNN variant (paper Sec. 3.2/4.1); writes checkpoint.pt, log.csv, run.json",
        description="Trains one M-CNN variant on label-balanced (I, g_kl) pairs with the loss of Eq. (1). "
        "Prepares the profile's corpus and the KNN of the train/val splits when not given. Runs unchanged "
        "under `torchrun --nproc_per_node N` (DistributedDataParallel; rank 0 writes the files).",
    )
    add_profile(p)
    add_variant(p)
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.csv, run.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (exactly)")
    add_device(p, help="auto | cpu | cuda (under torchrun: cuda:LOCAL_RANK; default auto)")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's number of epochs")
    p.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    p.add_argument("--corpus", default=None,
                   help="prepared corpus cache folder (prepared there if missing; default OUT/corpus)")  # fmt: skip
    p.add_argument("--knn", default=None,
                   help="KNN file of the train split (default: computed into OUT/knn_train.npz)")  # fmt: skip
    p.add_argument("--val-knn", default=None,
                   help="KNN file of the val split (default: computed into OUT/knn_val.npz)")  # fmt: skip
    p.add_argument("--optimizer", default=None, choices=_registry("train.optim", "OPTIMIZERS"),
                   help="sgd: the paper's (momentum 0.9, wd 5e-4, lr ÷10 on plateau); adamw: AdamW + cosine "
                        "(default: the profile's; quick uses adamw)")  # fmt: skip
    p.add_argument("--holdout-label", default=None,
                   help="a label name never used as a positive in training (its pixels become background)")  # fmt: skip
    add_data_root(p, help="dataset root for the ccp/atr profiles")
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--sampler", default=None, choices=_registry("train.pairs", "SAMPLERS"),
                   help="pair sampler: natural (default: balanced labels, each label's natural rate of c=1) "
                        "or stratified (the first scheme: fixed c=0 share for every label)")  # fmt: skip
    p.add_argument("--neg-fraction", type=float, default=None,
                   help="stratified sampler: fraction of pairs with c=0 and a real KNN region (default 0.4)")  # fmt: skip
    p.add_argument("--empty-fraction", type=float, default=None,
                   help="fraction of pairs whose KNN region is the mean image (default: 0 natural, 0.05 "
                        "stratified)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the profile's, 1 on the CPU profiles; 0 = torch's)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any profile field, e.g. --set pairs_per_epoch=2048 (repeatable)")  # fmt: skip
    add_progress(p)
    p.set_defaults(func=_run)


def _registry(module: str, name: str) -> list[str]:
    import importlib

    return list(getattr(importlib.import_module(f"qparse_lite.{module}"), name))


def _run(args: argparse.Namespace) -> int:
    from qparse_lite.profiles import get_profile
    from qparse_lite.train.loop import train

    overrides = {
        "epochs": args.epochs, "seed": args.seed, "optimizer": args.optimizer, "sampler": args.sampler,
        "neg_fraction": args.neg_fraction, "empty_fraction": args.empty_fraction, "threads": args.threads,
        **_parse_set(args.set),
    }  # fmt: skip
    out = train(
        get_profile(args.profile, **overrides), args.variant, args.out, resume=args.resume, device=args.device,
        corpus=args.corpus, knn=args.knn, val_knn=args.val_knn, holdout_label=args.holdout_label,
        data_root=args.data_root, compile=args.compile, progress=progress(args),
    )  # fmt: skip
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained: {out}/checkpoint.pt, {out}/log.csv, {out}/run.json")
    return 0
