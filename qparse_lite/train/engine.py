"""The M-CNN training loop: the loss of Eq. (1), one epoch of training, the validation pass
(the ``engine.py`` of torchvision's references; paper Sec. 3.2, 4.1; docs/paper.md §1.4-1.5, §1.9).

**Loss** (Eq. (1)). For a test image I with KNN images g_1..g_K and labels l = 1..L, in the normalised target
space::

    J = 1/(L·K) Σ_k Σ_l ‖c_kl − ĉ_kl‖²  +  1/(L·K) Σ_k Σ_{l ∈ ϕ(g_k) ∩ ϕ(I)} ‖t_kl − t̂_kl‖²

with ϕ(·) the labels an image contains. Pairs are sampled (not enumerated per image), so a batch of B
pairs uses the mean over its pairs: J_B = 1/B Σ_b [(ĉ_b − c_b)² + 1[has_t_b]·‖t̂_b − t_b‖²] — the same
estimator with 1/B in place of 1/(L·K). The log reports both parts (``loss_c``, ``loss_t``, each a mean
over all B pairs so that ``loss = loss_c + loss_t``). The profile fields ``disp_loss`` and ``disp_weight``
replace the square of the displacement term by another penalty ρ (:data:`DISP_LOSSES`; the ccp profile uses
``huber``, chosen on the CCP validation split) and weight it by λ_t (:func:`profile_loss`).

**One epoch** (:func:`train_one_epoch`): every batch of the :class:`~qparse_lite.train.sampler.PairSampler`, targets
normalised by the :class:`~qparse_lite.train.pairs.TargetNorm`, forward (bf16 autocast and channels-last on CUDA),
loss, backward, optimiser step (and the scheduler when it steps per batch); a NaN/Inf loss stops the run
with a :class:`~qparse_lite.errors.QparseError` before anything is written for that epoch.

**Validation metrics** (on a fixed set of validation pairs: val-split images with their KNN in the corpus,
no augmentation): the loss; the confidence AUC (ROC AUC of ĉ against c, label presence); the confidence
accuracy at 0.5 (ĉ after denormalisation); and the displacement error, mean |t̂ − t| in normalised image
units over the ``has_t`` pairs (after denormalisation). ``run.json`` holds the same metrics for the
trivial predictor ĉ = mean c, t̂ = mean t (the TargetNorm means; 0 in normalised space).
The numbers are :func:`qparse_lite.train.matching_metrics.label_level_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from qparse_lite.errors import QparseError
from qparse_lite.train.loss import matching_loss
from qparse_lite.train.matching_metrics import label_level_metrics, roc_auc
from qparse_lite.train.pairs import PairIndex, TargetNorm
from qparse_lite.train.sampler import PairSampler

CHECK_EVERY = 20  # steps between non-finite-loss checks (each forces a device sync)
"""Penalties ρ(e) of the displacement error e = t̂ − t (per coordinate, normalised units): ``l2`` e² (Eq. (1));
``huber`` e² for |e| ≤ 1 and 2|e| − 1 beyond (2·Huber with δ = 1: Eq. (1) within one training standard
deviation, linear for the outliers; Fast R-CNN's smooth-L1 box loss up to the factor 2); ``l1`` |e| (the
validation metric's own penalty)."""


def train_one_epoch(
    net: nn.Module, sampler: PairSampler, tn: TargetNorm, opt: torch.optim.Optimizer, sched: Any, *,
    step_per_batch: bool, epoch: int, global_step: int,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] = matching_loss, cuda: bool = False,
    progress: bool = True, desc: str = "train",
) -> tuple[Tensor, int]:  # fmt: skip
    """Train ``net`` on one epoch of ``sampler``'s pairs.

    Args:
        net: the model as trained (possibly DDP / compiled); called as ``net(I, R, group)``.
        sampler: the training pairs; tn: the TargetNorm the targets are normalised with.
        opt, sched: optimiser and scheduler; ``step_per_batch``: step ``sched`` after every batch (the
            warm-up schedules; the plateau schedule steps on the validation loss, outside).
        epoch: the 0-based epoch (for messages); global_step: steps before this epoch.
        loss_fn: Eq. (1) (:func:`matching_loss`) or a replacement (tests).
        cuda: bf16 autocast, channels-last inputs, a finite-loss check every :data:`CHECK_EVERY` steps.
        progress: draw a tqdm bar; desc: its label.

    Returns:
        (the mean (loss, loss_c, loss_t) over the epoch's batches on this rank, float64, the global step).
    """
    from tqdm.auto import tqdm

    net.train()
    steps = sampler.steps_per_epoch
    sums = torch.zeros(3, dtype=torch.float64, device=sampler.data.device)
    window: list[Tensor] = []
    bar = tqdm(total=steps, desc=desc, mininterval=1.0, disable=None if progress else True, leave=False)
    for b_i, batch in enumerate(sampler):
        cn, tnn = tn.normalise(batch.c, batch.t)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            pred = net(prep(batch.I, cuda), prep(batch.R, cuda), batch.group)
        loss, lc, lt = loss_fn(pred.float(), cn, tnn, batch.has_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step_per_batch:
            sched.step()
        global_step += 1
        parts = torch.stack([loss.detach(), lc.detach(), lt.detach()]).double()
        sums += parts
        window.append(parts[0])
        if len(window) >= (1 if not cuda else CHECK_EVERY) or b_i == steps - 1:
            check_finite(window, global_step, epoch)
            if progress:
                bar.set_postfix(loss=f"{window[-1].item():.4f}", refresh=False)
            window = []
        bar.update(1)
    bar.close()
    if cuda:
        torch.cuda.synchronize()
    return sums / steps, global_step


def check_finite(window: list[Tensor], global_step: int, epoch: int) -> None:
    """Raise QparseError naming the first step whose loss is NaN/Inf."""
    w = torch.stack(window)
    bad = ~torch.isfinite(w)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        step = global_step - len(window) + first + 1
        raise QparseError(
            f"training diverged: loss is {w[first].item()} at step {step} (epoch {epoch + 1}). Fix: lower the "
            "learning rate (--set lr=...), or use --optimizer sgd; no checkpoint was written for this epoch."
        )


# -- validation --------------------------------------------------------------------------------------


@dataclass
class ValSet:
    """The validation pairs parsing scores, their targets, and each pair's query K (for the vote)."""

    pairs: PairIndex
    k_eff: np.ndarray
    xi1: float
    names: tuple[str, ...]


def val_set(sampler: PairSampler, k: int, max_pairs: int, seed: int, xi1: float) -> ValSet:
    """The scored validation pairs of ``sampler`` (up to ``max_pairs``: each query × its first ``k`` KNN ×
    the labels they contain, :meth:`~qparse_lite.train.sampler.PairSampler.scored_pairs`) with each pair's K."""
    pairs = sampler.scored_pairs(k, max_pairs, seed)
    knn = sampler.knn[:, :k]
    valid = ((knn >= 0) & (knn != sampler.queries[:, None])).sum(1)
    k_of = dict(zip(sampler.queries.tolist(), valid.tolist(), strict=True))
    k_eff = np.array([k_of[q] for q in pairs.query.tolist()], np.float64)
    return ValSet(pairs, k_eff, float(xi1), tuple(sampler.data.label_names))


@torch.no_grad()
def evaluate(
    model: nn.Module, sampler: PairSampler, val: ValSet, tn: TargetNorm, batch_size: int, amp: bool,
    channels_last: bool, loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] = matching_loss,
) -> dict[str, Any]:  # fmt: skip
    """The training loss (``loss_fn``, default Eq. (1)) and :func:`label_level_metrics` of the model on the
    scored validation pairs (the test path run once per image of a batch)."""
    was = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=sampler.data.device)
    outs, cs, ts, hs = [], [], [], []
    n = 0
    for b in sampler.iter_pairs(val.pairs, batch_size, grouped=True):
        I, R = prep(b.I, channels_last), prep(b.R, channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            pred = model(I, R, b.group)
        pred = pred.float()
        cn, tnn = tn.normalise(b.c, b.t)
        loss, lc, lt = loss_fn(pred, cn, tnn, b.has_t)
        sums += torch.stack([loss, lc, lt]).double() * len(b.c)
        n += len(b.c)
        c_hat, t_hat = tn.denormalise(pred[:, 0], pred[:, 1:])
        outs.append(torch.cat([c_hat[:, None], t_hat], 1).cpu())
        cs.append(b.c.cpu())
        ts.append(b.t.cpu())
        hs.append(b.has_t.cpu())
    model.train(was)
    out = torch.cat(outs).numpy()
    c, t, h = torch.cat(cs).numpy(), torch.cat(ts).numpy(), torch.cat(hs).numpy()
    s = (sums / max(n, 1)).tolist()
    return {"loss": s[0], "loss_c": s[1], "loss_t": s[2], **_metrics(val, tn, out[:, 0], out[:, 1:], c, t, h)}


def _metrics(
    val: ValSet, tn: TargetNorm, c_hat: np.ndarray, t_hat: np.ndarray, c: np.ndarray, t: np.ndarray,
    h: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    lm = label_level_metrics(
        val.pairs.query.numpy(), val.pairs.label.numpy(), c_hat, t_hat, c, t, h, val.k_eff, val.xi1,
        float(tn.c_mean.item()), tn.t_mean.detach().cpu().numpy(), val.names,
    )  # fmt: skip
    lm["auc_pairs"] = roc_auc(c_hat, c)
    return lm


def trivial_metrics(
    sampler: PairSampler, val: ValSet, tn: TargetNorm,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] = matching_loss,
) -> dict[str, Any]:  # fmt: skip
    """Loss (``loss_fn``) and metrics of ĉ = mean c, t̂ = mean t (the TargetNorm means: 0 in normalised
    space)."""
    c, t, has_t = sampler.targets(val.pairs)
    c, t, has_t = c.cpu(), t.cpu(), has_t.cpu()
    tn = TargetNorm.from_state_dict(tn.state_dict())
    pred = torch.zeros(len(c), 5)
    cn, tnn = tn.normalise(c, t)
    loss, lc, lt = loss_fn(pred, cn, tnn, has_t)
    c_hat, t_hat = tn.denormalise(pred[:, 0], pred[:, 1:])
    m = _metrics(val, tn, c_hat.numpy(), t_hat.numpy(), c.numpy(), t.numpy(), has_t.numpy())
    return {"loss": loss.item(), "loss_c": lc.item(), "loss_t": lt.item(), **m}


def val_brief(m: dict[str, Any]) -> dict[str, Any]:
    """A metrics dict without its per-label table and baselines (run.json's ``trivial_val``)."""
    keys = ("loss", "loss_c", "loss_t", "auc", "acc", "disp_err", "auc_macro", "auc_pairs", "n_scored",
            "n_pairs", "pos_rate")  # fmt: skip
    return {k: m[k] for k in keys if k in m}


def vote_baseline(m: dict[str, Any]) -> dict[str, Any]:
    """The neighbour-vote baseline's numbers from any evaluation (they do not depend on the model)."""
    return {"auc": m["auc_vote"], "acc": m["acc_vote"], "disp_err": m["disp_err_zero"],
            "auc_macro": m["auc_vote_macro"]}  # fmt: skip


def final_val(row: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """run.json's ``final_val``: the last log row with the baselines of the same evaluation beside it."""
    if not ev:
        return dict(row)
    return {
        **row,
        "val_auc_vote": ev["auc_vote"], "val_auc_trivial": ev["auc_trivial"],
        "val_auc_vote_macro": ev["auc_vote_macro"], "val_auc_sum_k": ev.get("auc_sum_k"),
        "val_acc_vote": ev["acc_vote"], "val_acc_trivial": ev["acc_trivial"],
        "val_disp_err_trivial": ev["disp_err_trivial"], "val_disp_err_zero": ev["disp_err_zero"],
        "auc_above_vote": bool(ev["auc"] > ev["auc_vote"]),
        "disp_err_below_trivial": 1.0 - ev["disp_err"] / ev["disp_err_trivial"],
        "n_scored": ev["n_scored"], "n_pairs": ev["n_pairs"],
    }  # fmt: skip


def prep(x: Tensor, channels_last: bool) -> Tensor:
    """``x`` in channels-last memory format when ``channels_last`` (the CUDA path)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
