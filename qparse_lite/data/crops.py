"""Crop geometry: the human-centric square box and the crop itself, and a corpus's content fingerprint.

One owner for "where is the crop and how is it cut", shared by corpus preparation
(:mod:`qparse_lite.data.prepare`), the person detectors (:mod:`qparse_lite.data.person`) and the raw-photo path, so
that a raw photo gets exactly the crop a labelled copy of it would have got (docs/paper.md §1.1).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import cv2
import numpy as np

__all__ = ["Box", "square_box", "human_crop_box", "crop_resize", "corpus_fingerprint"]

Box = tuple[int, int, int, int]


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


def human_crop_box(label: np.ndarray, margin: float = 0.1) -> Box:
    """Square crop box ``(x0, y0, x1, y1)`` around a labelled person.

    The bounding box of the non-background pixels (label > 0) is enlarged by ``margin`` × its width and
    height on each side, then made square (side = the longer side) around its centre. The square is moved
    inside the image where it fits; otherwise it extends past the border and :func:`crop_resize` pads.
    A map without foreground gives the whole image, made square.
    """
    label = np.asarray(label)
    H, W = label.shape[:2]
    rows, cols = np.flatnonzero((label > 0).any(1)), np.flatnonzero((label > 0).any(0))
    if rows.size == 0:
        return _square_box(0, 0, W, H, W, H)
    x0, x1, y0, y1 = float(cols[0]), float(cols[-1] + 1), float(rows[0]), float(rows[-1] + 1)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return _square_box(x0 - mx, y0 - my, x1 + mx, y1 + my, W, H)


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
