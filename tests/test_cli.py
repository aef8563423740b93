"""The ``qparse`` command line has one vocabulary (qparse_lite.commands.common): every subparser is walked.

One spelling per concept (``--data-root``, never a visible ``--root``), choices equal to the kit's
registries, ``--device`` validated everywhere with the same choices, ``--no-progress`` where a bar is
drawn, and defaults taken from the profile.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from qparse_lite.cli import build_parser, main
from qparse_lite.data.base import SPLITS
from qparse_lite.data.datasets import DATASETS
from qparse_lite.evaluation.evaluate import METHODS
from qparse_lite.labels import LABEL_SETS
from qparse_lite.model.mcnn import VARIANTS
from qparse_lite.profiles import PROFILES
from qparse_lite.retrieval.features import EXTRACTORS
from qparse_lite.retrieval.imagenet import POOLINGS
from qparse_lite.runinfo import DEVICES
from qparse_lite.train.optim import OPTIMIZERS
from qparse_lite.train.pairs import SAMPLERS

#: flag → the registry its choices must equal
REGISTRIES = {
    "--profile": PROFILES, "--variant": VARIANTS, "--labels": LABEL_SETS, "--features": EXTRACTORS,
    "--device": DEVICES, "--split": SPLITS, "--database-split": SPLITS, "--method": METHODS,
    "--optimizer": OPTIMIZERS, "--sampler": SAMPLERS, "--dataset": DATASETS, "--pooling": POOLINGS,
}  # fmt: skip

#: (subcommand, flag) not in the vocabulary yet: commands/parse.py is owned by another engineer right now, who
#: adopts qparse_lite.commands.common next. Remove an entry once it is (test_pending_is_still_pending says so).
PENDING: set[tuple[str, str]] = set()

#: subcommands that draw progress bars (tqdm) and so must offer --no-progress
DRAW_BARS = {"data download", "data verify", "prepare", "score", "knn", "train", "evaluate", "baseline train", "baseline finetune", "photos ground-truth"}


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """``"data download"`` → its parser, for every (nested) subcommand."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                out[full] = sub
                out.update(_subparsers(sub, full))
    return out


SUBS = _subparsers(build_parser())


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in p._actions for o in a.option_strings}


def test_every_subcommand_is_walked():
    assert {"data download", "data verify", "data splits", "prepare", "knn", "train", "evaluate", "score",
            "reproduce", "parse"} <= set(SUBS)  # fmt: skip


@pytest.mark.parametrize("name", sorted(SUBS))
def test_one_spelling_per_concept(name):
    p = SUBS[name]
    opts = _options(p)
    for flag, action in opts.items():
        visible = action.help is not argparse.SUPPRESS
        if (name, flag) in PENDING:
            continue
        # a dataset root is --data-root; --root only as the hidden deprecated alias of it
        if flag == "--root":
            assert not visible and action.dest == "data_root", f"qparse {name}: visible {flag}"
        if "root" in flag and visible:
            assert flag == "--data-root", f"qparse {name}: {flag} (the vocabulary says --data-root)"
        for bad in ("--no_progress", "--noprogress", "--quiet", "--progress"):
            assert flag != bad, f"qparse {name}: {flag} (the vocabulary says --no-progress)"
        if flag in REGISTRIES and action.choices is not None and name != "data download" and name != "data verify":
            assert set(action.choices) == set(REGISTRIES[flag]), f"qparse {name} {flag}: {action.choices}"
        if flag == "--device":
            assert action.choices is not None and set(action.choices) == set(DEVICES), f"qparse {name}"
            assert action.default == "auto"
    for flag in ("--profile", "--variant", "--labels", "--features", "--device", "--split", "--dataset"):
        if flag in opts and (name, flag) not in PENDING:
            assert opts[flag].choices is not None, f"qparse {name} {flag}: not validated"


def test_download_takes_dataset_like_every_subcommand(capsys):
    for action in ("download", "verify"):
        args = build_parser().parse_args(["data", action, "--dataset", "ccp", "--data-root", "R"])
        assert args.dataset == "ccp" and args.legacy_dataset is None
        assert capsys.readouterr().err == ""
        with pytest.raises(SystemExit):  # the choices are the downloadable datasets
            build_parser().parse_args(["data", action, "--dataset", "synthetic", "--data-root", "R"])
        assert "invalid choice: 'synthetic'" in capsys.readouterr().err
    # the old positional spelling still runs, with a warning naming --dataset; none at all is a clear error
    from qparse_lite.commands.data import _resolve_dataset

    old = build_parser().parse_args(["data", "verify", "ccp", "--data-root", "R"])
    assert _resolve_dataset(old) == "ccp" and "use --dataset ccp" in capsys.readouterr().err
    assert main(["data", "verify", "--data-root", "R"]) == 2
    assert "add --dataset ccp|atr" in capsys.readouterr().err


