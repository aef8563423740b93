"""The paired bootstrap over test images that decides the claims (docs/paper.md §5)."""

from __future__ import annotations

import numpy as np

from qparse_lite.labels import LabelSet
from qparse_lite.metrics import scores


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
