"""``qparse evaluate``: Table 1/2 rows (and Fig. 5) of a trained run or a baseline on a corpus split."""

from __future__ import annotations

import argparse

from qparse_lite.commands.common import (
    add_data_root,
    add_device,
    add_features,
    add_progress,
    add_split,
    add_threads,
    apply_threads,
    nonneg_float,
    nonneg_int,
    out_dir,
    positive_int,
    profile_default,
    progress,
    unit_float,
)


def register(sub: argparse._SubParsersAction) -> None:
    from qparse_lite.evaluation.evaluate import METHODS
    from qparse_lite.parse.postprocess import BACKGROUNDS, SUPERPIXEL_METHODS

    p = sub.add_parser(
        "evaluate",
        help="parse a corpus split and write Table 1/2 rows, per-image label maps and (--fig5) the K sweep",
        description="Parses every image of a split of a prepared corpus with a trained M-CNN (--model) or a "
        "baseline on the same harness (--method label-transfer | mean-label-map), and writes OUT/table1.csv/.md, "
        "OUT/table2.csv/.md, OUT/scores.json, OUT/pred/<id>.png and OUT/gt/<id>.png (which `qparse score` "
        "accepts), all scored at the crop (S×S), and beside them the same maps pasted back into the photos and "
        "scored against the photos' own ground truth (OUT/table1_full.csv/.md, OUT/table2_full.csv/.md, "
        "scores.json's full_resolution, OUT/full/pred|gt/<id>.png), so corpora of other crops and sizes compare "
        "on the same pixels. --fig5 adds OUT/fig5.csv/.md/.png: average F1 against K in {1,3,5,7,9,11,15}.",
    )
    p.add_argument("--model", default=None,
                   help="a `qparse train` run folder (--method mcnn) or a `qparse baseline train` folder "
                        "(--method parametric)")  # fmt: skip
    p.add_argument("--corpus", required=True, help="prepared corpus cache folder (`qparse prepare`)")
    add_split(p, help="split to evaluate (default test)")
    p.add_argument("--k", type=positive_int, default=None,
                   help=f"KNN images per test image (default: the corpus's profile's k_test, {profile_default('k_test')}; "
                        "paper: 9)")  # fmt: skip
    p.add_argument("--out", required=True, type=out_dir, help="output folder")
    p.add_argument("--method", default="mcnn", choices=list(METHODS),
                   help="mcnn (needs --model), or a baseline: KNN label transfer (PaperDoll-like, not "
                        "PaperDoll), the train split's mean label map, or parametric (needs --model)")  # fmt: skip
    add_features(p,
                 help="retrieval features (default: the model's profile; for baselines the profile of the "
                        "corpus's dataset, e.g. efficientnet-lite0-learned)")  # fmt: skip
    p.add_argument("--xi1", type=unit_float, default=None,
                   help="label visibility threshold ξ1 (default: MODEL/postprocess.json from `qparse tune`, else "
                        "the run's profile; the paper: 0.8)")  # fmt: skip
    p.add_argument("--xi2", type=unit_float, default=None,
                   help="rough foreground threshold ξ2 (default: postprocess.json, else the profile; the paper: 0.5)")  # fmt: skip
    p.add_argument("--erosion", type=nonneg_int, default=None,
                   help="seed erosion size in px (default: 10 scaled to the image size)")  # fmt: skip
    p.add_argument("--superpixels", default="slic", choices=[*SUPERPIXEL_METHODS, "none"],
                   help="superpixel smoothing (none: the paper's 'w/o ss' ablation, as --n-segments 0)")  # fmt: skip
    p.add_argument("--n-segments", type=nonneg_int, default=None,
                   help="SLIC superpixels per image, 0 = none (default: postprocess.json, else the profile; "
                        "label transfer: its own entry, else the profile's lt_n_segments)")  # fmt: skip
    p.add_argument("--lt-rank-power", type=nonneg_float, default=None,
                   help="label transfer only: neighbour k votes with weight (1+k)^-γ, 0 = equal votes (default: "
                        "its entry in MODEL/postprocess.json, else the profile's lt_rank_power, 1)")  # fmt: skip
    p.add_argument("--lt-bg-weight", type=nonneg_float, default=None,
                   help="label transfer only: the background vote × β before the argmax, < 1 lets foreground win "
                        "more pixels (default: postprocess.json, else the profile's lt_bg_weight, 1)")  # fmt: skip
    p.add_argument("--lt-min-share", type=unit_float, default=None,
                   help="label transfer only: drop a label whose mean vote over the image is below τ (default: "
                        "postprocess.json, else the profile's lt_min_share, 0 = none)")  # fmt: skip
    p.add_argument("--displacement-scale", type=nonneg_float, default=None,
                   help="M-CNN: move each KNN box by this times the predicted displacement (default: "
                        "postprocess.json, else the profile; 1 = the paper)")  # fmt: skip
    p.add_argument("--background", default="geodesic", choices=list(BACKGROUNDS),
                   help="background probability: geodesic distances from the seeds, or 1 - p_fg")  # fmt: skip
    p.add_argument("--fig5", action="store_true", help="also sweep K (Fig. 5)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images of the split")
    add_data_root(p, help="the dataset folder of the corpus's photos, for the full-resolution scores (default: "
                          "the one its meta.json records)")
    p.add_argument("--crop-level-only", action="store_true",
                   help="skip the full-resolution scores (maps pasted back into the photos, scored against "
                        "their own ground truth: OUT/table1_full.csv, scores.json's full_resolution)")  # fmt: skip
    add_device(p)
    add_threads(p)
    add_progress(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.evaluation.evaluate import evaluate
    from qparse_lite.evaluation.tables import markdown_table
    from qparse_lite.runinfo import get_device

    apply_threads(args)
    corpus = Corpus.load(args.corpus)
    if args.k is None:
        from qparse_lite.profiles import profile_for_dataset

        args.k = profile_for_dataset(str(corpus.meta.get("dataset", "synthetic"))).k_test
    res = evaluate(
        corpus, args.out, method=args.method, model=args.model, split=args.split, k=args.k,
        features=args.features, device=get_device(args.device), xi1=args.xi1, xi2=args.xi2,
        erosion=args.erosion, superpixel_method=None if args.superpixels == "none" else args.superpixels,
        n_segments=0 if args.superpixels == "none" else args.n_segments, background=args.background, fig5=args.fig5, limit=args.limit,
        displacement_scale=args.displacement_scale, progress=progress(args),
        full_resolution=False if args.crop_level_only else None, data_root=args.data_root,
        rank_power=args.lt_rank_power, bg_weight=args.lt_bg_weight, min_share=args.lt_min_share,
    )  # fmt: skip
    post = res["run"].get("postprocess")
    if post:  # each value and its source: flag / model (postprocess.json) / profile
        from qparse_lite.parse.defaults import Resolved

        print(Resolved(**post).describe())
    keys = ["accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"]
    rows = [{"method": res["method"], "scored at": f"crop ({res['run']['crop']}, {res['run']['size']} px)",
             **{k: res[k] for k in keys}}]  # fmt: skip
    if "full_resolution" in res:
        rows.append({"method": res["method"], "scored at": "full resolution (pasted back into the photo)",
                     **{k: res["full_resolution"][k] for k in keys}})  # fmt: skip
    print(markdown_table(rows))
    full = ", table1_full.csv, table2_full.csv, full/pred/, full/gt/" if "full_resolution" in res else ""
    print(f"wrote {args.out}/table1.csv, table2.csv, scores.json, pred/, gt/{full}" + (", fig5.csv/png" if args.fig5 else ""))
    return 0
