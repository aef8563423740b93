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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import QparseError
from .io import atomic_write_text
from .labels import LabelSet, read_label_png  # noqa: F401 - read_label_png re-exported (owner: labels)

__all__ = [
    "ConfusionMatrix",
    "per_image_confusions",
    "bootstrap_difference",
    "scores",
    "F1_DEFINITIONS",
    "PAPER_F1",
    "TABLE1_COLUMNS",
    "table1_row",
    "table2_row",
    "table_column",
    "markdown_table",
    "write_table",
    "read_label_png",
    "match_label_dirs",
    "confusion_from_dirs",
    "score_dirs",
    "reported_f1_arithmetic",
    "json_safe",
]

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


def markdown_table(rows: pd.DataFrame | Sequence[Mapping[str, Any]], floatfmt: str = ".2f") -> str:
    """A Markdown (pipe) table of ``rows``; NaN prints as ``n/a``."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    df = df.astype(object).where(df.notna(), None)  # tabulate's missingval applies to None, not NaN
    return df.to_markdown(index=False, floatfmt=floatfmt, missingval="n/a")


def write_table(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]], out_dir: str | Path, name: str
) -> tuple[Path, Path]:
    """Write ``out_dir/name.csv`` and ``out_dir/name.md`` atomically (2 decimals; NaN → empty / n/a)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    out = Path(out_dir)
    csv = atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.2f"))
    md = atomic_write_text(out / f"{name}.md", markdown_table(df) + "\n")
    return csv, md


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


def bootstrap_difference(
    a: np.ndarray, b: np.ndarray, label_set: LabelSet, metric: str = "avg_f1", n: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap over test images of ``metric(a) − metric(b)``.

    ``a`` and ``b`` are N×L×L per-image confusion matrices of two parsers on the same N images
    (:func:`per_image_confusions`). Each of ``n`` resamples draws N images with replacement, sums both
    parsers' matrices over the *same* draw and scores them; returns the observed difference, the
    resamples' mean and standard deviation, the ``level`` percentile interval (``lo``, ``hi``) and
    ``p_le_0``, the share of resamples where a does not beat b. This is the uncertainty from which 100
    test images were drawn, not from training seeds (report both where both exist).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"per-image confusions must match: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    obs = scores(a.sum(0), label_set)[metric] - scores(b.sum(0), label_set)[metric]
    diffs = np.empty(n)
    for r in range(n):
        idx = rng.integers(0, len(a), len(a))
        diffs[r] = scores(a[idx].sum(0), label_set)[metric] - scores(b[idx].sum(0), label_set)[metric]
    q = (1 - level) / 2
    return {"diff": float(obs), "mean": float(diffs.mean()), "std": float(diffs.std(ddof=1)),
            "lo": float(np.quantile(diffs, q)), "hi": float(np.quantile(diffs, 1 - q)),
            "p_le_0": float((diffs <= 0).mean()), "n_images": int(len(a)), "n_resamples": int(n)}  # fmt: skip


# -- the paper's own arithmetic ------------------------------------------------------------------------


def reported_f1_arithmetic(table1: pd.DataFrame, table2: pd.DataFrame) -> pd.DataFrame:
    """docs/paper.md §2's check, for every method of the reported tables (percent).

    Columns: ``avg_f1_reported`` (Table 1); ``mean_fg_f1`` = mean of the row's Table 2 foreground F1
    (what ``avg_f1_fg`` would give); ``f1_of_averages`` = 2·P̄·R̄/(P̄ + R̄) from Table 1's average
    precision P̄ and recall R̄; ``implied_background_f1`` = L·avg_f1 − (L−1)·mean_fg_f1, the background
    F1 that makes ``avg_f1`` (the mean over all L labels incl. background) equal the reported value;
    ``consistent`` = the implied background F1 is a valid F1 (0..100).
    """
    fg_cols = [c for c in table2.columns if c != "method"]
    L = len(fg_cols) + 1
    merged = table1.merge(table2, on="method", how="inner", validate="one_to_one")
    p, r = merged["avg_precision"].astype(float), merged["avg_recall"].astype(float)
    mean_fg = merged[fg_cols].astype(float).mean(axis=1)
    implied = L * merged["avg_f1"].astype(float) - (L - 1) * mean_fg
    return pd.DataFrame(
        {
            "method": merged["method"],
            "avg_f1_reported": merged["avg_f1"].astype(float),
            "mean_fg_f1": mean_fg,
            "f1_of_averages": 2 * p * r / (p + r),
            "implied_background_f1": implied,
            "consistent": (implied >= 0) & (implied <= 100),
        }
    )


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by ``None`` and numpy scalars by Python ones (for JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
