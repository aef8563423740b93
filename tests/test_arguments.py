"""Every bad argument gets a message before any work starts (issue 33): numbers out of range, --out an existing
file or a place that cannot be written, a corpus of another size than the model's, the notebooks' papermill
parameters, a dataset mirror that fails its checksums, an RGB PNG in ``qparse score``, and ``--threads``."""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from qparse_lite.cli import build_parser, main
from qparse_lite.errors import QparseError

NOWHERE = ["--corpus", "nowhere-corpus"]


def _exit2(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--limit", "-1"], ["--limit", "0"], ["--k", "0"], ["--xi1", "-0.5"],
                                 ["--xi2", "2"], ["--n-segments", "-5"], ["--displacement-scale", "-1"],
                                 ["--erosion", "-1"], ["--xi1", "nan"], ["--threads", "x"], ["--lt-rank-power", "-1"],
                                 ["--lt-bg-weight", "-0.5"], ["--lt-min-share", "2"]])  # fmt: skip
def test_evaluate_numbers_are_checked_when_parsed(tmp_path, capsys, bad):
    err = _exit2(["evaluate", *NOWHERE, "--out", str(tmp_path / "o"), *bad], capsys)
    assert f"argument {bad[0]}" in err and "database images" not in err
    assert not (tmp_path / "o").exists()


def test_knn_and_prepare_numbers(tmp_path, capsys):
    assert "argument --k" in _exit2(["knn", *NOWHERE, "--out", str(tmp_path / "k.npz"), "--k", "0"], capsys)
    err = _exit2(["prepare", "--dataset", "synthetic", "--size", "0", "--out", str(tmp_path / "c")], capsys)
    assert "argument --size" in err


