"""``qparse parse``: parse raw photos of any size with a trained M-CNN and the corpus as KNN database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qparse_lite.commands.common import add_device, add_features


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
    add_features(p, help="retrieval features (default: the model's profile)")
    p.add_argument("--xi1", type=float, default=None, help="label visibility threshold ξ1 (default: profile)")
    p.add_argument("--xi2", type=float, default=None, help="rough foreground threshold ξ2 (default: profile)")
    p.add_argument("--detector", default="auto", choices=["auto", *_detector_names()],
                   help="person detector for the crop (default auto: fg-head when the model folder has a "
                        "person_head.pt, else mediapipe if installed, else hog)")  # fmt: skip
    add_device(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per photo (crop box and detector, the labels found with their "
                        "confidence ĉ_l, seconds per stage) and a final summary object (photos/s) instead of text")  # fmt: skip
    p.set_defaults(func=_run)


def _detector_names() -> list[str]:
    from qparse_lite.data.person import DETECTORS

    return list(DETECTORS)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from qparse_lite.data.datasets import read_image
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.errors import QparseError
    from qparse_lite.io import atomic_path, atomic_save_png, atomic_write_json
    from qparse_lite.parse.parser import MCNNParser, overlay, parse_photo
    from qparse_lite.profiles import Profile
    from qparse_lite.retrieval.features import corpus_features, get_extractor
    from qparse_lite.runinfo import get_device
    from qparse_lite.train.checkpoint import load_model

    device = get_device(args.device)
    corpus = Corpus.load(args.corpus)
    net, tn, meta = load_model(args.model, map_location=device)
    prof = Profile(**meta["profile"])
    if meta["label_set"]["names"] != list(corpus.label_set.names):
        raise QparseError(f"{args.model}: trained on another label set than {args.corpus}. Fix: use its corpus.")
    from qparse_lite.data.crops import check_crop, corpus_crop

    check_crop(meta["crop"], corpus, str(args.model),
               f"pass the corpus it was trained on (qparse prepare --crop {meta['crop']}) as --corpus")  # fmt: skip
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
    from qparse_lite.data.person import PERSON_HEAD_FILE, get_detector

    person_head = Path(args.model) / PERSON_HEAD_FILE
    detector = get_detector(args.detector, head=person_head if person_head.is_file() else None)
    out = Path(args.out)
    db = np.asarray(corpus.split("train"))
    feats = corpus_features(corpus, db, extractor, cache_dir=out / ".features")
    import json
    import time

    failed, done = [], []
    t_all = time.perf_counter()
    for path in args.images:
        t_read = time.perf_counter()
        try:
            image = read_image(path)
            t_read = time.perf_counter() - t_read
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
        st = res.stages
        found = {corpus.label_set.names[i]: round(float(st.label_confidence[i]), 4)
                 for i in np.flatnonzero(st.visible) if i > 0}  # fmt: skip
        rec = {"image": str(path), "size": [int(image.shape[0]), int(image.shape[1])], "box": list(res.box),
               "detector": res.crop_method, "labels": names, "visible": found,
               "confidence": {n: round(float(v), 4) for n, v in zip(corpus.label_set.names[1:], st.label_confidence[1:], strict=True)},
               "neighbours": [corpus.ids[int(i)] for i in res.neighbours],
               "timings_s": {"read": round(t_read, 4), **st.extra.get("timings_s", {})}}  # fmt: skip
        done.append(rec)
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            print(f"{path}: {image.shape[1]}×{image.shape[0]}, crop {res.crop_method} {res.box}, labels: {', '.join(names) or '(none)'}")
    wall = time.perf_counter() - t_all
    summary = {"summary": True, "photos": len(done), "failed": len(failed), "wall_s": round(wall, 3),
               "photos_per_s": round(len(done) / wall, 4) if wall > 0 else None,
               "mean_timings_s": {k: round(float(np.mean([d["timings_s"][k] for d in done])), 4)
                                  for k in (done[0]["timings_s"] if done else {})}}  # fmt: skip
    if args.json:
        print(json.dumps(summary), flush=True)
    atomic_write_json(out / "parse.json", {"model": str(args.model), "corpus": str(args.corpus), "k": args.k,
                                           "crop": corpus_crop(corpus), "size": int(corpus.size),
                                           "features": features, "detector": detector.name, "parsed": done,
                                           "failed": failed, "summary": summary})  # fmt: skip
    if failed:
        print(f"qparse parse: {len(failed)} of {len(args.images)} image(s) could not be parsed", file=sys.stderr)
        return 1
    return 0
