"""Post-processing values that belong to the model: ``qparse tune`` writes RUN/postprocess.json on the
validation split; ``qparse evaluate`` and ``qparse parse`` take flag > model > profile and say which."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from qparse_lite.cli import main
from qparse_lite.errors import QparseError
from qparse_lite.parse.defaults import (
    POSTPROCESS_FILE,
    read_postprocess,
    resolve_postprocess,
    run_profile,
    write_postprocess,
)
from qparse_lite.profiles import get_profile


def _tuned(tmp_path, values, method="mcnn", split="val"):
    write_postprocess(tmp_path, method, values, split=split, grid={k: [v] for k, v in values.items()},
                      table=[], score={"avg_f1": 1.0}, record={"stage": "tune"})  # fmt: skip


def test_flag_beats_model_beats_profile_and_each_source_is_named(tmp_path):
    prof = replace(get_profile("quick"), xi1=0.45, xi2=0.35, n_segments=150, displacement_scale=0.9, lt_n_segments=70)
    r = resolve_postprocess("mcnn", prof, None)
    assert r.values == {"xi1": 0.45, "xi2": 0.35, "n_segments": 150, "displacement_scale": 0.9}
    assert set(r.sources.values()) == {"profile"} and r.file is None
    _tuned(tmp_path, {"xi1": 0.6, "xi2": 0.1, "n_segments": 0, "displacement_scale": 0.5})
    r = resolve_postprocess("mcnn", prof, tmp_path, xi1=0.8)
    assert r.values == {"xi1": 0.8, "xi2": 0.1, "n_segments": 0, "displacement_scale": 0.5}
    assert r.sources == {"xi1": "flag", "xi2": "model", "n_segments": "model", "displacement_scale": "model"}
    assert r.file == str(tmp_path / POSTPROCESS_FILE)
    assert "xi1 0.8 [flag]" in r.describe() and "xi2 0.1 [model]" in r.describe()
    # label transfer has its own entry: none yet, so its profile value; then its own tuned value
    lt = resolve_postprocess("label-transfer", prof, tmp_path)
    assert lt.values == {"n_segments": 70} and lt.sources == {"n_segments": "profile"}
    _tuned(tmp_path, {"n_segments": 400}, method="label-transfer")
    assert resolve_postprocess("label-transfer", prof, tmp_path).values == {"n_segments": 400}
    assert resolve_postprocess("mcnn", prof, tmp_path).values["xi2"] == 0.1  # the other entry is kept
    with pytest.raises(QparseError, match="no post-processing value"):
        resolve_postprocess("label-transfer", prof, tmp_path, xi1=0.5)


def test_values_chosen_on_test_are_refused_when_written_and_when_read(tmp_path):
    with pytest.raises(QparseError, match="test split"):
        _tuned(tmp_path, {"n_segments": 0}, method="label-transfer", split="test")
    assert not (tmp_path / POSTPROCESS_FILE).exists()
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps({"methods": {"mcnn": {"split": "test", "values": {}}}}))
    with pytest.raises(QparseError, match="chosen on the test split"):
        read_postprocess(tmp_path)
    (tmp_path / POSTPROCESS_FILE).write_text("{")
    with pytest.raises(QparseError, match="not valid JSON"):
        read_postprocess(tmp_path)
    with pytest.raises(QparseError, match="expected values"):
        _tuned(tmp_path / "x", {"xi1": 0.5})


F = ["--k", "3", "--features", "hog-color"]  # fast retrieval: these tests check the plumbing


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    """The session's tiny run copied, so a postprocess.json written here does not leak into other tests."""
    corpus, run = tiny_run
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return corpus, dst


