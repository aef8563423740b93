"""The shared vocabulary of the ``qparse`` subcommands: one helper per concept, one spelling per flag.

Every subcommand adds its common arguments with these helpers, so a concept has one spelling, one set of
choices (taken from the kit's registries, never a hand-written list) and one default (taken from the
profile). ``tests/test_cli.py`` walks every subparser and checks it.

=================  ===============================================================================
``--profile``      :func:`add_profile`: choices :data:`qparse_lite.profiles.PROFILES`
``--variant``      :func:`add_variant`: choices :data:`qparse_lite.model.mcnn.VARIANTS`
``--dataset``      :func:`add_dataset`: choices :data:`qparse_lite.data.datasets.DATASETS`
``--data-root``    :func:`add_data_root`: a dataset root (``--root`` is a hidden, deprecated alias)
``--labels``       :func:`add_labels`: choices :data:`qparse_lite.labels.LABEL_SETS`
``--features``     :func:`add_features`: choices :data:`qparse_lite.retrieval.features.EXTRACTORS`
``--split``        :func:`add_split`: choices :data:`qparse_lite.data.base.SPLITS`
``--device``       :func:`add_device`: choices :data:`qparse_lite.runinfo.DEVICES`
``--no-progress``  :func:`add_progress` (and :func:`progress` to read it)
``--threads``      :func:`add_threads` (and :func:`apply_threads` to set it): CPU threads, 0 = torch's choice
=================  ===============================================================================

Arguments are checked when they are parsed, before any work starts (argparse prints the flag and the
reason and exits with 2): numbers with the types :func:`positive_int`, :func:`nonneg_int`,
:func:`unit_float`, :func:`nonneg_float`; output paths with :func:`out_dir` / :func:`out_file` (an existing
file where a folder is wanted, a folder where a file is wanted, or a place that cannot be written).

This module has no ``register``: :mod:`qparse_lite.cli` skips it (:data:`qparse_lite.cli.HELPER_MODULES`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "add_profile", "add_variant", "add_dataset", "add_data_root", "add_labels", "add_features", "add_split",
    "add_device", "add_progress", "progress", "profile_default", "add_threads", "apply_threads", "DEFAULT_THREADS",
    "positive_int", "nonneg_int", "unit_float", "nonneg_float", "out_dir", "out_file",
]  # fmt: skip


def profile_default(field: str, profile: str = "quick") -> Any:
    """A field of a named profile: the one source of the CLI's defaults (``--n``, ``--k``, ...)."""
    from qparse_lite.profiles import PROFILES

    return getattr(PROFILES[profile], field)


def add_profile(p: argparse.ArgumentParser, default: str | None = "quick", help: str | None = None) -> None:
    """``--profile`` with the choices of :data:`~qparse_lite.profiles.PROFILES`."""
    from qparse_lite.profiles import PROFILES

    p.add_argument("--profile", default=default, choices=list(PROFILES),
                   help=help or "experiment scale (quick: synthetic data, a few CPU minutes, no download)")  # fmt: skip


