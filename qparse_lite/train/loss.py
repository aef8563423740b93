"""The matching loss of Eq. (1): cross-entropy on c plus the displacement penalty on t (docs/paper.md §1.5)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from qparse_lite.errors import QparseError

DISP_LOSSES = ("l2", "huber", "l1")


def disp_penalty(e: Tensor, kind: str = "l2") -> Tensor:
    """ρ(e) elementwise for a :data:`DISP_LOSSES` name."""
    if kind == "l2":
        return e.square()
    if kind == "huber":
        a = e.abs()
        return torch.where(a <= 1.0, e.square(), 2.0 * a - 1.0)
    if kind == "l1":
        return e.abs()
    raise _bad_disp_loss(kind)


def _bad_disp_loss(kind: str) -> QparseError:
    return QparseError(f"disp_loss must be one of {', '.join(DISP_LOSSES)}, not {kind!r}. Fix: --set disp_loss=l2")


def matching_loss(
    pred: Tensor, c: Tensor, t: Tensor, has_t: Tensor, disp_loss: str = "l2", disp_weight: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. (1) over a batch of pairs, in the normalised target space.

    ``J_B = 1/B Σ_b [ (ĉ_b − c_b)² + λ_t · 1[l_b ∈ ϕ(g_k) ∧ l_b ∈ ϕ(I)] · Σ_j ρ(t̂_bj − t_bj) ]``

    with ρ(e) = e² and λ_t = 1 in the paper (the defaults); ``disp_loss`` / ``disp_weight`` (profile fields)
    choose another ρ (:data:`DISP_LOSSES`) or weight.

    Args:
        pred: B×5 network outputs (ĉ, t̂1..t̂4), normalised.
        c: B normalised confidence targets; t: B×4 normalised displacement targets.
        has_t: B bool, both images contain the label (the indicator of the second term).
        disp_loss: ρ, a :data:`DISP_LOSSES` name; disp_weight: λ_t.

    Returns:
        (J_B, confidence part, displacement part), each a mean over the B pairs (J_B = sum of the parts).
    """
    pred = pred.float()
    lc = (pred[:, 0] - c).square()
    lt = torch.where(has_t, disp_penalty(pred[:, 1:] - t, disp_loss).sum(1), torch.zeros_like(lc))
    lc, lt = lc.mean(), float(disp_weight) * lt.mean()
    return lc + lt, lc, lt


def profile_loss(prof: Any) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """:func:`matching_loss` with a profile's ``disp_loss`` and ``disp_weight`` (validated here, before any
    training starts)."""
    kind, weight = str(prof.disp_loss), float(prof.disp_weight)
    if kind not in DISP_LOSSES:
        raise _bad_disp_loss(kind)
    if not weight > 0:
        raise QparseError(f"disp_weight must be > 0, got {weight}. Fix: --set disp_weight=1")
    if kind == "l2" and weight == 1.0:
        return matching_loss
    return functools.partial(matching_loss, disp_loss=kind, disp_weight=weight)