def test_tune_then_evaluate_uses_the_model_values_and_records_their_source(run_copy, tmp_path, capsys):
    corpus, run = run_copy
    c = str(corpus.path)
    assert main(["tune", "--model", str(run), "--corpus", c, "--split", "test", *F]) == 2
    assert "--split val" in capsys.readouterr().err and not (run / POSTPROCESS_FILE).exists()
    assert main(["tune", "--model", str(run), "--corpus", c, *F, "--knn-dir", str(tmp_path / "knn"), "--no-progress"]) == 0
    rec = json.loads((run / POSTPROCESS_FILE).read_text())
    mc, lt = rec["methods"]["mcnn"], rec["methods"]["label-transfer"]
    assert mc["split"] == lt["split"] == "val" and mc["run"]["git_commit"] and mc["run"]["stage"] == "tune"
    assert set(mc["values"]) == {"xi1", "xi2", "n_segments", "displacement_scale"}
    assert all(mc["values"][k] in mc["grid"][k] for k in mc["values"]) and set(lt["values"]) == {"n_segments"}
    assert len(mc["table"]) == sum(len(v) for v in mc["grid"].values()) and len(lt["table"]) == len(lt["grid"]["n_segments"])
    # the stored score is the chosen setting's: evaluate on val with no flags gives it back
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(run), "--corpus", c, "--split", "val", *F, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sc = json.loads((out / "scores.json").read_text())
    post = sc["run"]["postprocess"]
    assert post["values"] == mc["values"] and set(post["sources"].values()) == {"model"}
    assert "[model]" in printed
    assert sc["avg_f1"] == pytest.approx(mc["score"]["avg_f1"], abs=1e-6)
    assert sc["run"]["parser"]["superpixels"] == ("slic" if mc["values"]["n_segments"] else None)
    # a flag wins and says so; the paper's row is a flag away
    out2 = tmp_path / "ev2"
    assert main(["evaluate", "--model", str(run), "--corpus", c, "--split", "val", *F, "--out", str(out2),
                 "--xi1", "0.8", "--xi2", "0.5", "--n-segments", "200", "--displacement-scale", "1"]) == 0  # fmt: skip
    post2 = json.loads((out2 / "scores.json").read_text())["run"]["postprocess"]
    assert set(post2["sources"].values()) == {"flag"} and post2["values"]["xi1"] == 0.8
    # label transfer reads its own entry through --model, and the profile without it
    out3 = tmp_path / "lt"
    assert main(["evaluate", "--method", "label-transfer", "--model", str(run), "--corpus", c, "--split", "val", *F,
                 "--out", str(out3)]) == 0  # fmt: skip
    sc3 = json.loads((out3 / "scores.json").read_text())
    assert sc3["run"]["postprocess"]["sources"] == {"n_segments": "model"}
    assert sc3["avg_f1"] == pytest.approx(lt["score"]["avg_f1"], abs=1e-6)
    out4 = tmp_path / "lt-profile"
    assert main(["evaluate", "--method", "label-transfer", "--corpus", c, "--split", "val", *F,
                 "--out", str(out4)]) == 0  # fmt: skip
    post4 = json.loads((out4 / "scores.json").read_text())["run"]["postprocess"]
    assert post4["sources"] == {"n_segments": "profile"} and post4["values"]["n_segments"] == run_profile(run).lt_n_segments


def test_untuned_run_falls_back_to_the_profile_it_was_trained_with(run_copy, tmp_path):
    corpus, run = run_copy
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(run), "--corpus", str(corpus.path), *F, "--limit", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    post = json.loads((out / "scores.json").read_text())["run"]["postprocess"]
    prof = run_profile(run)
    assert set(post["sources"].values()) == {"profile"}
    assert post["values"] == {"xi1": prof.xi1, "xi2": prof.xi2, "n_segments": prof.n_segments,
                              "displacement_scale": prof.displacement_scale}  # fmt: skip


def test_parse_records_the_values_and_their_sources(run_copy, tmp_path, capsys):
    from PIL import Image

    corpus, run = run_copy
    _tuned(run, {"xi1": 0.3, "xi2": 0.2, "n_segments": 0, "displacement_scale": 0.5})
    photo = tmp_path / "p.png"
    Image.fromarray(np.asarray(corpus.images[int(corpus.split("test")[0])])).save(photo)
    out = tmp_path / "parsed"
    assert main(["parse", str(photo), "--model", str(run), "--corpus", str(corpus.path), "--out", str(out),
                 "--k", "3", "--detector", "hog", "--features", "hog-color", "--xi2", "0.4"]) == 0  # fmt: skip
    assert "xi2 0.4 [flag]" in capsys.readouterr().err
    post = json.loads((out / "parse.json").read_text())["postprocess"]
    assert post["values"] == {"xi1": 0.3, "xi2": 0.4, "n_segments": 0, "displacement_scale": 0.5}
    assert post["sources"]["xi1"] == "model" and post["sources"]["xi2"] == "flag"
