"""Training the M-CNN on label-balanced pairs (paper Sec. 3.2 Eq. (1), Sec. 4.1; docs/paper.md §1.4-1.5, §1.9).

``train(profile, variant, out)`` prepares what it needs (corpus cache, KNN of the train and val splits),
draws pairs with :class:`qparse_lite.pairs.PairSampler`, fits the target normalisation
(:class:`~qparse_lite.pairs.TargetNorm`), and trains with the paper's loss and optimiser. A run folder holds:

* ``checkpoint.pt`` — written atomically at the end of every epoch: model, optimiser, scheduler,
  TargetNorm, RNG states (torch, CUDA, NumPy, Python, the pair sampler), epoch, global step, profile,
  variant, model config and the log rows. ``resume=True`` continues exactly where it stopped;
* ``log.csv`` — one row per epoch (see :data:`LOG_COLUMNS`);
* ``run.json`` — :func:`qparse_lite.runinfo.run_record` plus the trivial predictor's validation metrics,
  the pair statistics and the TargetNorm;
* ``knn_train.npz`` / ``knn_val.npz`` (unless given) and ``corpus/`` (unless ``corpus`` is given).

**Loss** (Eq. (1)). For a test image I with KNN images g_1..g_K and labels l = 1..L, in the normalised target
space::

    J = 1/(L·K) Σ_k Σ_l ‖c_kl − ĉ_kl‖²  +  1/(L·K) Σ_k Σ_{l ∈ ϕ(g_k) ∩ ϕ(I)} ‖t_kl − t̂_kl‖²

with ϕ(·) the labels an image contains. Pairs are sampled (not enumerated per image), so a batch of B
pairs uses the mean over its pairs: J_B = 1/B Σ_b [(ĉ_b − c_b)² + 1[has_t_b]·‖t̂_b − t_b‖²] — the same
estimator with 1/B in place of 1/(L·K). The log reports both parts (``loss_c``, ``loss_t``, each a mean
over all B pairs so that ``loss = loss_c + loss_t``).

**Optimiser.** ``sgd`` is the paper's: SGD, momentum 0.9, weight decay 0.0005, the same learning rate for
all layers (5e-4 in the ccp/atr profiles), divided by 10 when the validation loss stops decreasing
(``ReduceLROnPlateau``, factor 0.1, patience :data:`PLATEAU_PATIENCE` epochs). ``adamw`` is the modern
option: AdamW (weight decay :data:`ADAMW_WEIGHT_DECAY`) with a linear warm-up over the first
:data:`WARMUP_FRACTION` of the steps and a cosine decay to 1 % of the learning rate; the quick profile uses
it because it reaches a useful model in a few CPU epochs where plain SGD at 5e-4 barely moves.

**Devices.** CPU and CUDA (also under ``torchrun``: DistributedDataParallel, NCCL on CUDA, Gloo on CPU;
every rank draws its own pairs from ``seed + 1_000_003·rank``; rank 0 writes the files). On CUDA the
forward pass runs under bf16 autocast with channels-last tensors; ``compile=True`` wraps the model in
``torch.compile``. On CPU the same seed gives the same numbers (deterministic kernels).

**Validation metrics** (on a fixed set of validation pairs: val-split images with their KNN in the corpus,
no augmentation): the loss; the confidence AUC (ROC AUC of ĉ against c, label presence); the confidence
accuracy at 0.5 (ĉ after denormalisation); and the displacement error, mean |t̂ − t| in normalised image
units over the ``has_t`` pairs (after denormalisation). ``run.json`` holds the same metrics for the
trivial predictor ĉ = mean c, t̂ = mean t (the TargetNorm means; 0 in normalised space).
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import QparseError
from .io import atomic_torch_save, atomic_write_json, atomic_write_text
from .pairs import DeviceCorpus, PairIndex, PairSampler, TargetNorm
from .profiles import Profile, apply_budget, get_profile
from .runinfo import get_device, run_record, set_seed

__all__ = [
    "LOG_COLUMNS",
    "PLATEAU_PATIENCE",
    "ADAMW_WEIGHT_DECAY",
    "SGD_MOMENTUM",
    "SGD_WEIGHT_DECAY",
    "WARMUP_FRACTION",
    "NEG_FRACTION",
    "EMPTY_FRACTION",
    "matching_loss",
    "roc_auc",
    "pair_metrics",
    "label_level_metrics",
    "train",
    "load_model",
    "read_log",
    "ensure_corpus",
    "ensure_knn",
    "DistInfo",
    "dist_info",
]

SGD_MOMENTUM = 0.9  # paper
SGD_WEIGHT_DECAY = 5e-4  # paper
PLATEAU_PATIENCE = 2  # epochs without a better validation loss before lr ÷ 10
ADAMW_WEIGHT_DECAY = 1e-2
WARMUP_FRACTION = 0.03
NEG_FRACTION = 0.4  # the stratified sampler's share of c = 0 pairs with a real region (qparse_lite.pairs)
EMPTY_FRACTION = None  # None: the sampler's default share of mean-image regions (0 natural, 0.05 stratified)
NORM_PAIRS = 200_000  # pairs drawn to estimate the TargetNorm statistics
VAL_SEED_OFFSET = 99_991
CHECK_EVERY = 20  # steps between non-finite-loss checks (each forces a device sync)

LOG_COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_loss_c", "train_loss_t",
    "val_loss", "val_loss_c", "val_loss_t", "val_auc", "val_acc", "val_disp_err",
    "val_auc_macro", "val_auc_pairs", "pairs_seen",
]  # fmt: skip
"""Columns of ``log.csv``: epoch (1-based), global step at its end, learning rate at its end, the mean
training loss and its c/t parts; on the validation pairs that parsing scores (see the module docstring) the
loss, the label-level confidence AUC (pooled over (image, label)), the accuracy at ξ1, the displacement error
(mean |t̂ − t|, normalised image units), the mean of the per-label AUCs and the pair-level AUC of ĉ; the
training pairs seen so far (all ranks) and the training seconds so far (this run, validation excluded)."""


# ---------------------------------------------------------------------------------------------------
# loss and metrics
# ---------------------------------------------------------------------------------------------------


def matching_loss(pred: Tensor, c: Tensor, t: Tensor, has_t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. (1) over a batch of pairs, in the normalised target space.

    ``J_B = 1/B Σ_b [ (ĉ_b − c_b)² + 1[l_b ∈ ϕ(g_k) ∧ l_b ∈ ϕ(I)] · ‖t̂_b − t_b‖² ]``

    Args:
        pred: B×5 network outputs (ĉ, t̂1..t̂4), normalised.
        c: B normalised confidence targets; t: B×4 normalised displacement targets.
        has_t: B bool, both images contain the label (the indicator of the second term).

    Returns:
        (J_B, confidence part, displacement part), each a mean over the B pairs (J_B = sum of the parts).
    """
    pred = pred.float()
    lc = (pred[:, 0] - c).square()
    lt = torch.where(has_t, (pred[:, 1:] - t).square().sum(1), torch.zeros_like(lc))
    lc, lt = lc.mean(), lt.mean()
    return lc + lt, lc, lt


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
    (:meth:`~qparse_lite.pairs.PairSampler.scored_pairs`). Parsing (Sec. 3.3, docs/paper.md §1.8) turns them
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


