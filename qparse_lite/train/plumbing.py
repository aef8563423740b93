"""The training plumbing the kit's three loops share: schedule, log, checkpoint, resume, run record.

The M-CNN (:mod:`qparse_lite.train.loop`), the LR-ASPP baseline
(:func:`qparse_lite.baselines.parametric.train_parametric`) and Match R-CNN
(:func:`qparse_lite.match_rcnn.train.train`) differ in their model, data and step; around the step they do
the same five things, written once here:

* **schedule** — :class:`LRFactor`, the learning-rate factor of a step (``LambdaLR``): a linear warm-up,
  then a cosine decay, a constant rate or ×0.1 drops;
* **log** — :func:`write_log` / :func:`read_log_rows`: ``log.csv``, one row per epoch (or step), written
  atomically after each;
* **checkpoint** — :func:`save_checkpoint` (serialised in memory, written to a temporary file, read back
  and compared before it takes its final name; a full disk is reported as such and leaves the previous
  checkpoint intact) and :func:`load_checkpoint` (a truncated or corrupt file is named with the fix);
  :func:`rng_state` / :func:`set_rng_state` for an exact resume;
* **resume** — :func:`check_resume`: a run continues only with the settings it was started with (the
  differing fields are named), :func:`resume_hint` the line an interrupted run prints;
* **run record** — :func:`finish_run_record`: :func:`qparse_lite.runinfo.run_record` plus the wall time
  summed over resumed calls and :data:`DIFFERS_BY_DESIGN`, the fields two same-seed runs do not share.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import random
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "LRFactor", "write_log", "read_log_rows", "save_checkpoint", "load_checkpoint", "rng_state",
    "set_rng_state", "check_resume", "resume_hint", "finish_run_record", "DIFFERS_BY_DESIGN",
]  # fmt: skip

DECAYS = ("cosine", "constant", "steps")
"""The decays of :class:`LRFactor` after its warm-up."""


class LRFactor:
    """The learning-rate factor of step ``step`` (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    * warm-up: ``(step + 1) / ramp`` while ``step < warmup`` (``ramp`` defaults to ``warmup``: the factor
      reaches 1 at the last warm-up step; ``warmup + 1``: at the first step after it);
    * then ``decay``: ``cosine`` — ``floor + (1 − floor)·½(1 + cos πp)``, ``p = (step − warmup) /
      (total − warmup)`` clipped to 1; ``constant`` — 1; ``steps`` — ×0.1 at each fraction of ``drops``
      of ``total`` (the warm-up factor multiplies the drops).

    A callable object, not a closure, so the scheduler's ``state_dict`` records its settings.
    """

    def __init__(
        self, total: int, warmup: int, *, decay: str = "cosine", ramp: int | None = None, floor: float = 0.0,
        drops: Sequence[float] = (),
    ) -> None:  # fmt: skip
        if decay not in DECAYS:
            raise QparseError(f"unknown lr decay {decay!r}; choose one of {', '.join(DECAYS)}")
        self.total, self.warmup, self.floor = max(1, int(total)), max(0, int(warmup)), float(floor)
        self.ramp = self.warmup if ramp is None else int(ramp)
        self.decay, self.drops = decay, tuple(float(d) for d in drops)

    def __call__(self, step: int) -> float:
        if self.decay == "steps":
            warm = (step + 1) / self.ramp if step < self.warmup else 1.0
            return warm * 0.1 ** sum(step >= round(d * self.total) for d in self.drops)
        if step < self.warmup:
            return (step + 1) / self.ramp
        if self.decay == "constant":
            return 1.0
        p = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * p))


# -- log.csv ------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def write_log(path: str | Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as the CSV ``path`` atomically: a header of ``columns`` (default: the first row's keys;
    no rows and no columns: an empty file), one line per row, floats at full precision."""
    buf = io.StringIO()
    fields = list(columns) if columns is not None else list(rows[0]) if rows else []
    if fields:
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r[k]) for k in fields})
    return atomic_write_text(path, buf.getvalue())


