"""Pixel metrics of the paper (Sec. 4.1, the protocol of Yamaguchi et al. [29]) from one confusion matrix.

Everything is computed from a single confusion matrix accumulated over all pixels of a split
(:class:`ConfusionMatrix`, rows = ground truth, columns = prediction), never as a mean of per-image
scores. With ``C[g, p]`` the number of pixels of ground truth ``g`` predicted as ``p`` and label 0 the
background:

* **accuracy** = Σ_l C[l, l] / Σ C — share of all pixels labelled correctly;
* **foreground accuracy** = Σ_{l≥1} C[l, l] / Σ_{l≥1} Σ_p C[l, p] — share of the pixels whose *ground
  truth* is foreground that get their exact label (a foreground pixel predicted as another foreground
  label is wrong);
* per label l: TP_l = C[l, l], FP_l = Σ_g C[g, l] − TP_l, FN_l = Σ_p C[l, p] − TP_l;
  **precision** P_l = TP_l / (TP_l + FP_l), **recall** R_l = TP_l / (TP_l + FN_l),
  **F1** F1_l = 2 P_l R_l / (P_l + R_l).

**Undefined values, one rule everywhere.** A label is *scored* iff it occurs in the ground truth or in
the prediction of the split (TP + FP + FN > 0). A label that is not scored (absent from both) has
P, R and F1 = NaN (``null`` in JSON) and is excluded from every average. For a scored label a 0/0
ratio counts as 0: a label present in the ground truth but never predicted has P = 0 (and R = 0,
F1 = 0); a label predicted but absent from the ground truth has R = 0 (and P = 0, F1 = 0). So missed
labels and hallucinated labels both pull the averages down, as they should.

**Averages and the three F1 definitions** (docs/paper.md §2). Averages of precision and recall are
arithmetic means over the scored labels *including background* (``avg_precision``, ``avg_recall``;
the ``_fg`` variants average over the foreground labels only). The paper prints no per-label
precision or recall, so its tables cannot pin this choice down; it is the one consistent with its
F1 (below), and every Table 1 row satisfies the bound that holds when F1, precision and recall are
averaged over the same labels: mean_l F1_l ≤ mean_l (P_l + R_l)/2 = (P̄ + R̄)/2. The paper does not
print a formula for "average F1"; the kit reports three, each under its own key:

======================  ====================================================================  ============
key                     definition                                                            paper?
======================  ====================================================================  ============
``avg_f1``              mean of per-label F1_l over all scored labels, background included    **reproduces
                                                                                              Table 1**
``avg_f1_fg``           mean of per-label F1_l over the scored foreground labels (Table 2's   no
                        columns)
``f1_of_averages``      harmonic mean 2·P̄·R̄/(P̄ + R̄) of ``avg_precision`` and ``avg_recall``  no
                        (the public ATR script ``f1_eval_atr.py`` of Hierarchical-Human-Parsing)
======================  ====================================================================  ============

Why ``avg_f1`` is the paper's: for the M-CNN row, Table 2's 17 foreground F1 average to 61.13 and the
harmonic mean of Table 1's 64.56 / 65.17 is 64.86, while Table 1 says 62.81; a mean over 18 labels
with background reproduces 62.81 for a background F1 of 18·62.81 − 17·61.13 ≈ 91.4, a plausible value
(:func:`reported_f1_arithmetic` recomputes this for every row: all rows but one imply a background F1
between 79 and 98; the Siamese row implies 103.6, an impossible F1, and its 47.08 is not the mean over
foreground labels (43.75) nor the harmonic mean (49.57) either — no definition reproduces that row).

All scores are returned in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.labels import LabelSet

#: The key of the F1 definition that reproduces the paper's Table 1 arithmetic.
PAPER_F1 = "avg_f1"

#: Every F1 definition the kit reports, by key (see the module docstring).
F1_DEFINITIONS: dict[str, str] = {
    "avg_f1": "mean of per-label F1 over all labels present in prediction or ground truth, background "
    "included (reproduces the paper's Table 1 arithmetic, docs/paper.md §2)",
    "avg_f1_fg": "mean of per-label F1 over the foreground labels present in prediction or ground truth "
    "(the mean of Table 2's columns)",
    "f1_of_averages": "harmonic mean of avg_precision and avg_recall (the public ATR evaluation script "
    "f1_eval_atr.py)",
}

#: Columns of Table 1 as in ``table1_reported.csv``.
TABLE1_COLUMNS: tuple[str, ...] = (
    "method",
    "accuracy",
    "fg_accuracy",
    "avg_precision",
    "avg_recall",
    "avg_f1",
)


class ConfusionMatrix:
    """A pixel confusion matrix accumulated over many label maps.

    ``matrix[g, p]`` counts pixels with ground truth ``g`` predicted as ``p`` (L×L int64, rows = ground
    truth). Accumulate with :meth:`update`; combine two with ``+``.

    Args:
        num_labels: L, the number of labels including background (id 0).
    """

    def __init__(self, num_labels: int) -> None:
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2 (background + one label), got {num_labels}")
        self.num_labels = int(num_labels)
        self.matrix = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)
        self.images = 0

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, images: int = 0) -> ConfusionMatrix:
        """Wrap an existing L×L count matrix (rows = ground truth)."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
        if (m < 0).any():
            raise ValueError("confusion matrix counts must be non-negative")
        cm = cls(m.shape[0])
        cm.matrix = m.astype(np.int64, copy=True)
        cm.images = int(images)
        return cm

    def update(self, pred: np.ndarray, gt: np.ndarray, source: str = "label map") -> ConfusionMatrix:
        """Add one prediction / ground-truth pair (integer arrays of the same shape); returns ``self``.

        Raises:
            QparseError: shapes differ, or an id lies outside 0..L−1 (the message names ``source``).
        """
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise QparseError(
                f"{source}: prediction shape {pred.shape} differs from ground truth shape {gt.shape}. "
                "Fix: predict at the ground truth's resolution."
            )
        L = self.num_labels
        for name, a in (("prediction", pred), ("ground truth", gt)):
            if a.size and (int(a.min()) < 0 or int(a.max()) >= L):
                bad = sorted(int(v) for v in np.unique(a) if v < 0 or v >= L)
                raise QparseError(f"{source}: {name} has label id(s) {bad} outside 0..{L - 1}")
        idx = gt.astype(np.int64).ravel() * L + pred.astype(np.int64).ravel()
        self.matrix += np.bincount(idx, minlength=L * L).reshape(L, L)
        self.images += 1
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix) or other.num_labels != self.num_labels:
            return NotImplemented
        return ConfusionMatrix.from_matrix(self.matrix + other.matrix, self.images + other.images)

    @property
    def pixels(self) -> int:
        """Total number of pixels accumulated."""
        return int(self.matrix.sum())

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_labels={self.num_labels}, images={self.images}, pixels={self.pixels})"


