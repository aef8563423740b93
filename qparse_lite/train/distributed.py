"""Distributed training helpers (``torchrun``; the role of torchvision ``references/*/utils.py``).

Under ``torchrun --nproc_per_node N`` every process reads its rank from the environment
(:func:`dist_info`), :func:`setup` picks its device (``cuda:LOCAL_RANK`` on CUDA) and starts the process
group (NCCL on CUDA, Gloo on CPU), and :func:`wrap` puts the model in DistributedDataParallel. Rank 0
writes the files and draws the progress bars (:attr:`DistInfo.is_main`); the others wait at
:func:`barrier`. Outside torchrun every helper is a no-op and ``DistInfo()`` is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from qparse_lite.runinfo import get_device

__all__ = ["DistInfo", "dist_info", "setup", "teardown", "barrier", "all_mean", "all_gather", "wrap", "unwrap"]


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


def setup(device: str, dist: DistInfo) -> torch.device:
    """The training device (``auto`` | ``cpu`` | ``cuda``; ``cuda:LOCAL_RANK`` under torchrun) and, under
    torchrun, the process group (NCCL on CUDA, Gloo on CPU) when not yet started."""
    name = get_device(device)
    if dist.enabled:
        if name.startswith("cuda"):
            name = f"cuda:{dist.local_rank}"
            torch.cuda.set_device(dist.local_rank)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if name.startswith("cuda") else "gloo")
    return torch.device(name)


def teardown(dist: DistInfo) -> None:
    """Destroy the process group :func:`setup` started (no-op outside torchrun)."""
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(dist: DistInfo) -> None:
    """Wait for every rank (no-op outside torchrun)."""
    if dist.enabled:
        torch.distributed.barrier()


def all_mean(x: Tensor, dist: DistInfo) -> Tensor:
    """The mean of ``x`` over the ranks (``x`` itself outside torchrun)."""
    if dist.enabled:
        x = x.clone()
        torch.distributed.all_reduce(x)
        x /= dist.world_size
    return x


def all_gather(obj: Any, dist: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` outside torchrun); e.g. every rank's sampler state."""
    if not dist.enabled:
        return [obj]
    objs: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(objs, obj)
    return objs


def wrap(model: nn.Module, dist: DistInfo, device: torch.device, compile: bool = False) -> nn.Module:
    """``model`` as trained: in ``torch.compile`` when ``compile``, in DistributedDataParallel under torchrun."""
    net: nn.Module = model
    if compile:
        net = torch.compile(net)  # type: ignore[assignment]
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return net


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or ``torch.compile`` wrappers."""
    m = getattr(model, "module", model)  # DDP
    return getattr(m, "_orig_mod", m)  # torch.compile
