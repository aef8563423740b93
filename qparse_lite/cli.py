"""The ``qparse`` command line.

Each subcommand lives in its own module under :mod:`qparse_lite.commands` and exposes
``register(subparsers)``; that function adds its parser and sets ``func`` (called with the parsed
arguments, returns an exit status). Modules are discovered in name order, so adding a command is
adding a file. A :class:`~qparse_lite.errors.QparseError` is printed as one line and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from qparse_lite import __version__, commands
from qparse_lite.errors import QparseError

__all__ = ["build_parser", "main", "HELPER_MODULES"]

HELPER_MODULES = ("common",)
"""Modules of :mod:`qparse_lite.commands` that are shared helpers, not subcommands (no ``register``)."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="qparse",
        description="qparse-lite: a reproducible companion to 'Matching-CNN Meets KNN: "
        "Quasi-Parametric Human Parsing' (Liu et al., CVPR 2015).",
    )
    parser.add_argument("--version", action="version", version=f"qparse-lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_") or mod.name in HELPER_MODULES:
            continue
        importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qparse`` console script and ``python -m qparse_lite``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QparseError as e:
        print(f"qparse {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qparse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
