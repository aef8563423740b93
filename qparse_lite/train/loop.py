"""Training the M-CNN on label-balanced pairs: the entry point (paper Sec. 3.2 Eq. (1), Sec. 4.1;
docs/paper.md §1.4-1.5, §1.9).

``train(profile, variant, out)`` wires profile → data → loop → run.json, in the shape of torchvision's
``references/`` (one file per concern):

* the profile: :func:`qparse_lite.profiles.get_profile` (the one route for overrides: ``train("quick",
  epochs=2)`` and ``train(get_profile("quick", epochs=2))`` are the same run);
* the data: :mod:`qparse_lite.train.inputs` (corpus cache, KNN of the train and val splits, a held-out label),
  pairs drawn by :class:`qparse_lite.train.sampler.PairSampler`, targets normalised by
  :class:`~qparse_lite.train.pairs.TargetNorm` (fitted on :data:`NORM_PAIRS` pairs);
* the loop: :mod:`qparse_lite.train.engine` (the loss of Eq. (1), :func:`~qparse_lite.train.engine.train_one_epoch`,
  the validation pass :func:`~qparse_lite.train.engine.evaluate`), :mod:`qparse_lite.train.optim` (the paper's SGD or
  AdamW, their schedules), :mod:`qparse_lite.train.distributed` (``torchrun``);
* the run folder: :mod:`qparse_lite.train.checkpoint`, written through :mod:`qparse_lite.train.plumbing` (the
  schedule, log, checkpoint, resume and run record the three training loops of the kit share).

``_train`` reads in four steps: :func:`_setup` (data, samplers, model, optimiser), :func:`_resume` (the
checkpoint's state, or a fresh TargetNorm), :func:`_epoch` (one epoch, its validation, log row and
checkpoint) and :func:`_record` (``run.json``).

A run folder holds:

* ``checkpoint.pt`` — written atomically (and verified) at the end of every epoch: model, optimiser, scheduler,
  TargetNorm, RNG states (torch, CUDA, NumPy, Python, the pair sampler), epoch, global step, profile,
  variant, model config and the log rows. ``resume=True`` continues exactly where it stopped, with the
  settings it was started with (others are refused, naming the differing fields);
* ``log.csv`` — one row per epoch (see :data:`LOG_COLUMNS`);
* ``run.json`` — :func:`qparse_lite.runinfo.run_record` plus the trivial predictor's validation metrics,
  the pair statistics and the TargetNorm;
* ``knn_train.npz`` / ``knn_val.npz`` (unless given) and ``corpus/`` (unless ``corpus`` is given).

**Devices.** CPU and CUDA (also under ``torchrun``: DistributedDataParallel, NCCL on CUDA, Gloo on CPU;
every rank draws its own pairs from ``seed + 1_000_003·rank``; rank 0 writes the files). On CUDA the
forward pass runs under bf16 autocast with channels-last tensors; ``compile=True`` wraps the model in
``torch.compile``. On CPU the same seed gives the same numbers (deterministic kernels).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qparse_lite.errors import QparseError
from qparse_lite.profiles import Profile, get_profile
from qparse_lite.runinfo import run_record, set_seed
from qparse_lite.train.checkpoint import CHECKPOINT, LOG_COLUMNS
from qparse_lite.train.distributed import (
    DistInfo,
    all_gather,
    all_mean,
    barrier,
    dist_info,
    setup,
    teardown,
    unwrap,
    wrap,
)
from qparse_lite.train.engine import (
    evaluate,
    final_val,
    train_one_epoch,
    trivial_metrics,
    val_brief,
    val_set,
    vote_baseline,
)
from qparse_lite.train.inputs import ensure_corpus, ensure_knn, holdout_id
from qparse_lite.train.loss import profile_loss
from qparse_lite.train.optim import build_optimizer
from qparse_lite.train.pairs import DeviceCorpus, TargetNorm
from qparse_lite.train.plumbing import (
    check_resume,
    finish_run_record,
    load_checkpoint,
    resume_hint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_log,
)
from qparse_lite.train.sampler import PairSampler

NORM_PAIRS = 200_000  # pairs drawn to estimate the TargetNorm statistics
VAL_SEED_OFFSET = 99_991  # seed of the fixed validation pairs: profile seed + this
RESUME_IGNORES = ("threads",)
"""Profile fields a resumed run may change: they do not change its numbers."""


def train(
    profile: Profile | str = "quick",
    variant: str | None = None,
    out: str | Path = "runs/train",
    *,
    resume: bool = False,
    device: str = "auto",
    corpus: Any = None,
    knn: str | Path | np.ndarray | None = None,
    val_knn: str | Path | np.ndarray | None = None,
    holdout_label: str | None = None,
    data_root: str | Path | None = None,
    compile: bool = False,
    stop_after: int | None = None,
    progress: bool | None = None,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]] | None = None,
    **overrides: Any,
) -> Path:
    """Train an M-CNN variant; returns the run folder (``checkpoint.pt``, ``log.csv``, ``run.json``).

    Args:
        profile: a :class:`~qparse_lite.profiles.Profile` or its name. ``overrides`` change any of its fields
            (``epochs=2``, ``seed=1``, ``optimizer="sgd"``, ``pairs_per_epoch=1024``, ``neg_fraction=0.3``,
            ``budget="gpu"``, ...) through :func:`~qparse_lite.profiles.get_profile`, the one override route;
            a ``None`` value keeps the profile's.
        variant: M-CNN variant (``qparse_lite.model.mcnn.VARIANTS``); default the profile's.
        out: the run folder. An existing ``checkpoint.pt`` there needs ``resume=True``.
        resume: continue from ``out/checkpoint.pt`` (exactly: same weights as an uninterrupted run) with the
            settings it was started with (other settings are refused before any work, naming the
            differing fields; only ``threads`` may change); without a checkpoint it starts from scratch.
        device: ``auto`` | ``cpu`` | ``cuda`` (under torchrun: ``cuda:LOCAL_RANK``).
        corpus: a prepared Corpus, or the path of its cache (prepared there if missing);
            default ``out/corpus``.
        knn, val_knn: KNN tables (or files) of the train/val split; default computed and saved in ``out``.
        holdout_label: a label name never used as a positive: its pixels become background in the
            training labels (for measuring parsing of labels unseen in training).
        data_root: the dataset root for the ccp/atr profiles.
        compile: wrap the model in ``torch.compile``.
        stop_after: stop after this many epochs of this call (an interrupted run, for tests and chunks).
        progress: tqdm bars (default: auto).
        loss_fn: replaces the profile's training loss (:func:`~qparse_lite.train.loss.profile_loss`: Eq. (1)
            with its ``disp_loss`` and ``disp_weight``; tests); validation always scores the profile's.

    An interrupt (Ctrl-C) prints how to continue the run (:func:`~qparse_lite.train.plumbing.resume_hint`)
    and is raised again.
    """
    t_start = time.perf_counter()
    dist = dist_info()
    prof = get_profile(profile, **overrides)
    variant = variant or prof.variant
    out = Path(out)
    ck_path = out / CHECKPOINT
    if ck_path.is_file() and not resume:
        raise QparseError(f"{ck_path} exists. Fix: add --resume to continue it, or choose another --out.")
    if prof.threads < 0:
        raise QparseError(f"threads must be ≥ 0 (0 = torch's default), got {prof.threads}")

    dev = setup(device, dist)
    ck = _load_for_resume(ck_path, prof, variant, holdout_label, dev) if resume and ck_path.is_file() else None
    cuda = dev.type == "cuda"
    threads_before = torch.get_num_threads()
    if prof.threads:
        torch.set_num_threads(prof.threads)
    set_seed(prof.seed, deterministic=not cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        return _train(
            prof, variant, out, dist, dev, ck=ck, resume=resume, corpus=corpus, knn=knn, val_knn=val_knn,
            holdout_label=holdout_label, data_root=data_root, compile=compile, stop_after=stop_after,
            progress=progress, loss_fn=loss_fn or profile_loss(prof), t_start=t_start,
        )  # fmt: skip
    except KeyboardInterrupt:
        if dist.is_main:
            print(f"qparse train: {resume_hint(out)}", file=sys.stderr, flush=True)
        raise
    finally:
        torch.set_num_threads(threads_before)
        teardown(dist)


def _settings(profile: dict[str, Any], variant: str, holdout_label: str | None) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (the profile, variant, held-out label)."""
    return {**profile, "variant": variant, "holdout_label": holdout_label}