# ---------------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """DDP rank information read from the ``torchrun`` environment (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Running under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and shows progress."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """The DDP environment (``DistInfo()`` outside torchrun)."""
    return DistInfo(
        int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )  # fmt: skip


def _barrier(dist: DistInfo) -> None:
    if dist.enabled:
        torch.distributed.barrier()


def _all_mean(x: Tensor, dist: DistInfo) -> Tensor:
    if dist.enabled:
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= dist.world_size
    return x


# ---------------------------------------------------------------------------------------------------
# inputs: corpus and KNN
# ---------------------------------------------------------------------------------------------------


def _dataset_kwargs(profile: Profile) -> dict[str, Any]:
    if profile.dataset == "synthetic":
        return {"n": profile.n_images or 400, "size": max(128, profile.image_size), "seed": profile.seed}
    if profile.dataset == "ccp":
        return {"labels": profile.label_set}
    return {}


def ensure_corpus(
    profile: Profile, out: Path, corpus: Any = None, data_root: str | Path | None = None
) -> Any:
    """The prepared corpus: ``corpus`` itself (a Corpus), the cache at ``corpus`` (a path; prepared there
    from the profile's dataset when missing) or ``out/corpus`` (prepared when missing)."""
    if corpus is not None and not isinstance(corpus, str | Path):
        return corpus
    from .prepare import Corpus, prepare_corpus

    path = Path(corpus) if corpus is not None else Path(out) / "corpus"
    if not (path / "meta.json").is_file():
        from .datasets import get_dataset

        if profile.dataset != "synthetic" and data_root is None:
            raise QparseError(
                f"{path}: no prepared corpus, and profile {profile.name} needs its dataset to prepare one. "
                f"Fix: pass --data-root DIR (after `qparse data download {profile.dataset} --root DIR`) "
                "or --corpus CACHE of a prepared corpus."
            )
        ds = get_dataset(profile.dataset, root=data_root, **_dataset_kwargs(profile))
        prepare_corpus(ds, profile.image_size, path, feature_size=profile.feature_size)
    return Corpus.load(path)


