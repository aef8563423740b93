"""Baselines on the same harness as the M-CNN.

- :func:`mean_label_map` — the *prior* baseline: every test image gets the per-pixel majority label
  of the training split (the corpus-mean label map). It knows where people usually are, nothing
  about this image; a parser that localises must beat it clearly.
- :class:`LabelTransfer` — a non-parametric KNN label-transfer baseline *in the spirit of*
  PaperDoll [28] (Yamaguchi et al. 2013): retrieve the K nearest corpus images, transfer their label
  maps (the crops are human-centric, so they are roughly aligned), vote per pixel, then vote inside
  superpixels. It has no M-CNN and no learned matching. It is **not** PaperDoll (which also uses
  global and transferred local parses with a pose estimator and an iterative label smoothing); it
  is named "KNN label transfer" in every table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qparse_lite.parse.postprocess import superpixel_vote, superpixels

__all__ = ["mean_label_map", "LabelTransfer", "transfer_votes"]


def mean_label_map(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Per-pixel majority label over a stack of label maps ``labels`` (N×H×W) → H×W uint8.

    This is the label-map analogue of the corpus mean image: argmax_l Σ_n 1[y_n(p) = l].
    """
    n, h, w = labels.shape
    counts = np.zeros((num_labels, h * w), dtype=np.int32)
    flat = np.asarray(labels).reshape(n, -1)
    pix = np.arange(h * w)
    for i in range(n):  # N small maps; vectorised over pixels
        np.add.at(counts, (flat[i], pix), 1)
    return counts.argmax(0).reshape(h, w).astype(np.uint8)


def transfer_votes(
    neighbour_labels: np.ndarray, num_labels: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Soft label transfer: V_l(p) = Σ_k w_k 1[y_k(p) = l] / Σ_k w_k  → L×H×W float32.

    ``neighbour_labels`` is K×H×W (the KNN images' label maps at the test image's size).
    """
    k = neighbour_labels.shape[0]
    w = np.ones(k, np.float32) if weights is None else np.asarray(weights, np.float32)
    onehot = np.eye(num_labels, dtype=np.float32)[neighbour_labels]  # K×H×W×L
    votes = np.tensordot(w, onehot, axes=(0, 0)) / max(float(w.sum()), 1e-12)  # H×W×L
    return np.moveaxis(votes, -1, 0)


@dataclass
class LabelTransfer:
    """KNN label transfer with superpixel voting (see the module docstring).

    Args:
        num_labels: L.
        superpixel_method: ``slic`` | ``felzenszwalb`` | ``quickshift`` | ``None`` (no smoothing).
        n_segments: superpixels per image (SLIC).
        rank_weighting: weight neighbour k by 1/(1+k) (closer neighbours count more) instead of 1.
    """

    num_labels: int
    superpixel_method: str | None = "slic"
    n_segments: int = 200
    rank_weighting: bool = True

    def __call__(self, image: np.ndarray, neighbour_labels: np.ndarray) -> np.ndarray:
        """Parse ``image`` (H×W×3 uint8) from its neighbours' label maps (K×H×W) → H×W uint8."""
        k = neighbour_labels.shape[0]
        w = 1.0 / (1.0 + np.arange(k)) if self.rank_weighting else None
        votes = transfer_votes(neighbour_labels, self.num_labels, w)
        pred = votes.argmax(0).astype(np.uint8)
        if self.superpixel_method:
            segments = superpixels(image, method=self.superpixel_method, n_segments=self.n_segments)
            pred = superpixel_vote(pred, segments, self.num_labels)
        return pred
