"""DeepFashion2 (Ge et al., CVPR 2019): annotation format, COCO conversion, evaluation, CCP export.

The second matching system of the kit (docs/paper.md §4) is Match R-CNN, benchmarked on DeepFashion2. This
module reads DeepFashion2's per-image annotation files, converts them to COCO, scores detections and
masks with pycocotools (overall and per subset, like Table 4 of the note), scores consumer-to-shop
retrieval by DeepFashion2's own protocol, and exports the Clothing Co-Parsing (CCP) mirror
(:func:`export_ccp`) or any prepared corpus (:func:`export_corpus`: the synthetic quick data, CCP or ATR
crops) into the same layout so that everything also runs on data the kit has.

**Parsers meet detectors.** A parser (the M-CNN) outputs a label map, a detector (Match R-CNN) outputs
scored instances. :func:`instances_from_label_map` turns a label map into instances (one per garment
category present, scored by the mean label probability) for AP_mask; :func:`instances_to_label_map`
paints instances into a garment label map for the pixel metrics of :mod:`qparse_lite.metrics`. Which
labels are garments is :data:`CORPUS_GARMENTS`.

**Annotation layout** (``annos/000001.json``; any numeric file stem works, its integer is the image id)::

    {"source": "user" | "shop", "pair_id": int,
     "item1": {"category_id": 1..13, "category_name": str, "style": int >= 0,
               "bounding_box": [x1, y1, x2, y2], "landmarks": [x, y, v, ...],
               "segmentation": [[x, y, x, y, ...], ...],
               "scale": 1|2|3, "occlusion": 1|2|3, "zoom_in": 1|2|3, "viewpoint": 1|2|3},
     "item2": {...}, ...}

Kit extensions: optional image-level ``width``/``height`` (used when the image file is not at hand);
attribute value ``0`` means *unknown* (the CCP export uses it for occlusion, zoom-in and viewpoint);
``category_id`` ≥ 14 are the kit's own categories of :data:`KIT_CATEGORIES` (CCP garments with no
DeepFashion2 counterpart).

**Results formats.** Detection/segmentation: a COCO results JSON list of
``{"image_id", "category_id", "score", "bbox": [x, y, w, h], "segmentation": RLE | [polygon, ...]}``
(``bbox`` is enough for ``--task bbox``, ``segmentation`` is required for ``--task segm``).
Retrieval: DeepFashion2's own format, one entry per *detected* consumer item::

    {"query_image_id": int, "query_bbox": [x1, y1, x2, y2], "query_score": float,
     "query_cls": int (optional), "gallery_image_id": [int, ...],      # ranked, best first
     "gallery_bbox": [[x1, y1, x2, y2], ...]}                             # same length

**Per-subset AP.** For a subset (say occlusion = heavy) every ground-truth item outside it is marked
*ignore*: a detection matched to an ignored item is dropped (neither true nor false positive), an
ignored item never counts as missed. pycocotools' ``COCOeval._prepare`` overwrites a ground truth's
``ignore`` with its ``iscrowd`` flag (pycocotools 2.0.x, cocoeval.py), so setting ``ignore`` in the
annotation file does not work; :func:`evaluate_detections` sets the flag on the prepared ground truth
after ``_prepare`` and re-runs ``evaluateImg`` on the cached IoUs. IoUs stay the ordinary (non-crowd)
ones. Unmatched detections remain false positives in every subset.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import QparseError
from .io import atomic_write_json

__all__ = [
    "DF2_CATEGORIES",
    "KIT_CATEGORIES",
    "CATEGORIES",
    "SUBSET_FAMILIES",
    "CCP_TO_DF2",
    "Df2Item",
    "Df2Image",
    "load_anno",
    "load_annos",
    "to_coco",
    "read_results",
    "evaluate_detections",
    "evaluate_retrieval",
    "detection_table",
    "retrieval_table",
    "export_ccp",
    "scale_from_fraction",
    "anno_from_dict",
    "CORPUS_GARMENTS",
    "CORPUS_ID_OFFSET",
    "MIN_ITEM_AREA",
    "garment_categories",
    "garment_label_set",
    "to_garment_labels",
    "mask_to_polygons",
    "rasterize",
    "item_from_mask",
    "corpus_items",
    "export_corpus",
    "instances_from_label_map",
    "instances_to_label_map",
    "detection_frame",
    "random_retrieval",
    "draw_items",
]

#: DeepFashion2's 13 categories, ids 1..13.
DF2_CATEGORIES: dict[int, str] = {
    1: "short sleeve top", 2: "long sleeve top", 3: "short sleeve outwear", 4: "long sleeve outwear",
    5: "vest", 6: "sling", 7: "shorts", 8: "trousers", 9: "skirt", 10: "short sleeve dress",
    11: "long sleeve dress", 12: "vest dress", 13: "sling dress",
}  # fmt: skip

#: The kit's own categories (ids ≥ 14) for CCP garments DeepFashion2 lacks.
KIT_CATEGORIES: dict[int, str] = {14: "shoes", 15: "bag", 16: "one-piece (romper/swimwear)"}

#: Every category id the loader accepts.
CATEGORIES: dict[int, str] = {**DF2_CATEGORIES, **KIT_CATEGORIES}

#: Subset families of Table 4: attribute → {value: subset name}. Value 0 (kit) = unknown.
SUBSET_FAMILIES: dict[str, dict[int, str]] = {
    "scale": {1: "small", 2: "moderate", 3: "large"},
    "occlusion": {1: "slight", 2: "medium", 3: "heavy"},
    "zoom_in": {1: "no", 2: "medium", 3: "large"},
    "viewpoint": {1: "no_wear", 2: "frontal", 3: "side_or_back"},
}

#: CCP-59 garment name → (DeepFashion2 or kit category id, exact?). ``False`` marks a guess: CCP does
#: not say the sleeve length (dress, blouse, top) or the cut (bra, panties). Names not listed here
#: (hair, skin, belt, accessories, legwear, ...) do not become items.
CCP_TO_DF2: dict[str, tuple[int, bool]] = {
    "t-shirt": (1, True), "top": (1, False), "bodysuit": (1, False),
    "blouse": (2, False), "shirt": (2, False), "sweater": (2, True), "sweatshirt": (2, True),
    "jumper": (2, True), "hoodie": (2, True),
    "vest": (5, True), "bra": (6, False), "intimate": (6, False),
    "blazer": (4, True), "cardigan": (4, True), "coat": (4, True), "jacket": (4, True),
    "suit": (4, True), "cape": (4, False),
    "shorts": (7, True), "panties": (7, False),
    "pants": (8, True), "jeans": (8, True), "leggings": (8, True),
    "skirt": (9, True),
    "dress": (10, False),
    "romper": (16, True), "swimwear": (16, True),
    "boots": (14, True), "clogs": (14, True), "flats": (14, True), "heels": (14, True),
    "loafers": (14, True), "pumps": (14, True), "sandals": (14, True), "shoes": (14, True),
    "sneakers": (14, True), "wedges": (14, True),
    "bag": (15, True), "purse": (15, True), "wallet": (15, True),
}  # fmt: skip

#: Coarse CCP kinds whose connected components become items (see qparse_lite.labels.CCP_COARSE_GROUPS).
CCP_ITEM_KINDS: tuple[str, ...] = ("upper-clothes", "outerwear", "skirt", "pants", "dress", "shoes", "bag")

_ITEM_KEYS = ("category_id", "style", "bounding_box", "segmentation", "scale", "occlusion", "zoom_in",
              "viewpoint")  # fmt: skip


@dataclass
class Df2Item:
    """One clothing item of a DeepFashion2 annotation (``item<k>``)."""

    key: str
    category_id: int
    category_name: str
    style: int
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    segmentation: list[list[float]]
    landmarks: list[float] = field(default_factory=list)
    scale: int = 0
    occlusion: int = 0
    zoom_in: int = 0
    viewpoint: int = 0


@dataclass
class Df2Image:
    """One annotation file: image id (the file stem as an int), source, pair id and its items."""

    image_id: int
    stem: str
    path: Path
    source: str
    pair_id: int
    items: list[Df2Item]
    width: int | None = None
    height: int | None = None


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bad(path: Path, where: str, what: str) -> QparseError:
    return QparseError(
        f"{path}: {where}: {what}. Fix: correct the file to the DeepFashion2 layout "
        "(see `qparse df2 --help` / qparse_lite.df2)."
    )


def _int_field(path: Path, where: str, d: dict, key: str, lo: int, hi: int | None) -> int:
    if key not in d:
        raise _bad(path, where, f"missing key {key!r}")
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _bad(path, f"{where}.{key}", f"{v!r} is not an integer in {rng}")
    return v


def load_anno(path: str | Path) -> Df2Image:
    """Read and validate one DeepFashion2 annotation file.

    Raises :class:`QparseError` naming the file and the field for: unreadable/non-JSON files, missing
    keys, a bounding box that is not 4 finite numbers with x2 > x1 and y2 > y1, a category outside
    :data:`CATEGORIES`, a polygon with an odd number of coordinates or fewer than 3 points, attributes
    outside 0..3, landmarks not in triples.
    """
    path = Path(path)
    try:
        image_id = int(path.stem)
    except ValueError:
        raise QparseError(
            f"{path}: the file name must be the numeric image id (e.g. 000001.json). Fix: rename it."
        ) from None
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise QparseError(f"{path}: cannot read ({e}). Fix: check the path and permissions.") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QparseError(f"{path}: not JSON ({e}). Fix: re-download or re-export the file.") from e
    return anno_from_dict(data, image_id, path)


def anno_from_dict(data: Any, image_id: int, path: str | Path | None = None) -> Df2Image:
    """Validate one annotation already in memory (the JSON object of a file) as :func:`load_anno` does.

    ``path`` names it in error messages and becomes :attr:`Df2Image.path` (default ``<image_id>.json``;
    the stem is the zero-padded id). Used for annotations the kit builds without writing a file (the
    augmented views of :func:`qparse_lite.match_rcnn.retrieval_views`).
    """
    path = Path(path) if path is not None else Path(f"{image_id:06d}.json")
    if not isinstance(data, dict):
        raise _bad(path, "top level", f"expected an object, got {type(data).__name__}")
    if data.get("source") not in ("user", "shop"):
        raise _bad(path, "source", f"{data.get('source', '<missing>')!r} is not 'user' or 'shop'")
    pair_id = _int_field(path, "image", data, "pair_id", 0, None)
    width = height = None
    if "width" in data or "height" in data:
        width = _int_field(path, "image", data, "width", 1, None)
        height = _int_field(path, "image", data, "height", 1, None)
    item_keys = sorted((k for k in data if re.fullmatch(r"item\d+", k)), key=lambda k: int(k[4:]))
    items = []
    for key in item_keys:
        it = data[key]
        if not isinstance(it, dict):
            raise _bad(path, key, "expected an object")
        for k in _ITEM_KEYS:
            if k not in it:
                raise _bad(path, key, f"missing key {k!r}")
        cat = it["category_id"]
        if not isinstance(cat, int) or isinstance(cat, bool) or cat not in CATEGORIES:
            raise _bad(path, f"{key}.category_id", f"{cat!r} is out of range (1..13, or kit ids 14..16)")
        style = _int_field(path, key, it, "style", 0, None)
        bb = it["bounding_box"]
        if not (isinstance(bb, list) and len(bb) == 4 and all(_is_num(v) for v in bb)):
            raise _bad(path, f"{key}.bounding_box", f"{bb!r} is not 4 numbers [x1, y1, x2, y2]")
        if not (bb[2] > bb[0] and bb[3] > bb[1]):
            raise _bad(path, f"{key}.bounding_box", f"{bb!r} has x2 <= x1 or y2 <= y1")
        seg = it["segmentation"]
        if not isinstance(seg, list):
            raise _bad(path, f"{key}.segmentation", "expected a list of polygons")
        for j, poly in enumerate(seg):
            if not (isinstance(poly, list) and all(_is_num(v) for v in poly)):
                raise _bad(path, f"{key}.segmentation[{j}]", "expected a flat list of numbers x, y, ...")
            if len(poly) % 2:
                raise _bad(path, f"{key}.segmentation[{j}]", f"odd length {len(poly)} (x, y pairs expected)")
            if len(poly) < 6:
                raise _bad(path, f"{key}.segmentation[{j}]", f"{len(poly) // 2} points; a polygon needs 3")
        lm = it.get("landmarks", [])
        if not (isinstance(lm, list) and len(lm) % 3 == 0 and all(_is_num(v) for v in lm)):
            raise _bad(path, f"{key}.landmarks", "expected a flat list of x, y, v triples")
        attrs = {a: _int_field(path, key, it, a, 0, 3) for a in SUBSET_FAMILIES}
        items.append(
            Df2Item(
                key=key, category_id=cat, category_name=str(it.get("category_name", CATEGORIES[cat])),
                style=style, bbox=tuple(float(v) for v in bb), segmentation=[[float(v) for v in p] for p in seg],
                landmarks=[float(v) for v in lm], **attrs,
            )
        )  # fmt: skip
    return Df2Image(image_id, path.stem, path, data["source"], pair_id, items, width, height)


def load_annos(annos_dir: str | Path) -> list[Df2Image]:
    """Every ``*.json`` of a DeepFashion2 ``annos`` folder, sorted by image id."""
    d = Path(annos_dir)
    if not d.is_dir():
        raise QparseError(f"{d}: annotation folder not found. Fix: pass the DeepFashion2 'annos' folder.")
    files = sorted(d.glob("*.json"))
    if not files:
        raise QparseError(f"{d}: no *.json annotation files. Fix: pass the DeepFashion2 'annos' folder.")
    images = [load_anno(f) for f in files]
    seen: dict[int, Path] = {}
    for im in images:
        if im.image_id in seen:
            raise QparseError(
                f"{im.path}: image id {im.image_id} also used by {seen[im.image_id]}. Fix: rename."
            )
        seen[im.image_id] = im.path
    return sorted(images, key=lambda im: im.image_id)


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
        "info": {"description": "DeepFashion2-format annotations converted by qparse_lite.df2"},
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
        raise QparseError(f"{path}: results must be a JSON list of objects. Fix: see qparse_lite.df2 docs.")
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


def _stats(E) -> dict[str, float | None]:
    """AP (IoU .50:.95), AP50, AP75 from an accumulated COCOeval (area 'all', the largest maxDets)."""
    prec = E.eval["precision"][:, :, :, 0, -1]  # T × R × K
    thr = E.params.iouThrs

    def mean(p: np.ndarray) -> float | None:
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    return {
        "ap": mean(prec),
        "ap50": mean(prec[np.isclose(thr, 0.5)]),
        "ap75": mean(prec[np.isclose(thr, 0.75)]),
    }


def evaluate_detections(
    coco_gt: dict[str, Any],
    results: Sequence[dict[str, Any]],
    iou_type: str = "segm",
    subsets: bool = True,
    results_name: str = "results",
) -> dict[str, Any]:
    """COCO AP of detections (``bbox``) or masks (``segm``), overall and per DeepFashion2 subset.

    AP averages precision over IoU thresholds .50:.05:.95, 101 recall points and the categories that
    have ground truth (COCO's definition, area range *all*, up to 100 detections per image); AP50 and
    AP75 at one threshold. Per subset ``family=value``, ground truth outside the subset is ignored (see
    the module docstring). Returns ``{"iou_type", "overall": {ap, ap50, ap75, n_gt}, "<family>":
    {"<subset>": {ap, ap50, ap75, n_gt}}}``; AP is ``None`` where a subset has no ground truth.
    """
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("segm", "bbox"):
        raise QparseError(f"iou_type {iou_type!r}: choose segm or bbox")
    gt_dict = copy.deepcopy(coco_gt)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt_dict["images"]}
    dts = _normalise_dets(results, sizes, iou_type, results_name)
    gt = _coco_from_dict(gt_dict)
    dt = _coco_from_dict(
        {"images": gt_dict["images"], "categories": gt_dict["categories"], "annotations": dts}
    )
    E = COCOeval(gt, dt, iou_type)
    E.params.areaRng, E.params.areaRngLbl = [[0.0, 1e10]], ["all"]
    E.params.maxDets = [100]
    with contextlib.redirect_stdout(io.StringIO()):
        E.evaluate()
        E.accumulate()
    out: dict[str, Any] = {
        "iou_type": iou_type,
        "overall": {**_stats(E), "n_gt": len(gt_dict["annotations"])},
    }
    if not subsets:
        return out
    p = E.params
    cat_ids = p.catIds if p.useCats else [-1]
    all_gts = [g for gs in E._gts.values() for g in gs]
    for fam, names in SUBSET_FAMILIES.items():
        out[fam] = {}
        for val, name in names.items():
            n = 0
            for g in all_gts:
                keep = g.get(fam) == val
                g["ignore"] = int(bool(g.get("iscrowd", 0)) or not keep)
                n += keep
            E.evalImgs = [
                E.evaluateImg(i, c, a, p.maxDets[-1]) for c in cat_ids for a in p.areaRng for i in p.imgIds
            ]
            with contextlib.redirect_stdout(io.StringIO()):
                E.accumulate()
            out[fam][name] = {**_stats(E), "n_gt": n}
    return out


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (N×4) and ``b`` (M×4), [x1, y1, x2, y2], areas w·h (COCO)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def evaluate_retrieval(
    images: Sequence[Df2Image],
    results: Sequence[dict[str, Any]],
    ks: Sequence[int] = (1, 5, 10, 15, 20),
    iou_thresh: float = 0.5,
    results_name: str = "results",
) -> dict[str, Any]:
    """Consumer-to-shop top-k retrieval accuracy by DeepFashion2's protocol.

    Queries are the ground-truth items with ``style > 0`` in ``user`` images; the gallery ground truth
    is the items of ``shop`` images. For each query item, the detected items of its image (entries of
    ``results``) are assigned to the ground-truth item they overlap most (box IoU; a detection that
    overlaps none is assigned to nothing); among those assigned to the query and, when the entry has
    ``query_cls``, of the query's category, the highest ``query_score`` represents it. A query is a hit
    at k when one of its first k retrieved ``(gallery_image_id, gallery_bbox)`` lies in a shop image
    holding an item with the query's ``pair_id`` and ``style`` and has IoU ≥ ``iou_thresh`` with such an
    item. Accuracy@k = hits / number of queries; a query with no representative detection is a miss.
    """
    ks = sorted({int(k) for k in ks})
    gallery: dict[tuple[int, int], dict[int, list]] = {}  # (pair, style) → image → boxes
    for im in images:
        if im.source == "shop":
            for it in im.items:
                if it.style > 0:
                    gallery.setdefault((im.pair_id, it.style), {}).setdefault(im.image_id, []).append(it.bbox)
    by_img: dict[int, list[dict]] = {}
    for i, r in enumerate(results):
        for k in ("query_image_id", "query_bbox", "query_score", "gallery_image_id", "gallery_bbox"):
            if k not in r:
                raise QparseError(
                    f"{results_name}: entry {i}: missing {k!r}. Fix: see the retrieval results format in qparse_lite.df2."
                )
        if len(r["gallery_image_id"]) != len(r["gallery_bbox"]):
            raise QparseError(
                f"{results_name}: entry {i}: gallery_image_id and gallery_bbox differ in length"
            )
        by_img.setdefault(int(r["query_image_id"]), []).append(r)
    hits = dict.fromkeys(ks, 0)
    n_query = n_missed = 0
    for im in images:
        if im.source != "user":
            continue
        queries = [(j, it) for j, it in enumerate(im.items) if it.style > 0]
        if not queries:
            continue
        n_query += len(queries)
        dets = by_img.get(im.image_id, [])
        if dets:
            iou = _iou_xyxy(np.array([d["query_bbox"] for d in dets]), np.array([it.bbox for it in im.items]))
            assign = np.where(iou.max(axis=1) > 0, iou.argmax(axis=1), -1)
        for j, it in queries:
            cand = [d for d, a in zip(dets, assign, strict=True) if a == j] if dets else []
            cand = [d for d in cand if d.get("query_cls", it.category_id) == it.category_id]
            if not cand:
                n_missed += 1
                continue
            best = max(cand, key=lambda d: float(d["query_score"]))
            targets = gallery.get((im.pair_id, it.style), {})
            first_hit = None
            for rank, (gid, gbox) in enumerate(
                zip(best["gallery_image_id"], best["gallery_bbox"], strict=True)
            ):
                boxes = targets.get(int(gid))
                if boxes and (_iou_xyxy(np.array([gbox]), np.array(boxes)) >= iou_thresh).any():
                    first_hit = rank
                    break
            for k in ks:
                hits[k] += first_hit is not None and first_hit < k
    return {
        "top_k": {k: (hits[k] / n_query if n_query else None) for k in ks},
        "n_queries": n_query,
        "n_missed": n_missed,
        "iou_thresh": iou_thresh,
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def detection_table(ev: dict[str, Any], reported: bool = True) -> str:
    """Markdown table of :func:`evaluate_detections` (rows like Table 4; reported Match R-CNN AP_mask
    from the DeepFashion2 note beside it for ``segm`` when ``reported``)."""
    rep = {}
    if reported and ev["iou_type"] == "segm":
        from .reported import deepfashion2_segm

        for r in deepfashion2_segm().itertuples():
            rep[(r.subset_family, r.subset)] = (r.ap_mask, r.ap_mask_iou50, r.ap_mask_iou75)
    kind = "mask" if ev["iou_type"] == "segm" else "box"
    head = f"| family | subset | n_gt | AP_{kind} | AP50 | AP75 |"
    sep = "|---|---|---:|---:|---:|---:|"
    if rep:
        head += " reported AP_mask | reported AP50 | reported AP75 |"
        sep += "---:|---:|---:|"
    rows = [head, sep]

    def row(fam: str, sub: str, s: dict) -> str:
        line = f"| {fam} | {sub} | {s['n_gt']} | {_fmt(s['ap'])} | {_fmt(s['ap50'])} | {_fmt(s['ap75'])} |"
        if rep:
            r = rep.get((fam, sub))
            line += " " + " | ".join(_fmt(v) for v in (r or (None, None, None))) + " |"
        return line

    for fam in SUBSET_FAMILIES:
        for sub, s in ev.get(fam, {}).items():
            rows.append(row(fam, sub, s))
    rows.append(row("overall", "all", ev["overall"]))
    return "\n".join(rows)


def retrieval_table(ev: dict[str, Any]) -> str:
    """Markdown table of :func:`evaluate_retrieval`."""
    ks = list(ev["top_k"])
    return "\n".join([
        "| " + " | ".join(f"top-{k}" for k in ks) + " | queries | missed |",
        "|" + "---:|" * (len(ks) + 2),
        "| " + " | ".join(_fmt(ev["top_k"][k]) for k in ks) + f" | {ev['n_queries']} | {ev['n_missed']} |",
    ])  # fmt: skip


# ------------------------------------------------------------------------------------------- CCP export


def scale_from_fraction(frac: float) -> int:
    """DeepFashion2-like scale of an item from the fraction of the image its box covers:
    < 10 % small (1), < 40 % moderate (2), else large (3)."""
    return 1 if frac < 0.10 else 2 if frac < 0.40 else 3


def _ccp_ids(root: Path, ids: Sequence[str] | None, split: str | None) -> list[str]:
    if ids is not None and split is not None:
        raise QparseError("export_ccp: give ids or split, not both")
    if split is not None:
        try:
            from .datasets import get_dataset
        except ImportError as e:
            raise QparseError(
                f"split {split!r}: qparse_lite.datasets is not available ({e}); pass ids"
            ) from e
        splits = get_dataset("ccp", root=root).splits()
        if split not in splits:
            raise QparseError(f"split {split!r}: choose one of {', '.join(splits)}")
        return list(splits[split])
    ann = root / "annotations" / "pixel-level"
    if ids is None:
        return sorted(p.stem for p in ann.glob("*.mat"))
    return [str(i) if not str(i).isdigit() else f"{int(i):04d}" for i in ids]


def export_ccp(
    root: str | Path,
    out: str | Path,
    ids: Sequence[str] | None = None,
    split: str | None = None,
    min_area: int = 200,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Export the CCP mirror's pixel annotations as DeepFashion2 annotation files ``OUT/annos/<id>.json``.

    Items: the 8-connected components (``min_area`` pixels or more) of each garment kind of the coarse
    CCP set (:data:`CCP_ITEM_KINDS`: upper-clothes, outerwear, skirt, pants, dress, shoes, bag). A
    component's category is the :data:`CCP_TO_DF2` category of the CCP-59 name covering most of its
    pixels (``category_name`` is that CCP name plus the DeepFashion2 name; ``category_guess`` true
    where the mapping is a guess). Polygons: the outer contours of the component (``cv2.findContours``,
    holes are filled). Box: the component's pixel extent [x1, y1, x2 + 1, y2 + 1]. Scale:
    :func:`scale_from_fraction` of the box area. Occlusion, zoom-in and viewpoint are 0 (unknown; CCP
    has none), ``source`` "user", ``pair_id`` the image number, ``style`` 0; ``width``/``height`` are
    written. Never writes into ``root``. Also writes ``OUT/export.json`` (counts, mapping, run record).
    Returns that summary.
    """
    import cv2
    import scipy.io
    from tqdm.auto import tqdm

    from .labels import CCP_COARSE_GROUPS, ccp59_to_coarse_lut, read_ccp_label_list
    from .runinfo import run_record

    t0 = time.perf_counter()
    root, out = Path(root), Path(out)
    if out.resolve().is_relative_to(root.resolve()):
        raise QparseError(
            f"{out}: inside the CCP mirror {root}, which is read-only. Fix: choose another --out."
        )
    names = read_ccp_label_list(root / "label_list.mat")
    coarse_lut = ccp59_to_coarse_lut(names)
    kinds = list(CCP_COARSE_GROUPS)
    kind_ids = [kinds.index(k) for k in CCP_ITEM_KINDS]
    cat_of = np.zeros(len(names), dtype=np.int64)  # CCP-59 id → category (0 = none)
    guess_of = np.zeros(len(names), dtype=bool)
    for i, n in enumerate(names):
        if n in CCP_TO_DF2:
            cat_of[i], guess_of[i] = CCP_TO_DF2[n][0], not CCP_TO_DF2[n][1]
    id_list = _ccp_ids(root, ids, split)
    counts: Counter = Counter()
    n_items = 0
    annos = out / "annos"
    for sid in tqdm(
        id_list, desc="export ccp", mininterval=1.0, disable=None if progress is None else not progress
    ):
        mat = root / "annotations" / "pixel-level" / f"{sid}.mat"
        try:
            gt = scipy.io.loadmat(mat)["groundtruth"]
        except FileNotFoundError:
            raise QparseError(f"{mat}: not found. Fix: check the id or download CCP again.") from None
        except Exception as e:  # scipy raises several types for a damaged file
            raise QparseError(f"{mat}: unreadable ({e}). Fix: download CCP again.") from e
        gt = np.ascontiguousarray(gt, dtype=np.uint8)
        if gt.ndim != 2 or int(gt.max()) >= len(names):
            raise QparseError(f"{mat}: 'groundtruth' must be H×W with ids < {len(names)}")
        h, w = gt.shape
        coarse = coarse_lut[gt]
        doc: dict[str, Any] = {"source": "user", "pair_id": int(sid), "width": int(w), "height": int(h)}
        k = 0
        for kid in kind_ids:
            m = (coarse == kid).astype(np.uint8)
            if not m.any():
                continue
            n_cc, cc, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            for c in range(1, n_cc):
                x, y, bw, bh, area = (int(v) for v in stats[c])
                if area < min_area:
                    continue
                sub = cc[y : y + bh, x : x + bw] == c
                fine = np.bincount(gt[y : y + bh, x : x + bw][sub], minlength=len(names))
                fine = fine * (cat_of > 0)
                if not fine.any():
                    continue
                top = int(fine.argmax())
                cat = int(cat_of[top])
                contours, _ = cv2.findContours(
                    sub.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
                )
                polys = [(cnt.reshape(-1, 2) + [x, y]).ravel().astype(float).tolist() for cnt in contours]
                polys = [p for p in polys if len(p) >= 6]
                if not polys:
                    continue
                k += 1
                doc[f"item{k}"] = {
                    "category_id": cat, "category_name": f"{CATEGORIES[cat]} (ccp: {names[top]})",
                    "category_guess": bool(guess_of[top]), "style": 0,
                    "bounding_box": [x, y, x + bw, y + bh], "landmarks": [], "segmentation": polys,
                    "scale": scale_from_fraction(bw * bh / (h * w)), "occlusion": 0, "zoom_in": 0,
                    "viewpoint": 0,
                }  # fmt: skip
                counts[cat] += 1
        n_items += k
        atomic_write_json(annos / f"{sid}.json", doc)
    seconds = time.perf_counter() - t0
    summary = {
        "n_images": len(id_list),
        "n_items": n_items,
        "items_per_category": {CATEGORIES[c]: counts[c] for c in sorted(counts)},
        "mapping": {
            n: {"category_id": c, "category": CATEGORIES[c], "guess": not exact}
            for n, (c, exact) in CCP_TO_DF2.items()
        },  # fmt: skip
        "min_area": min_area,
        "scale_thresholds": "box area / image area: < 0.10 small, < 0.40 moderate, else large",
        "seconds": round(seconds, 3),
    }
    atomic_write_json(
        out / "export.json",
        {**summary, "run": run_record(profile=None, seed=None, dataset="ccp", dataset_version=str(root),
                                      wall_time_s=seconds)},
    )  # fmt: skip
    return summary


# ---------------------------------------------------------------------------------------- corpus export

#: Which labels of the kit's label sets are **garments**, i.e. become DeepFashion2 items, and their
#: category (DeepFashion2 1..13, kit 14..16) with ``True`` where the mapping is exact and ``False`` where
#: it is a guess (the label set does not say sleeve length or cut). Labels not listed never become items:
#:
#: * ``atr18``: hat, sunglasses, belt and scarf (accessories DeepFashion2 does not annotate), hair, face,
#:   arms and legs (the body). Left and right shoe map to the same category and form **one** item
#:   (both shoes), as CCP's single shoes label does.
#: * ``ccp-coarse``: hat, sunglasses, belt, scarf, accessories, legwear (DeepFashion2 has no socks or
#:   tights), hair and skin.
#: * ``ccp59``: the fine CCP names of :data:`CCP_TO_DF2` (the same table :func:`export_ccp` uses).
#:
#: Shoes and bags are not DeepFashion2 categories either; they are the kit's own (14, 15), kept
#: because both label sets have them and both parsers output them.
CORPUS_GARMENTS: dict[str, dict[str, tuple[int, bool]]] = {
    "atr18": {"upper-clothes": (1, False), "skirt": (9, True), "pants": (8, False), "dress": (10, False),
              "left-shoe": (14, True), "right-shoe": (14, True), "bag": (15, True)},
    "ccp-coarse": {"upper-clothes": (1, False), "outerwear": (4, False), "skirt": (9, True),
                   "pants": (8, False), "dress": (10, False), "shoes": (14, True), "bag": (15, True)},
    "ccp59": dict(CCP_TO_DF2),
}  # fmt: skip

#: Image ids of a corpus export: corpus index + this offset (DeepFashion2 ids start at 1).
CORPUS_ID_OFFSET = 1

#: Smallest item of a corpus export, in crop pixels (ground truth and parser instances alike).
MIN_ITEM_AREA = 4

#: Version of :func:`export_corpus`'s output; a change makes it rewrite existing exports.
_EXPORT_VERSION = 1


def garment_categories(label_set: Any) -> dict[int, int]:
    """Label id → category id for the garment labels of ``label_set`` (:data:`CORPUS_GARMENTS`)."""
    name = getattr(label_set, "name", label_set)
    if name not in CORPUS_GARMENTS:
        raise QparseError(
            f"label set {name!r}: no garment table. Fix: use one of {', '.join(CORPUS_GARMENTS)} "
            "or add it to qparse_lite.df2.CORPUS_GARMENTS."
        )
    table = CORPUS_GARMENTS[name]
    return {i: table[n][0] for i, n in enumerate(label_set.names) if n in table}


def garment_label_set(label_set: Any) -> Any:
    """The label space of garment *categories*: background plus the categories of ``label_set``'s
    garments in id order (``atr18`` → background, short sleeve top, trousers, skirt, short sleeve dress,
    shoes, bag). Pixel metrics of a parser and of a detector are comparable in it."""
    from .labels import LabelSet

    cats = sorted(set(garment_categories(label_set).values()))
    return LabelSet(f"{label_set.name}-garments", ("background", *(CATEGORIES[c] for c in cats)))


def _category_index(label_set: Any) -> dict[int, int]:
    """Category id → its index in :func:`garment_label_set`."""
    cats = sorted(set(garment_categories(label_set).values()))
    return {c: i + 1 for i, c in enumerate(cats)}


def to_garment_labels(label_map: np.ndarray, label_set: Any) -> np.ndarray:
    """A label map of ``label_set`` → a map in :func:`garment_label_set` (non-garments → background)."""
    lut = np.zeros(label_set.num_labels, np.uint8)
    index = _category_index(label_set)
    for lab, cat in garment_categories(label_set).items():
        lut[lab] = index[cat]
    return lut[np.asarray(label_map)]


def _hole_free_pieces(mask: np.ndarray) -> list[np.ndarray]:
    """Split a mask into pieces without holes whose union is the mask: a cut between two rows through a
    hole opens it to the outside (the removed rows span the whole width), so recursing ends."""
    from scipy import ndimage

    holes = ndimage.binary_fill_holes(mask) & ~mask
    if not holes.any():
        return [mask]
    ys = np.nonzero(holes)[0]
    lab, _ = ndimage.label(holes)
    ys = np.nonzero(lab == lab[ys[0], np.nonzero(holes[ys[0]])[0][0]])[0]
    r = (int(ys.min()) + int(ys.max()) + 1) // 2  # rows < r above the cut, rows >= r below
    top, bottom = mask.copy(), mask.copy()
    top[r:] = False
    bottom[:r] = False
    return [p for part in (top, bottom) if part.any() for p in _hole_free_pieces(part)]


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons ``[[x1, y1, x2, y2, ...], ...]`` whose union is exactly a binary mask's pixels.

    Pixel (row r, column c) is the unit square [c, c+1] × [r, r+1] (COCO's convention). The outlines run
    along pixel edges (marching squares at level 0.5; a corner is cut by at most half a pixel, which keeps
    the corner pixel's centre inside), so pycocotools rasterises them back to the mask exactly
    (:func:`rasterize`). A DeepFashion2 polygon cannot describe a hole (a bag held in front of a top), so
    a mask with holes is first cut between rows through each hole into hole-free pieces, one polygon
    (or more) each.
    """
    from skimage import measure

    m = np.asarray(mask, bool)
    polys = []
    for piece in _hole_free_pieces(m) if m.any() else []:
        for c in measure.find_contours(np.pad(piece, 1).astype(np.float32), 0.5):
            c = measure.approximate_polygon(c, tolerance=0.01)[:-1]  # closed: drop the repeated point
            if len(c) >= 3:
                polys.append((c[:, ::-1] - 0.5).ravel().round(3).tolist())  # padded (row, col) → (x, y)
    return polys


def rasterize(segmentation: list[list[float]], height: int, width: int) -> np.ndarray:
    """The H×W bool mask of DeepFashion2/COCO polygons (pycocotools, union of the polygons)."""
    from pycocotools import mask as mask_utils

    if not segmentation:
        return np.zeros((height, width), bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))) > 0


def item_from_mask(category_id: int, mask: np.ndarray, style: int = 0, name: str | None = None) -> dict[str, Any]:
    """A DeepFashion2 item (the JSON object of ``item<k>``) from a binary mask.

    Box: the pixel extent [x1, y1, x2 + 1, y2 + 1]; segmentation: :func:`mask_to_polygons`; scale:
    :func:`scale_from_fraction` of box area / image area; occlusion, zoom-in and viewpoint 0 (*unknown*:
    a label map does not say them); no landmarks.
    """
    m = np.asarray(mask, bool)
    if not m.any():
        raise QparseError(f"item_from_mask: empty mask for category {category_id}")
    ys, xs = np.nonzero(m)
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    h, w = m.shape
    return {
        "category_id": int(category_id), "category_name": name or CATEGORIES[int(category_id)],
        "style": int(style), "bounding_box": [x1, y1, x2, y2], "landmarks": [],
        "segmentation": mask_to_polygons(m), "scale": scale_from_fraction((x2 - x1) * (y2 - y1) / (h * w)),
        "occlusion": 0, "zoom_in": 0, "viewpoint": 0,
    }  # fmt: skip


def corpus_items(label_map: np.ndarray, label_set: Any, min_area: int = MIN_ITEM_AREA) -> list[tuple[int, np.ndarray]]:
    """``(category id, mask)`` of every garment category present in a label map with ``min_area`` pixels
    or more, in category order: **one item per category** (the labels of a category merged, e.g. both
    ATR shoes), because a parser's output is a label map and its unit is a label, not a connected
    component."""
    lab = np.asarray(label_map)
    by_cat: dict[int, list[int]] = {}
    for label, cat in garment_categories(label_set).items():
        by_cat.setdefault(cat, []).append(label)
    out = []
    for cat in sorted(by_cat):
        m = np.isin(lab, by_cat[cat])
        if int(m.sum()) >= min_area:
            out.append((cat, m))
    return out


def export_corpus(
    corpus: Any, out: str | Path, split: str | None = "test", indices: Sequence[int] | None = None,
    min_area: int = MIN_ITEM_AREA, write_images: bool = True, progress: bool | None = None,
    reuse: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Export a prepared corpus (:class:`qparse_lite.prepare.Corpus`) as DeepFashion2 files, so the
    DeepFashion2 evaluation runs on any profile's data (synthetic quick, CCP, ATR).

    Writes ``OUT/annos/<id>.json`` and (``write_images``) ``OUT/images/<id>.png`` (the S×S crop) for the
    images of ``split`` (or the corpus ``indices``). Image id: corpus index + :data:`CORPUS_ID_OFFSET`
    (file stem zero-padded to 6 digits); ``source`` "user"; ``pair_id`` the image id; ``width``/``height``
    S. Items: :func:`corpus_items` (garments of :data:`CORPUS_GARMENTS`, one per category present,
    ``min_area`` pixels or more) as :func:`item_from_mask` objects with ``style`` 1, 2, ... (each item its
    own (pair_id, style), so that the same item in two augmented views is a retrieval positive);
    ``category_guess`` true where the mapping is a guess. Attributes the data lacks (occlusion, zoom-in,
    viewpoint) are 0 = unknown. Also writes ``OUT/export.json`` with counts, the garment table and the
    polygons' fidelity (IoU of each rasterised item with its label pixels: 1 when
    :func:`mask_to_polygons` is exact). Returns that summary.

    With ``reuse``, an export of the same corpus arrays (the SHA-256 sums of a saved corpus), images,
    settings and code already complete in ``OUT`` (its ``export.json`` written last) is not written again;
    its summary comes back with ``"reused": True``. An in-memory corpus is always exported.
    """
    from tqdm.auto import tqdm

    from .io import atomic_save_png
    from .runinfo import run_record

    t0 = time.perf_counter()
    out = Path(out)
    ls = corpus.label_set
    cats = garment_categories(ls)
    table = CORPUS_GARMENTS[ls.name]
    if (indices is None) == (split is None):
        raise QparseError("export_corpus: give split or indices (one of them)")
    idx = [int(i) for i in (corpus.split(split) if split is not None else indices)]
    sums = corpus.meta.get("checksums") or {}
    key = {"labels": sums.get("labels"), "images": sums.get("images"), "indices": idx, "min_area": min_area,
           "write_images": write_images, "garments": table, "version": _EXPORT_VERSION}  # fmt: skip
    done = out / "export.json"
    if reuse and key["labels"] and done.is_file():
        try:
            prev = json.loads(done.read_text())
        except (OSError, json.JSONDecodeError):
            prev = {}
        if json.loads(json.dumps(prev.get("key"))) == json.loads(json.dumps(key)):
            return {k: v for k, v in prev.items() if k not in ("key", "run")} | {"reused": True}
    done.unlink(missing_ok=True)
    guess = {c: not exact for n, (c, exact) in table.items() if n in ls.names}
    counts: Counter = Counter()
    scales: Counter = Counter()
    fidelity: list[float] = []
    S = int(corpus.size)
    for i in tqdm(idx, desc="export corpus", mininterval=1.0, disable=None if progress is None else not progress):
        iid = i + CORPUS_ID_OFFSET
        doc: dict[str, Any] = {"source": "user", "pair_id": iid, "width": S, "height": S,
                               "corpus_index": i, "corpus_id": str(corpus.ids[i])}  # fmt: skip
        for k, (cat, m) in enumerate(corpus_items(np.asarray(corpus.labels[i]), ls, min_area), start=1):
            it = item_from_mask(cat, m, style=k)
            it["category_guess"] = guess.get(cat, False)
            it["labels"] = sorted({ls.names[lab] for lab, c in cats.items() if c == cat})
            doc[f"item{k}"] = it
            counts[cat] += 1
            scales[SUBSET_FAMILIES["scale"][it["scale"]]] += 1
            r = rasterize(it["segmentation"], S, S)
            fidelity.append(float((r & m).sum() / (r | m).sum()))
        atomic_write_json(out / "annos" / f"{iid:06d}.json", doc)
        if write_images:
            atomic_save_png(out / "images" / f"{iid:06d}.png", np.asarray(corpus.images[i]))
    seconds = time.perf_counter() - t0
    summary = {
        "n_images": len(idx), "n_items": sum(counts.values()), "split": split, "label_set": ls.name,
        "items_per_category": {CATEGORIES[c]: counts[c] for c in sorted(counts)},
        "items_per_scale": {s: scales[s] for s in SUBSET_FAMILIES["scale"].values()},
        "garments": {n: {"category_id": c, "category": CATEGORIES[c], "guess": not e}
                     for n, (c, e) in table.items() if n in ls.names},
        "not_items": [n for n in ls.names[1:] if n not in table],
        "unknown_attributes": ["occlusion", "zoom_in", "viewpoint"],
        "polygon_iou_mean": float(np.mean(fidelity)) if fidelity else None,
        "polygon_iou_min": float(np.min(fidelity)) if fidelity else None,
        "min_area": min_area, "seconds": round(seconds, 3), "reused": False,
    }  # fmt: skip
    atomic_write_json(
        done,
        {**summary, "key": key, "run": run_record(profile=None, seed=None, dataset=str(corpus.meta.get("dataset")),
                                      dataset_version=str(corpus.meta.get("version")), wall_time_s=seconds)},
    )  # fmt: skip
    return summary


def instances_from_label_map(
    label_map: np.ndarray, label_set: Any, image_id: int, prob_maps: np.ndarray | None = None,
    min_area: int = MIN_ITEM_AREA,
) -> list[dict[str, Any]]:  # fmt: skip
    """COCO results from a parser's label map, so that a parse (the M-CNN's) is scored by
    :func:`evaluate_detections` like a detector's output.

    One instance per garment category present (:func:`corpus_items`, the unit of the ground truth of
    :func:`export_corpus`), ``segmentation`` an RLE of its pixels, ``bbox`` their extent. ``score``: the
    mean, over the instance's pixels, of the probability of the label each pixel carries
    (``prob_maps[label, y, x]``, L×H×W, the M-CNN's :math:`M_l` of ``ParseStages.prob_maps``), clipped
    to [0, 1]; 1.0 without ``prob_maps``. AP ranks instances by this score.
    """
    from pycocotools import mask as mask_utils

    lab = np.asarray(label_map)
    out = []
    for cat, m in corpus_items(lab, label_set, min_area):
        if prob_maps is None:
            score = 1.0
        else:
            pm = np.asarray(prob_maps)
            ys, xs = np.nonzero(m)
            score = float(np.clip(pm[lab[ys, xs], ys, xs].mean(), 0.0, 1.0))
        ys, xs = np.nonzero(m)
        x1, y1 = int(xs.min()), int(ys.min())
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": int(image_id), "category_id": int(cat), "score": score,
                    "bbox": [x1, y1, int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1], "segmentation": rle})  # fmt: skip
    return out


def instances_to_label_map(
    results: Iterable[dict[str, Any]], shape: tuple[int, int], label_set: Any, score_thresh: float = 0.5
) -> np.ndarray:
    """A garment label map (in :func:`garment_label_set`) painted from one image's COCO results, so that a
    detector (Match R-CNN) is scored by the pixel metrics of :mod:`qparse_lite.metrics` like a parser.

    Instances with ``score >= score_thresh`` are painted in increasing score (the most confident wins
    where masks overlap) with the index of their category; categories outside the garment set and
    unpainted pixels are background. Masks: RLE or polygon ``segmentation``, else the ``bbox``.
    """
    from pycocotools import mask as mask_utils

    h, w = shape
    index = _category_index(label_set)
    out = np.zeros((h, w), np.uint8)
    for r in sorted(results, key=lambda r: float(r["score"])):
        if float(r["score"]) < score_thresh or int(r["category_id"]) not in index:
            continue
        seg = r.get("segmentation")
        if isinstance(seg, dict):
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            m = mask_utils.decode(rle) > 0
        elif isinstance(seg, list) and seg:
            m = rasterize(seg, h, w)
        else:
            x, y, bw, bh = (float(v) for v in r["bbox"])
            m = np.zeros((h, w), bool)
            m[max(0, round(y)) : round(y + bh), max(0, round(x)) : round(x + bw)] = True
        out[m] = index[int(r["category_id"])]
    return out


def detection_frame(ev: dict[str, Any], reported: bool = True) -> Any:
    """:func:`evaluate_detections` as a DataFrame (one row per subset, then overall), with the note's
    reported Match R-CNN AP_mask (Table 4) beside a ``segm`` evaluation when ``reported``.

    Columns: family, subset, n_gt, AP, AP50, AP75 (NaN where a subset has no ground truth, e.g. occlusion
    on data that lacks it) and, for ``segm``, reported AP_mask / AP50 / AP75.
    """
    import pandas as pd

    rows = [
        {"family": fam, "subset": sub, "n_gt": s["n_gt"], "AP": s["ap"], "AP50": s["ap50"], "AP75": s["ap75"]}
        for fam in SUBSET_FAMILIES for sub, s in ev.get(fam, {}).items()
    ]  # fmt: skip
    o = ev["overall"]
    rows.append({"family": "overall", "subset": "all", "n_gt": o["n_gt"], "AP": o["ap"], "AP50": o["ap50"],
                 "AP75": o["ap75"]})  # fmt: skip
    df = pd.DataFrame(rows)
    for c in ("AP", "AP50", "AP75"):
        df[c] = df[c].astype(float)
    if reported and ev["iou_type"] == "segm":
        from .reported import deepfashion2_segm

        rep = deepfashion2_segm().rename(columns={
            "subset_family": "family", "ap_mask": "reported AP_mask", "ap_mask_iou50": "reported AP50",
            "ap_mask_iou75": "reported AP75"})  # fmt: skip
        df = df.merge(rep, on=["family", "subset"], how="left")
    return df


def random_retrieval(results: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """The same retrieval results with every gallery list shuffled: the chance level of
    :func:`evaluate_retrieval` for these detections (same queries and query detections, no matching).

    Meaningful when each list holds the *whole* gallery (``predict(..., top_k=None)``); shuffling a
    top-20 list would keep its top-20 accuracy."""
    rng = np.random.default_rng(seed)
    out = []
    for r in results:
        order = rng.permutation(len(r["gallery_image_id"]))
        out.append({**r, "gallery_image_id": [r["gallery_image_id"][j] for j in order],
                    "gallery_bbox": [r["gallery_bbox"][j] for j in order]})  # fmt: skip
    return out


def draw_items(
    ax: Any, image: np.ndarray, items: Sequence[Any], label_set: Any | None = None, title: str | None = None,
    score_thresh: float = 0.0, max_items: int = 10,
) -> Any:  # fmt: skip
    """Draw clothing items on ``image`` (H×W×3 uint8 or 3×H×W float in [0, 1]) in a matplotlib axis.

    ``items``: :class:`Df2Item` s (ground truth: polygons and box, ``category · style``) or COCO results
    (detections: RLE/polygon mask and box, labelled ``category score`` or by their ``text`` key; only
    ``score >= score_thresh``, the ``max_items`` best). Masks are tinted in the category's colour of :func:`garment_label_set`
    (``label_set`` given) or of a fixed palette. Returns ``ax``.
    """
    from matplotlib.patches import Rectangle
    from pycocotools import mask as mask_utils

    from .labels import voc_palette

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
