"""The notebooks' experiment folder (qparse_lite.experiment.Workspace): caching, reuse and refusal."""

from __future__ import annotations

import numpy as np
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.experiment import Workspace, default_output_dir

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
