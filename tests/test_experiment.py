"""The notebooks' experiment folder (qparse_lite.pipeline.workspace.Workspace): caching, reuse and refusal."""

from __future__ import annotations

import numpy as np
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.pipeline.workspace import Workspace, default_output_dir

SMALL = dict(n_images=60, epochs=1, pairs_per_epoch=256, batch_size=32, val_pairs=64, k_train=4)


def test_workspace_caches_knn_and_reuses_a_complete_run(tmp_path):
    ws = Workspace("quick", output_dir=tmp_path, device="cpu", **SMALL)
    c = ws.corpus
    assert c.images.shape[1:] == (64, 64, 3) and len(c.images) == 60
    nb = ws.knn("test")
    assert nb.shape == (len(c.split("test")), 15) and set(nb.ravel()) <= set(c.split("train").tolist())
    assert (tmp_path / "knn" / f"{ws.profile.features}_test_k15.npz").is_file()
    np.testing.assert_array_equal(ws.knn("test"), nb)  # from the cache
    run = ws.train(progress=False)
    stamp = (run / "checkpoint.pt").stat().st_mtime_ns
    assert ws.train(progress=False) == run and (run / "checkpoint.pt").stat().st_mtime_ns == stamp
    parser = ws.parser()
    assert parser.xi1 == ws.profile.xi1 and parser.erosion == ws.profile.erosion_px
    assert parser.parse(np.asarray(c.images[int(c.split("test")[0])]), nb[0][:3]).labels.shape == (64, 64)
    assert ws.run_dir("cross5", "bag").name == "cross5-without-bag"
    # the same folder with other settings is refused, naming the difference and the fix
    with pytest.raises(QparseError, match="epochs.*Fix: pass another output_dir"):
        Workspace("quick", output_dir=tmp_path, device="cpu", **{**SMALL, "epochs": 2})


def test_workspace_prepares_the_profiles_crop_and_refuses_another(tmp_path):
    """The corpus a notebook prepares has the profile's crop (ccp: warp), and a folder holding a corpus of the
    other crop is refused before any training (a ccp rerun once prepared square and failed in notebook 03)."""
    import shutil

    from qparse_lite.data.crops import corpus_crop

    warp = Workspace("quick", output_dir=tmp_path / "w", device="cpu", **SMALL, crop="warp")
    square = Workspace("quick", output_dir=tmp_path / "s", device="cpu", **SMALL)
    assert corpus_crop(warp.corpus) == "warp" and corpus_crop(square.corpus) == "square"
    shutil.copytree(tmp_path / "s" / "corpus", tmp_path / "x" / "corpus")
    with pytest.raises(QparseError, match="'square' crop.*'warp'. Fix: delete"):
        Workspace("quick", output_dir=tmp_path / "x", device="cpu", **SMALL, crop="warp").corpus  # noqa: B018


def test_default_folder_names_the_profile_and_a_non_default_seed():
    assert default_output_dir("quick").name == "notebooks-quick"
    assert default_output_dir("quick", 0).name == "notebooks-quick"
    assert default_output_dir("ccp", 1).name == "notebooks-ccp-seed1"


def test_real_profiles_need_their_data(tmp_path):
    ws = Workspace("ccp", output_dir=tmp_path, data_root=tmp_path / "nowhere", device="cpu")
    with pytest.raises(QparseError, match="nowhere"):
        ws.corpus  # noqa: B018


def test_ccp_data_root_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QPARSE_CCP_ROOT", str(tmp_path / "ccp-copy"))
    assert Workspace("ccp", output_dir=tmp_path / "a", device="cpu").data_root == tmp_path / "ccp-copy"
    assert Workspace("ccp", output_dir=tmp_path / "b", data_root=tmp_path / "x", device="cpu").data_root == tmp_path / "x"
    assert Workspace("quick", output_dir=tmp_path / "c", device="cpu").data_root is None  # synthetic: no data
    monkeypatch.delenv("QPARSE_CCP_ROOT")
    assert Workspace("ccp", output_dir=tmp_path / "d", device="cpu").data_root is None


