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

Label transfer's post-processing knobs, in the module's symbols (neighbour k = 0..K−1 by rank, y_k its
label map, V_l(p) the vote for label l at pixel p, l = 0 background):

- ``rank_power`` γ: neighbour k votes with weight w_k = (1+k)^(−γ) (γ = 0: equal votes; γ = 1: 1/(1+k));
- ``bg_weight`` β: the background vote V_0(p) is multiplied by β before the argmax (β < 1 lets foreground
  labels win more pixels: the trade of background for foreground that ξ1/ξ2 make in the M-CNN);
- ``min_share`` τ: a foreground label whose mean vote over the image, mean_p V_l(p), is below τ is dropped
  before the argmax (image-level label selection, like the M-CNN's label pruning by ξ1);
- ``n_segments``: SLIC superpixels of the majority vote (0 = none).

These four are **the kit's** knobs, natural for a vote transfer; PaperDoll has knobs of its own (its
smoothing and pose terms), none of them here. ``qparse tune`` chooses them on the validation split by the
same coordinate ascent as the M-CNN's four (:data:`qparse_lite.evaluation.tuning.LT_GRID`), and the
defaults (γ 1, β 1, τ 0) are the transfer as it was before they existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qparse_lite.parse.postprocess import superpixel_vote, superpixels

__all__ = ["mean_label_map", "LabelTransfer", "transfer_votes", "rank_weights"]


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


def rank_weights(k: int, rank_power: float) -> np.ndarray:
    """w_k = (1+k)^(−γ) for the neighbours k = 0..K−1 by rank (γ = ``rank_power``; γ = 0: all 1)."""
    return 1.0 / (1.0 + np.arange(k)) ** rank_power


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
    """KNN label transfer with superpixel voting (see the module docstring for the knobs).

    ŷ(p) = argmax_l V'_l(p), with
    V_l(p) = Σ_k w_k 1[y_k(p) = l] / Σ_k w_k,  w_k = (1+k)^(−γ)          (:meth:`votes`)
    V'_0(p) = β V_0(p);  V'_l(p) = −∞ if l ≠ 0 and mean_p V_l(p) < τ, else V_l(p)   (:meth:`decide`)
    then each superpixel takes the majority of ŷ inside it (:meth:`smooth`; none when ``n_segments`` is 0).

    Args:
        num_labels: L.
        superpixel_method: ``slic`` | ``felzenszwalb`` | ``quickshift`` | ``None`` (no smoothing).
        n_segments: superpixels per image (SLIC); 0 = no smoothing.
        rank_power: γ ≥ 0 (1: closer neighbours count more, 1/(1+k); 0: equal votes).
        bg_weight: β ≥ 0, the factor on the background vote (1: none).
        min_share: τ ∈ [0, 1], the mean vote below which a foreground label is dropped (0: none).
    """

    num_labels: int
    superpixel_method: str | None = "slic"
    n_segments: int = 200
    rank_power: float = 1.0
    bg_weight: float = 1.0
    min_share: float = 0.0

    def __post_init__(self) -> None:
        for name, ok in (("rank_power", self.rank_power >= 0), ("bg_weight", self.bg_weight >= 0),
                         ("min_share", 0 <= self.min_share <= 1), ("n_segments", self.n_segments >= 0)):  # fmt: skip
            if not ok:
                raise ValueError(f"LabelTransfer: {name} = {getattr(self, name)} is out of range")

    def votes(self, neighbour_labels: np.ndarray) -> np.ndarray:
        """V (L×H×W) from the neighbours' label maps (K×H×W, nearest first), weighted by w_k = (1+k)^(−γ)."""
        w = rank_weights(neighbour_labels.shape[0], self.rank_power)
        return transfer_votes(neighbour_labels, self.num_labels, w)

    def decide(self, votes: np.ndarray) -> np.ndarray:
        """The per-pixel parse argmax_l V'_l(p) (H×W uint8): background vote × β, foreground labels with
        mean_p V_l(p) < τ dropped (``votes`` is not modified)."""
        if self.bg_weight != 1.0 or self.min_share > 0.0:
            votes = votes.copy()
            if self.min_share > 0.0:
                share = votes.reshape(votes.shape[0], -1).mean(1)
                dropped = share < self.min_share
                dropped[0] = False  # background is always a candidate
                votes[dropped] = -np.inf
            votes[0] *= self.bg_weight
        return votes.argmax(0).astype(np.uint8)

    def smooth(self, image: np.ndarray, pred: np.ndarray, segments: np.ndarray | None = None) -> np.ndarray:
        """Superpixel majority vote of ``pred`` (``segments``: the image's superpixels when already computed)."""
        if not self.superpixel_method or not self.n_segments:
            return pred
        if segments is None:
            segments = superpixels(image, method=self.superpixel_method, n_segments=self.n_segments)
        return superpixel_vote(pred, segments, self.num_labels)

    def __call__(self, image: np.ndarray, neighbour_labels: np.ndarray, segments: np.ndarray | None = None) -> np.ndarray:
        """Parse ``image`` (H×W×3 uint8) from its neighbours' label maps (K×H×W) → H×W uint8."""
        return self.smooth(image, self.decide(self.votes(neighbour_labels)), segments)