def _load_knn_file(path: Path, corpus: Any, queries: np.ndarray) -> np.ndarray:
    """Neighbours from a :class:`qparse_lite.retrieval.KNNResult` file (checked against the corpus and the
    split's images) or from a plain ``.npz`` (key ``neighbours``) / ``.npy`` table."""
    if not path.is_file():
        raise QparseError(f"{path}: no KNN file. Fix: compute it with `qparse knn --out {path}`.")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            plain = (
                None
                if "header" in keys
                else np.asarray(z[next(k for k in ("neighbours", "knn") if k in keys)])
            )
    except (StopIteration, OSError, ValueError) as e:
        raise QparseError(
            f"{path}: not a readable KNN file ({e}). Fix: compute it again with `qparse knn`."
        ) from e
    if plain is not None:
        return plain
    from .retrieval import KNNResult

    res = KNNResult.load(path, corpus)
    if len(res.queries) != len(queries) or not np.array_equal(np.asarray(res.queries), queries):
        raise QparseError(
            f"{path}: its queries ({res.query_split}, {len(res.queries)} images) are not this split's "
            f"{len(queries)} images. Fix: pass the KNN file of the right split."
        )
    return np.asarray(res.neighbours)


def ensure_knn(
    corpus: Any, split: str, k: int, features: str, path: str | Path | None, out: Path
) -> np.ndarray:
    """KNN corpus indices (Q×K, rows in the order of ``corpus.split(split)``) for the split's images:
    read from ``path`` if given, else from ``out/knn_<split>.npz`` when it was computed on this corpus with
    the same ``features``, K and extractor configuration (for the learned features: the same head), else
    computed with :func:`qparse_lite.retrieval.corpus_knn` and saved there (a stale file is replaced)."""
    queries = np.asarray(corpus.split(split))
    if path is not None:
        nb = _load_knn_file(Path(path), corpus, queries)
    else:
        from .retrieval import split_neighbours

        nb = split_neighbours(corpus, split, k, features, Path(out), name=f"knn_{split}.npz")
    nb = np.asarray(nb)
    if nb.ndim != 2 or nb.shape[0] != len(queries):
        raise QparseError(
            f"KNN table for split {split!r} has shape {nb.shape}, but the split has {len(queries)} images. "
            f"Fix: recompute it for this corpus (delete {path or Path(out) / f'knn_{split}.npz'})."
        )
    return nb


# ---------------------------------------------------------------------------------------------------
# optimiser
# ---------------------------------------------------------------------------------------------------


class _WarmupCosine:
    """lr factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``."""

    def __init__(self, total: int, warmup: int, floor: float = 0.01) -> None:
        self.total, self.warmup, self.floor = max(1, total), max(0, warmup), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        p = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * p))


class _WarmupConstant:
    """lr factor: linear warm-up over ``warmup`` steps, then 1."""

    def __init__(self, warmup: int) -> None:
        self.warmup = max(0, warmup)

    def __call__(self, step: int) -> float:
        return (step + 1) / (self.warmup + 1) if step < self.warmup else 1.0


SCHEDULES = ("auto", "cosine", "plateau", "constant")


