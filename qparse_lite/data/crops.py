"""Crop geometry: the human-centric box (``square`` or ``warp``), the crop itself, and a corpus's fingerprint.

One owner for "where is the crop and how is it cut", shared by corpus preparation
(:mod:`qparse_lite.data.prepare`), the person detectors (:mod:`qparse_lite.data.person`) and the raw-photo path, so
that a raw photo gets exactly the crop a labelled copy of it would have got (docs/paper.md §1.1).

Two crop modes (:data:`CROPS`), both from the person box enlarged by ``margin`` × its width and height per side:

- ``square``: the box made square around its centre (side = its longer side), so the S×S crop keeps the
  aspect ratio and the person fills about a third of it (the kit's first choice);
- ``warp``: the enlarged box itself (clipped to the photo), resized to S×S without keeping the aspect ratio,
  as the paper's R-CNN detections are warped to 227×227 (docs/paper.md §1.1), so the person fills the frame.

Either way the crop is one box of photo pixels resized to S×S, so :func:`qparse_lite.parse.parser.paste_back` inverts
both (nearest neighbour, pixel-centre aligned, exact when S is at least the box's longer side).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import cv2
import numpy as np

from qparse_lite.errors import QparseError

__all__ = [
    "Box", "CROPS", "square_box", "warp_box", "person_crop_box", "human_crop_box", "crop_resize",
    "corpus_fingerprint", "corpus_crop", "check_crop",
]  # fmt: skip

Box = tuple[int, int, int, int]

CROPS = ("square", "warp")
"""The crop modes: ``square`` (aspect kept, the kit's first) and ``warp`` (the paper's R-CNN-style warp)."""


def _square_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box:
    """A square box of side ``max(w, h)`` centred on the given box, shifted to lie inside the image along
    each axis where the image is large enough (so padding is only added where the image is too small)."""
    side = max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    out = []
    for c, extent in ((cx, width), (cy, height)):
        lo = c - side / 2
        if side <= extent:
            lo = min(max(lo, 0.0), extent - side)
        out.append(lo)
    s = round(side)
    bx, by = round(out[0]), round(out[1])
    return bx, by, bx + s, by + s


def warp_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box:
    """The ``warp`` crop box: the given box rounded to whole pixels and clipped to the image (no padding:
    the aspect ratio is not kept, so there is nothing to pad for); at least one pixel each way."""
    bx0, by0 = min(max(0, round(x0)), width - 1), min(max(0, round(y0)), height - 1)
    bx1, by1 = max(min(width, round(x1)), bx0 + 1), max(min(height, round(y1)), by0 + 1)
    return bx0, by0, bx1, by1


def _check_mode(crop: str) -> str:
    if crop not in CROPS:
        raise QparseError(f"unknown crop {crop!r}. Fix: use one of {', '.join(CROPS)} (qparse prepare --crop).")
    return crop


def person_crop_box(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int, margin: float = 0.1, crop: str = "square"
) -> Box:  # fmt: skip
    """The crop box of a tight person box ``(x0, y0, x1, y1)`` in a ``width``×``height`` image: the box enlarged
    by ``margin`` × its width and height on each side, then :func:`square_box` (``crop="square"``) or
    :func:`warp_box` (``crop="warp"``). The one rule for labelled images and detector boxes alike."""
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    if _check_mode(crop) == "warp":
        return warp_box(x0 - mx, y0 - my, x1 + mx, y1 + my, width, height)
    return _square_box(x0 - mx, y0 - my, x1 + mx, y1 + my, width, height)


def human_crop_box(label: np.ndarray, margin: float = 0.1, crop: str = "square") -> Box:
    """Crop box ``(x0, y0, x1, y1)`` around a labelled person (docs/paper.md §1.1).

    The bounding box of the non-background pixels (label > 0) is enlarged by ``margin`` × its width and
    height on each side (:func:`person_crop_box`). ``square``: then made square (side = the longer side)
    around its centre, moved inside the image where it fits, otherwise extending past the border (and
    :func:`crop_resize` pads). ``warp``: the enlarged box clipped to the image. A map without foreground
    gives the whole image (made square for ``square``).
    """
    label = np.asarray(label)
    H, W = label.shape[:2]
    rows, cols = np.flatnonzero((label > 0).any(1)), np.flatnonzero((label > 0).any(0))
    if rows.size == 0:
        return _square_box(0, 0, W, H, W, H) if _check_mode(crop) == "square" else (0, 0, W, H)
    x0, x1, y0, y1 = float(cols[0]), float(cols[-1] + 1), float(rows[0]), float(rows[-1] + 1)
    return person_crop_box(x0, y0, x1, y1, W, H, margin, crop)


def crop_resize(
    image: np.ndarray, label: np.ndarray | None, box: Box, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop ``box`` (padding where it extends past the image) and resize to ``size``×``size``.

    The image is resized bilinearly (PIL's bilinear filter, which widens its support when shrinking, so
    there is no aliasing) and padded by replicating its border; the label map is resized by nearest
    neighbour (pixel-centre aligned) and padded with background (0).
    """
    from PIL import Image

    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {box}")
    H, W = image.shape[:2]
    pads = (max(0, -y0), max(0, y1 - H), max(0, -x0), max(0, x1 - W))
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(f"crop box {box} lies outside the {W}×{H} image")
    img = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    if any(pads):
        img = cv2.copyMakeBorder(img, *pads, borderType=cv2.BORDER_REPLICATE)
    out_img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    out_lab = None
    if label is not None:
        lab = np.ascontiguousarray(label[cy0:cy1, cx0:cx1])
        if any(pads):
            lab = cv2.copyMakeBorder(lab, *pads, borderType=cv2.BORDER_CONSTANT, value=0)
        out_lab = cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    return out_img, out_lab


