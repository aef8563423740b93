"""Exact K-nearest-neighbour search over corpus features (paper Sec. 3.1, docs/paper.md §1.2)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.data.crops import corpus_fingerprint
from qparse_lite.errors import QparseError
from qparse_lite.retrieval.features import FeatureExtractor, _split_indices, corpus_features, get_extractor

# ---------------------------------------------------------------------------------------------------
# exact search
# ---------------------------------------------------------------------------------------------------

#: extra candidates fetched from faiss before the exact re-ranking (guards ties/rounding at rank K).
TIE_MARGIN = 8


def _as_features(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise QparseError(f"knn: {what} must be a 2-D N×D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise QparseError(f"knn: {what} contain NaN or inf values. Fix: recompute the features.")
    return x


def knn(
    database: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude_self: bool = False,
    *,
    exclude: np.ndarray | None = None,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact K nearest neighbours by squared Euclidean distance, G = {g_1..g_K} of Sec. 3.1.

    Candidates come from ``faiss.IndexFlatL2`` (exhaustive search); the best ``K + 1 + TIE_MARGIN``
    are then re-ranked with distances recomputed in float64, sorted by (distance, database index): equal
    distances are broken by the smaller index, so results do not depend on BLAS or thread count.

    Args:
        database: N_d×D features of the images to retrieve from.
        queries: N_q×D features.
        k: K, neighbours per query.
        exclude_self: the queries ARE the database (row i of both is the same image): row i never
            retrieves database row i, even when other rows have identical features.
        exclude: alternatively, per query the database row to leave out (−1: none).

    Returns:
        ``(indices, distances)``: N_q×K int64 rows into ``database`` (nearest first) and their
        squared L2 distances (float32).
    """
    import faiss

    db, q = _as_features(database, "database features"), _as_features(queries, "query features")
    if db.shape[1] != q.shape[1]:
        raise QparseError(f"knn: database has {db.shape[1]}-d features, queries {q.shape[1]}-d")
    nd, nq = len(db), len(q)
    if exclude_self:
        if nq != nd:
            raise QparseError(f"knn: exclude_self needs the queries to be the database ({nq} vs {nd} rows)")
        exclude = np.arange(nq)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.shape != (nq,):
            raise QparseError(f"knn: exclude must have one entry per query ({nq}), got {exclude.shape}")
    avail = nd - (1 if exclude is not None and (exclude >= 0).any() else 0)
    if not 1 <= k <= avail:
        raise QparseError(
            f"knn: K = {k} neighbours asked for, but only {avail} database images can be returned"
        )
    kk = min(nd, k + 1 + TIE_MARGIN)
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    out_i = np.empty((nq, k), dtype=np.int64)
    out_d = np.empty((nq, k), dtype=np.float32)
    for s in range(0, nq, chunk):
        qc = q[s : s + chunk]
        _, cand = index.search(qc, kk)
        cand = cand.astype(np.int64)
        cand_ok = np.where(cand < 0, 0, cand)
        diff = db[cand_ok].astype(np.float64) - qc[:, None, :].astype(np.float64)
        dist = np.einsum("qkd,qkd->qk", diff, diff)
        bad = cand < 0
        if exclude is not None:
            bad |= cand == exclude[s : s + chunk, None]
        dist[bad] = np.inf
        order = np.lexsort((np.where(bad, np.iinfo(np.int64).max, cand), dist), axis=-1)[:, :k]
        out_i[s : s + len(qc)] = np.take_along_axis(cand, order, 1)
        out_d[s : s + len(qc)] = np.take_along_axis(dist, order, 1)
    return out_i, out_d


