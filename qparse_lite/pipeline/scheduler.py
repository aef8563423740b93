"""Training several models side by side: the process pool behind the notebooks' ``Workspace.train_many``.

:class:`qparse_lite.pipeline.workspace.Workspace` decides *what* to train (which run folders are missing or
incomplete) and prepares the corpus and KNN tables once; this module decides *how*: :func:`parallel_jobs`
trainings at a time (:func:`run_side_by_side`), each in a spawned process running :func:`mcnn_job` or
:func:`parametric_job` on the files the workspace made, or in this process when one at a time. Every
training is seeded on its own, so side by side changes the wall time, not the models.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.profiles import Profile

__all__ = ["parallel_jobs", "mcnn_job", "parametric_job", "run_side_by_side"]


def parallel_jobs(profile: Profile, device: str = "cpu", n: int | None = None) -> int:
    """How many trainings :func:`run_side_by_side` runs at once.

    On the CPU a training of the quick/ccp profiles uses ``profile.threads`` torch threads (1: grouped
    batches of small convolutions gain little from a second thread), so the free cores train that many
    models side by side: ``cores // threads`` (2 on the 2-core machine the ccp profile is sized for). On
    a GPU, or with torch's default threads (``threads = 0``, the GPU budget), one at a time. ``n`` caps it
    (the number of models left to train). Every training is seeded on its own, so running them side by
    side changes their wall time, not their results.
    """
    if device.startswith("cuda") or profile.threads <= 0:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, cores // profile.threads)
    return max(1, min(jobs, n)) if n is not None else jobs


def _corpus(corpus: Any) -> Any:
    from qparse_lite.data.prepare import Corpus

    return Corpus.load(corpus) if isinstance(corpus, str | Path) else corpus


def mcnn_job(
    run: str | Path, profile: Profile, variant: str, corpus: Any, knn_train: np.ndarray, knn_val: np.ndarray,
    device: str, holdout_label: str | None,
) -> str:  # fmt: skip
    """Train (or resume) one M-CNN into ``run`` (:func:`qparse_lite.train.loop.train`); ``corpus`` is a
    prepared Corpus or its folder (a worker process loads it). Module level, so a process pool can pickle it."""
    from qparse_lite.train.loop import train

    return str(train(profile, variant, run, resume=True, device=device, corpus=_corpus(corpus), knn=knn_train,
                     val_knn=knn_val, holdout_label=holdout_label, progress=False))  # fmt: skip


def parametric_job(corpus: Any, run: str | Path, config: Any, device: str, profile: str) -> dict[str, Any]:
    """Train (or resume) one parametric baseline into ``run``
    (:func:`qparse_lite.baselines.parametric.train_parametric`); ``corpus`` as in :func:`mcnn_job`."""
    from qparse_lite.baselines.parametric import train_parametric

    return train_parametric(_corpus(corpus), run, config, device=device, profile=profile, resume=True,
                            progress=False)  # fmt: skip


def run_side_by_side(
    tasks: dict[str, tuple[Callable[..., Any], tuple, tuple | None]], jobs: int, log: Callable[[str], Any] = print
) -> None:
    """Run ``tasks`` ``{name: (job, args for a worker process, args in this process)}``, ``jobs`` at a time.

    ``jobs`` 1: one after the other in this process (with the in-process arguments: the loaded corpus, no
    second load; the worker arguments where those are None); more: a pool of ``jobs`` spawned processes (with
    the worker arguments: file paths). A
    failed training raises here with its own message. ``log`` gets a line as each ends.
    """
    t0 = time.perf_counter()
    if jobs == 1:
        for name, (fn, args, here) in tasks.items():
            fn(*(args if here is None else here))
            log(f"{name:>11}: done ({time.perf_counter() - t0:.0f} s since the start)")
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args): name for name, (fn, args, _) in tasks.items()}
        for fut in as_completed(futures):
            fut.result()  # a failed training raises here, with its own message
            log(f"{futures[fut]:>11}: done ({time.perf_counter() - t0:.0f} s since the start)")