def _load_for_resume(
    ck_path: Path, prof: Profile, variant: str, holdout_label: str | None, dev: torch.device
) -> dict[str, Any]:
    """The checkpoint to resume, read before any work; refused when it was started with other settings."""
    from qparse_lite.model.mcnn import resolve_variant

    ck = load_checkpoint(
        ck_path, dev, fix=f"delete {ck_path} and train again without --resume, or restore the file from a copy"
    )  # fmt: skip
    # a field the kit added after the run started had its default value in that run
    saved = {**{f.name: f.default for f in fields(Profile) if f.default is not MISSING}, **ck["profile"]}
    check_resume(
        ck_path, _settings(saved, ck["variant"], ck.get("holdout")),
        _settings(prof.to_dict(), resolve_variant(variant), holdout_label), ignore=RESUME_IGNORES,
        fix="resume with the settings the run started with (see its run.json), or train into another --out",
    )  # fmt: skip
    return ck


@dataclass
class _Run:
    """Everything one training holds between its steps (:func:`_setup` → :func:`_resume` → :func:`_epoch`
    → :func:`_record`)."""

    prof: Profile
    out: Path
    dist: DistInfo
    dev: torch.device
    corp: Any
    knn_tr: np.ndarray
    q_tr: np.ndarray
    q_va: np.ndarray
    holdout_label: str | None
    sampler: PairSampler
    val_sampler: PairSampler
    val: Any
    k_val: int
    model: Any
    opt: Any
    sched: Any
    per_step: bool
    tn: TargetNorm | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    global_step: int = 0
    train_s: float = 0.0
    last_val: dict[str, Any] = field(default_factory=dict)
    epoch_times: list[float] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    def meta(self) -> dict[str, Any]:
        """The checkpoint's description of the run (every epoch's checkpoint carries it)."""
        ls = self.corp.label_set
        return {
            "variant": self.model.variant, "profile": self.prof.to_dict(), "config": self.model.cfg.to_dict(),
            "label_set": {"name": ls.name, "names": list(ls.names)}, "holdout": self.holdout_label,
            "corpus": str(getattr(self.corp, "path", "")), "optimizer_name": self.prof.optimizer,
            "crop": self.prof.crop,
        }  # fmt: skip


