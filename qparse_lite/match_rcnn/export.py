"""The exporter into the DeepFashion2 layout — one item rule and one writer (:func:`corpus_items`,
``_export``) behind its two front doors, the CCP mirror at full resolution (:func:`export_ccp`) and any
prepared corpus (:func:`export_corpus`) — and parser label maps ↔ item instances (see :mod:`qparse_lite.match_rcnn`)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_write_json
from qparse_lite.match_rcnn.format import (
    CATEGORIES,
    CORPUS_GARMENTS,
    CORPUS_ID_OFFSET,
    MIN_ITEM_AREA,
    SUBSET_FAMILIES,
    _category_index,
    garment_categories,
    item_from_mask,
    rasterize,
)

#: Version of the exporters' output; a change makes them rewrite existing exports (2: one exporter).
_EXPORT_VERSION = 2


# ------------------------------------------------------------------------------- the one exporter


def corpus_items(label_map: np.ndarray, label_set: Any, min_area: int = MIN_ITEM_AREA) -> list[tuple[int, np.ndarray]]:
    """``(category id, mask)`` of every garment category present in a label map with ``min_area`` pixels
    or more, in category order: **one item per category** (the labels of a category merged, e.g. both
    ATR shoes), because a parser's output is a label map and its unit is a label, not a connected
    component (an arm across a coat would cut it into two "items"). The item rule of both exporters."""
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


def _label_map_items(lab: np.ndarray, ls: Any, min_area: int, guess: dict[int, bool]) -> tuple[list[dict], list[float]]:
    """The DeepFashion2 items of one label map (:func:`corpus_items` → :func:`item_from_mask`, ``style``
    1, 2, ...: each item its own (pair_id, style), so the same item in two augmented views is a retrieval
    positive) and the polygons' fidelity (IoU of each rasterised item with its label pixels)."""
    items, fidelity = [], []
    h, w = lab.shape
    for k, (cat, m) in enumerate(corpus_items(lab, ls, min_area), start=1):
        it = item_from_mask(cat, m, style=k)
        it["category_guess"] = guess.get(cat, False)
        it["labels"] = sorted(ls.names[int(v)] for v in np.unique(lab[m]))  # the labels it merges, as found
        items.append(it)
        r = rasterize(it["segmentation"], h, w)
        fidelity.append(float((r & m).sum() / (r | m).sum()))
    return items, fidelity


