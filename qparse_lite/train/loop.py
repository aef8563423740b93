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
* the run folder: :mod:`qparse_lite.train.checkpoint`.

A run folder holds:

* ``checkpoint.pt`` — written atomically at the end of every epoch: model, optimiser, scheduler,
  TargetNorm, RNG states (torch, CUDA, NumPy, Python, the pair sampler), epoch, global step, profile,
  variant, model config and the log rows. ``resume=True`` continues exactly where it stopped;
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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_torch_save, atomic_write_json
from qparse_lite.profiles import Profile, get_profile
from qparse_lite.runinfo import run_record, set_seed
from qparse_lite.train.checkpoint import CHECKPOINT, rng_state, set_rng_state, write_log
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
from qparse_lite.train.sampler import PairSampler

NORM_PAIRS = 200_000  # pairs drawn to estimate the TargetNorm statistics
VAL_SEED_OFFSET = 99_991  # seed of the fixed validation pairs: profile seed + this


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
        stop_after: stop after this many epochs of this call (an interrupted run, for tests and chunks).
        progress: tqdm bars (default: auto).
        loss_fn: replaces the profile's training loss (:func:`~qparse_lite.train.loss.profile_loss`: Eq. (1)
            with its ``disp_loss`` and ``disp_weight``; tests); validation always scores the profile's.
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
            prof, variant, out, dist, dev, resume=resume, corpus=corpus, knn=knn, val_knn=val_knn,
            holdout_label=holdout_label, data_root=data_root, compile=compile, stop_after=stop_after,
            progress=progress, loss_fn=loss_fn or profile_loss(prof), t_start=t_start,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)
        teardown(dist)