def _train(
    prof: Profile, variant: str, out: Path, dist: DistInfo, dev: torch.device, *, ck: dict[str, Any] | None,
    resume: bool, corpus: Any, knn: Any, val_knn: Any, holdout_label: str | None, data_root: Any,
    compile: bool, stop_after: int | None, progress: bool | None,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]], t_start: float,
) -> Path:  # fmt: skip
    run = _setup(prof, variant, out, dist, dev, corpus, knn, val_knn, holdout_label, data_root)
    _resume(run, ck)
    val_loss = profile_loss(prof)  # validation always scores the profile's loss (loss_fn may be a test's)
    trivial = trivial_metrics(run.val_sampler, run.val, run.tn, val_loss)
    net = wrap(run.model, dist, dev, compile)
    end_epoch = prof.epochs if stop_after is None else min(prof.epochs, run.start_epoch + stop_after)
    show = dist.is_main and (progress is None or progress)
    for epoch in range(run.start_epoch, end_epoch):
        _epoch(run, net, epoch, loss_fn, val_loss, show)
    if dist.is_main:
        _record(run, trivial, resume=resume, compile=compile, t_start=t_start)
    return out


def _setup(
    prof: Profile, variant: str, out: Path, dist: DistInfo, dev: torch.device, corpus: Any, knn: Any,
    val_knn: Any, holdout_label: str | None, data_root: Any,
) -> _Run:  # fmt: skip
    """The data (rank 0 prepares the corpus and KNN tables, the others wait and read), the training and
    validation pair samplers, the model and its optimiser."""
    from qparse_lite.model.mcnn import build_model, variant_family
    from qparse_lite.train.trunk_pairs import trunk_setup

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
    barrier(dist)
    if not dist.is_main:
        corp, knn_tr, knn_va = inputs()
    holdout = None if holdout_label is None else holdout_id(corp.label_set, holdout_label)
    q_tr, q_va = np.asarray(corp.split("train")), np.asarray(corp.split("val"))
    if len(q_va) == 0:
        raise QparseError(f"the corpus {getattr(corp, 'path', '')} has no val split. Fix: prepare it again.")

    data = DeviceCorpus.from_corpus(corp, dev, augment=True, holdout=holdout)
    sampler = PairSampler(
        data, q_tr, knn_tr, batch_size=prof.batch_size, pairs_per_epoch=prof.pairs_for(variant_family(variant)),
        seed=prof.seed, sampler=prof.sampler, neg_fraction=prof.neg_fraction,
        empty_fraction=prof.empty_fraction, label_power=prof.label_power, group_size=prof.group_size,
        augment=True, rank=dist.rank, world_size=dist.world_size, shift=prof.shift,
    )  # fmt: skip
    # validation: the pairs parsing scores (val image × its first k_test KNN × the labels they contain)
    val_sampler = PairSampler(data, q_va, knn_va, batch_size=prof.batch_size, seed=prof.seed, augment=False)
    k_val = min(prof.k_test, int(knn_va.shape[1]))
    val = val_set(val_sampler, k_val, prof.val_pairs, prof.seed + VAL_SEED_OFFSET, prof.xi1)

    if variant_family(variant) == "trunk":  # issue 30: the trunk family trains on the corpus's cached trunk maps
        model, sampler, val_sampler = trunk_setup(prof, variant, corp, sampler, val_sampler, dev)
    else:
        model = build_model(variant, input_size=int(corp.size), width=prof.width, dropout=prof.dropout).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt, sched, per_step = build_optimizer(
        prof.optimizer, model, prof.lr, sampler.steps_per_epoch * prof.epochs, prof.schedule, prof.warmup
    )
    return _Run(
        prof=prof, out=out, dist=dist, dev=dev, corp=corp, knn_tr=knn_tr, q_tr=q_tr, q_va=q_va,
        holdout_label=holdout_label, sampler=sampler, val_sampler=val_sampler, val=val, k_val=k_val,
        model=model, opt=opt, sched=sched, per_step=per_step,
    )  # fmt: skip


