"""Run folders of the M-CNN training: ``checkpoint.pt``, ``log.csv`` and the model loader.

``checkpoint.pt`` is written at the end of every epoch (:mod:`qparse_lite.train.loop`, through
:func:`qparse_lite.train.plumbing.save_checkpoint`: atomic and verified): model, optimiser, scheduler,
TargetNorm, RNG states (:func:`~qparse_lite.train.plumbing.rng_state`: torch, CUDA, NumPy, Python), every
rank's pair-sampler state, epoch, global step, profile, variant, model config and the log rows; ``resume``
restores all of it, so a resumed run equals an uninterrupted one. ``log.csv`` has one row per epoch
(:data:`LOG_COLUMNS`, written by :func:`~qparse_lite.train.plumbing.write_log`, read by :func:`read_log`).
:func:`load_model` gives the trained model back for parsing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from qparse_lite.errors import QparseError
from qparse_lite.train.pairs import TargetNorm
from qparse_lite.train.plumbing import load_checkpoint

__all__ = ["LOG_COLUMNS", "CHECKPOINT", "read_log", "load_model"]

CHECKPOINT = "checkpoint.pt"
"""The checkpoint's file name in a run folder."""

LOG_COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_loss_c", "train_loss_t",
    "val_loss", "val_loss_c", "val_loss_t", "val_auc", "val_acc", "val_disp_err",
    "val_auc_macro", "val_auc_pairs", "pairs_seen",
]  # fmt: skip
"""Columns of ``log.csv``: epoch (1-based), global step at its end, learning rate at its end, the mean
training loss and its c/t parts; on the validation pairs that parsing scores (see the module docstring) the
loss, the label-level confidence AUC (pooled over (image, label)), the accuracy at ξ1, the displacement error
(mean |t̂ − t|, normalised image units), the mean of the per-label AUCs and the pair-level AUC of ĉ; the
training pairs seen so far (all ranks)."""


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``run_dir/log.csv`` as dicts of numbers."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise QparseError(f"{path}: no training log. Fix: qparse train --out {Path(run_dir)}")
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def load_model(
    run_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, TargetNorm, dict]:
    """The trained model (eval mode), its TargetNorm and the run's metadata from ``run_dir/checkpoint.pt``.

    ``meta`` holds ``variant``, ``profile`` (dict), ``epoch``, ``global_step``, ``config`` (the model's
    :class:`~qparse_lite.model.mcnn.MCNNConfig` as a dict), ``label_set``, ``holdout``, ``corpus``, ``history`` and
    ``crop`` (the corpus crop mode it was trained on: ``square`` for runs from before it was recorded).
    """
    from qparse_lite.model.mcnn import model_from_config

    ck = load_checkpoint(
        Path(run_dir) / CHECKPOINT, map_location,
        fix=f"qparse train --out {Path(run_dir)} (or wait for it; a broken file: delete it and train again)",
    )  # fmt: skip
    model = model_from_config(ck["config"])
    model.load_state_dict(ck["model"])
    model.variant = ck["variant"]  # type: ignore[assignment]
    model.to(map_location).eval()
    tn = TargetNorm.from_state_dict(ck["target_norm"]).to(map_location)
    meta = {k: ck[k] for k in ("variant", "profile", "epoch", "global_step", "config", "label_set", "holdout",
                               "corpus", "history", "optimizer_name")}  # fmt: skip
    # the corpus crop mode (docs/paper.md §1.1); runs from before the mode was recorded used "square"
    meta["crop"] = ck.get("crop") or (ck.get("profile") or {}).get("crop") or "square"
    return model, tn, meta
