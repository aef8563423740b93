"""DeepFashion2 annotation format: categories, subset attributes, the per-image JSON loader (every field
checked), the garment tables of the kit's label sets, and mask ↔ polygon geometry (see :mod:`qparse_lite.match_rcnn`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError

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

#: Coarse CCP kinds that hold the garments (qparse_lite.labels.CCP_COARSE_GROUPS): the items of a CCP export
#: (one per CCP_TO_DF2 category present) lie inside them; hair, skin, face, accessories never become items.
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
        "(see `qparse df2 --help` / qparse_lite.match_rcnn)."
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
    augmented views of :func:`qparse_lite.match_rcnn.data.retrieval_views`).
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


def scale_from_fraction(frac: float) -> int:
    """DeepFashion2-like scale of an item from the fraction of the image its box covers:
    < 10 % small (1), < 40 % moderate (2), else large (3)."""
    return 1 if frac < 0.10 else 2 if frac < 0.40 else 3


# ------------------------------------------------------------------------------- garments of label sets

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



def garment_categories(label_set: Any) -> dict[int, int]:
    """Label id → category id for the garment labels of ``label_set`` (:data:`CORPUS_GARMENTS`)."""
    name = getattr(label_set, "name", label_set)
    if name not in CORPUS_GARMENTS:
        raise QparseError(
            f"label set {name!r}: no garment table. Fix: use one of {', '.join(CORPUS_GARMENTS)} "
            "or add it to qparse_lite.match_rcnn.format.CORPUS_GARMENTS."
        )
    table = CORPUS_GARMENTS[name]
    return {i: table[n][0] for i, n in enumerate(label_set.names) if n in table}


def garment_label_set(label_set: Any) -> Any:
    """The label space of garment *categories*: background plus the categories of ``label_set``'s
    garments in id order (``atr18`` → background, short sleeve top, trousers, skirt, short sleeve dress,
    shoes, bag). Pixel metrics of a parser and of a detector are comparable in it."""
    from qparse_lite.labels import LabelSet

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