def _optimiser(
    name: str, model: nn.Module, lr: float, total_steps: int, schedule: str = "auto",
    warmup: float = WARMUP_FRACTION,
) -> tuple[Any, Any, bool]:  # fmt: skip
    """(optimizer, scheduler, scheduler steps per batch?).

    ``schedule``: ``auto`` = the optimiser's documented default (sgd: ÷10 on plateau, the paper's; adamw:
    warm-up + cosine); ``cosine``: linear warm-up over ``warmup``·total steps, cosine to 1 % of lr;
    ``plateau``: ÷10 when the validation loss stops decreasing (no warm-up); ``constant``: warm-up, then lr.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        opt: Any = torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=ADAMW_WEIGHT_DECAY)
    else:
        raise QparseError(f"unknown optimizer {name!r}; choose sgd (the paper's) or adamw")
    if schedule not in SCHEDULES:
        raise QparseError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule == "auto":
        schedule = "plateau" if name == "sgd" else "cosine"
    if schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=0.1, patience=PLATEAU_PATIENCE
        )
        return opt, sched, False
    n_warm = int(warmup * total_steps)
    fn = _WarmupCosine(total_steps, n_warm) if schedule == "cosine" else _WarmupConstant(n_warm)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, fn), True


# ---------------------------------------------------------------------------------------------------
# checkpoints and logs
# ---------------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r[k]) for k in LOG_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``run_dir/log.csv`` as dicts of numbers."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise QparseError(f"{path}: no training log. Fix: qparse train --out {Path(run_dir)}")
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _unwrap(model: nn.Module) -> nn.Module:
    m = getattr(model, "module", model)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile


def load_model(
    run_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, TargetNorm, dict]:
    """The trained model (eval mode), its TargetNorm and the run's metadata from ``run_dir/checkpoint.pt``.

    ``meta`` holds ``variant``, ``profile`` (dict), ``epoch``, ``global_step``, ``config`` (the model's
    :class:`~qparse_lite.mcnn.MCNNConfig` as a dict), ``label_set``, ``holdout``, ``corpus``, ``history``.
    """
    from .mcnn import model_from_config

    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise QparseError(f"{path}: no checkpoint. Fix: qparse train --out {Path(run_dir)} (or wait for it)")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise QparseError(
            f"{path}: unreadable checkpoint ({e}). Fix: train again or restore the file."
        ) from e
    model = model_from_config(ck["config"])
    model.load_state_dict(ck["model"])
    model.variant = ck["variant"]  # type: ignore[assignment]
    model.to(map_location).eval()
    tn = TargetNorm.from_state_dict(ck["target_norm"]).to(map_location)
    meta = {k: ck[k] for k in ("variant", "profile", "epoch", "global_step", "config", "label_set", "holdout",
                               "corpus", "history", "optimizer_name")}  # fmt: skip
    return model, tn, meta


# ---------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------


@dataclass
class _ValSet:
    """The validation pairs parsing scores, their targets, and each pair's query K (for the vote)."""

    pairs: PairIndex
    k_eff: np.ndarray
    xi1: float
    names: tuple[str, ...]


def _val_set(sampler: PairSampler, k: int, max_pairs: int, seed: int, xi1: float) -> _ValSet:
    pairs = sampler.scored_pairs(k, max_pairs, seed)
    knn = sampler.knn[:, :k]
    valid = ((knn >= 0) & (knn != sampler.queries[:, None])).sum(1)
    k_of = dict(zip(sampler.queries.tolist(), valid.tolist(), strict=True))
    k_eff = np.array([k_of[q] for q in pairs.query.tolist()], np.float64)
    return _ValSet(pairs, k_eff, float(xi1), tuple(sampler.data.label_names))


