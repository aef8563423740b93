"""How good are the K neighbours? Label precision / recall / IoU at K against the oracle and random."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.retrieval.search import random_neighbours

# ---------------------------------------------------------------------------------------------------
# retrieval quality
# ---------------------------------------------------------------------------------------------------


def label_presence(labels: np.ndarray, num_labels: int, min_pixels: int = 1) -> np.ndarray:
    """N×L bool: label l is present in map n when it covers at least ``min_pixels`` pixels."""
    labels = np.asarray(labels)
    n = len(labels)
    flat = labels.reshape(n, -1).astype(np.int64) + (np.arange(n) * num_labels)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n * num_labels).reshape(n, num_labels)
    return counts >= min_pixels


def label_overlap_at_k(
    corpus: Any, query_idx: np.ndarray, neigh_idx: np.ndarray, min_pixels: int = 1
) -> dict[str, float]:
    """Label-set agreement between each query and its K neighbours, averaged over all (query, neighbour).

    With F(x) the set of foreground labels present in x's ground-truth map (≥ ``min_pixels`` pixels,
    background excluded), for query q and neighbour g:

    * precision  = |F(g) ∩ F(q)| / |F(g)|: the share of the neighbour's garments the query also wears,
      i.e. of the labels the neighbour could transfer, how many are right (pairs with F(g) = ∅ are skipped);
    * recall     = |F(g) ∩ F(q)| / |F(q)| (pairs with F(q) = ∅ are skipped);
    * iou        = |F(g) ∩ F(q)| / |F(g) ∪ F(q)| (1 when both are empty).

    Each is the mean over the pairs it is defined for (``@K`` over the first K columns of ``neigh_idx``;
    negative entries are ignored). Returns ``{"precision", "recall", "iou", "pairs"}``.
    """
    query_idx = np.asarray(query_idx, dtype=np.int64)
    neigh_idx = np.asarray(neigh_idx, dtype=np.int64)
    if neigh_idx.ndim != 2 or len(neigh_idx) != len(query_idx):
        raise QparseError(f"neighbour table {neigh_idx.shape} does not match {len(query_idx)} queries")
    valid = neigh_idx >= 0
    needed = np.unique(np.concatenate([query_idx, neigh_idx[valid]]))
    L = int(corpus.num_labels)
    pres = np.zeros((len(needed), L), dtype=bool)
    for s in range(0, len(needed), 256):
        pres[s : s + 256] = label_presence(np.asarray(corpus.labels[needed[s : s + 256]]), L, min_pixels)
    pres[:, 0] = False  # background is not a garment
    fq = pres[np.searchsorted(needed, query_idx)][:, None, :]  # Q×1×L
    fg = pres[np.searchsorted(needed, np.where(valid, neigh_idx, needed[0]))]  # Q×K×L
    inter = (fq & fg).sum(-1).astype(np.float64)
    ng, nq, union = fg.sum(-1), np.broadcast_to(fq.sum(-1), inter.shape), (fq | fg).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(valid & (ng > 0), inter / ng, np.nan)
        rec = np.where(valid & (nq > 0), inter / nq, np.nan)
        iou = np.where(valid, np.where(union > 0, inter / union, 1.0), np.nan)

    def mean(a: np.ndarray) -> float:
        return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

    return {"precision": mean(prec), "recall": mean(rec), "iou": mean(iou), "pairs": int(valid.sum())}


def label_precision_at_k(
    corpus: Any, query_idx: np.ndarray, neigh_idx: np.ndarray, min_pixels: int = 1
) -> float:
    """Label-overlap precision@K: mean over (query q, neighbour g) of |F(g) ∩ F(q)| / |F(g)| (see
    :func:`label_overlap_at_k`)."""
    return label_overlap_at_k(corpus, query_idx, neigh_idx, min_pixels)["precision"]


def label_recall_at_k(
    corpus: Any, query_idx: np.ndarray, neigh_idx: np.ndarray, min_pixels: int = 1
) -> float:
    """Label-overlap recall@K: mean of |F(g) ∩ F(q)| / |F(q)| (see :func:`label_overlap_at_k`)."""
    return label_overlap_at_k(corpus, query_idx, neigh_idx, min_pixels)["recall"]


def label_iou_at_k(corpus: Any, query_idx: np.ndarray, neigh_idx: np.ndarray, min_pixels: int = 1) -> float:
    """Mean IoU of the foreground label sets, |F(g) ∩ F(q)| / |F(g) ∪ F(q)| (see :func:`label_overlap_at_k`)."""
    return label_overlap_at_k(corpus, query_idx, neigh_idx, min_pixels)["iou"]


def quality_table(
    corpus: Any,
    queries: np.ndarray,
    tables: dict[str, np.ndarray],
    k: int,
    random_seeds: Sequence[int] = range(10),
    database: np.ndarray | None = None,
) -> Any:
    """Retrieval quality at K of several neighbour tables of the same queries, against random neighbours.

    One row per table (label-overlap ``precision``, ``recall``, ``iou`` @K in percent,
    :func:`label_overlap_at_k`), plus a ``random`` row: the mean over ``random_seeds`` of
    :func:`random_neighbours` from ``database`` (default the train split), with its standard deviation in
    ``*_std`` columns. ``gap_closed`` = (precision − random) / (oracle − random) when an ``oracle`` table
    is given. Returns a DataFrame indexed by features name.
    """
    import pandas as pd

    queries = np.asarray(queries, dtype=np.int64)
    db = np.asarray(corpus.split("train") if database is None else database, dtype=np.int64)
    rows = {}
    for name, tab in tables.items():
        o = label_overlap_at_k(corpus, queries, np.asarray(tab)[:, :k])
        rows[name] = {m: 100 * o[m] for m in ("precision", "recall", "iou")}
    rnd = [label_overlap_at_k(corpus, queries, random_neighbours(queries, db, k, int(s))) for s in random_seeds]
    rows["random"] = {m: 100 * float(np.mean([r[m] for r in rnd])) for m in ("precision", "recall", "iou")}
    rows["random"].update({f"{m}_std": 100 * float(np.std([r[m] for r in rnd])) for m in ("precision", "recall", "iou")})
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "features"
    if "oracle" in df.index:
        span = df.loc["oracle", "precision"] - df.loc["random", "precision"]
        df["gap_closed"] = (df["precision"] - df.loc["random", "precision"]) / span if span > 0 else np.nan
    return df

def overlap_at_ks(
    corpus: Any,
    queries: Sequence[int] | np.ndarray,
    tables: Mapping[str, np.ndarray],
    ks: Sequence[int] = (1, 3, 5, 7, 9, 11, 15),
) -> Any:
    """Label-overlap precision, recall and IoU @K (in percent) of several neighbour tables of the same
    queries, for each K in ``ks`` (the first K columns of each table;
    :func:`~qparse_lite.retrieval.quality.label_overlap_at_k`). Returns a long DataFrame with columns
    ``features``, ``K``, ``precision``, ``recall``, ``iou``, ``pairs``."""
    import pandas as pd

    from qparse_lite.retrieval.quality import label_overlap_at_k

    queries = np.asarray(queries, dtype=np.int64)
    rows = []
    for name, tab in tables.items():
        tab = np.asarray(tab, dtype=np.int64)
        if tab.shape[0] != len(queries):
            raise ValueError(f"{name}: {tab.shape[0]} rows for {len(queries)} queries")
        for k in ks:
            if k > tab.shape[1]:
                raise ValueError(f"{name}: K = {k} but the table holds {tab.shape[1]} neighbours")
            o = label_overlap_at_k(corpus, queries, tab[:, :k])
            rows.append({"features": name, "K": int(k), "precision": 100 * o["precision"],
                         "recall": 100 * o["recall"], "iou": 100 * o["iou"], "pairs": o["pairs"]})  # fmt: skip
    return pd.DataFrame(rows)
