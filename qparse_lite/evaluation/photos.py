"""Photos the kit has never seen: the raw-photo path measured end to end (issue 17; notebook 04).

The corpus path scores a parser on the *prepared* crops: the person box comes from the ground-truth label
map, and the score is taken at the crop resolution S×S. A user's photo has no label map: ``qparse parse``
finds the person with a detector (:mod:`qparse_lite.data.person`), crops, parses and pastes the S×S result back
onto the photo at its own resolution. This module measures that path on a split's ORIGINAL photos:

* :func:`split_photos`: the photo files of a split (ids as in the corpus), to hand to ``qparse parse``;
* :func:`export_ground_truth`: the split's full-resolution ground truth as palette PNGs
  (``gt/<id>.png``, the corpus's label set) so that ``qparse score --pred OUT --gt GT`` scores the parses;
* :func:`presence_table`: label presence per label: does the parse contain l when the ground truth does?
  Precision, recall and balanced accuracy :math:`\\tfrac12(\\mathrm{TPR} + \\mathrm{TNR})` over the photos,
  with the *discriminative* labels marked (present in 10-90 % of the photos: for the others a constant
  answer is already right for most photos, so they say little).

Nothing here needs a label to crop: the ground truth enters only the scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_save_png

__all__ = ["DISCRIMINATIVE", "split_photos", "export_ground_truth", "presence_table", "presence_summary"]

DISCRIMINATIVE = (10.0, 90.0)
"""A label is *discriminative* on a set of photos when it is present in this range (%) of them."""


def split_photos(dataset: Any, split: str = "test") -> list[Path]:
    """The original photo files of ``split`` (a dataset with ``paths(i)`` and ``splits()``, e.g. CCP)."""
    ids = dataset.splits()[split]
    return [Path(dataset.paths(dataset.ids.index(x))[0]) for x in ids]


def export_ground_truth(dataset: Any, split: str, out: str | Path, progress: bool | None = None) -> list[str]:
    """Write ``out/<id>.png`` (the dataset's label set, full resolution, palette PNG) for every photo of
    ``split``; returns the ids. Files already there with the right shape are kept (resumable)."""
    from PIL import Image

    out = Path(out)
    ids = list(dataset.splits()[split])
    for x in tqdm(ids, desc=f"ground truth {split}", mininterval=1.0, disable=None if progress is None else not progress):
        target = out / f"{x}.png"
        if target.is_file():
            try:
                with Image.open(target) as im:
                    if im.mode == "P":
                        continue
            except OSError:
                pass
        s = dataset[dataset.ids.index(x)]
        atomic_save_png(target, s.label, dataset.label_set.palette)
    return ids


def _label_sets(dirs: tuple[Path, Path], names: Sequence[str], num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    from qparse_lite.labels import read_label_png

    pred_dir, gt_dir = dirs
    P = np.zeros((len(names), num_labels), bool)
    G = np.zeros((len(names), num_labels), bool)
    for r, n in enumerate(names):
        p, g = read_label_png(pred_dir / n), read_label_png(gt_dir / n)
        if p.shape != g.shape:
            raise QparseError(f"{pred_dir / n}: shape {p.shape} differs from the ground truth {g.shape}. "
                              "Fix: paste the parse back at the photo's resolution (qparse parse does).")  # fmt: skip
        up, ug = np.unique(p), np.unique(g)
        P[r, up[up < num_labels]] = True
        G[r, ug[ug < num_labels]] = True
    return P, G


def presence_table(pred_dir: str | Path, gt_dir: str | Path, label_set: Any) -> pd.DataFrame:
    """Per foreground label: photos with it in the ground truth (``n_gt``, ``gt_rate`` %), in the parse
    (``n_pred``), precision / recall / balanced accuracy of "the parse contains l" (%), and
    ``discriminative`` (:data:`DISCRIMINATIVE`)."""
    from qparse_lite.evaluation.folders import match_label_dirs

    names = match_label_dirs(pred_dir, gt_dir)
    P, G = _label_sets((Path(pred_dir), Path(gt_dir)), names, label_set.num_labels)
    rows = []
    lo, hi = DISCRIMINATIVE
    for lid in range(1, label_set.num_labels):
        p, g = P[:, lid], G[:, lid]
        tp, fp, fn, tn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum()), int((~p & ~g).sum())
        tpr = tp / (tp + fn) if tp + fn else np.nan
        tnr = tn / (tn + fp) if tn + fp else np.nan
        rate = 100.0 * g.mean()
        rows.append({
            "label": label_set.names[lid], "n_gt": int(g.sum()), "gt_rate": rate, "n_pred": int(p.sum()),
            "precision": 100.0 * tp / (tp + fp) if tp + fp else np.nan, "recall": 100.0 * tpr,
            "balanced_accuracy": 100.0 * np.nanmean([tpr, tnr]) if not (np.isnan(tpr) and np.isnan(tnr)) else np.nan,
            "discriminative": bool(lo <= rate <= hi),
        })  # fmt: skip
    return pd.DataFrame(rows)


def presence_summary(table: pd.DataFrame) -> dict[str, float]:
    """Mean balanced accuracy over the discriminative labels and over all labels present at least once,
    and the share of ground-truth (photo, label) presences that the parses found (``labels_found``)."""
    disc = table[table["discriminative"]]
    present = table[table["n_gt"] > 0]
    return {
        "balanced_accuracy_discriminative": float(disc["balanced_accuracy"].mean()) if len(disc) else float("nan"),
        "n_discriminative": int(len(disc)),
        "balanced_accuracy_all": float(present["balanced_accuracy"].mean()) if len(present) else float("nan"),
        "labels_found": float(100.0 * (present["recall"] * present["n_gt"] / 100).sum() / max(1, present["n_gt"].sum())),
    }  # fmt: skip
