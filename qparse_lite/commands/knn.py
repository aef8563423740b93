"""``qparse knn``: retrieve the K nearest training images of a split (paper Sec. 3.1) and score them."""

from __future__ import annotations

import argparse
from pathlib import Path

from qparse_lite.commands.common import (
    add_device,
    add_features,
    add_progress,
    add_split,
    add_threads,
    apply_threads,
    out_file,
    positive_int,
    profile_default,
    progress,
)


def register(sub: argparse._SubParsersAction) -> None:
    from qparse_lite.retrieval.imagenet import POOLINGS

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
    add_split(p, help="query split (default test)")
    add_split(p, "--database-split", default="train", help="split to retrieve from (default train)")
    p.add_argument("--k", type=positive_int, default=None,
                   help="K, neighbours per image (default: the corpus's profile's k_test, "
                        f"{profile_default('k_test')}; paper: 9 at test, 50 for training)")  # fmt: skip
    add_features(p,
                 help="retrieval features (default: the corpus's profile default, "
                        "efficientnet-lite0-learned): efficientnet-lite0-learned (a garment head trained on "
                        "the corpus's train split on frozen ImageNet EfficientNet-Lite0 features; no "
                        "download), efficientnet-lite0-imagenet (pooled ImageNet features), alexnet-imagenet "
                        "(the paper's fc7; needs the ImageNet weights file), style (PaperDoll-like colour/"
                        "texture/shape over body cells), hog-color (HOG + colour histograms), oracle "
                        "(ground-truth label maps, upper bound for teaching)")  # fmt: skip
    p.add_argument("--pooling", default=None, choices=POOLINGS,
                   help="efficientnet-lite0-imagenet: how the feature map is pooled (default person)")
    p.add_argument("--json", action="store_true",
                   help="print the retrieval-quality table (precision/recall/IoU @K, with oracle and random "
                        "over --random-seeds seeds) as JSON on stdout")  # fmt: skip
    p.add_argument("--random-seeds", type=positive_int, default=5, help="seeds of the random baseline (default 5)")
    p.add_argument("--out", required=True, type=out_file, help="KNN file to write (.npz)")
    p.add_argument("--weights", default=None,
                   help="AlexNet state_dict file for alexnet-imagenet (default: torch hub cache "
                        "checkpoints/alexnet-owt-7be5be79.pth)")  # fmt: skip
    add_device(p, help="device of the ImageNet networks (default auto)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per feature batch")
    p.add_argument("--no-cache", action="store_true",
                   help="do not cache the features as features_<name>_<key>.npy beside --out")  # fmt: skip
    p.add_argument("--no-baselines", action="store_true", help="skip the oracle and random comparisons")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-neighbours baseline")
    add_threads(p)
    add_progress(p)
    p.set_defaults(func=_run)


def default_features(corpus) -> str:
    """The retrieval features of the profile whose dataset the corpus holds (quick for synthetic)."""
    from qparse_lite.profiles import features_for_dataset

    return features_for_dataset(str(corpus.meta.get("dataset", "synthetic")))


def _load_corpus(path: str):
    from qparse_lite.errors import QparseError

    if not (Path(path) / "meta.json").is_file():
        raise QparseError(f"{path}: no prepared corpus (meta.json missing). Fix: run `qparse prepare` first.")
    from qparse_lite.data.prepare import Corpus

    return Corpus.load(path)


def _run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from qparse_lite.errors import QparseError
    from qparse_lite.retrieval.quality import label_overlap_at_k
    from qparse_lite.retrieval.search import corpus_knn, random_neighbours

    apply_threads(args)
    corpus = _load_corpus(args.corpus)
    if args.k is None:
        from qparse_lite.profiles import profile_for_dataset

        args.k = profile_for_dataset(str(corpus.meta.get("dataset", "synthetic"))).k_test
    if args.k < 1:
        raise QparseError(f"--k {args.k}: K must be at least 1")
    features = args.features or default_features(corpus)
    show = False if args.json else progress(args)
    kw: dict = {"batch_size": args.batch_size}
    if features in ("alexnet-imagenet", "efficientnet-lite0-imagenet", "efficientnet-lite0-learned"):
        kw.update(device=args.device)
    if features == "alexnet-imagenet":
        kw.update(weights=args.weights)
    elif args.weights is not None:
        raise QparseError(f"--weights is for --features alexnet-imagenet, not {features}")
    if args.pooling is not None:
        if features != "efficientnet-lite0-imagenet":
            raise QparseError(f"--pooling is for --features efficientnet-lite0-imagenet, not {features}")
        kw.update(pooling=args.pooling)
    out = Path(args.out)
    cache = None if args.no_cache else out.parent
    res = corpus_knn(
        corpus, args.split, args.k, features, args.database_split, kw, feature_cache=cache, progress=show
    )
    res.save(out)
    log = (lambda *a: None) if args.json else print
    log(f"wrote {out}: {len(res.queries)} {args.split} images × K={args.k} neighbours from {args.database_split}")

    rows = [(features, "this file", label_overlap_at_k(corpus, res.queries, res.neighbours))]
    if not args.no_baselines:
        if features != "oracle":
            orc = corpus_knn(corpus, args.split, args.k, "oracle", args.database_split, progress=show)
            rows.append(("oracle", "ground-truth label maps: upper bound",
                         label_overlap_at_k(corpus, orc.queries, orc.neighbours)))  # fmt: skip
        db = np.asarray(corpus.split(args.database_split))
        seeds = range(args.seed, args.seed + max(1, args.random_seeds))
        rnd = [label_overlap_at_k(corpus, res.queries, random_neighbours(res.queries, db, args.k, s)) for s in seeds]
        mean = {m: float(np.mean([r[m] for r in rnd])) for m in ("precision", "recall", "iou")}
        std = {f"{m}_std": float(np.std([r[m] for r in rnd])) for m in ("precision", "recall", "iou")}
        rows.append(("random neighbours", f"chance, mean ± std over seeds {seeds.start}..{seeds.stop - 1}",
                     {**mean, **std, "pairs": rnd[0]["pairs"], "seeds": len(rnd)}))  # fmt: skip
    if args.json:
        print(json.dumps({
            "corpus": str(args.corpus), "split": args.split, "database_split": args.database_split,
            "k": args.k, "features": features, "extractor": res.header.get("extractor"),
            "rows": [{"neighbours": n.split()[0], "note": note, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                          for k, v in m.items()}} for n, note, m in rows],
        }, indent=2))  # fmt: skip
        return 0
    width = max(len(f"{r[0]} ({r[1]})") for r in rows)
    print(
        f"label overlap @K={args.k} ({args.split} → {args.database_split}; foreground label sets, mean over pairs)"
    )
    print(f"  {'neighbours':<{width}}  precision  recall    IoU")
    for name, note, m in rows:
        label = f"{name} ({note})"
        print(f"  {label:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['iou']:6.3f}")
    return 0
