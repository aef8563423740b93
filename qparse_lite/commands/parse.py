"""``qparse parse``: parse raw photos of any size with a trained M-CNN and the corpus as KNN database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qparse_lite.commands.common import (
    add_device,
    add_features,
    add_threads,
    apply_threads,
    nonneg_float,
    nonneg_int,
    out_dir,
    positive_int,
    unit_float,
)


def register(sub: argparse._SubParsersAction) -> None:
    from qparse_lite.data.photo import MAX_PHOTO_PIXELS

    p = sub.add_parser(
        "parse",
        help="parse photos: person crop, KNN, M-CNN, post-processing; writes a PNG label map and an overlay",
        description="For each photo: a person detector (--detector; auto = MediaPipe when the optional extra "
        "is installed, else OpenCV's HOG) gives a human-centric crop with the corpus's margin and squaring (the "
        "whole image, with a warning, when it finds nobody), its K nearest train images are retrieved with the model's "
        "features, the M-CNN and the post-processing parse the crop, and the result is mapped back to the "
        "photo's resolution: OUT/<name>.png (palette label map) and OUT/<name>_overlay.jpg, <name> the photo's "
        "name without its suffix, made unique per input when two photos share it (a/x.jpg, b/x.jpg -> a__x_jpg, "
        "b__x_jpg); OUT/parse.json records which outputs belong to which photo. An output that would overwrite "
        "one of the photos is refused before any work. The EXIF orientation is applied; photos over "
        "--max-megapixels, and files that are not images (or not regular files) are reported and skipped, the "
        "others still parsed, parse.json still written. Exit status: 0 when every photo was parsed, 1 when any "
        "was skipped, 2 on an error that stops the command (e.g. a full disk).",
    )
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", required=True, help="a `qparse train` run folder")
    p.add_argument("--corpus", required=True, help="the prepared corpus the model was trained on")
    p.add_argument("--out", required=True, type=out_dir, help="output folder")
    p.add_argument("--k", type=positive_int, default=9, help="KNN images (paper: 9)")
    add_features(p, help="retrieval features (default: the model's profile)")
    p.add_argument("--xi1", type=unit_float, default=None,
                   help="label visibility threshold ξ1 (default: MODEL/postprocess.json, else the run's profile)")  # fmt: skip
    p.add_argument("--xi2", type=unit_float, default=None,
                   help="rough foreground threshold ξ2 (default: postprocess.json, else the profile)")  # fmt: skip
    p.add_argument("--n-segments", type=nonneg_int, default=None,
                   help="SLIC superpixels per crop, 0 = none (default: postprocess.json, else the profile)")  # fmt: skip
    p.add_argument("--displacement-scale", type=nonneg_float, default=None,
                   help="move each KNN box by this times t̂ (default: postprocess.json, else the profile)")  # fmt: skip
    p.add_argument("--detector", default="auto", choices=["auto", *_detector_names()],
                   help="person detector for the crop (default auto: fg-head when the model folder has a "
                        "person_head.pt, else mediapipe if installed, else hog)")  # fmt: skip
    add_device(p)
    add_threads(p)
    p.add_argument("--max-megapixels", type=_megapixels, default=MAX_PHOTO_PIXELS / 1e6, metavar="MP",
                   help=f"skip photos larger than this (default {MAX_PHOTO_PIXELS / 1e6:.0f} megapixels: a "
                        "decompression bomb, or more memory than the parser should take)")  # fmt: skip
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per photo (crop box and detector, the labels found with their "
                        "confidence ĉ_l, seconds per stage) and a final summary object (photos/s) instead of text")  # fmt: skip
    p.set_defaults(func=_run)


def _megapixels(text: str) -> float:
    v = nonneg_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number > 0")
    return v


def output_names(images: list[str]) -> dict[str, str]:
    """The output name (``OUT/<name>.png``, ``OUT/<name>_overlay.jpg``) of every photo, unique per input.

    A photo's name is its file name without the suffix; photos that share it are named by their path from
    the folder they share, ``/`` as ``__`` and the suffix's dot as ``_`` (``a/x.jpg``, ``b/x.jpg``, ``b/x.png``
    -> ``a__x_jpg``, ``b__x_jpg``, ``b__x_png``), with ``-2``, ``-3`` ... appended if that still collides.
    The same file given twice keeps one name.
    """
    import os
    from collections import Counter

    resolved = {p: os.path.realpath(p) for p in images}
    files = list(dict.fromkeys(resolved.values()))
    stems = Counter(Path(f).stem for f in files)
    clash = [f for f in files if stems[Path(f).stem] > 1]
    common = os.path.commonpath([os.path.dirname(f) for f in clash]) if clash else ""
    names: dict[str, str] = {}
    used: set[str] = set()
    for f in files:
        stem = Path(f).stem
        if stems[stem] > 1:
            rel = Path(os.path.relpath(f, common))
            stem = "__".join((*rel.parent.parts, rel.stem + rel.suffix.replace(".", "_")))
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names[f] = name
    return {p: names[resolved[p]] for p in images}


def _check_no_input_overwritten(images: list[str], names: dict[str, str], out: Path) -> None:
    """Refuse (before any work) an output path that is one of the input photos."""
    import os

    from qparse_lite.errors import QparseError

    inputs = {os.path.realpath(p): p for p in images}
    for name in set(names.values()):
        for target in (out / f"{name}.png", out / f"{name}_overlay.jpg"):
            src = inputs.get(os.path.realpath(target))
            if src is not None:
                raise QparseError(
                    f"{target} would overwrite the input photo {src}. Fix: pass another --out folder "
                    "(the outputs are named after the photos)."
                )


def _detector_names() -> list[str]:
    from qparse_lite.data.person import DETECTORS

    return list(DETECTORS)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from qparse_lite.data.crops import corpus_crop
    from qparse_lite.data.photo import read_photo
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.errors import QparseError
    from qparse_lite.io import atomic_save_image, atomic_write_json
    from qparse_lite.parse.parser import MCNNParser, overlay, parse_photo
    from qparse_lite.retrieval.features import corpus_features
    from qparse_lite.runinfo import get_device

    out = Path(args.out)
    names_of = output_names(args.images)  # checked before any work: unique, never an input photo
    _check_no_input_overwritten(args.images, names_of, out)
    apply_threads(args)
    device = get_device(args.device)
    corpus = Corpus.load(args.corpus)
    parser = MCNNParser.from_run(
        args.model, corpus, device=device, xi1=args.xi1, xi2=args.xi2, n_segments=args.n_segments,
        displacement_scale=args.displacement_scale,
        fix="pass the corpus it was trained on (qparse prepare --crop {crop}) as --corpus",
    )  # fmt: skip
    post = parser.resolved
    print(post.describe(), file=sys.stderr)
    features = args.features or parser.profile.features
    extractor = parser.photo_extractor(features)
    from qparse_lite.data.person import PERSON_HEAD_FILE, get_detector

    person_head = Path(args.model) / PERSON_HEAD_FILE
    detector = get_detector(args.detector, head=person_head if person_head.is_file() else None)
    db = np.asarray(corpus.split("train"))
    feats = corpus_features(corpus, db, extractor, cache_dir=out / ".features")
    import json
    import time

    failed, errors, done, outputs = [], {}, [], {}
    stop: QparseError | None = None
    max_pixels = int(args.max_megapixels * 1e6)
    t_all = time.perf_counter()
    for path in dict.fromkeys(args.images):
        t_read = time.perf_counter()
        try:
            image = read_photo(path, max_pixels=max_pixels)
            t_read = time.perf_counter() - t_read
            res = parse_photo(parser, image, extractor, feats, db, k=args.k, detector=detector)
        except (QparseError, MemoryError) as e:
            msg = str(e) if isinstance(e, QparseError) else f"{path}: out of memory. Fix: downscale the photo first."
            print(f"qparse parse: skipped: {msg}", file=sys.stderr)
            failed.append(path)
            errors[path] = msg
            continue
        shape = image.shape
        files = {"labels": f"{names_of[path]}.png", "overlay": f"{names_of[path]}_overlay.jpg"}
        try:  # a failed write (a full disk) stops the batch: the next ones would fail the same way
            atomic_save_image(out / files["labels"], res.labels, corpus.label_set.palette)
            ov = overlay(image, res.labels, corpus.label_set.palette, out=image)  # in place: one copy of the photo
            del image
            atomic_save_image(out / files["overlay"], ov, quality=92)
            del ov
        except QparseError as e:
            print(f"qparse parse: stopped at {path}: {e}", file=sys.stderr)
            failed.append(path)
            errors[path] = str(e)
            stop = e
            break
        outputs[path] = files
        names = [corpus.label_set.names[i] for i in np.unique(res.labels) if i > 0]
        st = res.stages
        found = {corpus.label_set.names[i]: round(float(st.label_confidence[i]), 4)
                 for i in np.flatnonzero(st.visible) if i > 0}  # fmt: skip
        rec = {"image": str(path), **files, "size": [int(shape[0]), int(shape[1])], "box": list(res.box),
               "detector": res.crop_method, "labels": names, "visible": found,
               "confidence": {n: round(float(v), 4) for n, v in zip(corpus.label_set.names[1:], st.label_confidence[1:], strict=True)},
               "neighbours": [corpus.ids[int(i)] for i in res.neighbours],
               "timings_s": {"read": round(t_read, 4), **st.extra.get("timings_s", {})}}  # fmt: skip
        done.append(rec)
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            print(f"{path}: {shape[1]}×{shape[0]}, crop {res.crop_method} {res.box}, labels: {', '.join(names) or '(none)'}"
                  f" -> {out / files['labels']}")  # fmt: skip
    wall = time.perf_counter() - t_all
    summary = {"summary": True, "photos": len(done), "failed": len(failed), "wall_s": round(wall, 3),
               "photos_per_s": round(len(done) / wall, 4) if wall > 0 else None,
               "mean_timings_s": {k: round(float(np.mean([d["timings_s"][k] for d in done])), 4)
                                  for k in (done[0]["timings_s"] if done else {})}}  # fmt: skip
    if args.json:
        print(json.dumps(summary), flush=True)
    atomic_write_json(out / "parse.json", {"model": str(args.model), "corpus": str(args.corpus), "k": args.k,
                                           "crop": corpus_crop(corpus), "size": int(corpus.size),
                                           "features": features, "detector": detector.name,
                                           "postprocess": post.record(), "outputs": outputs, "parsed": done,
                                           "failed": failed, "errors": errors, "summary": summary})  # fmt: skip
    if stop is not None:
        raise stop
    if failed:
        print(f"qparse parse: {len(failed)} of {len(args.images)} image(s) could not be parsed", file=sys.stderr)
        return 1
    return 0