def test_train_many_side_by_side_gives_the_models_of_one_at_a_time(tmp_path):
    """Two models trained in two worker processes equal the same models trained in this process."""
    import torch

    from qparse_lite.pipeline.scheduler import parallel_jobs

    par = Workspace("quick", output_dir=tmp_path / "par", device="cpu", **SMALL)
    lines: list[str] = []
    runs = par.train_many(["cross5", "wo-cross"], jobs=2, log=lines.append)
    assert list(runs) == ["cross5", "wo-cross"] and all(par.is_trained(v) for v in runs)
    assert lines[0].startswith("training 2 models, 2 at a time") and sum("done" in s for s in lines) == 2
    seq = Workspace("quick", output_dir=tmp_path / "seq", device="cpu", **SMALL)
    for v, run in runs.items():
        a = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        b = torch.load(seq.train(v, progress=False) / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), v
    again: list[str] = []
    assert par.train_many(["cross5"], log=again.append) == {"cross5": runs["cross5"]} and "reused" in again[0]
    # cores ÷ threads on the CPU, capped by the models left; one at a time on a GPU or with torch's threads
    assert parallel_jobs(par.profile, "cpu", 1) == 1 and parallel_jobs(par.profile, "cuda") == 1
    assert parallel_jobs(par.profile.__class__(**{**par.profile.to_dict(), "threads": 0}), "cpu") == 1


def test_train_parametric_many_trains_side_by_side_and_reuses(tmp_path):
    from qparse_lite.baselines.parametric import parametric_config

    ws = Workspace("quick", output_dir=tmp_path, device="cpu", **SMALL)
    cfg = parametric_config("quick", ws.corpus.num_labels, pretrained=False, input_size=32, inter_channels=8,
                            epochs=1, batch_size=16)  # fmt: skip
    lines: list[str] = []
    runs = ws.train_parametric_many({"p-a": cfg, "p-b": cfg}, jobs=2, log=lines.append)
    assert [r.name for r in runs.values()] == ["p-a", "p-b"] and all((r / "run.json").is_file() for r in runs.values())
    assert sum("done" in s for s in lines) == 2
    a, b = ((r / "log.csv").read_text() for r in runs.values())
    assert a.splitlines()[1].split(",")[:3] == b.splitlines()[1].split(",")[:3]  # same config, same seed: same run
    stamp = (runs["p-a"] / "run.json").stat().st_mtime_ns
    ws.train_parametric_many({"p-a": cfg}, log=lines.append)
    assert (runs["p-a"] / "run.json").stat().st_mtime_ns == stamp  # complete: reused


def test_a_folder_made_before_a_profile_field_existed_is_reused_and_other_settings_refused(tmp_path):
    """workspace.json of an older kit lacks a field added since (at its default, the older behaviour): the
    folder is still this setting; a recorded value that differs is refused, naming the field and the fix."""
    import json

    Workspace("quick", output_dir=tmp_path)
    rec = json.loads((tmp_path / "workspace.json").read_text())
    del rec["profile"]["lt_min_share"]  # a field this folder's kit did not have
    (tmp_path / "workspace.json").write_text(json.dumps(rec))
    Workspace("quick", output_dir=tmp_path)  # reused
    rec["profile"]["lt_rank_power"] = 2.0  # another setting
    (tmp_path / "workspace.json").write_text(json.dumps(rec))
    with pytest.raises(QparseError, match="lt_rank_power: 2.0 there, 1.0 now.*another output_dir"):
        Workspace("quick", output_dir=tmp_path)
    with pytest.raises(QparseError, match="lt_min_share: 0.5 there"):
        rec["profile"].pop("lt_rank_power")
        rec["profile"]["lt_min_share"] = 0.5
        (tmp_path / "workspace.json").write_text(json.dumps(rec))
        Workspace("quick", output_dir=tmp_path)


def test_run_side_by_side_one_job_runs_in_process_with_the_worker_arguments_when_none_are_given():
    """``jobs`` 1 runs each task here: with its in-process arguments, or its worker arguments where those are None
    (``data_scripts/ccp_train_models.py`` gives only worker arguments)."""
    from qparse_lite.pipeline.scheduler import run_side_by_side

    calls: list[tuple] = []
    tasks = {"a": (lambda *a: calls.append(a), ("worker", 1), None),
             "b": (lambda *a: calls.append(a), ("worker", 2), ("here", 2))}  # fmt: skip
    lines: list[str] = []
    run_side_by_side(tasks, 1, lines.append)
    assert calls == [("worker", 1), ("here", 2)] and len(lines) == 2
