"""Optimisers and learning-rate schedules of the M-CNN training (paper Sec. 4.1; docs/paper.md §1.9).

``sgd`` is the paper's: SGD, momentum 0.9, weight decay 0.0005, the same learning rate for all layers
(5e-4 in the atr profile and the ccp GPU budget), divided by 10 when the validation loss stops decreasing (``ReduceLROnPlateau``,
factor 0.1, patience :data:`PLATEAU_PATIENCE` epochs). ``adamw`` is the modern option: AdamW (weight decay
:data:`ADAMW_WEIGHT_DECAY`) with a linear warm-up over the first :data:`WARMUP_FRACTION` of the steps and a
cosine decay to 1 % of the learning rate (or a constant rate after the warm-up: the quick profile), which
reaches a useful model in a few CPU epochs where plain SGD at 5e-4 barely moves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qparse_lite.errors import QparseError
from qparse_lite.train.plumbing import LRFactor

__all__ = [
    "SGD_MOMENTUM", "SGD_WEIGHT_DECAY", "PLATEAU_PATIENCE", "ADAMW_WEIGHT_DECAY", "WARMUP_FRACTION", "SCHEDULES",
    "OPTIMIZERS", "build_optimizer",
]  # fmt: skip

SGD_MOMENTUM = 0.9  # paper
SGD_WEIGHT_DECAY = 5e-4  # paper
PLATEAU_PATIENCE = 2  # epochs without a better validation loss before lr ÷ 10
ADAMW_WEIGHT_DECAY = 1e-2
WARMUP_FRACTION = 0.03


OPTIMIZERS = ("sgd", "adamw")
"""The ``Profile.optimizer`` names: ``sgd`` (the paper's) and ``adamw``."""

SCHEDULES = ("auto", "cosine", "plateau", "constant")
"""The ``Profile.schedule`` names."""


def build_optimizer(
    name: str, model: nn.Module, lr: float, total_steps: int, schedule: str = "auto",
    warmup: float = WARMUP_FRACTION,
) -> tuple[Any, Any, bool]:  # fmt: skip
    """(optimizer, scheduler, does the scheduler step per batch?) for ``name`` ``sgd`` | ``adamw``.

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
        raise QparseError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)} (sgd: the paper's)")
    if schedule not in SCHEDULES:
        raise QparseError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule == "auto":
        schedule = "plateau" if name == "sgd" else "cosine"
    if schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=0.1, patience=PLATEAU_PATIENCE
        )
        return opt, sched, False
    n_warm = int(warmup * total_steps)  # the ramp (step + 1)/(n_warm + 1) reaches 1 where the decay starts
    fn = LRFactor(total_steps, n_warm, ramp=n_warm + 1, decay=schedule, floor=0.01 if schedule == "cosine" else 0.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, fn), True