def _train(
    prof: Profile, variant: str, out: Path, dist: DistInfo, dev: torch.device, *, resume: bool, corpus: Any,
    knn: Any, val_knn: Any, holdout_label: str | None, data_root: Any, compile: bool,
    stop_after: int | None, progress: bool | None,
    loss_fn: Callable[..., tuple[Tensor, Tensor, Tensor]], t_start: float,
) -> Path:  # fmt: skip
    from qparse_lite.model.mcnn import build_model

    cuda = dev.type == "cuda"

    # -- data (rank 0 prepares, the others wait and read) -------------------------------------------
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
    label_set = corp.label_set
    holdout = None if holdout_label is None else holdout_id(label_set, holdout_label)
    S = int(corp.size)
    q_tr, q_va = np.asarray(corp.split("train")), np.asarray(corp.split("val"))
    if len(q_va) == 0:
        raise QparseError(f"the corpus {getattr(corp, 'path', '')} has no val split. Fix: prepare it again.")

    data = DeviceCorpus.from_corpus(corp, dev, augment=True, holdout=holdout)
    sampler = PairSampler(
        data, q_tr, knn_tr, batch_size=prof.batch_size, pairs_per_epoch=prof.pairs_per_epoch,
        seed=prof.seed, sampler=prof.sampler, neg_fraction=prof.neg_fraction,
        empty_fraction=prof.empty_fraction, label_power=prof.label_power, group_size=prof.group_size,
        augment=True, rank=dist.rank, world_size=dist.world_size, shift=prof.shift,
    )  # fmt: skip
    # validation: the pairs parsing scores (val image × its first k_test KNN × the labels they contain)
    val_sampler = PairSampler(data, q_va, knn_va, batch_size=prof.batch_size, seed=prof.seed, augment=False)
    k_val = min(prof.k_test, int(knn_va.shape[1]))
    val = val_set(val_sampler, k_val, prof.val_pairs, prof.seed + VAL_SEED_OFFSET, prof.xi1)
    eval_bs = max(prof.batch_size, 256)

    # -- model, optimiser, state --------------------------------------------------------------------
    model = build_model(variant, input_size=S, width=prof.width, dropout=prof.dropout).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    steps = sampler.steps_per_epoch
    opt, sched, per_step = build_optimizer(
        prof.optimizer, model, prof.lr, steps * prof.epochs, prof.schedule, prof.warmup
    )
    history: list[dict[str, Any]] = []
    start_epoch, global_step, train_s = 0, 0, 0.0
    last_val: dict[str, Any] = {}
    ck_path = out / CHECKPOINT
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
        set_rng_state(ck["rng"])
        start_epoch, global_step, history = int(ck["epoch"]), int(ck["global_step"]), list(ck["history"])
        train_s, last_val = float(ck.get("train_s", 0.0)), dict(ck.get("last_val", {}))
    else:
        tn = sampler.fit_target_norm(NORM_PAIRS)
    tn = tn.to(dev)
    val_loss = profile_loss(prof)  # validation always scores the profile's loss (loss_fn may be a test's)
    trivial = trivial_metrics(val_sampler, val, tn, val_loss)
    net = wrap(model, dist, dev, compile)

    meta_common = {
        "variant": model.variant, "profile": prof.to_dict(), "config": model.cfg.to_dict(),  # type: ignore[attr-defined]
        "label_set": {"name": label_set.name, "names": list(label_set.names)}, "holdout": holdout_label,
        "corpus": str(getattr(corp, "path", "")), "optimizer_name": prof.optimizer, "crop": prof.crop,
    }  # fmt: skip
    pair_stats = sampler.stats()
    end_epoch = prof.epochs if stop_after is None else min(prof.epochs, start_epoch + stop_after)
    show = dist.is_main and (progress is None or progress)
    epoch_times: list[float] = []

    # -- the loop -----------------------------------------------------------------------------------
    for epoch in range(start_epoch, end_epoch):
        t_epoch = time.perf_counter()
        parts, global_step = train_one_epoch(
            net, sampler, tn, opt, sched, step_per_batch=per_step, epoch=epoch, global_step=global_step,
            loss_fn=loss_fn, cuda=cuda, progress=show, desc=f"{variant} epoch {epoch + 1}/{prof.epochs}",
        )  # fmt: skip
        train_s += time.perf_counter() - t_epoch
        train_parts = all_mean(parts, dist).tolist()
        ev = evaluate(unwrap(net), val_sampler, val, tn, eval_bs, cuda, cuda, val_loss)
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
        samplers = all_gather(sampler.state_dict(), dist)
        if dist.is_main:
            ck = {
                **meta_common, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "target_norm": {k: v.cpu() for k, v in tn.state_dict().items()},
                "sampler": samplers,
                "rng": rng_state(), "epoch": epoch + 1, "global_step": global_step, "history": history,
                "train_s": train_s, "last_val": last_val,
            }  # fmt: skip
            atomic_torch_save(ck_path, ck)
            write_log(out / "log.csv", history)
            if show:
                print(
                    f"epoch {epoch + 1}/{prof.epochs}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
                    f"AUC {row['val_auc']:.3f} (vote {ev['auc_vote']:.3f}) acc@ξ1 {row['val_acc']:.3f} "
                    f"disp {row['val_disp_err']:.4f} (trivial {ev['disp_err_trivial']:.4f}) "
                    f"lr {row['lr']:.2e} ({epoch_times[-1]:.1f} s)",
                    flush=True,
                )
        barrier(dist)

    # -- run.json -----------------------------------------------------------------------------------
    if dist.is_main:
        if not history:
            write_log(out / "log.csv", history)
        meta = getattr(corp, "meta", {}) or {}
        rec = run_record(
            profile=prof.name, seed=prof.seed, dataset=meta.get("dataset", prof.dataset),
            dataset_version=meta.get("version"), wall_time_s=time.perf_counter() - t_start,
            stage="train", variant=model.variant, profile_fields=prof.to_dict(),  # type: ignore[attr-defined]
            device=str(dev), world_size=dist.world_size, epochs_done=len(history),
            epoch_times_s=[round(x, 3) for x in epoch_times], resumed=bool(resume and start_epoch > 0),
            compile=compile, holdout_label=holdout_label, corpus=meta_common["corpus"], crop=prof.crop,
            n_train_images=len(q_tr), n_val_images=len(q_va), k_train=int(knn_tr.shape[1]),
            pairs={**pair_stats, "neg_fraction": prof.neg_fraction, "empty_fraction": sampler.empty_fraction,
                   "label_power": prof.label_power, "val_pairs": len(val.pairs), "val_k": k_val},
            target_norm=tn.as_dict(), trivial_val=val_brief(trivial), vote_val=vote_baseline(trivial),
            final_val=final_val(history[-1], last_val) if history else None,
            val_per_label=last_val.get("per_label"), torch_threads=torch.get_num_threads(),
            torch_interop_threads=torch.get_num_interop_threads(), train_s=round(train_s, 3),
            parameters=sum(p.numel() for p in model.parameters()),
        )  # fmt: skip
        prev = out / "run.json"
        if resume and prev.is_file():
            try:
                old = json.loads(prev.read_text())
                rec["wall_time_total_s"] = round(float(old.get("wall_time_total_s", old.get("wall_time_s") or 0))
                                                 + rec["wall_time_s"], 3)  # fmt: skip
            except (ValueError, TypeError):
                pass
        rec.setdefault("wall_time_total_s", rec["wall_time_s"])
        atomic_write_json(prev, rec)
    return out
