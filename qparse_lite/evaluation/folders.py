"""Scoring folders of PNG label maps (``qparse score``): matching file names, one confusion per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from qparse_lite.errors import QparseError
from qparse_lite.labels import LabelSet, read_label_png
from qparse_lite.metrics import ConfusionMatrix, scores

# -- scoring folders of PNG label maps -----------------------------------------------------------------

def _png_names(d: Path, role: str) -> list[str]:
    if not d.is_dir():
        raise QparseError(f"{d}: {role} folder not found. Fix: pass the folder holding the {role} PNGs.")
    names = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not names:
        raise QparseError(f"{d}: no .png label maps in the {role} folder. Fix: point --{role} at PNG files.")
    return names


def _list_names(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def match_label_dirs(pred_dir: str | Path, gt_dir: str | Path) -> list[str]:
    """File names (``*.png``) present in both folders; any unmatched name is an error.

    Raises:
        QparseError: a folder is missing or empty, or names do not match (both directions listed).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    pred, gt = _png_names(pred_dir, "pred"), _png_names(gt_dir, "gt")
    only_pred = sorted(set(pred) - set(gt))
    only_gt = sorted(set(gt) - set(pred))
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(
                f"{len(only_gt)} in {gt_dir} without a prediction in {pred_dir}: {_list_names(only_gt)}"
            )
        if only_pred:
            parts.append(
                f"{len(only_pred)} in {pred_dir} without a ground truth in {gt_dir}: {_list_names(only_pred)}"
            )
        raise QparseError(
            "label maps are matched by file name and some do not match — "
            + "; ".join(parts)
            + ". Fix: predict exactly the ground truth's images, with the same file names."
        )
    return pred


def confusion_from_dirs(
    pred_dir: str | Path, gt_dir: str | Path, label_set: LabelSet, progress: bool = True
) -> ConfusionMatrix:
    """Accumulate one :class:`ConfusionMatrix` over the PNG label maps of two folders (matched by name)."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    names = match_label_dirs(pred_dir, gt_dir)
    cm = ConfusionMatrix(label_set.num_labels)
    for name in tqdm(names, desc="score", mininterval=1.0, disable=None if progress else True):
        p, g = pred_dir / name, gt_dir / name
        pred, gt = read_label_png(p, label_set), read_label_png(g, label_set)
        if pred.shape != gt.shape:
            raise QparseError(
                f"{p} is {pred.shape[1]}×{pred.shape[0]} but {g} is {gt.shape[1]}×{gt.shape[0]} (W×H). "
                "Fix: write predictions at the ground truth's resolution."
            )
        cm.update(pred, gt, source=str(p))
    return cm


def score_dirs(
    pred_dir: str | Path, gt_dir: str | Path, label_set: LabelSet, progress: bool = True
) -> dict[str, Any]:
    """:func:`scores` of the PNG label maps in ``pred_dir`` against ``gt_dir`` (see :func:`confusion_from_dirs`)."""
    return scores(confusion_from_dirs(pred_dir, gt_dir, label_set, progress), label_set)


def per_image_confusions(pred_dir: str | Path, gt_dir: str | Path, label_set: LabelSet) -> tuple[list[str], np.ndarray]:
    """One confusion matrix per image of two folders (matched by name): ``(names, N×L×L int64)``."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    names = match_label_dirs(pred_dir, gt_dir)
    out = np.zeros((len(names), label_set.num_labels, label_set.num_labels), np.int64)
    for r, name in enumerate(names):
        cm = ConfusionMatrix(label_set.num_labels)
        cm.update(read_label_png(pred_dir / name, label_set), read_label_png(gt_dir / name, label_set))
        out[r] = cm.matrix
    return names, out
