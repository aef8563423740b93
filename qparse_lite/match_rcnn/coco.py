"""DeepFashion2 → COCO: ground truth (:func:`to_coco`) and results files (:func:`read_results`), checked and
normalised for pycocotools (see :mod:`qparse_lite.match_rcnn`)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from qparse_lite.errors import QparseError
from qparse_lite.match_rcnn.format import CATEGORIES, DF2_CATEGORIES, Df2Image, _is_num, load_annos


def _image_size(im: Df2Image, images_dir: Path | None) -> tuple[int, int, str]:
    """(width, height, file_name) from the image file when present, else the annotation's width/height."""
    if images_dir is not None:
        for ext in (".jpg", ".jpeg", ".png", ".JPG", ".PNG"):
            p = images_dir / f"{im.stem}{ext}"
            if p.is_file():
                from PIL import Image

                try:
                    with Image.open(p) as img:
                        w, h = img.size
                except OSError as e:
                    raise QparseError(f"{p}: unreadable image ({e}). Fix: re-download it.") from e
                return int(w), int(h), p.name
    if im.width is None or im.height is None:
        where = f" in {images_dir}" if images_dir is not None else ""
        raise QparseError(
            f"{im.path}: no image {im.stem}.jpg/.png{where} and no 'width'/'height' in the file. "
            "Fix: pass --images with the image folder."
        )
    return im.width, im.height, f"{im.stem}.jpg"


def _poly_area(segmentation: list[list[float]], h: int, w: int) -> float:
    from pycocotools import mask as mask_utils

    if not segmentation:
        return 0.0
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    return float(mask_utils.area(rle))


def to_coco(annos: str | Path | Sequence[Df2Image], images_dir: str | Path | None = None) -> dict[str, Any]:
    """Convert DeepFashion2 annotations to a COCO ground-truth dict.

    ``images``: ``id`` (the file's image id), ``file_name``, ``width``/``height`` (read from the image in
    ``images_dir`` when present, else the file's ``width``/``height``), ``source``, ``pair_id``.
    ``annotations``: ``id`` (1..), ``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``area`` (pixels
    of the rasterised polygons; the box area when an item has no polygon), ``iscrowd`` 0,
    ``segmentation`` (the polygons), and the DeepFashion2 fields kept as extras: ``style``, ``pair_id``,
    ``source``, ``scale``, ``occlusion``, ``zoom_in``, ``viewpoint``, ``landmarks``, ``item``.
    """
    images = load_annos(annos) if isinstance(annos, str | Path) else list(annos)
    idir = Path(images_dir) if images_dir is not None else None
    if idir is not None and not idir.is_dir():
        raise QparseError(f"{idir}: image folder not found. Fix: pass the folder holding <id>.jpg.")
    out_images, anns = [], []
    cats_used: set[int] = set()
    for im in images:
        w, h, fname = _image_size(im, idir)
        out_images.append(
            {"id": im.image_id, "file_name": fname, "width": w, "height": h, "source": im.source,
             "pair_id": im.pair_id}
        )  # fmt: skip
        for it in im.items:
            x1, y1, x2, y2 = it.bbox
            area = _poly_area(it.segmentation, h, w) if it.segmentation else (x2 - x1) * (y2 - y1)
            cats_used.add(it.category_id)
            anns.append(
                {"id": len(anns) + 1, "image_id": im.image_id, "category_id": it.category_id,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "iscrowd": 0,
                 "segmentation": it.segmentation, "style": it.style, "pair_id": im.pair_id,
                 "source": im.source, "scale": it.scale, "occlusion": it.occlusion, "zoom_in": it.zoom_in,
                 "viewpoint": it.viewpoint, "landmarks": it.landmarks, "item": it.key}
            )  # fmt: skip
    cat_ids = sorted(set(DF2_CATEGORIES) | cats_used)
    categories = [
        {"id": c, "name": CATEGORIES[c], "supercategory": "clothes" if c <= 13 else "kit"} for c in cat_ids
    ]
    return {
        "info": {"description": "DeepFashion2-format annotations converted by qparse_lite.match_rcnn"},
        "images": out_images,
        "annotations": anns,
        "categories": categories,
    }


# ----------------------------------------------------------------------------------------------- results


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Load a results JSON (a list of objects); QparseError naming the file when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise QparseError(f"{path}: cannot read results ({e}). Fix: check the path.") from e
    except json.JSONDecodeError as e:
        raise QparseError(f"{path}: results are not JSON ({e}). Fix: write a JSON list.") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise QparseError(f"{path}: results must be a JSON list of objects. Fix: see qparse_lite.match_rcnn docs.")
    return data


def _normalise_dets(
    results: Iterable[dict[str, Any]], sizes: dict[int, tuple[int, int]], iou_type: str, source: str
) -> list[dict[str, Any]]:
    """Results → detection annotations with RLE ``segmentation`` (segm) and ``bbox``, ids, areas."""
    from pycocotools import mask as mask_utils

    out = []
    for i, r in enumerate(results):
        where = f"{source}: result {i}"
        for k in ("image_id", "category_id", "score"):
            if k not in r:
                raise QparseError(
                    f"{where}: missing {k!r}. Fix: write COCO results (image_id, category_id, score, bbox/segmentation)."
                )
        if r["image_id"] not in sizes:
            raise QparseError(
                f"{where}: image_id {r['image_id']} is not in the annotations. Fix: use the ids of the annotation files."
            )
        if not _is_num(r["score"]):
            raise QparseError(f"{where}: score {r['score']!r} is not a number")
        h, w = sizes[r["image_id"]]
        d = {"id": len(out) + 1, "image_id": r["image_id"], "category_id": r["category_id"],
             "score": float(r["score"]), "iscrowd": 0}  # fmt: skip
        seg = r.get("segmentation")
        if seg is not None:
            if isinstance(seg, list):  # polygons
                if not seg or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg):
                    raise QparseError(f"{where}: segmentation polygons must be flat x,y lists of >= 3 points")
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
                rle = dict(seg)
                if isinstance(rle["counts"], list):
                    rle = mask_utils.frPyObjects(rle, *rle["size"])
            else:
                raise QparseError(f"{where}: segmentation is neither an RLE nor a list of polygons")
            if isinstance(rle.get("counts"), bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            d["segmentation"] = rle
        bb = r.get("bbox")
        if bb is not None:
            if not (isinstance(bb, list) and len(bb) == 4 and all(_is_num(v) for v in bb)):
                raise QparseError(f"{where}: bbox {bb!r} is not [x, y, w, h]")
            d["bbox"] = [float(v) for v in bb]
        elif seg is not None:
            d["bbox"] = [float(v) for v in mask_utils.toBbox(d["segmentation"])]
        if iou_type == "segm" and seg is None:
            raise QparseError(
                f"{where}: no 'segmentation' for --task segm. Fix: add masks or use --task bbox."
            )
        if iou_type == "bbox" and "bbox" not in d:
            raise QparseError(f"{where}: no 'bbox' (or segmentation) for --task bbox")
        d["area"] = (
            float(mask_utils.area(d["segmentation"])) if iou_type == "segm" else d["bbox"][2] * d["bbox"][3]
        )
        out.append(d)
    return out


def _coco_from_dict(d: dict[str, Any]):
    from pycocotools.coco import COCO

    c = COCO()
    c.dataset = d
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


