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
=================  ===============================================================================

This module has no ``register``: :mod:`qparse_lite.cli` skips it (:data:`qparse_lite.cli.HELPER_MODULES`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = [
    "add_profile", "add_variant", "add_dataset", "add_data_root", "add_labels", "add_features", "add_split",
    "add_device", "add_progress", "progress", "profile_default",
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