def add_variant(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--variant`` with the choices of :data:`~qparse_lite.model.mcnn.VARIANTS` (default None: the profile's)."""
    from qparse_lite.model.mcnn import VARIANTS

    p.add_argument("--variant", default=None, choices=list(VARIANTS),
                   help=help or f"M-CNN variant (default: the profile's, {profile_default('variant')})")  # fmt: skip


def add_dataset(
    p: argparse.ArgumentParser, required: bool = True, names: tuple[str, ...] | None = None, help: str | None = None
) -> None:
    """``--dataset`` with the choices of :data:`~qparse_lite.data.datasets.DATASETS` (or the subset ``names``)."""
    from qparse_lite.data.datasets import DATASETS

    choices = list(names or DATASETS)
    bad = set(choices) - set(DATASETS)
    if bad:
        raise ValueError(f"not in the datasets registry: {sorted(bad)}")
    p.add_argument("--dataset", required=required, choices=choices, help=help or "which dataset")


class _DeprecatedAlias(argparse.Action):
    """Store the value like the new flag, with one warning on stderr naming the new spelling."""

    def __init__(self, *args: Any, new: str = "", **kw: Any) -> None:
        self.new = new
        super().__init__(*args, **kw)

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        print(f"qparse: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(ns, self.dest, values)


def add_data_root(p: argparse.ArgumentParser, required: bool = False, help: str | None = None) -> None:
    """``--data-root DIR`` (dest ``data_root``): a dataset's folder. ``--root`` still parses (hidden,
    deprecated, with a warning)."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--data-root", dest="data_root", default=None, metavar="DIR",
                   help=help or "dataset folder (ccp, atr; read only)")  # fmt: skip
    g.add_argument("--root", dest="data_root", action=_DeprecatedAlias, new="--data-root", help=argparse.SUPPRESS)


def add_labels(
    p: argparse.ArgumentParser, required: bool = False, default: str | None = None, help: str | None = None
) -> None:
    """``--labels`` with the choices of :data:`~qparse_lite.labels.LABEL_SETS`."""
    from qparse_lite.labels import LABEL_SETS

    p.add_argument("--labels", required=required, default=default, choices=list(LABEL_SETS),
                   help=help or "label set: " + " | ".join(LABEL_SETS))  # fmt: skip


def add_features(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--features`` with the choices of :data:`~qparse_lite.retrieval.features.EXTRACTORS` (default None: the
    profile's)."""
    from qparse_lite.retrieval.features import EXTRACTORS

    p.add_argument("--features", default=None, choices=list(EXTRACTORS),
                   help=help or f"retrieval features (default: the profile's, {profile_default('features')})")  # fmt: skip


def add_split(p: argparse.ArgumentParser, flag: str = "--split", default: str = "test", help: str | None = None) -> None:
    """A split flag with the choices of :data:`~qparse_lite.data.base.SPLITS`."""
    from qparse_lite.data.base import SPLITS

    p.add_argument(flag, default=default, choices=list(SPLITS), help=help or f"split (default {default})")


def add_device(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--device`` with the choices of :data:`~qparse_lite.runinfo.DEVICES` (default ``auto``)."""
    from qparse_lite.runinfo import DEVICES

    p.add_argument("--device", default="auto", choices=list(DEVICES),
                   help=help or "auto (CUDA when present) | cpu | cuda (default auto)")  # fmt: skip


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (read it with :func:`progress`)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def progress(args: argparse.Namespace) -> bool | None:
    """The ``progress`` argument of the kit's functions: False with ``--no-progress``, else None (auto)."""
    return False if getattr(args, "no_progress", False) else None


# -- threads ---------------------------------------------------------------------------------------------

DEFAULT_THREADS = 1
"""The CPU threads of ``parse``, ``evaluate``, ``knn`` and ``prepare`` unless ``--threads`` says otherwise: 1.
Their work is many small convolutions, resizes and searches, which gain little from a second thread and lose
an order of magnitude when the threads outnumber the free cores (benchmarks/bench_threads.py; results in
benchmarks/results/bench_threads_*.md). The training's default is the profile's ``threads`` (also 1 on the
CPU profiles)."""


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads of torch, OpenCV and faiss (default :data:`DEFAULT_THREADS`; 0 = the
    libraries' own choice, one per core). Set them with :func:`apply_threads`."""
    p.add_argument("--threads", type=nonneg_int, default=DEFAULT_THREADS, metavar="N",
                   help=f"CPU threads (default {DEFAULT_THREADS}: holds up on a shared machine; 0 = one per core, "
                        "torch's default)")  # fmt: skip


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's, OpenCV's and (when installed) faiss's CPU threads from ``args.threads``; returns the count
    torch uses."""
    import torch

    n = int(getattr(args, "threads", DEFAULT_THREADS) or 0)
    if n > 0:
        torch.set_num_threads(n)
        try:
            import cv2

            cv2.setNumThreads(n)
        except ImportError:  # pragma: no cover - opencv is a dependency
            pass
        try:
            import faiss

            faiss.omp_set_num_threads(n)
        except (ImportError, AttributeError):  # pragma: no cover - faiss is optional for some commands
            pass
    return torch.get_num_threads()


# -- argument types: checked when parsed, before any work ------------------------------------------------


def _number(text: str, kind: type, what: str, ok: Any) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value != value or not ok(value):  # NaN is never valid
        raise argparse.ArgumentTypeError(f"{text} is not {what}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1 (K, --limit, counts)."""
    return _number(text, int, "a whole number ≥ 1", lambda v: v >= 1)


def nonneg_int(text: str) -> int:
    """An integer ≥ 0 (--threads with 0 = automatic, --n-segments with 0 = none)."""
    return _number(text, int, "a whole number ≥ 0", lambda v: v >= 0)


def unit_float(text: str) -> float:
    """A number in [0, 1]: the thresholds ξ1 (on ĉ_l) and ξ2 (on p_fg), docs/paper.md §1.8."""
    return _number(text, float, "a number between 0 and 1", lambda v: 0.0 <= v <= 1.0)


def nonneg_float(text: str) -> float:
    """A finite number ≥ 0 (--displacement-scale, --margin)."""
    return _number(text, float, "a finite number ≥ 0", lambda v: 0.0 <= v < float("inf"))


def _writable_dir(folder: Path) -> str | None:
    """Why nothing can be created in ``folder`` (None: it can). Probes with a temporary file, so a read-only
    mount, permissions and root are all judged by the file system itself."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".qparse-probe-", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(tmp)
    return None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def out_dir(text: str) -> Path:
    """An output folder: refused when it is an existing file, or when it (or the folder it would be created
    in) cannot be written."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file, not a folder. Fix: pass a folder")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {base} is a file, so no folder can be made there")
    why = _writable_dir(base)
    if why:
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {base} ({why}). Fix: pass a writable folder")
    return path


def out_file(text: str) -> Path:
    """An output file: refused when it is an existing folder, or when its folder cannot be written."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing folder, not a file. Fix: pass a file name")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {base} is a file, so no folder can be made there")
    why = _writable_dir(base)
    if why:
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {base} ({why}). Fix: pass a writable place")
    return path