def _export(
    records: Iterable[tuple[str, dict[str, Any], np.ndarray, np.ndarray | None]], n: int, ls: Any, out: Path,
    min_area: int, key: dict[str, Any] | None, reuse: bool, progress: bool | None, desc: str,
    extra: dict[str, Any], run: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Write ``OUT/annos/<stem>.json`` (+ ``OUT/images/<stem>.png`` when a record has an image) for every
    ``(stem, image-level fields, label map, image or None)`` of ``records``, then ``OUT/export.json``
    (written last: its presence means complete). ``key`` (everything that changes the files) lets a
    finished export of the same key be reused."""
    from tqdm.auto import tqdm

    from qparse_lite.io import atomic_save_png
    from qparse_lite.runinfo import run_record

    t0 = time.perf_counter()
    done = out / "export.json"
    if reuse and key is not None and done.is_file():
        try:
            prev = json.loads(done.read_text())
        except (OSError, json.JSONDecodeError):
            prev = {}
        if json.loads(json.dumps(prev.get("key"))) == json.loads(json.dumps(key)):
            return {k: v for k, v in prev.items() if k not in ("key", "run")} | {"reused": True}
    done.unlink(missing_ok=True)
    table = CORPUS_GARMENTS[ls.name]
    guess = {c: not exact for name, (c, exact) in table.items() if name in ls.names}
    counts: Counter = Counter()
    scales: Counter = Counter()
    fidelity: list[float] = []
    for stem, doc, lab, image in tqdm(records, total=n, desc=desc, mininterval=1.0,
                                      disable=None if progress is None else not progress):  # fmt: skip
        items, fid = _label_map_items(np.asarray(lab), ls, min_area, guess)
        fidelity += fid
        for k, it in enumerate(items, start=1):
            doc[f"item{k}"] = it
            counts[it["category_id"]] += 1
            scales[SUBSET_FAMILIES["scale"][it["scale"]]] += 1
        atomic_write_json(out / "annos" / f"{stem}.json", doc)
        if image is not None:
            atomic_save_png(out / "images" / f"{stem}.png", np.asarray(image))
    seconds = time.perf_counter() - t0
    summary = {
        "n_images": n, "n_items": sum(counts.values()), **extra, "label_set": ls.name,
        "items_per_category": {CATEGORIES[c]: counts[c] for c in sorted(counts)},
        "items_per_scale": {s: scales[s] for s in SUBSET_FAMILIES["scale"].values()},
        "garments": {name: {"category_id": c, "category": CATEGORIES[c], "guess": not e}
                     for name, (c, e) in table.items() if name in ls.names},
        "not_items": [name for name in ls.names[1:] if name not in table],
        "unknown_attributes": ["occlusion", "zoom_in", "viewpoint"],
        "polygon_iou_mean": float(np.mean(fidelity)) if fidelity else None,
        "polygon_iou_min": float(np.min(fidelity)) if fidelity else None,
        "min_area": min_area, "scale_thresholds": "box area / image area: < 0.10 small, < 0.40 moderate, else large",
        "seconds": round(seconds, 3), "reused": False,
    }  # fmt: skip
    atomic_write_json(done, {**summary, "key": key, "run": run_record(profile=None, seed=None, wall_time_s=seconds, **run)})
    return summary


def _ccp_ids(ds: Any, ids: Sequence[str] | None, split: str | None) -> list[str]:
    """The ids to export from the :class:`~qparse_lite.data.datasets.CCP` ``ds``: ``ids``, a split, or all."""
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
    labels: str = "ccp59",
    reuse: bool = True,
) -> dict[str, Any]:
    """Export the CCP mirror's pixel annotations (full resolution) as DeepFashion2 files ``OUT/annos/<id>.json``.

    The mirror is read through :class:`qparse_lite.data.datasets.CCP` (``labels``: ``ccp59``, the default, or
    ``ccp-coarse``), the kit's one CCP reader (it checks the photo of every label file, the label ids
    and the names); splits are its splits. The items are those of :func:`export_corpus`, by the same
    code: one per garment category present (:data:`CORPUS_GARMENTS` of the label set; for ``ccp59`` the
    CCP names of :data:`CCP_TO_DF2`), ``min_area`` pixels or more, exact polygons (holes kept),
    ``style`` 1, 2, ...; ``category_guess`` where the mapping is a guess and ``labels`` the CCP names it
    merges. Image level: ``source`` "user", ``pair_id`` the image number, ``width``/``height``; the photos
    stay in ``root/photos`` (nothing is copied, nothing is written into ``root``). ``OUT/export.json``
    holds the counts, the garment table, the polygons' fidelity and the run record; with ``reuse`` a
    complete export of the same mirror version, ids and settings is not written again. Returns the summary.
    """
    from qparse_lite.data.datasets import CCP

    root, out = Path(root), Path(out)
    if out.resolve().is_relative_to(root.resolve()):
        raise QparseError(f"{out}: inside the CCP mirror {root}, which is read-only. Fix: choose another --out.")
    if labels not in ("ccp59", "ccp-coarse"):
        raise QparseError(f"export_ccp: labels must be 'ccp59' or 'ccp-coarse', not {labels!r}")
    ds = CCP(root, labels=labels)  # the one reader of the mirror: checks photos, label files and names
    id_list = _ccp_ids(ds, ids, split)
    index = {x: i for i, x in enumerate(ds.ids)}
    for sid in id_list:
        if sid not in index:
            mat = root / "annotations" / "pixel-level" / f"{sid}.mat"
            raise QparseError(f"{mat}: not found. Fix: check the id or download CCP again.")

    def records() -> Iterable[tuple[str, dict[str, Any], np.ndarray, None]]:
        for sid in id_list:
            lab = ds[index[sid]].label
            h, w = lab.shape
            yield sid, {"source": "user", "pair_id": int(sid), "width": int(w), "height": int(h)}, lab, None

    key = {"dataset": ds.version, "ids": id_list, "labels": labels, "min_area": min_area,
           "garments": CORPUS_GARMENTS[ds.label_set.name], "version": _EXPORT_VERSION}  # fmt: skip
    return _export(records(), len(id_list), ds.label_set, out, min_area, key, reuse, progress, "export ccp",
                   {"split": split}, {"dataset": "ccp", "dataset_version": str(ds.version)})  # fmt: skip


def export_corpus(
    corpus: Any, out: str | Path, split: str | None = "test", indices: Sequence[int] | None = None,
    min_area: int = MIN_ITEM_AREA, write_images: bool = True, progress: bool | None = None,
    reuse: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Export a prepared corpus (:class:`qparse_lite.data.prepare.Corpus`) as DeepFashion2 files, so the
    DeepFashion2 evaluation runs on any profile's data (synthetic quick, CCP, ATR).

    Writes ``OUT/annos/<id>.json`` and (``write_images``) ``OUT/images/<id>.png`` (the S×S crop) for the
    images of ``split`` (or the corpus ``indices``). Image id: corpus index + :data:`CORPUS_ID_OFFSET`
    (file stem zero-padded to 6 digits); ``source`` "user"; ``pair_id`` the image id; ``width``/``height``
    S. Items: the rule of :func:`export_ccp`, by the same code (:func:`corpus_items`: one per garment
    category present, ``min_area`` pixels or more, as :func:`item_from_mask` objects with ``style`` 1, 2,
    ...; ``category_guess`` true where the mapping is a guess). Attributes the data lacks (occlusion,
    zoom-in, viewpoint) are 0 = unknown. Also writes ``OUT/export.json`` with counts, the garment table
    and the polygons' fidelity (IoU of each rasterised item with its label pixels: 1 when
    :func:`mask_to_polygons` is exact). Returns that summary.

    With ``reuse``, an export of the same corpus arrays (the SHA-256 sums of a saved corpus), images,
    settings and code already complete in ``OUT`` (its ``export.json`` written last) is not written again;
    its summary comes back with ``"reused": True``. An in-memory corpus is always exported.
    """
    out = Path(out)
    ls = corpus.label_set
    if (indices is None) == (split is None):
        raise QparseError("export_corpus: give split or indices (one of them)")
    idx = [int(i) for i in (corpus.split(split) if split is not None else indices)]
    sums = corpus.meta.get("checksums") or {}
    key = {"labels": sums.get("labels"), "images": sums.get("images"), "indices": idx, "min_area": min_area,
           "write_images": write_images, "garments": CORPUS_GARMENTS[ls.name], "version": _EXPORT_VERSION}  # fmt: skip
    S = int(corpus.size)

    def records() -> Iterable[tuple[str, dict[str, Any], np.ndarray, np.ndarray | None]]:
        for i in idx:
            iid = i + CORPUS_ID_OFFSET
            doc = {"source": "user", "pair_id": iid, "width": S, "height": S, "corpus_index": i,
                   "corpus_id": str(corpus.ids[i])}  # fmt: skip
            yield f"{iid:06d}", doc, np.asarray(corpus.labels[i]), np.asarray(corpus.images[i]) if write_images else None

    return _export(records(), len(idx), ls, out, min_area, key if key["labels"] else None, reuse, progress,
                   "export corpus", {"split": split},
                   {"dataset": str(corpus.meta.get("dataset")), "dataset_version": str(corpus.meta.get("version"))})  # fmt: skip


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


