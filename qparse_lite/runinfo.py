"""Reproducibility helpers: one ``set_seed``, one ``get_device``, and the run record.

Every run of the kit writes :func:`run_record` beside its results: profile, seed, dataset version,
git commit, hardware, library versions and wall time.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["set_seed", "get_device", "DEVICES", "git_commit", "hardware", "run_record", "Stopwatch"]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


DEVICES = ("auto", "cpu", "cuda")
"""The ``--device`` choices of every subcommand (``get_device`` also takes ``mps`` and ``cuda:N``)."""


def get_device(prefer: str = "auto") -> str:
    """``"cuda"`` when present, else ``"mps"``, else ``"cpu"``; ``prefer`` forces one."""
    import torch

    if prefer and prefer != "auto":
        import re

        if not (prefer in DEVICES or prefer == "mps" or re.fullmatch(r"cuda:\d+", str(prefer))):
            from qparse_lite.errors import QparseError

            raise QparseError(f"device {prefer!r}: not a device. Fix: use one of {', '.join(DEVICES)} (or cuda:N)")
        if prefer.startswith("cuda") and not torch.cuda.is_available():
            from qparse_lite.errors import QparseError

            raise QparseError(f"device {prefer!r} asked for but CUDA is not available; use --device cpu")
        return prefer
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def git_commit(path: Path = PACKAGE_ROOT) -> str:
    """The git commit of the kit (``+dirty`` when the tree has changes), or ``"unknown"``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> dict[str, Any]:
    """CPU, core count, GPU (if any) and library versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    return info


def run_record(
    *, profile: str | None, seed: int | None, dataset: str | None = None,
    dataset_version: str | None = None, wall_time_s: float | None = None, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The record written beside every result (``run.json``)."""
    rec: dict[str, Any] = {
        "profile": profile,
        "seed": seed,
        "dataset": dataset,
        "dataset_version": dataset_version,
        "git_commit": git_commit(),
        "hardware": hardware(),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    rec.update(extra)
    return rec


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
