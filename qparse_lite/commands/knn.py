"""``qparse knn``: retrieve the K nearest training images of a split (paper Sec. 3.1) and score them."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "knn",
        help="KNN retrieval of corpus images (paper Sec. 3.1); writes a KNN .npz, prints label precision@K",
        description="Computes global features of a prepared corpus, retrieves for every image of --split its K "
        "nearest images of --database-split (exact L2 search with faiss; an image never retrieves itself), "
        "saves them to --out (.npz, reused by `qparse train` and parsing) and prints the label-overlap "
        "precision@K: the mean share of a neighbour's foreground labels that the query also has. For "
        "comparison it also prints the oracle's (neighbours by ground-truth label maps: the upper bound) "
        "and random neighbours' (chance) precision@K.",
    )
    p.add_argument("--corpus", required=True, help="prepared corpus cache folder (from `qparse prepare`)")
    p.add_argument("--split", default="test", help="query split: train, val or test (default test)")
    p.add_argument("--database-split", default="train", help="split to retrieve from (default train)")
    p.add_argument(
        "--k", type=int, default=9, help="K, neighbours per image (paper: 9 at test, 50 for training)"
    )
    p.add_argument("--features", default="hog-color", choices=["alexnet-imagenet", "hog-color", "oracle"],
                   help="retrieval features: alexnet-imagenet (the paper's fc7; needs the ImageNet weights "
                        "file), hog-color (HOG + colour histograms, no download; default), oracle "
                        "(ground-truth label maps, upper bound for teaching)")  # fmt: skip
    p.add_argument("--out", required=True, help="KNN file to write (.npz)")
    p.add_argument("--weights", default=None,
                   help="AlexNet state_dict file for alexnet-imagenet (default: torch hub cache "
                        "checkpoints/alexnet-owt-7be5be79.pth)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (alexnet-imagenet only)")
    p.add_argument("--batch-size", type=int, default=None, help="images per feature batch")
    p.add_argument("--no-cache", action="store_true",
                   help="do not cache the features as features_<name>_<key>.npy beside --out")  # fmt: skip
    p.add_argument("--no-baselines", action="store_true", help="skip the oracle and random comparisons")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-neighbours baseline")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _load_corpus(path: str):
    from ..errors import QparseError

    if not (Path(path) / "meta.json").is_file():
        raise QparseError(f"{path}: no prepared corpus (meta.json missing). Fix: run `qparse prepare` first.")
    from ..prepare import Corpus

    return Corpus.load(path)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import QparseError
    from ..retrieval import corpus_knn, label_overlap_at_k, random_neighbours

    if args.k < 1:
        raise QparseError(f"--k {args.k}: K must be at least 1")
    corpus = _load_corpus(args.corpus)
    progress = False if args.no_progress else None
    kw: dict = {"batch_size": args.batch_size}
    if args.features == "alexnet-imagenet":
        kw.update(weights=args.weights, device=args.device)
    elif args.weights is not None:
        raise QparseError(f"--weights is for --features alexnet-imagenet, not {args.features}")
    out = Path(args.out)
    cache = None if args.no_cache else out.parent
    res = corpus_knn(
        corpus,
        args.split,
        args.k,
        args.features,
        args.database_split,
        kw,
        feature_cache=cache,
        progress=progress,
    )
    res.save(out)
    print(
        f"wrote {out}: {len(res.queries)} {args.split} images × K={args.k} neighbours from {args.database_split}"
    )

    rows = [(f"{args.features} (this file)", label_overlap_at_k(corpus, res.queries, res.neighbours))]
    if not args.no_baselines:
        if args.features != "oracle":
            orc = corpus_knn(corpus, args.split, args.k, "oracle", args.database_split, progress=progress)
            rows.append(("oracle (ground-truth label maps: upper bound)", label_overlap_at_k(
                corpus, orc.queries, orc.neighbours)))  # fmt: skip
        rnd = random_neighbours(res.queries, np.asarray(corpus.split(args.database_split)), args.k, args.seed)
        rows.append(
            (f"random neighbours (chance, seed {args.seed})", label_overlap_at_k(corpus, res.queries, rnd))
        )
    width = max(len(r[0]) for r in rows)
    print(
        f"label overlap @K={args.k} ({args.split} → {args.database_split}; foreground label sets, mean over pairs)"
    )
    print(f"  {'neighbours':<{width}}  precision  recall    IoU")
    for name, m in rows:
        print(f"  {name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['iou']:6.3f}")
    return 0
