"""Validation metrics of the matching stage (the M-CNN's ĉ and t̂ before any parsing), NumPy only.

:func:`roc_auc` (Mann-Whitney U), :func:`pair_metrics` (per pair) and :func:`label_level_metrics` (per
(image, label), the way parsing uses the pairs: docs/paper.md §1.8). The training loop
(:mod:`qparse_lite.train.engine`) reports them every epoch; :mod:`qparse_lite.evaluation.newlabels` reuses :func:`roc_auc`.
The parsing metrics of Tables 1/2 (confusion matrix, F1) are :mod:`qparse_lite.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["roc_auc", "pair_metrics", "label_level_metrics"]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U with tied ranks
    averaged); NaN if one class is absent. A constant score gives exactly 0.5."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(len(s), np.float64)
    # average rank (1-based) of every group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pair_metrics(
    c_hat: np.ndarray, t_hat: np.ndarray, c: np.ndarray, t: np.ndarray, has_t: np.ndarray
) -> dict:
    """Confidence AUC, accuracy at 0.5 and displacement error of denormalised predictions.

    Args:
        c_hat, c: N predicted / true confidences (true: 0/1). t_hat, t: N×4. has_t: N bool.

    Returns:
        ``{"auc", "acc", "disp_err"}``; ``disp_err`` = mean |t̂ − t| over the 4 coordinates of the ``has_t``
        pairs, in normalised image units (fractions of the image width/height).
    """
    c = np.asarray(c) > 0.5
    has_t = np.asarray(has_t, bool)
    disp = np.abs(np.asarray(t_hat) - np.asarray(t))[has_t]
    return {
        "auc": roc_auc(c_hat, c),
        "acc": float(np.mean((np.asarray(c_hat) > 0.5) == c)),
        "disp_err": float(disp.mean()) if disp.size else float("nan"),
    }


def label_level_metrics(
    query: np.ndarray, label: np.ndarray, c_hat: np.ndarray, t_hat: np.ndarray, c: np.ndarray,
    t: np.ndarray, has_t: np.ndarray, k_eff: np.ndarray, xi1: float, c_trivial: float,
    t_trivial: np.ndarray, label_names: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What the validation numbers mean for parsing: metrics on the pairs parsing scores.

    The pairs are (I, g_kl) for every validation image I, its K KNN images g_k and every l ∈ ϕ(g_k)
    (:meth:`~qparse_lite.train.sampler.PairSampler.scored_pairs`). Parsing (Sec. 3.3, docs/paper.md §1.8) turns them
    into one **label confidence** per (I, l): ĉ_l = mean of ĉ_kl over the g_k that contain l, visible iff
    ĉ_l > ξ1. Against c_l = 1[l ∈ ϕ(I)], over the (I, l) with at least one such neighbour:

    * ``auc``: ROC AUC of ĉ_l (pooled over images and labels; ``auc_macro``: mean of the per-label AUCs);
    * ``acc``: accuracy of the decision ĉ_l > ξ1;
    * ``disp_err``: mean |t̂_kl − t_kl| over the pairs with l ∈ ϕ(I) ∩ ϕ(g_k) (normalised image units);

    each beside two baselines: the **trivial** predictor (ĉ_kl = c̄ and t̂_kl = t̄, the training means: AUC
    0.5) and the **neighbour vote** v_l = |{k : l ∈ ϕ(g_k)}| / K (the fraction of the K neighbours that
    contain l; for the displacement: t̂ = 0, i.e. the neighbour's box as it is, what label transfer does).
    ``auc_sum_k`` is the AUC of Σ_k ĉ_kl / K (ĉ = 0 for the neighbours without l): the vote weighted by the
    network — not the paper's rule, reported because the mean over the supporting neighbours discards how
    many of the K contain l, which the vote uses.

    Args:
        query, label: per pair, the query image (any id) and l. c_hat, c: per pair ĉ_kl (denormalised) and
            c_kl. t_hat, t: N×4. has_t: N bool. k_eff: per pair, K of its query (the vote's denominator).
        xi1: the visibility threshold ξ1. c_trivial, t_trivial: c̄ and t̄ (4).
        label_names: names for ``per_label`` (default the label ids).

    Returns:
        the overall numbers above (``*_vote``, ``*_trivial``, ``disp_err_zero`` for the baselines),
        ``n_pairs``, ``n_labels_scored`` (the (I, l)), ``pos_rate`` and ``per_label`` {name: the same per l}.
    """
    query, label = np.asarray(query, np.int64), np.asarray(label, np.int64)
    c_hat, c = np.asarray(c_hat, np.float64), np.asarray(c) > 0.5
    t_hat, t, has_t = np.asarray(t_hat, np.float64), np.asarray(t, np.float64), np.asarray(has_t, bool)
    t_trivial = np.asarray(t_trivial, np.float64).reshape(1, 4)
    L = int(label.max()) + 1 if len(label) else 1
    keys, inv = np.unique(query * L + label, return_inverse=True)
    n = np.bincount(inv).astype(np.float64)
    conf = np.bincount(inv, c_hat) / n
    y = np.zeros(len(keys), bool)
    y[inv] = c
    k_group = np.bincount(inv, np.asarray(k_eff, np.float64)) / n  # the query's K (same for the group)
    vote = n / k_group  # the fraction of the K neighbours that contain l
    conf_k = np.bincount(inv, c_hat) / k_group  # Σ_k ĉ_kl / K: the vote weighted by ĉ (not the paper's rule)
    g_label = keys % L
    err = np.abs(t_hat - t).mean(1)
    err_triv = np.abs(t_trivial - t).mean(1)
    err_zero = np.abs(t).mean(1)

    def block(gm: np.ndarray, pm: np.ndarray) -> dict[str, Any]:
        yy = y[gm]
        dm = pm & has_t
        nan = float("nan")
        return {
            "n_scored": int(gm.sum()),
            "pos_rate": float(yy.mean()) if gm.any() else nan,
            "auc": roc_auc(conf[gm], yy), "auc_vote": roc_auc(vote[gm], yy),
            "auc_sum_k": roc_auc(conf_k[gm], yy),
            "acc": float(np.mean((conf[gm] > xi1) == yy)) if gm.any() else nan,
            "acc_vote": float(np.mean((vote[gm] > xi1) == yy)) if gm.any() else nan,
            "acc_trivial": float(np.mean((c_trivial > xi1) == yy)) if gm.any() else nan,
            "disp_err": float(err[dm].mean()) if dm.any() else nan,
            "disp_err_trivial": float(err_triv[dm].mean()) if dm.any() else nan,
            "disp_err_zero": float(err_zero[dm].mean()) if dm.any() else nan,
        }  # fmt: skip

    out = block(np.ones(len(keys), bool), np.ones(len(label), bool))
    per_label = {}
    for lab in np.unique(g_label):
        name = label_names[int(lab)] if label_names is not None else str(int(lab))
        per_label[name] = block(g_label == lab, label == lab)
    def nanmean(xs: list[float]) -> float:
        xs = [x for x in xs if np.isfinite(x)]
        return float(np.mean(xs)) if xs else float("nan")

    out["auc_macro"] = nanmean([v["auc"] for v in per_label.values()])
    out["auc_vote_macro"] = nanmean([v["auc_vote"] for v in per_label.values()])
    out.update(auc_trivial=0.5, n_pairs=int(len(label)), per_label=per_label)
    return out
