"""``qparse prepare``: human-centric crops at S×S and the memory-mappable corpus cache (paper Sec. 3)."""

from __future__ import annotations

import argparse

from qparse_lite.commands.common import (
    add_data_root,
    add_dataset,
    add_labels,
    add_progress,
    add_threads,
    apply_threads,
    nonneg_float,
    out_dir,
    positive_int,
    profile_default,
    progress,
)


def register(sub: argparse._SubParsersAction) -> None:
    from qparse_lite.data.crops import CROPS

    p = sub.add_parser(
        "prepare",
        help="crop every image around its person, resize to S×S and write the corpus cache",
        description="Human-centric crop (bounding box of the labelled person + margin, made square or, with "
        "--crop warp, resized to S×S without keeping its aspect), image "
        "resized bilinearly and labels by nearest neighbour to S×S, the train-split mean image, and a cache "
        "folder (images.npy, labels.npy, mean.npy, boxes.npy, meta.json written last) that `qparse knn`, "
        "`qparse train` and the notebooks load.",
    )
    add_dataset(p)
    add_data_root(p)
    p.add_argument("--size", type=positive_int, required=True, help="S, the side of the square crops (paper: 227)")
    p.add_argument("--out", required=True, type=out_dir, help="cache folder to write")
    add_labels(p, help="label set (default: the dataset's; ccp: ccp-coarse)")
    p.add_argument(
        "--margin", type=nonneg_float, default=0.1, help="crop margin, share of the person box per side (0.1)"
    )
    p.add_argument("--n", type=positive_int, default=None,
                   help=f"synthetic: number of images (default: the quick profile's, {profile_default('n_images')})")  # fmt: skip
    p.add_argument(
        "--gen-size", type=positive_int, default=None, help="synthetic: generated image side (default max(128, S))"
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed (default 0)")
    p.add_argument(
        "--split-seed", type=int, default=0, help="ccp/atr: seed of the split permutation (default 0)"
    )
    p.add_argument(
        "--include-chictopia", action="store_true", help="atr: add Chictopia10k images to the train split"
    )
    p.add_argument("--feature-size", type=positive_int, default=None,
                   help="F: also write the crops at F×F from the photo (feature_images.npy) for the ImageNet "
                        "retrieval features (the ccp profile: 224; default: none, features see the S×S crops)")  # fmt: skip
    p.add_argument("--crop", default=None, choices=list(CROPS),
                   help="square: the person box + margin made square (aspect kept); warp: the person box + "
                        "margin resized to S×S without keeping the aspect, as the paper's R-CNN detections "
                        f"(default: the dataset's profile's, {profile_default('crop')})")  # fmt: skip
    add_threads(p)
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import Corpus, prepare_corpus

    apply_threads(args)
    kw: dict = {}
    if args.dataset == "synthetic":
        kw = {"n": args.n or profile_default("n_images"), "size": args.gen_size or max(128, args.size), "seed": args.seed}
    else:
        kw["split_seed"] = args.split_seed
        if args.dataset == "atr" and args.include_chictopia:
            kw["include_chictopia"] = True
    if args.labels:
        kw["labels"] = args.labels
    ds = get_dataset(args.dataset, root=args.data_root, **kw)
    t0 = time.perf_counter()
    if args.crop is None:
        from qparse_lite.profiles import profile_for_dataset

        args.crop = profile_for_dataset(args.dataset).crop
    out = prepare_corpus(
        ds, args.size, args.out, margin=args.margin, feature_size=args.feature_size, crop=args.crop,
        progress=progress(args),
    )
    wall = time.perf_counter() - t0
    corpus = Corpus.load(out, verify=False)
    nbytes = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    sizes = ", ".join(f"{k} {len(v)}" for k, v in corpus.splits.items())
    print(
        f"prepared {len(corpus)} {ds.name} images at {corpus.size}×{corpus.size}, crop {args.crop} ({corpus.label_set.name}; {sizes}) "
        f"in {wall:.1f} s -> {out} ({nbytes / 2**20:.1f} MiB)"
    )
    return 0