def _ratio(num: np.ndarray, den: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """num/den with 0/0 → 0 for scored labels and NaN for unscored ones."""
    out = np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)
    out[~scored] = np.nan
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def scores(cm: ConfusionMatrix | np.ndarray, label_set: LabelSet) -> dict[str, Any]:
    """All metrics of the module docstring from one confusion matrix, in percent.

    Returns a dict with:
        ``accuracy``, ``fg_accuracy``;
        ``avg_precision``, ``avg_recall`` (means over scored labels incl. background — the paper's);
        ``avg_precision_fg``, ``avg_recall_fg`` (foreground labels only);
        ``avg_f1`` (**the paper's**, mean per-label F1 incl. background), ``avg_f1_fg``,
        ``f1_of_averages`` (see :data:`F1_DEFINITIONS`);
        ``per_label``: label name → ``{"precision", "recall", "f1", "gt_pixels", "pred_pixels"}``;
        ``per_label_precision`` / ``per_label_recall`` / ``per_label_f1``: label name → value;
        ``scored_labels`` (names of the labels in the averages), ``pixels``, ``images``,
        ``label_set``, ``paper_f1`` (= ``"avg_f1"``).
    Per-label values of labels absent from both prediction and ground truth are NaN and excluded from
    the averages; a metric with nothing to average (e.g. no foreground pixel anywhere) is NaN.
    """
    if isinstance(cm, ConfusionMatrix):
        m, images = cm.matrix.astype(np.float64), cm.images
    else:
        m, images = np.asarray(cm, dtype=np.float64), None
    L = label_set.num_labels
    if m.shape != (L, L):
        raise QparseError(
            f"confusion matrix is {m.shape[0]}×{m.shape[1]} but label set {label_set.name} has {L} labels. "
            "Fix: accumulate with ConfusionMatrix(label_set.num_labels)."
        )
    tp = np.diag(m)
    gt_n = m.sum(1)  # TP + FN
    pred_n = m.sum(0)  # TP + FP
    total = m.sum()
    scored = (gt_n + pred_n) > 0
    precision = _ratio(tp, pred_n, scored)
    recall = _ratio(tp, gt_n, scored)
    f1 = _ratio(2 * tp, gt_n + pred_n, scored)  # = 2PR/(P+R) = 2TP/(2TP+FP+FN)
    fg = np.arange(L) >= 1

    def pct(x: float) -> float:
        return 100.0 * x

    accuracy = float(tp.sum() / total) if total > 0 else math.nan
    fg_total = gt_n[fg].sum()
    fg_accuracy = float(tp[fg].sum() / fg_total) if fg_total > 0 else math.nan
    avg_p, avg_r = _nanmean(precision), _nanmean(recall)
    if math.isnan(avg_p + avg_r):
        f1_of_avg = math.nan
    else:
        f1_of_avg = 2 * avg_p * avg_r / (avg_p + avg_r) if avg_p + avg_r > 0 else 0.0
    names = label_set.names
    per_label = {
        names[i]: {
            "precision": pct(float(precision[i])),
            "recall": pct(float(recall[i])),
            "f1": pct(float(f1[i])),
            "gt_pixels": int(gt_n[i]),
            "pred_pixels": int(pred_n[i]),
        }
        for i in range(L)
    }
    return {
        "accuracy": pct(accuracy),
        "fg_accuracy": pct(fg_accuracy),
        "avg_precision": pct(avg_p),
        "avg_recall": pct(avg_r),
        "avg_f1": pct(_nanmean(f1)),
        "avg_precision_fg": pct(_nanmean(precision[fg])),
        "avg_recall_fg": pct(_nanmean(recall[fg])),
        "avg_f1_fg": pct(_nanmean(f1[fg])),
        "f1_of_averages": pct(f1_of_avg),
        "per_label": per_label,
        "per_label_precision": {n: v["precision"] for n, v in per_label.items()},
        "per_label_recall": {n: v["recall"] for n, v in per_label.items()},
        "per_label_f1": {n: v["f1"] for n, v in per_label.items()},
        "scored_labels": [names[i] for i in range(L) if scored[i]],
        "pixels": int(total),
        "images": images,
        "label_set": label_set.name,
        "paper_f1": PAPER_F1,
    }


def table_column(label_name: str) -> str:
    """Kit label name → Table 2's CSV column name (``left-shoe`` → ``left_shoe``)."""
    return label_name.replace("-", "_")


def table1_row(scores: Mapping[str, Any], method: str) -> dict[str, Any]:
    """One row of Table 1, keyed by ``table1_reported.csv``'s columns (``avg_f1`` = the paper's F1)."""
    return {"method": method, **{k: scores[k] for k in TABLE1_COLUMNS[1:]}}


def table2_row(scores: Mapping[str, Any], method: str) -> dict[str, Any]:
    """One row of Table 2: ``method`` and the per-label F1 of every foreground label, keyed like
    ``table2_reported.csv`` (``upper_clothes``, ``left_shoe``, ...; background is not a column)."""
    names = list(scores["per_label_f1"])
    return {"method": method, **{table_column(n): scores["per_label_f1"][n] for n in names[1:]}}