@dataclass
class KNNResult:
    """KNN of a query split among a database split of one corpus.

    Attributes:
        queries: Q corpus indices of the query images (``corpus.split(query_split)`` order).
        neighbours: Q×K corpus indices (not split positions) of their KNN images, nearest first.
        distances: Q×K squared L2 feature distances.
        features: extractor name; k: K; query_split / database_split: split names.
        header: provenance (extractor config, corpus path and fingerprint, created, git commit).
    """

    queries: np.ndarray
    neighbours: np.ndarray
    distances: np.ndarray
    features: str
    k: int
    query_split: str = "test"
    database_split: str = "train"
    header: dict[str, Any] = field(default_factory=dict)

    FORMAT = "qparse-knn/1"

    @property
    def indices(self) -> np.ndarray:
        """Alias of :attr:`neighbours`."""
        return self.neighbours

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``: ``queries``, ``neighbours``, ``distances`` and a JSON ``header``)."""
        from qparse_lite.io import atomic_path

        head = dict(self.header)
        head.update(
            format=self.FORMAT, features=self.features, k=int(self.k), query_split=self.query_split,
            database_split=self.database_split, num_queries=int(len(self.queries)),
        )  # fmt: skip
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(
                f, queries=np.asarray(self.queries, dtype=np.int64),
                neighbours=np.asarray(self.neighbours, dtype=np.int64),
                distances=np.asarray(self.distances, dtype=np.float32), header=np.array(json.dumps(head)),
            )  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path, corpus: Any = None) -> KNNResult:
        """Read a file written by :meth:`save`; with ``corpus``, check that it was computed on it."""
        path = Path(path)
        if not path.is_file():
            raise QparseError(f"{path}: no KNN file. Fix: compute it with `qparse knn --out {path}`.")
        try:
            with np.load(path, allow_pickle=False) as z:
                head = json.loads(str(z["header"]))
                res = cls(
                    queries=z["queries"], neighbours=z["neighbours"], distances=z["distances"],
                    features=head["features"], k=int(head["k"]), query_split=head["query_split"],
                    database_split=head["database_split"], header=head,
                )  # fmt: skip
        except Exception as e:
            raise QparseError(
                f"{path}: not a readable KNN file ({type(e).__name__}: {e}). Fix: compute it again with "
                "`qparse knn`."
            ) from e
        if res.neighbours.shape != (len(res.queries), res.k):
            raise QparseError(f"{path}: neighbours {res.neighbours.shape} ≠ {len(res.queries)}×{res.k}")
        if corpus is not None:
            res.check(corpus, path)
        return res

    def check(self, corpus: Any, source: str | Path = "KNN result") -> None:
        """Raise :class:`QparseError` if this result was computed on another corpus."""
        fp = self.header.get("corpus", {}).get("fingerprint")
        if fp is not None and fp != corpus_fingerprint(corpus):
            raise QparseError(
                f"{source}: computed on another corpus ({self.header.get('corpus', {}).get('path')}, "
                f"fingerprint {fp}). Fix: recompute it with `qparse knn` for this corpus."
            )
        n = len(corpus.images)
        if len(self.queries) and (self.neighbours.max() >= n or self.queries.max() >= n):
            raise QparseError(f"{source}: indices beyond the corpus's {n} images. Fix: recompute it.")


def corpus_knn(
    corpus: Any,
    query_split: str | Sequence[int] | np.ndarray,
    k: int,
    features: str | FeatureExtractor,
    database_split: str | Sequence[int] | np.ndarray = "train",
    extractor_kwargs: dict[str, Any] | None = None,
    *,
    feature_cache: str | Path | None = None,
    progress: bool | None = None,
    query_features: np.ndarray | None = None,
) -> KNNResult:
    """The K nearest ``database_split`` images of every ``query_split`` image (Sec. 3.1).

    ``features`` is an extractor name (made with :func:`get_extractor` and ``extractor_kwargs``; the
    oracle gets ``num_labels=corpus.num_labels``) or an extractor. A query never retrieves itself (when
    the query split is, or overlaps, the database split, e.g. training images among training images).
    Neighbour indices point INTO THE CORPUS, not into the split. ``query_features`` (one row per query)
    replaces the extractor's query features (:func:`split_neighbours`: out-of-fold train embeddings).
    """
    from qparse_lite.runinfo import git_commit

    qname, q_idx = _split_indices(corpus, query_split)
    dname, d_idx = _split_indices(corpus, database_split)
    if isinstance(features, str):
        extractor = get_extractor(features, corpus=corpus, **dict(extractor_kwargs or {}))
    else:
        extractor = features
    t0 = time.perf_counter()
    d_feat = corpus_features(corpus, d_idx, extractor, feature_cache, progress)
    same = len(q_idx) == len(d_idx) and np.array_equal(q_idx, d_idx)
    if query_features is not None:
        q_feat = np.asarray(query_features, dtype=np.float32)
    else:
        q_feat = d_feat if same else corpus_features(corpus, q_idx, extractor, feature_cache, progress)
    t_feat = time.perf_counter() - t0
    # per query, the database row holding the query itself (-1 when the query is not in the database)
    order = np.argsort(d_idx, kind="stable")
    pos = np.searchsorted(d_idx[order], q_idx).clip(0, max(len(d_idx) - 1, 0))
    exclude = np.where(d_idx[order][pos] == q_idx, order[pos], -1) if len(d_idx) else None
    rows, dist = knn(d_feat, q_feat, k, exclude=exclude)
    header = {
        "extractor": extractor.config,
        "corpus": {
            "path": str(getattr(corpus, "path", getattr(corpus, "root", "")) or ""),
            "fingerprint": corpus_fingerprint(corpus),
            "num_images": int(len(corpus.images)),
        },
        "distance": "squared L2",
        "queries": "out-of-fold" if query_features is not None else "extractor",
        "feature_seconds": round(t_feat, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
    }
    return KNNResult(q_idx, d_idx[rows], dist, extractor.name, int(k), qname, dname, header)


def split_neighbours(
    corpus: Any, split: str, k: int, features: str, cache: str | Path | None = None, name: str | None = None
) -> np.ndarray:
    """KNN corpus indices (Q×K, rows in ``corpus.split(split)`` order) of a split among the train split,
    cached as ``cache/<features>_<split>_k<K>.npz`` (or ``cache/<name>``) when ``cache`` is given.

    A cached file is reused only when it was computed on this corpus (fingerprint) with the same
    extractor configuration (for the learned features: the same trained head); otherwise it is computed
    again and replaced, so changing ``features``, ``k`` or the corpus never reuses stale neighbours.
    The features themselves are cached in ``cache/features/`` (keyed the same way), so another split or K
    does not run the network over the train split again.

    The train split's own neighbours (``split="train"``, the training pairs' KNN) use **out-of-fold**
    query features when the extractor was trained on that split (``efficientnet-lite0-learned``:
    :meth:`~qparse_lite.retrieval.imagenet.LearnedRetrievalExtractor.out_of_fold`), so a training image
    gets neighbours as good as a test image's, not better; the file's header says ``"queries":
    "out-of-fold"``.
    """
    extractor = get_extractor(features, corpus=corpus)
    oof = split == "train" and hasattr(extractor, "out_of_fold")
    queries = "out-of-fold" if oof else "extractor"
    path = Path(cache) / (name or f"{features}_{split}_k{k}.npz") if cache is not None else None
    if path is not None and path.is_file():
        try:
            res = KNNResult.load(path, corpus)
        except Exception:  # another corpus, or unreadable: recompute below
            res = None
        if (res is not None and res.k == k and res.features == features and res.query_split == split
                and res.header.get("extractor") == extractor.config
                and res.header.get("queries", "extractor") == queries):
            return np.asarray(res.neighbours)
    qf = extractor.out_of_fold(corpus) if oof else None
    res = corpus_knn(corpus, split, k, extractor, feature_cache=path.parent / "features" if path else None,
                     query_features=qf)  # fmt: skip
    if path is not None:
        res.save(path)
    return np.asarray(res.neighbours)


def random_neighbours(query_idx: np.ndarray, database_idx: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """A chance baseline: K distinct random ``database_idx`` entries per query, never the query itself."""
    rng = np.random.default_rng(seed)
    database_idx = np.asarray(database_idx, dtype=np.int64)
    out = np.empty((len(query_idx), k), dtype=np.int64)
    for i, q in enumerate(np.asarray(query_idx)):
        pool = database_idx[database_idx != q]
        if len(pool) < k:
            raise QparseError(f"random_neighbours: K = {k} but only {len(pool)} database images")
        out[i] = rng.choice(pool, size=k, replace=False)
    return out