square_box = _square_box


def corpus_crop(corpus: Any) -> str:
    """The crop mode of a corpus (a :class:`~qparse_lite.data.prepare.Corpus` or its ``meta`` dict): ``meta["crop"]``
    when it names one of :data:`CROPS`, else ``square`` (every corpus prepared before the ``warp`` mode)."""
    meta = corpus if isinstance(corpus, dict) else (getattr(corpus, "meta", None) or {})
    crop = meta.get("crop") if isinstance(meta, dict) else None
    return crop if crop in CROPS else "square"


def check_crop(model_crop: str | None, corpus: Any, what: str, fix: str) -> None:
    """Refuse a model or head made on a corpus of another crop mode than ``corpus``'s.

    ``model_crop``: the mode the model recorded (``None``: made before the mode was recorded, i.e. ``square``);
    ``what``: the file or folder named in the message; ``fix``: the remedy the message proposes.

    Raises:
        QparseError: the two crop modes differ.
    """
    mine, theirs = model_crop or "square", corpus_crop(corpus)
    if mine != theirs:
        where = getattr(corpus, "path", None) or "(in memory)"
        raise QparseError(
            f"{what}: made on a corpus with crop {mine!r}, but the corpus {where} has crop {theirs!r}; its crops "
            f"would not look like the ones it learnt from. Fix: {fix}"
        )


def corpus_fingerprint(corpus: Any) -> str:
    """A short hash that identifies a corpus's content (from ``meta.json``'s checksums when present)."""
    meta = getattr(corpus, "meta", None) or {}
    h = hashlib.sha256()
    if isinstance(meta, dict) and meta.get("checksums"):
        h.update(json.dumps(meta["checksums"], sort_keys=True).encode())
    else:
        h.update(json.dumps([str(i) for i in getattr(corpus, "ids", [])]).encode())
        for arr in (corpus.images, corpus.labels):
            h.update(str((arr.shape, str(arr.dtype))).encode())
            step = max(1, len(arr) // 64)
            h.update(np.ascontiguousarray(arr[::step]).tobytes())
    return h.hexdigest()[:16]