def _resume(run: _Run, ck: dict[str, Any] | None) -> None:
    """Restore the state of checkpoint ``ck`` (model, optimiser, scheduler, TargetNorm, this rank's sampler,
    RNGs, epoch, log rows), or fit the TargetNorm of a fresh run on :data:`NORM_PAIRS` pairs."""
    if ck is None:
        run.tn = run.sampler.fit_target_norm(NORM_PAIRS).to(run.dev)
        return
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    run.tn = TargetNorm.from_state_dict(ck["target_norm"]).to(run.dev)
    run.sampler.load_state_dict(ck["sampler"][min(run.dist.rank, len(ck["sampler"]) - 1)])
    set_rng_state(ck["rng"])
    run.start_epoch, run.global_step, run.history = int(ck["epoch"]), int(ck["global_step"]), list(ck["history"])
    run.train_s, run.last_val = float(ck.get("train_s", 0.0)), dict(ck.get("last_val", {}))


def _epoch(
    run: _Run, net: Any, epoch: int, loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]], val_loss: Any,
    show: bool,
) -> None:  # fmt: skip
    """One epoch: train, validate, step a per-epoch schedule, append the log row; rank 0 writes the
    checkpoint and ``log.csv``."""
    prof, dist, opt, tn = run.prof, run.dist, run.opt, run.tn
    t_epoch = time.perf_counter()
    parts, run.global_step = train_one_epoch(
        net, run.sampler, tn, opt, run.sched, step_per_batch=run.per_step, epoch=epoch,
        global_step=run.global_step, loss_fn=loss_fn, cuda=run.cuda, progress=show,
        desc=f"{run.model.variant} epoch {epoch + 1}/{prof.epochs}",
    )  # fmt: skip
    run.train_s += time.perf_counter() - t_epoch
    train_parts = all_mean(parts, dist).tolist()
    ev = evaluate(unwrap(net), run.val_sampler, run.val, tn, max(prof.batch_size, 256), run.cuda, run.cuda, val_loss)
    if not run.per_step:
        run.sched.step(ev["loss"])
    row = {
        "epoch": epoch + 1, "step": run.global_step, "lr": opt.param_groups[0]["lr"],
        "train_loss": train_parts[0], "train_loss_c": train_parts[1], "train_loss_t": train_parts[2],
        "val_loss": ev["loss"], "val_loss_c": ev["loss_c"], "val_loss_t": ev["loss_t"],
        "val_auc": ev["auc"], "val_acc": ev["acc"], "val_disp_err": ev["disp_err"],
        "val_auc_macro": ev["auc_macro"], "val_auc_pairs": ev["auc_pairs"],
        "pairs_seen": run.global_step * prof.batch_size * dist.world_size,
    }  # fmt: skip
    run.last_val = ev
    run.history.append(row)
    run.epoch_times.append(time.perf_counter() - t_epoch)
    samplers = all_gather(run.sampler.state_dict(), dist)
    if dist.is_main:
        ck = {
            **run.meta(), "model": run.model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": run.sched.state_dict(), "target_norm": {k: v.cpu() for k, v in tn.state_dict().items()},
            "sampler": samplers,
            "rng": rng_state(), "epoch": epoch + 1, "global_step": run.global_step, "history": run.history,
            "train_s": run.train_s, "last_val": run.last_val,
        }  # fmt: skip
        save_checkpoint(run.out / CHECKPOINT, ck, resume_command="rerun the same qparse train command with --resume")
        write_log(run.out / "log.csv", run.history, LOG_COLUMNS)
        if show:
            print(
                f"epoch {epoch + 1}/{prof.epochs}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                f"AUC {row['val_auc']:.3f} (vote {ev['auc_vote']:.3f}) acc@ξ1 {row['val_acc']:.3f} "
                f"disp {row['val_disp_err']:.4f} (trivial {ev['disp_err_trivial']:.4f}) "
                f"lr {row['lr']:.2e} ({run.epoch_times[-1]:.1f} s)",
                flush=True,
            )
    barrier(dist)


