"""Figures of Match R-CNN: detections drawn on images and consumer-to-shop retrieval rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def show_retrieval(
    query: dict[str, Any] | None, images: dict[int, Any], label_set: Any, n: int = 5,
    shop_id_offset: int = 1_000_000, title: str | None = None,
) -> Any:  # fmt: skip
    """One consumer-to-shop query and its ``n`` best-ranked gallery items (DeepFashion2 retrieval format).

    ``query``: one entry of :func:`qparse_lite.match_rcnn.evaluate.predict`'s ``"retrieval"`` list
    (``query_image_id``, ``query_bbox`` [x1, y1, x2, y2], ``query_score``, ``query_cls``, and the ranked
    ``gallery_image_id`` / ``gallery_bbox`` / ``gallery_score``), or None ("no detection"). ``images``:
    image id → image. The figure always has ``1 + n`` panels; when the gallery holds fewer than ``n`` items
    (few detections in the shop views) the panels past its end say so instead of failing. A gallery item in
    image ``query_image_id + shop_id_offset`` is marked as the query's own (augmented) view.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + n, figsize=(2 * (1 + n), 2.6))
    if query is None:
        axes[0].text(0.5, 0.5, "no detection", ha="center")
        n_gallery = 0
    else:
        x1, y1, x2, y2 = query["query_bbox"]
        q_res = [{"category_id": query["query_cls"], "score": query["query_score"], "bbox": [x1, y1, x2 - x1, y2 - y1]}]
        draw_items(axes[0], images[query["query_image_id"]], q_res, label_set, title="query (user view)")
        gallery = list(zip(query["gallery_image_id"], query["gallery_bbox"], query["gallery_score"], strict=True))
        n_gallery = len(gallery)
        for r, (ax, (gid, (x1, y1, x2, y2), score)) in enumerate(zip(axes[1:], gallery, strict=False)):
            own = gid == query["query_image_id"] + shop_id_offset
            g_res = [{"category_id": query["query_cls"], "score": 1.0, "bbox": [x1, y1, x2 - x1, y2 - y1],
                      "text": f"ŷ = {score:.2f}"}]  # fmt: skip
            draw_items(ax, images[gid], g_res, label_set, title=f"rank {r + 1}" + (" (query's own view)" if own else ""))
    for r in range(n_gallery, n):
        ax = axes[1 + r]
        ax.text(0.5, 0.5, f"rank {r + 1}:\nno gallery item", ha="center", va="center", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0].set_xticks([]), axes[0].set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def show_detections(
    images: Sequence[Any], ground_truth: Sequence[Sequence[Any]], detections: Sequence[Sequence[dict[str, Any]]],
    label_set: Any | None = None, score_thresh: float = 0.5, titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:  # fmt: skip
    """Ground-truth items (top row) and detections (bottom row: mask, box, ``category score`` with score
    ≥ ``score_thresh``) of a few images, drawn with :func:`qparse_lite.match_rcnn.figures.draw_items`. ``ground_truth``:
    per image its :class:`~qparse_lite.match_rcnn.format.Df2Item` s; ``detections``: per image its COCO results."""
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 5.4), squeeze=False)
    for j, (im, gt, det) in enumerate(zip(images, ground_truth, detections, strict=True)):
        name = titles[j] if titles else f"image {j + 1}"
        draw_items(axes[0, j], im, gt, label_set, title=f"{name}: ground truth")
        draw_items(axes[1, j], im, det, label_set, title=f"detections (score ≥ {score_thresh:g})",
                   score_thresh=score_thresh)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def draw_items(
    ax: Any, image: np.ndarray, items: Sequence[Any], label_set: Any | None = None, title: str | None = None,
    score_thresh: float = 0.0, max_items: int = 10,
) -> Any:  # fmt: skip
    """Draw clothing items on ``image`` (H×W×3 uint8 or 3×H×W float in [0, 1]) in a matplotlib axis.

    ``items``: :class:`~qparse_lite.match_rcnn.format.Df2Item` s (ground truth: polygons and box, ``category · style``) or COCO results
    (detections: RLE/polygon mask and box, labelled ``category score`` or by their ``text`` key; only
    ``score >= score_thresh``, the ``max_items`` best). Masks are tinted in the category's colour of :func:`~qparse_lite.match_rcnn.format.garment_label_set`
    (``label_set`` given) or of a fixed palette. Returns ``ax``.
    """
    from matplotlib.patches import Rectangle
    from pycocotools import mask as mask_utils

    from qparse_lite.labels import voc_palette
    from qparse_lite.match_rcnn.format import (
        CATEGORIES,
        Df2Item,
        _category_index,
        garment_label_set,
        rasterize,
    )

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = (np.clip(img.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    h, w = img.shape[:2]
    pal = voc_palette(max(CATEGORIES) + 1)
    index = _category_index(label_set) if label_set is not None else {}
    if label_set is not None:
        gpal = garment_label_set(label_set).palette
    canvas = img.astype(np.float32)
    boxes = []
    if items and isinstance(items[0], dict):
        items = sorted((r for r in items if float(r["score"]) >= score_thresh), key=lambda r: -float(r["score"]))
        items = items[:max_items]
    for it in items:
        if isinstance(it, Df2Item):
            cat, m = it.category_id, rasterize(it.segmentation, h, w)
            x1, y1, x2, y2 = it.bbox
            text = f"{CATEGORIES[cat]} · {it.style}"
        else:
            cat = int(it["category_id"])
            seg = it.get("segmentation")
            if isinstance(seg, dict):
                rle = dict(seg)
                rle["counts"] = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
                m = mask_utils.decode(rle) > 0
            elif isinstance(seg, list) and seg:
                m = rasterize(seg, h, w)
            else:
                m = np.zeros((h, w), bool)
            x1, y1, bw, bh = it["bbox"]
            x2, y2 = x1 + bw, y1 + bh
            text = it.get("text") or f"{CATEGORIES.get(cat, cat)} {float(it['score']):.2f}"
        col = gpal[index[cat]] if cat in index else pal[cat]
        canvas[m] = 0.45 * canvas[m] + 0.55 * np.asarray(col, np.float32)
        boxes.append(((x1, y1, x2, y2), col, text))
    ax.imshow(canvas.round().astype(np.uint8))
    for (x1, y1, x2, y2), col, text in boxes:
        c = np.asarray(col) / 255.0
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=c, lw=1.2))
        ax.text(x1 - 0.5, y1 - 1, text, color="white", fontsize=6, va="bottom",
                bbox={"facecolor": c, "alpha": 0.8, "pad": 0.5, "lw": 0})  # fmt: skip
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return ax
