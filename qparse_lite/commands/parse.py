"""``qparse parse``: parse raw photos of any size with a trained M-CNN and the corpus as KNN database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parse",
        help="parse photos: person crop, KNN, M-CNN, post-processing; writes a PNG label map and an overlay",
        description="For each photo: a person detector (--detector; auto = MediaPipe when the optional extra "
        "is installed, else OpenCV's HOG) gives a human-centric crop with the corpus's margin and squaring (the "
        "whole image, with a warning, when it finds nobody), its K nearest train images are retrieved with the model's "
        "features, the M-CNN and the post-processing parse the crop, and the result is mapped back to the "
        "photo's resolution: OUT/<name>.png (palette label map) and OUT/<name>_overlay.jpg. A photo that "
        "cannot be read is reported and skipped; the others are still parsed (exit status 1 if any failed).",
    )
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", required=True, help="a `qparse train` run folder")
    p.add_argument("--corpus", required=True, help="the prepared corpus the model was trained on")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--k", type=int, default=9, help="KNN images (paper: 9)")
    p.add_argument("--features", default=None, help="retrieval features (default: the model's profile)")
    p.add_argument("--xi1", type=float, default=None, help="label visibility threshold ξ1 (default: profile)")
    p.add_argument("--xi2", type=float, default=None, help="rough foreground threshold ξ2 (default: profile)")
    p.add_argument("--detector", default="auto", choices=["auto", *_detector_names()],
                   help="person detector for the crop (default auto: mediapipe if installed, else hog)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto | cpu | cuda")
    p.set_defaults(func=_run)


def _detector_names() -> list[str]:
    from ..person import DETECTORS

    return list(DETECTORS)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..datasets import read_image
    from ..errors import QparseError
    from ..io import atomic_path, atomic_save_png, atomic_write_json
    from ..parse import MCNNParser, overlay, parse_photo
    from ..prepare import Corpus
    from ..profiles import Profile
    from ..retrieval import corpus_features, get_extractor
    from ..runinfo import get_device
    from ..train import load_model

    device = get_device(args.device)
    corpus = Corpus.load(args.corpus)
    net, tn, meta = load_model(args.model, map_location=device)
    prof = Profile(**meta["profile"])
    if meta["label_set"]["names"] != list(corpus.label_set.names):
        raise QparseError(f"{args.model}: trained on another label set than {args.corpus}. Fix: use its corpus.")
    parser = MCNNParser(
        net, tn, corpus, xi1=prof.xi1 if args.xi1 is None else args.xi1,
        xi2=prof.xi2 if args.xi2 is None else args.xi2, erosion=prof.erosion_px, device=device,
    )  # fmt: skip
    features = args.features or prof.features
    if features == "oracle":
        raise QparseError("oracle features need ground truth; a photo has none. Fix: --features hog-color")
    head = Path(args.model) / "retrieval_head.pt"  # a learned retrieval head shipped with the model
    if features == "efficientnet-lite0-learned" and head.is_file():
        extractor = get_extractor(features, head=head, device=device)
    elif features.startswith("efficientnet"):
        extractor = get_extractor(features, corpus=corpus, device=device)
    else:
        extractor = get_extractor(features, corpus=corpus)
    from ..person import get_detector

    detector = get_detector(args.detector)
    out = Path(args.out)
    db = np.asarray(corpus.split("train"))
    feats = corpus_features(corpus, db, extractor, cache_dir=out / ".features")
    failed, done = [], []
    for path in args.images:
        try:
            image = read_image(path)
            res = parse_photo(parser, image, extractor, feats, db, k=args.k, detector=detector)
        except QparseError as e:
            print(f"qparse parse: skipped {path}: {e}", file=sys.stderr)
            failed.append(path)
            continue
        stem = Path(path).stem
        atomic_save_png(out / f"{stem}.png", res.labels, corpus.label_set.palette)
        from PIL import Image

        with atomic_path(out / f"{stem}_overlay.jpg", suffix=".jpg") as tmp:
            Image.fromarray(overlay(image, res.labels, corpus.label_set.palette)).save(tmp, format="JPEG", quality=92)
        names = [corpus.label_set.names[i] for i in np.unique(res.labels) if i > 0]
        done.append({"image": str(path), "labels": names, "box": list(res.box), "crop": res.crop_method,
                     "size": list(image.shape[:2])})  # fmt: skip
        print(f"{path}: {image.shape[1]}×{image.shape[0]}, crop {res.crop_method} {res.box}, labels: {', '.join(names) or '(none)'}")
    atomic_write_json(out / "parse.json", {"model": str(args.model), "corpus": str(args.corpus), "k": args.k,
                                           "features": features, "detector": detector.name, "parsed": done, "failed": failed})  # fmt: skip
    if failed:
        print(f"qparse parse: {len(failed)} of {len(args.images)} image(s) could not be parsed", file=sys.stderr)
        return 1
    return 0
