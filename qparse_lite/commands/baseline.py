"""``qparse baseline train|finetune``: the parametric parser of today (LR-ASPP on EfficientNet-Lite0).

Scored by ``qparse evaluate --method parametric --model RUN`` on the same harness as the M-CNN.
"""

from __future__ import annotations

import argparse

from qparse_lite.commands.common import add_device, add_profile, add_progress, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="train the parametric baseline (LR-ASPP on EfficientNet-Lite0; not in the paper)",
        description="A fully convolutional parser trained on the same corpus, split and label set as the "
        "M-CNN, for the profile's CPU budget (qparse_lite.baselines.parametric.PARAMETRIC_BUDGETS).",
    )
    bs = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    t = bs.add_parser("train", help="train on the corpus's train split (checkpoint.pt, log.csv, run.json)")
    t.add_argument("--corpus", required=True, help="a corpus folder from `qparse prepare`")
    t.add_argument("--out", required=True, help="run folder")
    add_profile(t, help="budget (PARAMETRIC_BUDGETS) and seed (default quick)")
    t.add_argument("--scratch", action="store_true", help="random initialisation instead of ImageNet weights")
    t.add_argument("--holdout-label", default=None, help="train with this label mapped to background")
    t.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (exactly)")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a ParametricConfig field, e.g. --set epochs=3 (repeatable)")  # fmt: skip
    _common(t)
    t.set_defaults(func=_train)
    f = bs.add_parser("finetune", help="teach a held-out label from a fraction of its annotated images")
    f.add_argument("--base", required=True, help="a run trained with --holdout-label LABEL")
    f.add_argument("--corpus", required=True, help="the corpus the base run was trained on")
    f.add_argument("--label", required=True, help="the held-out label")
    f.add_argument("--fraction", type=float, required=True, help="share of its train images that keep it")
    f.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (default 1)")
    f.add_argument("--out", required=True, help="run folder")
    f.add_argument("--seed", type=int, default=0, help="seed of the annotated subset and of training")
    _common(f)
    f.set_defaults(func=_finetune)


def _common(p: argparse.ArgumentParser) -> None:
    add_device(p)
    add_progress(p)


def _train(args: argparse.Namespace) -> int:
    from qparse_lite.baselines.parametric import parametric_config, train_parametric
    from qparse_lite.commands.train import _parse_set
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.runinfo import get_device

    corpus = Corpus.load(args.corpus)
    cfg = parametric_config(
        args.profile, corpus.num_labels, pretrained=not args.scratch, holdout_label=args.holdout_label,
        seed=args.seed, **_parse_set(args.set),
    )  # fmt: skip
    rec = train_parametric(
        corpus, args.out, cfg, device=get_device(args.device), resume=args.resume,
        progress=progress(args), profile=args.profile,
    )  # fmt: skip
    print(f"trained: {args.out}/checkpoint.pt ({rec['train_s']} s; val avg F1 {rec['final_val']['val_avg_f1']:.2f})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.evaluation.newlabels import finetune_new_label
    from qparse_lite.runinfo import get_device

    rec = finetune_new_label(
        args.base, Corpus.load(args.corpus), args.label, args.fraction, args.out, args.epochs, seed=args.seed,
        device=get_device(args.device), progress=progress(args),
    )  # fmt: skip
    print(f"fine-tuned: {args.out}/checkpoint.pt ({rec['train_s']} s)")
    return 0