def test_download_targets_are_in_the_dataset_registry():
    for name in ("data download", "data verify"):
        pos = [a for a in SUBS[name]._actions if a.dest == "dataset"][0]
        assert set(pos.choices) <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(DRAW_BARS))
def test_no_progress_where_a_bar_is_drawn(name):
    action = _options(SUBS[name]).get("--no-progress")
    assert action is not None and action.default is False and action.const is True, name


def test_root_is_a_deprecated_alias(capsys):
    args = build_parser().parse_args(["data", "splits", "--dataset", "synthetic", "--root", "R", "--out", "o"])
    assert args.data_root == "R"
    assert "--root is deprecated; use --data-root" in capsys.readouterr().err
    args = build_parser().parse_args(["data", "splits", "--dataset", "synthetic", "--data-root", "R", "--out", "o"])
    assert args.data_root == "R" and capsys.readouterr().err == ""
    with pytest.raises(SystemExit):  # required: one of them
        build_parser().parse_args(["data", "verify", "ccp"])
    assert "--data-root" in capsys.readouterr().err
    assert "--root" not in SUBS["prepare"].format_help().replace("--data-root", "")


def test_devices_are_validated(capsys):
    for argv in (["train", "--out", "x"], ["knn", "--corpus", "c", "--out", "o"],
                 ["evaluate", "--corpus", "c", "--out", "o"], ["reproduce"]):  # fmt: skip
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--device", "gpu"])
        assert "invalid choice: 'gpu'" in capsys.readouterr().err


class _Stop(Exception):
    pass


def test_defaults_come_from_the_profile(monkeypatch, tmp_path):
    import qparse_lite.data.datasets as datasets

    seen = {}

    def fake_get_dataset(name, root=None, **kw):
        seen.update(kw)
        raise _Stop

    monkeypatch.setattr(datasets, "get_dataset", fake_get_dataset)
    for argv in (["prepare", "--dataset", "synthetic", "--size", "24", "--out", str(tmp_path / "c")],
                 ["data", "splits", "--dataset", "synthetic", "--out", str(tmp_path / "s")]):  # fmt: skip
        seen.clear()
        with pytest.raises(_Stop):
            main(argv)
        assert seen["n"] == PROFILES["quick"].n_images == 1200, argv
    # --k: the corpus's profile's k_test
    import qparse_lite.commands.knn as knn_cmd
    import qparse_lite.retrieval.search as retrieval

    ks = []

    def fake_knn(corpus, split, k, *a, **kw):
        ks.append(k)
        raise _Stop

    monkeypatch.setattr(knn_cmd, "_load_corpus", lambda path: SimpleNamespace(meta={"dataset": "ccp"}))
    monkeypatch.setattr(retrieval, "corpus_knn", fake_knn)
    with pytest.raises(_Stop):
        main(["knn", "--corpus", "c", "--out", str(tmp_path / "k.npz"), "--features", "oracle"])
    assert ks == [PROFILES["ccp"].k_test]
    args = build_parser().parse_args(["evaluate", "--corpus", "c", "--out", "o"])
    assert args.k is None  # resolved from the corpus's profile in _run


def test_train_overrides_go_through_get_profile(monkeypatch):
    import qparse_lite.train.loop as train_mod

    got = {}

    def fake_train(profile, variant, out, **kw):
        got.update(profile=profile, variant=variant, **kw)
        return out

    monkeypatch.setattr(train_mod, "train", fake_train)
    assert main(["train", "--profile", "ccp", "--variant", "cross54", "--out", "x", "--epochs", "3",
                 "--sampler", "stratified", "--set", "pairs_per_epoch=64", "--no-progress"]) == 0  # fmt: skip
    prof = got["profile"]
    assert prof.name == "ccp" and prof.epochs == 3 and prof.sampler == "stratified" and prof.pairs_per_epoch == 64
    assert prof.optimizer == PROFILES["ccp"].optimizer  # not given: the profile's
    assert got["variant"] == "cross54" and got["progress"] is False


def test_pending_is_still_pending():
    """An entry of PENDING whose flag now follows the vocabulary (or is gone) must be removed."""
    for name, flag in PENDING:
        action = _options(SUBS[name]).get(flag)
        assert action is not None and action.choices is None, f"qparse {name} {flag}: remove it from PENDING"
