"""What a training run reads: the prepared corpus, the KNN tables of its train/val splits, a held-out label.

The data set-up of :func:`qparse_lite.train.loop.train` (the ``load_data`` of torchvision's references):
:func:`ensure_corpus` prepares the profile's dataset when no cache is given, :func:`ensure_knn` reads a
given KNN file (checked against the split) or gets the neighbours from the cache owner
:func:`qparse_lite.retrieval.search.split_neighbours` (keyed by corpus, split, features and K).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.profiles import Profile

__all__ = ["dataset_kwargs", "ensure_corpus", "ensure_knn", "holdout_id"]


def dataset_kwargs(profile: Profile) -> dict[str, Any]:
    """The :func:`qparse_lite.data.datasets.get_dataset` arguments of the profile's dataset (synthetic: n, size, seed)."""
    if profile.dataset == "synthetic":
        return {"n": profile.n_images or 400, "size": max(128, profile.image_size), "seed": profile.seed}
    if profile.dataset == "ccp":
        return {"labels": profile.label_set}
    return {}


def ensure_corpus(
    profile: Profile, out: Path, corpus: Any = None, data_root: str | Path | None = None
) -> Any:
    """The prepared corpus: ``corpus`` itself (a Corpus), the cache at ``corpus`` (a path; prepared there
    from the profile's dataset, size and crop when missing) or ``out/corpus`` (prepared when missing).

    Raises:
        QparseError: the corpus's crop mode (``square``/``warp``, docs/paper.md §1.1) is not the profile's.
    """
    if corpus is not None and not isinstance(corpus, str | Path):
        return _same_crop(profile, corpus)
    from qparse_lite.data.prepare import Corpus, prepare_corpus

    path = Path(corpus) if corpus is not None else Path(out) / "corpus"
    if not (path / "meta.json").is_file():
        from qparse_lite.data.datasets import get_dataset

        if profile.dataset != "synthetic" and data_root is None:
            raise QparseError(
                f"{path}: no prepared corpus, and profile {profile.name} needs its dataset to prepare one. "
                f"Fix: pass --data-root DIR (after `qparse data download --dataset {profile.dataset} --data-root DIR`) "
                "or --corpus CACHE of a prepared corpus."
            )
        ds = get_dataset(profile.dataset, root=data_root, **dataset_kwargs(profile))
        prepare_corpus(ds, profile.image_size, path, feature_size=profile.feature_size, crop=profile.crop)
    return _same_crop(profile, Corpus.load(path))


def _same_crop(profile: Profile, corpus: Any) -> Any:
    """``corpus`` when its crop mode is the profile's (what the run records), else a :class:`QparseError`."""
    from qparse_lite.data.crops import corpus_crop

    have = corpus_crop(corpus)
    if have != profile.crop:
        raise QparseError(
            f"the corpus {getattr(corpus, 'path', None) or '(in memory)'} has crop {have!r}, the profile "
            f"{profile.name} crop {profile.crop!r}. Fix: add --set crop={have} (the run records it), or prepare "
            f"the corpus with qparse prepare --crop {profile.crop}."
        )
    return corpus


def _load_knn_file(path: Path, corpus: Any, queries: np.ndarray) -> np.ndarray:
    """Neighbours from a :class:`qparse_lite.retrieval.search.KNNResult` file (checked against the corpus and the
    split's images) or from a plain ``.npz`` (key ``neighbours``) / ``.npy`` table."""
    if not path.is_file():
        raise QparseError(f"{path}: no KNN file. Fix: compute it with `qparse knn --out {path}`.")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            plain = (
                None
                if "header" in keys
                else np.asarray(z[next(k for k in ("neighbours", "knn") if k in keys)])
            )
    except (StopIteration, OSError, ValueError) as e:
        raise QparseError(
            f"{path}: not a readable KNN file ({e}). Fix: compute it again with `qparse knn`."
        ) from e
    if plain is not None:
        return plain
    from qparse_lite.retrieval.search import KNNResult

    res = KNNResult.load(path, corpus)
    if len(res.queries) != len(queries) or not np.array_equal(np.asarray(res.queries), queries):
        raise QparseError(
            f"{path}: its queries ({res.query_split}, {len(res.queries)} images) are not this split's "
            f"{len(queries)} images. Fix: pass the KNN file of the right split."
        )
    return np.asarray(res.neighbours)


def ensure_knn(
    corpus: Any, split: str, k: int, features: str, path: str | Path | None, out: Path
) -> np.ndarray:
    """KNN corpus indices (Q×K, rows in the order of ``corpus.split(split)``) for the split's images:
    read from ``path`` if given, else from ``out/knn_<split>.npz`` when it was computed on this corpus with
    the same ``features``, K and extractor configuration (for the learned features: the same head), else
    computed with :func:`qparse_lite.retrieval.search.corpus_knn` and saved there (a stale file is replaced)."""
    queries = np.asarray(corpus.split(split))
    if path is not None:
        nb = _load_knn_file(Path(path), corpus, queries)
    else:
        from qparse_lite.retrieval.search import split_neighbours

        nb = split_neighbours(corpus, split, k, features, Path(out), name=f"knn_{split}.npz")
    nb = np.asarray(nb)
    if nb.ndim != 2 or nb.shape[0] != len(queries):
        raise QparseError(
            f"KNN table for split {split!r} has shape {nb.shape}, but the split has {len(queries)} images. "
            f"Fix: recompute it for this corpus (delete {path or Path(out) / f'knn_{split}.npz'})."
        )
    return nb


def holdout_id(label_set: Any, name: str) -> int:
    """The id of the label ``name`` to hold out of training (never the background)."""
    try:
        i = label_set.index(name)
    except KeyError as e:
        raise QparseError(f"--holdout-label: {e.args[0]}") from None
    if i == 0:
        raise QparseError("--holdout-label: the background cannot be held out")
    return i
