"""Match R-CNN data: DeepFashion2-format detection samples and the two-views retrieval set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qparse_lite.errors import QparseError
from qparse_lite.match_rcnn.model import augmented_view


class Df2Detection(torch.utils.data.Dataset):
    """Images + DeepFashion2 annotations as torchvision detection targets.

    Items: (image float 3×H×W in [0, 1], target) with ``boxes`` (xyxy), ``labels`` (category ids),
    ``masks`` (uint8 N×H×W, rasterised polygons), ``instance_ids`` ((pair_id, style) for style > 0, else
    unique per item) and ``image_id``. ``max_side`` downscales images (and targets) whose longer side
    exceeds it. Images are ``IMAGES/<stem>.jpg|.png``.
    """

    def __init__(self, annos_dir: str | Path, images_dir: str | Path, ids: Sequence[int] | None = None,
                 max_side: int | None = None) -> None:  # fmt: skip
        from qparse_lite.match_rcnn.format import load_annos

        self.images = load_annos(annos_dir)
        if ids is not None:
            keep = {int(i) for i in ids}
            self.images = [im for im in self.images if im.image_id in keep]
        self.images_dir = Path(images_dir)
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.images)

    def _path(self, stem: str) -> Path:
        for ext in (".jpg", ".jpeg", ".png"):
            p = self.images_dir / f"{stem}{ext}"
            if p.is_file():
                return p
        raise QparseError(f"{self.images_dir}: no image {stem}.jpg/.png. Fix: pass the right image folder.")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from PIL import Image
        from pycocotools import mask as mask_utils

        im = self.images[i]
        with Image.open(self._path(im.stem)) as pil:
            rgb = np.asarray(pil.convert("RGB"))
        h, w = rgb.shape[:2]
        s = 1.0
        if self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if s != 1.0:
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        boxes, labels, masks, ids = [], [], [], []
        for k, it in enumerate(im.items):
            polys = [[v * s for v in p] for p in it.segmentation]
            if polys:
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, nh, nw)))
            else:
                m = np.zeros((nh, nw), np.uint8)
                x1, y1, x2, y2 = (round(v * s) for v in it.bbox)
                m[y1:y2, x1:x2] = 1
            boxes.append([v * s for v in it.bbox])
            labels.append(it.category_id)
            masks.append(m)
            ids.append(im.pair_id * 1000 + it.style if it.style > 0 else -(im.image_id * 1000 + k + 1))
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros((0, nh, nw), dtype=torch.uint8),
            "instance_ids": torch.tensor(ids, dtype=torch.int64),
            "image_id": torch.tensor(im.image_id),
            "scale": torch.tensor(s),
        }
        return image, target


#: Image ids of the shop views of :func:`retrieval_views`: the user view's id + this offset.
SHOP_ID_OFFSET = 1_000_000


def retrieval_views(
    dataset: Df2Detection, seed: int = 0, id_offset: int = SHOP_ID_OFFSET,
    scale_range: tuple[float, float] = (0.8, 1.2),
) -> tuple[list[torch.Tensor], list[int], list[str], list[Any]]:  # fmt: skip
    """A consumer-to-shop test set whose positive pairs are **two augmented views of the same item**.

    DeepFashion2 pairs consumer (``user``) photos with ``shop`` photos of the same garment (same
    ``pair_id`` and ``style``). Data without such pairs (the synthetic corpus, CCP) gets them from
    augmentation: every image of ``dataset`` is drawn twice as independent :func:`augmented_view` s
    (colour jitter, flip, rescaling). The first view is the user image (the image's id), the second the
    shop image (id + ``id_offset``); both keep the image's ``pair_id`` and every item its ``style``, so
    a query item's only positive is itself in the other view. The views' annotations are rebuilt from
    the moved masks (:func:`qparse_lite.match_rcnn.format.item_from_mask`; an item whose mask vanished in a view is
    dropped from that view).

    Returns ``(images, image_ids, sources, annotations)`` — user views first, then shop views — ready
    for ``predict(model, images, image_ids, sources)`` and ``df2.evaluate_retrieval(annotations, ...)``.
    """
    from qparse_lite.match_rcnn.format import anno_from_dict, item_from_mask

    g = torch.Generator().manual_seed(seed)
    views: dict[str, list] = {"user": [], "shop": []}
    for i in range(len(dataset)):
        image, target = dataset[i]
        meta = dataset.images[i]
        for source, offset in (("user", 0), ("shop", id_offset)):
            img, t = augmented_view(image, target, g, scale_range)
            h, w = img.shape[-2:]
            doc: dict[str, Any] = {"source": source, "pair_id": meta.pair_id, "width": int(w), "height": int(h)}
            for k, (cat, m) in enumerate(zip(t["labels"].tolist(), t["masks"], strict=True)):
                if m.any():
                    # style 0 (no pair in the data, e.g. the CCP export): the item is its own garment, k + 1
                    style = meta.items[k].style or k + 1
                    doc[f"item{k + 1}"] = item_from_mask(int(cat), m.numpy() > 0, style=style)
            iid = meta.image_id + offset
            views[source].append((img, iid, anno_from_dict(doc, iid)))
    both = views["user"] + views["shop"]
    sources = ["user"] * len(views["user"]) + ["shop"] * len(views["shop"])
    return [v[0] for v in both], [v[1] for v in both], sources, [v[2] for v in both]


def collate(batch: list) -> tuple[list, list]:
    """Detection collate: lists of images and targets."""
    return [b[0] for b in batch], [b[1] for b in batch]
