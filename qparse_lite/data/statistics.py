"""Label statistics of a dataset: pixel counts per label, image frequencies, the CCP-59 → coarse mapping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qparse_lite.labels import CCP59_NAMES, CCP_COARSE_GROUPS, LabelSet, ccp59_to_coarse_lut

# ---------------------------------------------------------------------------------------------------
# overlays
# ---------------------------------------------------------------------------------------------------


def keep_labels(label: np.ndarray, keep: Iterable[int] | None) -> np.ndarray:
    """``label`` with every id not in ``keep`` set to background (0); ``keep=None`` keeps all."""
    label = np.asarray(label)
    if keep is None:
        return label
    ids = np.asarray(sorted({int(k) for k in keep}), dtype=np.int64)
    return np.where(np.isin(label, ids), label, 0).astype(label.dtype)


# ---------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------


def label_pixel_counts(
    labels: np.ndarray, num_labels: int, indices: Sequence[int] | np.ndarray | None = None, chunk: int = 256
) -> np.ndarray:
    """len(indices)×L int64: pixels of each label in the maps ``labels[indices]`` (all N maps when None).

    Maps are read ``chunk`` at a time in index order, so a memory-mapped N×H×W array (``corpus.labels``) is
    never loaded whole.
    """
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = np.zeros((len(idx), num_labels), dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    for s in range(0, len(idx), chunk):
        rows = order[s : s + chunk]
        block = np.asarray(labels[idx[rows]]).reshape(len(rows), -1).astype(np.int64)
        if block.size and (int(block.max()) >= num_labels or int(block.min()) < 0):
            raise ValueError(f"label id {int(block.max())} outside 0..{num_labels - 1}")
        flat = block + (np.arange(len(rows)) * num_labels)[:, None]
        out[rows] = np.bincount(flat.ravel(), minlength=len(rows) * num_labels).reshape(-1, num_labels)
    return out


def label_statistics(
    labels: np.ndarray, splits: Mapping[str, Sequence[int] | np.ndarray], label_set: LabelSet
) -> Any:
    """Per label and split: pixel frequency and image-level presence, as a long pandas DataFrame.

    Columns: ``split``, ``id``, ``label``, ``pixel_pct`` (100 · pixels of the label / all pixels of the
    split's maps, background included, so each split's column sums to 100), ``image_pct`` (100 · share of
    the split's maps with at least one pixel of the label), ``images`` (how many maps contain it) and
    ``split_images`` (the split's size). ``labels`` is N×H×W (e.g. ``corpus.labels``), ``splits`` maps a
    split name to indices into it (e.g. ``corpus.splits``).
    """
    import pandas as pd

    L = label_set.num_labels
    rows = []
    for name, idx in splits.items():
        counts = label_pixel_counts(labels, L, idx)
        pixels = counts.sum(0)
        present = (counts > 0).sum(0)
        total = max(int(pixels.sum()), 1)
        for l in range(L):
            rows.append({
                "split": name, "id": l, "label": label_set.names[l],
                "pixel_pct": 100.0 * pixels[l] / total,
                "image_pct": 100.0 * present[l] / max(len(counts), 1),
                "images": int(present[l]), "split_images": len(counts),
            })  # fmt: skip
    return pd.DataFrame(rows)


def coarse_mapping_table(names: Sequence[str] = CCP59_NAMES) -> Any:
    """The CCP-59 → coarse CCP mapping as a DataFrame: one row per coarse label (``id``, ``coarse``,
    ``n`` = how many CCP-59 names it merges, ``ccp59 names``), built from the lookup table the datasets use
    (:func:`~qparse_lite.labels.ccp59_to_coarse_lut`)."""
    import pandas as pd

    lut = ccp59_to_coarse_lut(tuple(names))
    rows = []
    for c, coarse in enumerate(CCP_COARSE_GROUPS):
        members = [f"{names[i]} ({i})" for i in np.flatnonzero(lut == c)]
        rows.append({"id": c, "coarse": coarse, "n": len(members), "ccp59 names (id)": ", ".join(members)})
    return pd.DataFrame(rows)
