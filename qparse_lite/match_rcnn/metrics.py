"""Scores: COCO AP of boxes / masks per DeepFashion2 subset, consumer-to-shop top-k retrieval, their tables,
and the random-ranking baseline (see :mod:`qparse_lite.match_rcnn`)."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.match_rcnn.coco import _coco_from_dict, _normalise_dets
from qparse_lite.match_rcnn.format import SUBSET_FAMILIES, Df2Image


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
                    f"{results_name}: entry {i}: missing {k!r}. Fix: see the retrieval results format in qparse_lite.match_rcnn."
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
        from qparse_lite.evaluation.reported import deepfashion2_segm

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
        from qparse_lite.evaluation.reported import deepfashion2_segm

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