def _record(run: _Run, trivial: dict[str, Any], *, resume: bool, compile: bool, t_start: float) -> None:
    """``run.json``: :func:`~qparse_lite.runinfo.run_record` with the run's data, pairs, TargetNorm,
    trivial and final validation metrics (:func:`~qparse_lite.train.plumbing.finish_run_record`)."""
    prof, corp, history, last_val = run.prof, run.corp, run.history, run.last_val
    if not history:
        write_log(run.out / "log.csv", history, LOG_COLUMNS)
    meta = getattr(corp, "meta", {}) or {}
    rec = run_record(
        profile=prof.name, seed=prof.seed, dataset=meta.get("dataset", prof.dataset),
        dataset_version=meta.get("version"), wall_time_s=time.perf_counter() - t_start,
        stage="train", variant=run.model.variant, profile_fields=prof.to_dict(),
        device=str(run.dev), world_size=run.dist.world_size, epochs_done=len(history),
        epoch_times_s=[round(x, 3) for x in run.epoch_times], resumed=bool(resume and run.start_epoch > 0),
        compile=compile, holdout_label=run.holdout_label, corpus=str(getattr(corp, "path", "")), crop=prof.crop,
        n_train_images=len(run.q_tr), n_val_images=len(run.q_va), k_train=int(run.knn_tr.shape[1]),
        pairs={**run.sampler.stats(), "neg_fraction": prof.neg_fraction, "empty_fraction": run.sampler.empty_fraction,
               "label_power": prof.label_power, "val_pairs": len(run.val.pairs), "val_k": run.k_val},
        target_norm=run.tn.as_dict(), trivial_val=val_brief(trivial), vote_val=vote_baseline(trivial),
        final_val=final_val(history[-1], last_val) if history else None,
        val_per_label=last_val.get("per_label"), torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(), train_s=round(run.train_s, 3),
        parameters=sum(p.numel() for p in run.model.parameters()),
    )  # fmt: skip
    from qparse_lite.model.mcnn import variant_family

    if variant_family(run.model.variant) == "trunk" and history:  # issue 30: the bar ĉ_l is judged against
        from qparse_lite.train.trunk_pairs import presence_head_val

        rec["presence_head_val"] = presence_head_val(corp, run.val_sampler.sampler, run.val, run.tn, progress=False)
    finish_run_record(run.out, rec, resumed=resume)
