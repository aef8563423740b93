"""Training faults a user meets (issue 33): bad settings, a changed resume, a broken checkpoint, a full disk,
an interrupt, an incomplete run, and what two same-seed runs share (qparse_lite.train.plumbing)."""

from __future__ import annotations

import errno
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from qparse_lite.cli import main
from qparse_lite.errors import QparseError
from qparse_lite.train.loop import train
from qparse_lite.train.plumbing import DIFFERS_BY_DESIGN, load_checkpoint, save_checkpoint

# the settings of the conftest tiny_run (quick profile, one short epoch on a 48 px corpus)
TINY = {"epochs": 1, "pairs_per_epoch": 256, "batch_size": 32, "val_pairs": 64, "k_train": 4, "width": 0.25}
RESULTS = ("checkpoint.pt", "log.csv", "run.json")


def _sets(**kw: object) -> list[str]:
    return [a for k, v in {**TINY, **kw}.items() for a in ("--set", f"{k}={v}")]


def _fresh(tiny_run, dest: Path, keep_results: bool = False) -> Path:
    """A copy of the tiny run's folder: its KNN tables and features (so nothing is recomputed), with or
    without its checkpoint, log and run.json."""
    _, run = tiny_run
    shutil.copytree(run, dest)
    if not keep_results:
        for name in RESULTS:
            (dest / name).unlink()
    return dest


@pytest.mark.parametrize(
    "setting, message",
    [
        ("epochs=0", "epochs = 0 must be ≥ 1"),
        ("pairs_per_epoch=0", "pairs_per_epoch = 0 must be ≥ 1"),
        ("epochs=abc", "epochs = 'abc' must be an integer"),
        ("lr=-1", "lr = -1 must be > 0"),
        ("xi1=1.5", "xi1 = 1.5 must be within [0, 1]"),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, capsys, setting, message):
    out = tmp_path / "run"
    assert main(["train", "--profile", "quick", "--out", str(out), "--set", setting, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Fix:" in err and "Traceback" not in err
    assert not out.exists()  # nothing prepared, nothing claimed as trained


def test_resume_with_another_seed_or_setting_is_refused_naming_the_fields(tiny_run, tmp_path, capsys):
    corpus, _ = tiny_run
    run = _fresh(tiny_run, tmp_path / "run", keep_results=True)
    before = {n: (run / n).read_bytes() for n in RESULTS}
    with pytest.raises(QparseError, match=r"cannot resume with other settings \(seed: 0 in the checkpoint, 1 now\)"):
        train("quick", "mcnn", run, resume=True, corpus=corpus, progress=False, **{**TINY, "seed": 1})
    with pytest.raises(QparseError, match=r"lr: 0\.003 in the checkpoint, 0\.001 now; val_pairs: 64 in the "
                                          r"checkpoint, 32 now\)"):  # fmt: skip
        train("quick", "mcnn", run, resume=True, corpus=corpus, progress=False, **{**TINY, "lr": 1e-3, "val_pairs": 32})
    # the command line: the same refusal, before any work; the run folder is untouched
    argv = ["train", "--profile", "quick", "--out", str(run), "--corpus", str(corpus.path), "--resume", "--seed", "1",
            "--no-progress", *_sets()]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "seed: 0 in the checkpoint, 1 now" in err and "Fix:" in err
    assert {n: (run / n).read_bytes() for n in RESULTS} == before
    # threads do not change the numbers: a resume with other threads is accepted (the run is complete)
    train("quick", "mcnn", run, resume=True, corpus=corpus, progress=False, **{**TINY, "threads": 2})


def test_truncated_checkpoint_under_resume_names_the_file_and_the_fix(tiny_run, tmp_path, capsys):
    corpus, _ = tiny_run
    run = _fresh(tiny_run, tmp_path / "run", keep_results=True)
    ck = run / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    argv = ["train", "--profile", "quick", "--out", str(run), "--corpus", str(corpus.path), "--resume",
            "--no-progress", *_sets()]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{ck}: unreadable checkpoint" in err and "truncated or corrupt" in err
    assert f"Fix: delete {ck} and train again without --resume" in err and "Traceback" not in err


def _state(mb: float) -> dict:
    return {"model": {"w": torch.arange(int(mb * 2**18), dtype=torch.float32)}, "epoch": 1}


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_while_saving_a_checkpoint_says_so_and_keeps_the_previous(tmp_path, monkeypatch):
    import qparse_lite.io as qio

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(0.01))
    good = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(qio.os, "fsync", full)
    with pytest.raises(QparseError, match=r"the disk is full .* the previous checkpoint is kept\. Fix: free space"):
        save_checkpoint(path, _state(0.5), resume_command="rerun it with --resume")
    assert path.read_bytes() == good and _no_temp_files(tmp_path)
    assert load_checkpoint(path)["epoch"] == 1


def test_full_disk_in_training_is_a_message_not_a_traceback(tiny_run, tmp_path, monkeypatch, capsys):
    import qparse_lite.io as qio

    corpus, _ = tiny_run
    run = _fresh(tiny_run, tmp_path / "run")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(qio.os, "fsync", full)
    argv = ["train", "--profile", "quick", "--out", str(run), "--corpus", str(corpus.path), "--no-progress", *_sets()]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run / 'checkpoint.pt'}: the disk is full" in err and "--resume" in err
    assert not (run / "checkpoint.pt").exists() and _no_temp_files(run)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 300 KiB tmpfs (needs root and mount); skipped where the machine does not allow it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the full-disk case is covered by the monkeypatched ENOSPC tests")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}): the full-disk case is "
                    "covered by the monkeypatched ENOSPC tests")  # fmt: skip
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_full_disk_on_a_real_small_filesystem(small_tmpfs):
    path = small_tmpfs / "checkpoint.pt"
    save_checkpoint(path, _state(0.05))  # 50 KiB of weights fit
    good = path.read_bytes()
    with pytest.raises(QparseError, match=r"the disk is full \([\d,]+ bytes free in .*; the checkpoint needs [\d,]+\)"):
        save_checkpoint(path, _state(1.0))  # 1 MiB does not
    assert path.read_bytes() == good and _no_temp_files(small_tmpfs)


