"""Training Match R-CNN on the CCP export: the loop, its schedule, log and checkpoints."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qparse_lite.errors import QparseError
from qparse_lite.match_rcnn.data import collate
from qparse_lite.match_rcnn.model import MatchRCNN, train_step
from qparse_lite.train import plumbing
from qparse_lite.train.plumbing import (
    LRFactor,
    check_resume,
    finish_run_record,
    read_log_rows,
    save_checkpoint,
    write_log,
)


def lr_schedule(steps: int, warmup: float, drops: Sequence[float]) -> LRFactor:
    """The learning-rate factor of each of ``steps`` steps: a linear warm-up over the first ``warmup``
    fraction of the run (at least one step; a value ≥ 1 is a number of steps), then ×0.1 at each fraction
    in ``drops``."""
    n_warm = max(1, round(warmup * steps)) if warmup < 1 else int(warmup)
    return LRFactor(steps, n_warm, decay="steps", drops=drops)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation fixed by (seed, epoch), the last partial batch dropped."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def train(
    model: MatchRCNN, dataset: torch.utils.data.Dataset, out: str | Path, steps: int = 1000,
    batch_size: int = 2, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
    device: str = "auto", views: bool = True, checkpoint_every: int = 200, seed: int = 0,
    resume: bool = False, num_workers: int = 2, progress: bool | None = None, warmup: float = 0.1,
    lr_drops: Sequence[float] = (0.8,), clip_grad: float | None = 10.0, max_minutes: float | None = None,
    record: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Train for ``steps`` SGD steps (:func:`train_step`).

    Schedule (:func:`lr_schedule`): a linear warm-up over the first ``warmup`` fraction of ``steps`` (a
    value ≥ 1 is a number of steps), so short runs reach the set rate too, then ×0.1 at each fraction
    of ``lr_drops``. Gradients are clipped to norm ``clip_grad`` (None: no clipping).
    ``max_minutes`` stops a run early after that much wall time (checkpoint written; ``resume``
    continues it, the schedule still counts to ``steps``).

    Writes ``OUT/checkpoint.pt`` (atomic; model, its ``config``, optimiser, scheduler, step, RNG states,
    weights_source, backbone) every ``checkpoint_every`` steps and at the end, ``OUT/log.csv`` (one row
    per step: step, each loss, lr, seconds) and ``OUT/run.json`` (with ``record`` added). ``resume``
    continues from the checkpoint **exactly**: batches are a permutation fixed by (seed, epoch), and the
    augmentation generator's and torch's RNG states are restored, so an interrupted run and an
    uninterrupted one take the same steps (on CPU). Returns ``OUT``.
    """
    from tqdm.auto import tqdm

    from qparse_lite.runinfo import get_device, run_record, set_seed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = get_device(device)
    set_seed(seed, deterministic=False)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps, warmup, lr_drops))
    step, rows, wall_before = 0, [], 0.0
    gen = torch.Generator().manual_seed(seed)
    ck = out / "checkpoint.pt"
    settings = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "views": views, "warmup": warmup, "lr_drops": list(lr_drops),
                "clip_grad": clip_grad}  # fmt: skip
    if resume and ck.is_file():
        state = plumbing.load_checkpoint(ck, dev, fix=f"delete {ck} and train again without --resume, or restore the file")
        if "settings" in state:  # checkpoints of older kits do not record them
            check_resume(ck, state["settings"], settings)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        wall_before = float(state.get("wall_time_s", 0.0))
        if "rng" in state:
            gen.set_state(state["rng"]["views"])
            torch.set_rng_state(state["rng"]["torch"])
        rows = [r for r in read_log_rows(out / "log.csv") if int(r["step"]) <= step]
    per_epoch = len(dataset) // batch_size
    if per_epoch == 0:
        raise QparseError(f"train: dataset of {len(dataset)} images is smaller than batch_size {batch_size}")
    t0 = time.perf_counter()

    def save() -> None:
        save_checkpoint(ck, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "step": step, "config": getattr(model, "config", None),
                               "num_classes": model.num_classes, "weights_source": model.weights_source,
                               "backbone": getattr(model, "backbone_name", "resnet50"),
                               "rng": {"views": gen.get_state(), "torch": torch.get_rng_state()},
                               "settings": settings, "wall_time_s": wall_before + time.perf_counter() - t0},
                        resume_command="rerun the same training with --resume")  # fmt: skip
        write_log(out / "log.csv", rows)

    bar = tqdm(total=steps, initial=step, desc="match-rcnn", mininterval=1.0,
               disable=None if progress is None else not progress)  # fmt: skip
    stopped = None
    while step < steps and stopped is None:
        epoch, pos = divmod(step, per_epoch)
        batches = _batches(len(dataset), batch_size, seed, epoch)[pos:]
        # its own generator: a DataLoader iterator draws a seed, which must not consume torch's RNG
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                             num_workers=num_workers, generator=torch.Generator().manual_seed(epoch))  # fmt: skip
        for images, targets in loader:
            ts = time.perf_counter()
            losses = train_step(model, opt, images, targets, views=views, generator=gen, device=dev,
                                clip_grad=clip_grad)  # fmt: skip
            sched.step()
            step += 1
            if not all(np.isfinite(v) for v in losses.values()):
                save()
                raise QparseError(f"{out}: non-finite loss at step {step}: {losses}. Fix: lower the lr.")
            rows.append({"step": step, **{k: round(v, 5) for k, v in losses.items()},
                         "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - ts, 3)})  # fmt: skip
            bar.update(1)
            bar.set_postfix({k.removeprefix("loss_")[:5]: f"{v:.3f}" for k, v in losses.items()
                             if k.startswith("loss")}, refresh=False)  # fmt: skip
            if step % checkpoint_every == 0 or step >= steps:
                save()
            if step >= steps:
                break
            if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
                stopped = f"wall-clock budget of {max_minutes} min reached at step {step}"
                break
    bar.close()
    save()
    finish_run_record(out, run_record(
        profile=None, seed=seed, dataset=type(dataset).__name__, wall_time_s=wall_before + time.perf_counter() - t0,
        steps=steps, steps_done=step, stopped_early=stopped, batch_size=batch_size, lr=lr, warmup=warmup,
        lr_drops=list(lr_drops), clip_grad=clip_grad, views=views, device=dev, threads=torch.get_num_threads(),
        weights_source=model.weights_source, backbone=getattr(model, "backbone_name", "resnet50"),
        model_config=getattr(model, "config", None), **(record or {}),
    ), resumed=False)  # fmt: skip  (wall_time_s already sums the resumed calls)
    return out


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MatchRCNN, dict[str, Any]]:
    """Rebuild a :class:`MatchRCNN` from ``checkpoint.pt`` (a file or its run folder) written by
    :func:`train`: the model from the saved ``config``, its weights loaded, in eval mode. Returns
    ``(model, state)`` (``state`` without the optimiser)."""
    p = Path(path)
    p = p / "checkpoint.pt" if p.is_dir() else p
    if not p.is_file():
        raise QparseError(f"{p}: no Match R-CNN checkpoint. Fix: train one with `qparse match-rcnn train --out RUN`.")
    state = plumbing.load_checkpoint(p, "cpu", fix="train again with `qparse match-rcnn train --out RUN`, or restore the file")
    cfg = state.get("config")
    if not cfg:
        raise QparseError(f"{p}: checkpoint has no model config (written by an older kit). Fix: train again.")
    cfg = dict(cfg)
    if state.get("backbone") == "efficientnet-lite0":
        cfg["backbone"], cfg["weights"] = "efficientnet-lite0", "none"  # the checkpoint holds every weight
    else:  # a ResNet-50 body's norm layers depend on the weights it started from: rebuild the same way
        cfg["backbone"] = "resnet50"
    with torch.random.fork_rng(devices=[]):
        model = MatchRCNN(**cfg)
    model.load_state_dict(state["model"])
    model.weights_source = state.get("weights_source", model.weights_source)
    state.pop("optimizer", None)
    return model.to(device).eval(), state