@torch.no_grad()
def _evaluate(
    model: nn.Module, sampler: PairSampler, val: _ValSet, tn: TargetNorm, batch_size: int, amp: bool,
    channels_last: bool,
) -> dict[str, Any]:  # fmt: skip
    """Eq. (1) and :func:`label_level_metrics` of the model on the scored validation pairs (the test path run
    once per image of a batch)."""
    was = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=sampler.data.device)
    outs, cs, ts, hs = [], [], [], []
    n = 0
    for b in sampler.iter_pairs(val.pairs, batch_size, grouped=True):
        I, R = _prep(b.I, channels_last), _prep(b.R, channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            pred = model(I, R, b.group)
        pred = pred.float()
        cn, tnn = tn.normalise(b.c, b.t)
        loss, lc, lt = matching_loss(pred, cn, tnn, b.has_t)
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
    val: _ValSet, tn: TargetNorm, c_hat: np.ndarray, t_hat: np.ndarray, c: np.ndarray, t: np.ndarray,
    h: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    lm = label_level_metrics(
        val.pairs.query.numpy(), val.pairs.label.numpy(), c_hat, t_hat, c, t, h, val.k_eff, val.xi1,
        float(tn.c_mean.item()), tn.t_mean.detach().cpu().numpy(), val.names,
    )  # fmt: skip
    lm["auc_pairs"] = roc_auc(c_hat, c)
    return lm


def _trivial(sampler: PairSampler, val: _ValSet, tn: TargetNorm) -> dict[str, Any]:
    """Loss and metrics of ĉ = mean c, t̂ = mean t (the TargetNorm means: 0 in normalised space)."""
    c, t, has_t = sampler.targets(val.pairs)
    c, t, has_t = c.cpu(), t.cpu(), has_t.cpu()
    tn = TargetNorm.from_state_dict(tn.state_dict())
    pred = torch.zeros(len(c), 5)
    cn, tnn = tn.normalise(c, t)
    loss, lc, lt = matching_loss(pred, cn, tnn, has_t)
    c_hat, t_hat = tn.denormalise(pred[:, 0], pred[:, 1:])
    m = _metrics(val, tn, c_hat.numpy(), t_hat.numpy(), c.numpy(), t.numpy(), has_t.numpy())
    return {"loss": loss.item(), "loss_c": lc.item(), "loss_t": lt.item(), **m}


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    """A metrics dict without its per-label table and baselines (run.json's ``trivial_val``)."""
    keys = ("loss", "loss_c", "loss_t", "auc", "acc", "disp_err", "auc_macro", "auc_pairs", "n_scored",
            "n_pairs", "pos_rate")  # fmt: skip
    return {k: m[k] for k in keys if k in m}


def _vote(m: dict[str, Any]) -> dict[str, Any]:
    """The neighbour-vote baseline's numbers from any evaluation (they do not depend on the model)."""
    return {"auc": m["auc_vote"], "acc": m["acc_vote"], "disp_err": m["disp_err_zero"],
            "auc_macro": m["auc_vote_macro"]}  # fmt: skip


def _final(row: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
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


def _prep(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------


def train(
    profile: Profile | str = "quick",
    variant: str | None = None,
    out: str | Path = "runs/train",
    *,
    resume: bool = False,
    device: str = "auto",
    epochs: int | None = None,
    seed: int | None = None,
    corpus: Any = None,
    knn: str | Path | np.ndarray | None = None,
    val_knn: str | Path | np.ndarray | None = None,
    optimizer: str | None = None,
    holdout_label: str | None = None,
    data_root: str | Path | None = None,
    compile: bool = False,
    neg_fraction: float | None = None,
    empty_fraction: float | None = None,
    label_power: float | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] | None = None,
    **overrides: Any,
) -> Path:
    """Train an M-CNN variant; returns the run folder (``checkpoint.pt``, ``log.csv``, ``run.json``).

    Args:
        profile: a :class:`~qparse_lite.profiles.Profile` or its name; ``overrides`` change any of its fields
            (``pairs_per_epoch=1024``); ``epochs``, ``seed`` and ``optimizer`` are shortcuts for three of them.
        variant: M-CNN variant (``qparse_lite.mcnn.VARIANTS``); default the profile's.
        out: the run folder. An existing ``checkpoint.pt`` there needs ``resume=True``.
        resume: continue from ``out/checkpoint.pt`` (exactly: same weights as an uninterrupted run);
            without a checkpoint it starts from scratch.
        device: ``auto`` | ``cpu`` | ``cuda`` (under torchrun: ``cuda:LOCAL_RANK``).
        corpus: a prepared Corpus, or the path of its cache (prepared there if missing);
            default ``out/corpus``.
        knn, val_knn: KNN tables (or files) of the train/val split; default computed and saved in ``out``.
        holdout_label: a label name never used as a positive: its pixels become background in the
            training labels (for measuring parsing of labels unseen in training).
        data_root: the dataset root for the ccp/atr profiles.
        compile: wrap the model in ``torch.compile``.
        neg_fraction, empty_fraction, label_power: shortcuts for the profile fields of the pair sampling
            scheme (with ``sampler``, ``group_size``: :class:`PairSampler`); None keeps the profile's.
        stop_after: stop after this many epochs of this call (an interrupted run, for tests and chunks).
        progress: tqdm bars (default: auto).
        loss_fn: replaces :func:`matching_loss` (tests).
    """
    t_start = time.perf_counter()
    dist = dist_info()
    if isinstance(profile, str):
        profile = get_profile(profile)
    prof = profile
    fields = {
        "epochs": epochs, "seed": seed, "optimizer": optimizer, "neg_fraction": neg_fraction,
        "empty_fraction": empty_fraction, "label_power": label_power, **overrides,
    }  # fmt: skip
    unknown = set(fields) - set(prof.to_dict())
    if unknown:
        raise QparseError(f"unknown profile field(s) {sorted(unknown)}; fields: {', '.join(prof.to_dict())}")
    from dataclasses import replace

    budget = fields.pop("budget", None)
    if budget is not None:
        prof = apply_budget(prof, budget)
    prof = replace(prof, **{k: v for k, v in fields.items() if v is not None})
    variant = variant or prof.variant
    out = Path(out)
    ck_path = out / "checkpoint.pt"
    if ck_path.is_file() and not resume:
        raise QparseError(f"{ck_path} exists. Fix: add --resume to continue it, or choose another --out.")

    # -- device and process group -------------------------------------------------------------------
    dev_name = get_device(device)
    if dist.enabled:
        if dev_name.startswith("cuda"):
            dev_name = f"cuda:{dist.local_rank}"
            torch.cuda.set_device(dist.local_rank)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if dev_name.startswith("cuda") else "gloo")
    dev = torch.device(dev_name)
    cuda = dev.type == "cuda"
    threads_before = torch.get_num_threads()
    if prof.threads < 0:
        raise QparseError(f"threads must be ≥ 0 (0 = torch's default), got {prof.threads}")
    if prof.threads:
        torch.set_num_threads(prof.threads)
    set_seed(prof.seed, deterministic=not cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    try:
        return _train(
            prof, variant, out, dist, dev, resume=resume, corpus=corpus, knn=knn, val_knn=val_knn,
            holdout_label=holdout_label, data_root=data_root, compile=compile, stop_after=stop_after,
            progress=progress, loss_fn=loss_fn or matching_loss, t_start=t_start,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(
    prof: Profile, variant: str, out: Path, dist: DistInfo, dev: torch.device, *, resume: bool, corpus: Any,
    knn: Any, val_knn: Any, holdout_label: str | None, data_root: Any, compile: bool,
    stop_after: int | None, progress: bool | None,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]], t_start: float,
) -> Path:  # fmt: skip
    from tqdm.auto import tqdm

    from .mcnn import build_model

    cuda = dev.type == "cuda"

    # -- inputs (rank 0 prepares, the others wait and read) -----------------------------------------
    def inputs() -> tuple[Any, np.ndarray, np.ndarray]:
        c = ensure_corpus(prof, out, corpus, data_root)
        tr, va = (
            x if isinstance(x, np.ndarray) else ensure_knn(c, split, prof.k_train, prof.features, x, out)
            for x, split in ((knn, "train"), (val_knn, "val"))
        )
        return c, tr, va

    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        corp, knn_tr, knn_va = inputs()
    _barrier(dist)
    if not dist.is_main:
        corp, knn_tr, knn_va = inputs()
    label_set = corp.label_set
    holdout = None if holdout_label is None else _label_id(label_set, holdout_label)
    S = int(corp.size)
    q_tr, q_va = np.asarray(corp.split("train")), np.asarray(corp.split("val"))
    if len(q_va) == 0:
        raise QparseError(f"the corpus {getattr(corp, 'path', '')} has no val split. Fix: prepare it again.")

    data = DeviceCorpus.from_corpus(corp, dev, augment=True, holdout=holdout)
    sampler = PairSampler(
        data, q_tr, knn_tr, batch_size=prof.batch_size, pairs_per_epoch=prof.pairs_per_epoch,
        seed=prof.seed, sampler=prof.sampler, neg_fraction=prof.neg_fraction,
        empty_fraction=prof.empty_fraction, label_power=prof.label_power, group_size=prof.group_size,
        augment=True, rank=dist.rank, world_size=dist.world_size,
    )  # fmt: skip
    # validation: the pairs parsing scores (val image × its first k_test KNN × the labels they contain)
    val_sampler = PairSampler(data, q_va, knn_va, batch_size=prof.batch_size, seed=prof.seed, augment=False)
    k_val = min(prof.k_test, int(knn_va.shape[1]))
    val = _val_set(val_sampler, k_val, prof.val_pairs, prof.seed + VAL_SEED_OFFSET, prof.xi1)
    eval_bs = max(prof.batch_size, 256)

    # -- model, optimiser, state --------------------------------------------------------------------
    model = build_model(variant, input_size=S, width=prof.width).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    steps = sampler.steps_per_epoch
    opt, sched, per_step = _optimiser(
        prof.optimizer, model, prof.lr, steps * prof.epochs, prof.schedule, prof.warmup
    )
    history: list[dict[str, Any]] = []
    start_epoch, global_step, train_s = 0, 0, 0.0
    last_val: dict[str, Any] = {}
    ck_path = out / "checkpoint.pt"
    if resume and ck_path.is_file():
        ck = torch.load(ck_path, map_location=dev, weights_only=False)
        if ck["variant"] != model.variant or ck["profile"]["name"] != prof.name:  # type: ignore[attr-defined]
            raise QparseError(
                f"{ck_path}: was trained as {ck['profile']['name']}/{ck['variant']}, not "
                f"{prof.name}/{variant}. Fix: use the same --profile/--variant or another --out."
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        tn = TargetNorm.from_state_dict(ck["target_norm"])
        sampler.load_state_dict(ck["sampler"][min(dist.rank, len(ck["sampler"]) - 1)])
        _set_rng_state(ck["rng"])
        start_epoch, global_step, history = int(ck["epoch"]), int(ck["global_step"]), list(ck["history"])
        train_s, last_val = float(ck.get("train_s", 0.0)), dict(ck.get("last_val", {}))
    else:
        tn = sampler.fit_target_norm(NORM_PAIRS)
    tn = tn.to(dev)
    trivial = _trivial(val_sampler, val, tn)

    net: nn.Module = model
    if compile:
        net = torch.compile(net)  # type: ignore[assignment]
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if cuda else None)

    meta_common = {
        "variant": model.variant, "profile": prof.to_dict(), "config": model.cfg.to_dict(),  # type: ignore[attr-defined]
        "label_set": {"name": label_set.name, "names": list(label_set.names)}, "holdout": holdout_label,
        "corpus": str(getattr(corp, "path", "")), "optimizer_name": prof.optimizer,
    }  # fmt: skip
    pair_stats = sampler.stats()
    end_epoch = prof.epochs if stop_after is None else min(prof.epochs, start_epoch + stop_after)
    show = dist.is_main and (progress is None or progress)
    epoch_times: list[float] = []

    for epoch in range(start_epoch, end_epoch):
        t_epoch = time.perf_counter()
        net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=dev)
        window: list[Tensor] = []
        bar = tqdm(
            total=steps, desc=f"{variant} epoch {epoch + 1}/{prof.epochs}", mininterval=1.0,
            disable=None if show else True, leave=False,
        )  # fmt: skip
        for b_i, batch in enumerate(sampler):
            cn, tnn = tn.normalise(batch.c, batch.t)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                pred = net(_prep(batch.I, cuda), _prep(batch.R, cuda), batch.group)
            loss, lc, lt = loss_fn(pred.float(), cn, tnn, batch.has_t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            global_step += 1
            parts = torch.stack([loss.detach(), lc.detach(), lt.detach()]).double()
            sums += parts
            window.append(parts[0])
            if len(window) >= (1 if not cuda else CHECK_EVERY) or b_i == steps - 1:
                _check_finite(window, global_step, epoch)
                if show:
                    bar.set_postfix(loss=f"{window[-1].item():.4f}", refresh=False)
                window = []
            bar.update(1)
        bar.close()
        if cuda:
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t_epoch
        train_parts = _all_mean(sums / steps, dist).tolist()
        ev = _evaluate(_unwrap(net), val_sampler, val, tn, eval_bs, cuda, cuda)
        if not per_step:
            sched.step(ev["loss"])
        row = {
            "epoch": epoch + 1, "step": global_step, "lr": opt.param_groups[0]["lr"],
            "train_loss": train_parts[0], "train_loss_c": train_parts[1], "train_loss_t": train_parts[2],
            "val_loss": ev["loss"], "val_loss_c": ev["loss_c"], "val_loss_t": ev["loss_t"],
            "val_auc": ev["auc"], "val_acc": ev["acc"], "val_disp_err": ev["disp_err"],
            "val_auc_macro": ev["auc_macro"], "val_auc_pairs": ev["auc_pairs"],
            "pairs_seen": global_step * prof.batch_size * dist.world_size,
        }  # fmt: skip
        last_val = ev
        history.append(row)
        epoch_times.append(time.perf_counter() - t_epoch)
        samplers = _gather_sampler_states(sampler, dist)
        if dist.is_main:
            ck = {
                **meta_common, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "target_norm": {k: v.cpu() for k, v in tn.state_dict().items()},
                "sampler": samplers,
                "rng": _rng_state(), "epoch": epoch + 1, "global_step": global_step, "history": history,
                "train_s": train_s, "last_val": last_val,
            }  # fmt: skip
            atomic_torch_save(ck_path, ck)
            _write_log(out / "log.csv", history)
            if show:
                print(
                    f"epoch {epoch + 1}/{prof.epochs}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                    f"AUC {row['val_auc']:.3f} (vote {ev['auc_vote']:.3f}) acc@ξ1 {row['val_acc']:.3f} "
                    f"disp {row['val_disp_err']:.4f} (trivial {ev['disp_err_trivial']:.4f}) "
                    f"lr {row['lr']:.2e} ({epoch_times[-1]:.1f} s)",
                    flush=True,
                )
        _barrier(dist)

    if dist.is_main:
        if not history:
            _write_log(out / "log.csv", history)
        meta = getattr(corp, "meta", {}) or {}
        rec = run_record(
            profile=prof.name, seed=prof.seed, dataset=meta.get("dataset", prof.dataset),
            dataset_version=meta.get("version"), wall_time_s=time.perf_counter() - t_start,
            stage="train", variant=model.variant, profile_fields=prof.to_dict(),  # type: ignore[attr-defined]
            device=str(dev), world_size=dist.world_size, epochs_done=len(history),
            epoch_times_s=[round(x, 3) for x in epoch_times], resumed=bool(resume and start_epoch > 0),
            compile=compile, holdout_label=holdout_label, corpus=meta_common["corpus"],
            n_train_images=len(q_tr), n_val_images=len(q_va), k_train=int(knn_tr.shape[1]),
            pairs={**pair_stats, "neg_fraction": prof.neg_fraction, "empty_fraction": sampler.empty_fraction,
                   "label_power": prof.label_power, "val_pairs": len(val.pairs), "val_k": k_val},
            target_norm=tn.as_dict(), trivial_val=_brief(trivial), vote_val=_vote(trivial),
            final_val=_final(history[-1], last_val) if history else None,
            val_per_label=last_val.get("per_label"), torch_threads=torch.get_num_threads(),
            torch_interop_threads=torch.get_num_interop_threads(), train_s=round(train_s, 3),
            parameters=sum(p.numel() for p in model.parameters()),
        )  # fmt: skip
        prev = out / "run.json"
        if resume and prev.is_file():
            import json

            try:
                old = json.loads(prev.read_text())
                rec["wall_time_total_s"] = round(float(old.get("wall_time_total_s", old.get("wall_time_s") or 0))
                                                 + rec["wall_time_s"], 3)  # fmt: skip
            except (ValueError, TypeError):
                pass
        rec.setdefault("wall_time_total_s", rec["wall_time_s"])
        atomic_write_json(prev, rec)
    return out


def _label_id(label_set: Any, name: str) -> int:
    try:
        i = label_set.index(name)
    except KeyError as e:
        raise QparseError(f"--holdout-label: {e.args[0]}") from None
    if i == 0:
        raise QparseError("--holdout-label: the background cannot be held out")
    return i


def _check_finite(window: list[Tensor], global_step: int, epoch: int) -> None:
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


def _gather_sampler_states(sampler: PairSampler, dist: DistInfo) -> list[dict[str, Any]]:
    st = sampler.state_dict()
    if not dist.enabled:
        return [st]
    states: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(states, st)
    return states