def test_interrupt_mentions_resume(tiny_run, tmp_path, monkeypatch, capsys):
    import qparse_lite.train.loop as loop

    corpus, _ = tiny_run
    run = _fresh(tiny_run, tmp_path / "run")

    def ctrl_c(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_one_epoch", ctrl_c)
    argv = ["train", "--profile", "quick", "--out", str(run), "--corpus", str(corpus.path), "--no-progress", *_sets()]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and str(run) in err


def test_an_incomplete_run_is_evaluated_with_a_warning(tiny_run, tmp_path):
    from qparse_lite.parse.parser import MCNNParser

    corpus, _ = tiny_run
    run = _fresh(tiny_run, tmp_path / "run")
    train("quick", "mcnn", run, corpus=corpus, progress=False, stop_after=1, **{**TINY, "epochs": 3})
    with pytest.warns(UserWarning, match=r"an incomplete run, trained 1 of its 3 epochs.*--resume"):
        parser = MCNNParser.from_run(run, corpus)
    assert parser.meta["epoch"] == 1 and parser.profile.epochs == 3


def test_two_same_seed_runs_differ_only_in_the_fields_the_record_names(tiny_run, tmp_path):
    corpus, _ = tiny_run
    runs = [_fresh(tiny_run, tmp_path / name) for name in ("a", "b")]
    for run in runs:
        train("quick", "mcnn", run, corpus=corpus, progress=False, **TINY)
    a, b = (load_checkpoint(r / "checkpoint.pt") for r in runs)
    design = DIFFERS_BY_DESIGN["checkpoint.pt"]
    assert set(a) == set(b)
    for k in set(a) - set(design):
        assert _same(a[k], b[k]), k
    # with the wall-clock fields set equal, the two checkpoints are the same bytes
    blobs = []
    for ck in (a, b):
        buf = io.BytesIO()
        torch.save({**ck, **dict.fromkeys([d for d in design if d in ck], 0.0)}, buf)
        blobs.append(buf.getvalue())
    assert blobs[0] == blobs[1]
    assert (runs[0] / "log.csv").read_bytes() == (runs[1] / "log.csv").read_bytes()
    ra, rb = (json.loads((r / "run.json").read_text()) for r in runs)
    assert ra["differs_by_design"] == DIFFERS_BY_DESIGN
    differing = {k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k)}
    assert differing <= set(DIFFERS_BY_DESIGN["run.json"]), differing - set(DIFFERS_BY_DESIGN["run.json"])


def _same(x: object, y: object) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return type(x) is type(y) and len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # NumPy arrays in the RNG states
        import numpy as np

        return bool(np.array_equal(x, y))
    return x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)  # NaN = NaN here
