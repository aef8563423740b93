"""Exporters into the DeepFashion2 layout: the CCP mirror (:func:`export_ccp`) and any prepared corpus
(:func:`export_corpus`); parser label maps ↔ item instances (see :mod:`qparse_lite.df2`)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QparseError
from ..io import atomic_write_json
from .format import (
    CATEGORIES,
    CCP_ITEM_KINDS,
    CCP_TO_DF2,
    CORPUS_GARMENTS,
    CORPUS_ID_OFFSET,
    MIN_ITEM_AREA,
    SUBSET_FAMILIES,
    _category_index,
    garment_categories,
    item_from_mask,
    rasterize,
    scale_from_fraction,
)

#: Version of :func:`export_corpus`'s output; a change makes it rewrite existing exports.
_EXPORT_VERSION = 1


# ------------------------------------------------------------------------------------------- CCP export


def _ccp_ids(ds: Any, ids: Sequence[str] | None, split: str | None) -> list[str]:
    """The ids to export from the :class:`~qparse_lite.datasets.CCP` ``ds``: ``ids``, a split, or all."""
    if ids is not None and split is not None:
        raise QparseError("export_ccp: give ids or split, not both")
    if split is not None:
        splits = ds.splits()
        if split not in splits:
            raise QparseError(f"split {split!r}: choose one of {', '.join(splits)}")
        return list(splits[split])
    if ids is None:
        return list(ds.ids)
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

    The mirror is read through :class:`qparse_lite.datasets.CCP` (``labels="ccp59"``), the kit's one CCP
    reader (it checks the photo of every label file, the label ids and the names); splits are its splits.

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
    from tqdm.auto import tqdm

    from ..datasets import CCP
    from ..labels import CCP_COARSE_GROUPS, ccp59_to_coarse_lut
    from ..runinfo import run_record

    t0 = time.perf_counter()
    root, out = Path(root), Path(out)
    if out.resolve().is_relative_to(root.resolve()):
        raise QparseError(
            f"{out}: inside the CCP mirror {root}, which is read-only. Fix: choose another --out."
        )
    ds = CCP(root, labels="ccp59")  # the one reader of the mirror: checks photos, label files and names
    names = ds.names59
    coarse_lut = ccp59_to_coarse_lut(names)
    kinds = list(CCP_COARSE_GROUPS)
    kind_ids = [kinds.index(k) for k in CCP_ITEM_KINDS]
    cat_of = np.zeros(len(names), dtype=np.int64)  # CCP-59 id → category (0 = none)
    guess_of = np.zeros(len(names), dtype=bool)
    for i, n in enumerate(names):
        if n in CCP_TO_DF2:
            cat_of[i], guess_of[i] = CCP_TO_DF2[n][0], not CCP_TO_DF2[n][1]
    id_list = _ccp_ids(ds, ids, split)
    index = {x: i for i, x in enumerate(ds.ids)}
    counts: Counter = Counter()
    n_items = 0
    annos = out / "annos"
    for sid in tqdm(
        id_list, desc="export ccp", mininterval=1.0, disable=None if progress is None else not progress
    ):
        if sid not in index:
            mat = root / "annotations" / "pixel-level" / f"{sid}.mat"
            raise QparseError(f"{mat}: not found. Fix: check the id or download CCP again.")
        gt = ds[index[sid]].label  # CCP-59 ids, checked by datasets.CCP against the photo and the names
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

    from ..io import atomic_save_png
    from ..runinfo import run_record

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