def read_log_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``log.csv`` written by :func:`write_log`, as dicts of strings ([] when absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- checkpoints --------------------------------------------------------------------------------------


def _disk_full(e: BaseException | None) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def save_checkpoint(path: str | Path, state: dict[str, Any], *, resume_command: str | None = None) -> Path:
    """``torch.save(state)`` as ``path``, atomically and verified.

    The state is serialised in memory, written to a temporary file beside ``path``, flushed, read back and
    compared byte for byte; only then does it take its final name. Until then the previous checkpoint stays
    as it was, so a failed save loses at most the epoch in progress.

    Raises:
        QparseError: the disk is full (or a quota reached), or the bytes read back differ; the message names
            the folder, the space free and ``resume_command`` (how to continue once space is freed).
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
            with open(tmp, "rb") as f:
                back = f.read()
            if len(back) != len(data) or hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
                raise QparseError(
                    f"{path}: the checkpoint read back ({len(back)} bytes) differs from the one written "
                    f"({len(data)} bytes); the previous checkpoint is kept. Fix: check the disk of {path.parent}."
                )
    except (OSError, QparseError) as e:  # qparse_lite.io reports a full disk as a QparseError caused by the OSError
        if not _disk_full(e if isinstance(e, OSError) else e.__cause__):
            raise
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        then = f", then {resume_command}" if resume_command else ""
        raise QparseError(
            f"{path}: the disk is full ({free:,} bytes free in {path.parent}; the checkpoint needs "
            f"{len(data):,}); the previous checkpoint is kept. Fix: free space there{then}."
        ) from e
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, fix: str = "train again or restore the file"
) -> dict[str, Any]:
    """The dict a :func:`save_checkpoint` wrote to ``path``.

    Raises:
        QparseError: no such file, or a file torch cannot read (truncated by a crash or a full disk,
            corrupt, not a checkpoint); the message names the file and ``fix``.
    """
    path = Path(path)
    if not path.is_file():
        raise QparseError(f"{path}: no checkpoint. Fix: {fix}.")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a broken file
        raise QparseError(
            f"{path}: unreadable checkpoint ({path.stat().st_size:,} bytes; truncated or corrupt: "
            f"{type(e).__name__}: {str(e).split('. ')[0][:200]}). Fix: {fix}."
        ) from e
    if not isinstance(ck, dict):
        raise QparseError(f"{path}: not a checkpoint of this kit ({type(ck).__name__}). Fix: {fix}.")
    return ck


def rng_state() -> dict[str, Any]:
    """The RNG states a checkpoint stores: torch, NumPy, Python and (when available) every CUDA device."""
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore the states of :func:`rng_state` (CUDA only where it is available)."""
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# -- resume -------------------------------------------------------------------------------------------


def check_resume(
    path: str | Path, saved: dict[str, Any], now: dict[str, Any], *, ignore: Iterable[str] = (), fix: str = ""
) -> None:
    """Refuse to resume the checkpoint ``path`` with settings other than those it was started with.

    ``saved`` and ``now`` are flat dicts of settings (the checkpoint's and this call's); fields in
    ``ignore`` may differ (they do not change the numbers, e.g. the thread count).

    Raises:
        QparseError: naming every differing field with its two values, and ``fix``.
    """
    skip = set(ignore)
    diff = [k for k in dict.fromkeys([*saved, *now]) if k not in skip and saved.get(k) != now.get(k)]
    if diff:
        parts = "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in diff)
        raise QparseError(
            f"{path}: cannot resume with other settings ({parts}). Fix: "
            f"{fix or 'resume with the settings the run started with, or train into another --out'}."
        )


def resume_hint(out: str | Path, command: str = "the same command") -> str:
    """The line an interrupted training prints: what the run folder holds and how to continue it."""
    return (
        f"interrupted; {Path(out)} keeps the checkpoint of the last complete epoch (or step). Fix: continue "
        f"it exactly with {command} plus --resume (the same settings)."
    )


# -- run.json -----------------------------------------------------------------------------------------

DIFFERS_BY_DESIGN: dict[str, list[str]] = {
    "checkpoint.pt": ["train_s", "wall_time_s"],
    "log.csv": ["train_s", "seconds"],
    "run.json": [
        "git_commit", "hardware", "wall_time_s", "wall_time_total_s", "finished_at", "epoch_times_s", "train_s",
        "torch_threads", "torch_interop_threads", "threads", "resumed", "device",
    ],
}  # fmt: skip
"""Per file of a run folder, the fields two runs with the same seed and settings may not share: wall-clock
times and where/when/on what the run ran (a field at any depth: the LR-ASPP's log rows, also kept in its
checkpoint, carry ``train_s``). Every other field — weights, optimiser and RNG states, losses, metrics — is
equal on the CPU, and with these fields set equal the checkpoints are the same bytes
(tests/test_train_faults.py checks it for the M-CNN). Recorded in every ``run.json``."""


def finish_run_record(out: str | Path, rec: dict[str, Any], *, resumed: bool) -> dict[str, Any]:
    """Write ``rec`` (a :func:`~qparse_lite.runinfo.run_record`) as ``out/run.json`` with
    ``wall_time_total_s`` (this call's wall time plus that of the run's earlier calls when ``resumed``) and
    ``differs_by_design`` (:data:`DIFFERS_BY_DESIGN`); returns it."""
    prev = Path(out) / "run.json"
    if resumed and prev.is_file():
        try:
            old = json.loads(prev.read_text())
            rec["wall_time_total_s"] = round(
                float(old.get("wall_time_total_s", old.get("wall_time_s") or 0)) + rec["wall_time_s"], 3
            )
        except (ValueError, TypeError):
            pass
    rec.setdefault("wall_time_total_s", rec["wall_time_s"])
    rec["differs_by_design"] = DIFFERS_BY_DESIGN
    atomic_write_json(prev, rec)
    return rec