def test_out_an_existing_file_or_folder_of_the_wrong_kind(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("keep me")
    for argv in (["parse", "x.jpg", "--model", "m", *NOWHERE, "--out", str(f)],
                 ["evaluate", *NOWHERE, "--out", str(f)],
                 ["score", "--pred", "p", "--gt", "g", "--labels", "atr18", "--out", str(f)],
                 ["prepare", "--dataset", "synthetic", "--size", "32", "--out", str(f)]):  # fmt: skip
        err = _exit2(argv, capsys)
        assert "argument --out" in err and "is an existing file, not a folder" in err, argv
    err = _exit2(["knn", *NOWHERE, "--out", str(tmp_path)], capsys)
    assert "is an existing folder, not a file" in err
    err = _exit2(["knn", *NOWHERE, "--out", str(f / "k.npz")], capsys)
    assert "is a file, so no folder can be made there" in err
    assert f.read_text() == "keep me"


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write in: a read-only tmpfs when running as root (root ignores permissions), else
    a chmod 555 folder; skipped with the reason when neither is possible."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"root ignores permissions and a read-only tmpfs cannot be mounted ({res.stderr.strip()})")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_out_in_a_read_only_place(read_only_dir, capsys):
    for argv in (["parse", "x.jpg", "--model", "m", *NOWHERE, "--out", str(read_only_dir / "o")],
                 ["knn", *NOWHERE, "--out", str(read_only_dir / "k.npz")],
                 ["score", "--pred", "p", "--gt", "g", "--labels", "atr18", "--out", str(read_only_dir)],
                 ["evaluate", *NOWHERE, "--out", str(read_only_dir)]):  # fmt: skip
        err = _exit2(argv, capsys)
        assert "argument --out" in err and "cannot write in" in err and "Fix:" in err, argv


def test_a_corpus_of_another_size_than_the_model_is_a_message(tiny_run, tmp_path, capsys):
    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import prepare_corpus

    corpus, run = tiny_run
    other = prepare_corpus(get_dataset("synthetic", n=12, size=64, seed=1), 32, tmp_path / "c32", progress=False)
    Image.fromarray(np.full((80, 60, 3), 90, np.uint8)).save(tmp_path / "p.jpg")
    rc = main(["parse", str(tmp_path / "p.jpg"), "--model", str(run), "--corpus", str(other), "--out",
               str(tmp_path / "o"), "--device", "cpu", "--detector", "hog"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "32×32 px but the model was trained on 48×48" in err and "Fix:" in err


@pytest.mark.parametrize("kw, match", [({"seed": "notanumber"}, "seed = 'notanumber'"), ({"device": "tpu"}, "device = 'tpu'"),
                                       ({"profile": "big"}, "profile = 'big'"), ({"seed": -1}, "seed = -1")])  # fmt: skip
def test_notebook_parameters_fail_in_seconds_with_a_message(tmp_path, kw, match):
    from qparse_lite.pipeline.workspace import Workspace

    t0 = time.perf_counter()
    with pytest.raises(QparseError, match=rf"notebook parameter {match}.*Fix: -p"):
        Workspace(**{"output_dir": tmp_path / "ws", **kw})
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "ws").exists()  # nothing made before the check


def test_get_device_refuses_an_unknown_device():
    from qparse_lite.runinfo import get_device

    with pytest.raises(QparseError, match="device 'tpu': not a device"):
        get_device("tpu")
    assert get_device("cpu") == "cpu"


def test_a_mirror_that_fails_its_checksums_is_not_stamped_verified(tmp_path):
    import hashlib

    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import prepare_corpus

    ds = get_dataset("synthetic", n=12, size=64, seed=0)
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "a.txt").write_text("the data")
    good = hashlib.sha256(b"the data").hexdigest()
    ds.root = root  # a dataset read from a folder with a SHA256SUMS listing
    (root / "SHA256SUMS").write_text(f"{good}  ./a.txt\n")
    meta = json.loads((prepare_corpus(ds, 32, tmp_path / "ok", progress=False) / "meta.json").read_text())
    assert meta["version"] == ds.version and meta["verified"].startswith("1 files match")
    (root / "a.txt").write_text("changed")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = prepare_corpus(ds, 32, tmp_path / "bad", progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert "UNVERIFIED" in meta["version"] and "a.txt: checksum mismatch" in meta["version"]
    assert meta["verified"] is None and "UNVERIFIED" in meta["run"]["dataset_version"]
    assert any("qparse data verify" in str(x.message) for x in w)


def test_an_rgb_png_in_score_is_called_a_colour_image_not_a_labels_problem(tmp_path, capsys):
    from qparse_lite.labels import ATR18

    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    lab = (np.arange(20 * 10).reshape(20, 10) % 18).astype(np.uint8)
    Image.fromarray(lab).save(tmp_path / "g/a.png")
    gray = (lab.astype(int) * 12).astype(np.uint8)  # a gray rendering saved as RGB
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "p/a.png")
    rc = main(["score", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--labels", "atr18"])
    err = capsys.readouterr().err
    assert rc == 2 and "a colour image" in err and "colours_to_ids" in err and "--labels" not in err
    Image.fromarray(ATR18.colorize(lab)).save(tmp_path / "p/a.png")  # a palette rendering
    rc = main(["score", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g"), "--labels", "atr18"])
    err = capsys.readouterr().err
    assert rc == 2 and "a colour image" in err and "--labels" not in err
    # the conversion the message names gives back the ids
    np.testing.assert_array_equal(ATR18.colours_to_ids(np.asarray(Image.open(tmp_path / "p/a.png"))), lab)


def test_threads_is_one_flag_on_parse_evaluate_knn_prepare(monkeypatch):
    import argparse

    import torch

    from qparse_lite.commands.common import DEFAULT_THREADS, apply_threads

    subs = {a.dest: a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)}
    choices = next(iter(subs.values())).choices
    for name in ("parse", "evaluate", "knn", "prepare"):
        opt = {o: a for a in choices[name]._actions for o in a.option_strings}["--threads"]
        assert opt.default == DEFAULT_THREADS == 1, name
    before = torch.get_num_threads()
    try:
        assert apply_threads(argparse.Namespace(threads=1)) == 1
        assert apply_threads(argparse.Namespace(threads=0)) == 1  # 0 leaves the libraries' choice alone
    finally:
        torch.set_num_threads(before)
