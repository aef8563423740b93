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
    KNOBS,
    POSTPROCESS_FILE,
    profile_values,
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
    # label transfer has its own entry: none yet, so its profile values; then its own tuned values
    prof = replace(prof, lt_rank_power=0.5, lt_bg_weight=0.9, lt_min_share=0.01)
    lt = resolve_postprocess("label-transfer", prof, tmp_path)
    assert lt.values == {"rank_power": 0.5, "bg_weight": 0.9, "min_share": 0.01, "n_segments": 70}
    assert set(lt.sources.values()) == {"profile"} and lt.file is None
    tuned = {"rank_power": 2.0, "bg_weight": 0.7, "min_share": 0.02, "n_segments": 400}
    _tuned(tmp_path, tuned, method="label-transfer")
    lt = resolve_postprocess("label-transfer", prof, tmp_path)
    assert lt.values == tuned and set(lt.sources.values()) == {"model"}
    assert resolve_postprocess("mcnn", prof, tmp_path).values["xi2"] == 0.1  # the other entry is kept
    # each of label transfer's knobs: its flag beats the model's value, the others stay the model's
    flags = {"rank_power": 0.0, "bg_weight": 0.6, "min_share": 0.05, "n_segments": 0}
    for name, v in flags.items():
        r = resolve_postprocess("label-transfer", prof, tmp_path, **{name: v})
        assert r.values == {**tuned, name: v} and r.sources == {**dict.fromkeys(tuned, "model"), name: "flag"}, name
        assert f"{name} {v} [flag]" in r.describe()
    # a postprocess.json of an older kit (label transfer: segments only) leaves the new knobs to the profile
    old = json.loads((tmp_path / POSTPROCESS_FILE).read_text())
    old["methods"]["label-transfer"]["values"] = {"n_segments": 50}
    (tmp_path / POSTPROCESS_FILE).write_text(json.dumps(old))
    r = resolve_postprocess("label-transfer", prof, tmp_path, min_share=0.0)
    assert r.values == {"rank_power": 0.5, "bg_weight": 0.9, "min_share": 0.0, "n_segments": 50}
    assert r.sources == {"rank_power": "profile", "bg_weight": "profile", "min_share": "flag", "n_segments": "model"}
    with pytest.raises(QparseError, match="no post-processing value"):
        resolve_postprocess("label-transfer", prof, tmp_path, xi1=0.5)


def test_each_family_falls_back_to_its_own_profile_values(tmp_path):
    prof = replace(get_profile("quick"), xi1=0.4, xi2=0.2, n_segments=1600, displacement_scale=0.75)
    scratch = {"xi1": 0.4, "xi2": 0.2, "n_segments": 1600, "displacement_scale": 0.75}
    assert resolve_postprocess("mcnn", prof, None).values == scratch
    assert resolve_postprocess("mcnn", prof, None, family="trunk").values == scratch  # no trunk_* set: shared
    prof = replace(prof, trunk_xi1=0.5, trunk_n_segments=400)
    r = resolve_postprocess("mcnn", prof, None, family="trunk")
    assert r.values == {**scratch, "xi1": 0.5, "n_segments": 400} and set(r.sources.values()) == {"profile"}
    assert resolve_postprocess("mcnn", prof, None).values == scratch  # the from-scratch family keeps its own
    _tuned(tmp_path, {"xi1": 0.6, "xi2": 0.1, "n_segments": 0, "displacement_scale": 0.5})  # the model's file wins
    assert resolve_postprocess("mcnn", prof, tmp_path, family="trunk").values["xi1"] == 0.6
    with pytest.raises(QparseError, match="trunk_xi1"):
        replace(prof, trunk_xi1=1.5)


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
    assert all(mc["values"][k] in mc["grid"][k] for k in mc["values"]) and set(lt["values"]) == set(KNOBS["label-transfer"])
    assert all(lt["values"][k] in lt["grid"][k] for k in lt["values"])
    assert len(mc["table"]) == sum(len(v) for v in mc["grid"].values())
    assert len(lt["table"]) == sum(len(v) for v in lt["grid"].values())
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
    assert sc3["run"]["postprocess"]["sources"] == dict.fromkeys(KNOBS["label-transfer"], "model")
    assert sc3["run"]["postprocess"]["values"] == lt["values"]
    assert {k: sc3["run"]["parser"][k] for k in ("rank_power", "bg_weight", "min_share")} == {
        k: lt["values"][k] for k in ("rank_power", "bg_weight", "min_share")}  # fmt: skip
    assert sc3["avg_f1"] == pytest.approx(lt["score"]["avg_f1"], abs=1e-6)
    out4 = tmp_path / "lt-profile"
    assert main(["evaluate", "--method", "label-transfer", "--corpus", c, "--split", "val", *F,
                 "--out", str(out4)]) == 0  # fmt: skip
    post4 = json.loads((out4 / "scores.json").read_text())["run"]["postprocess"]
    assert set(post4["sources"].values()) == {"profile"}
    assert post4["values"] == profile_values(run_profile(run), "label-transfer")


def test_tune_only_label_transfer_chooses_its_four_knobs_by_coordinate_ascent(run_copy, tmp_path, capsys):
    from qparse_lite.evaluation.tuning import LT_GRID

    corpus, run = run_copy
    c = str(corpus.path)
    assert main(["tune", "--only", "label-transfer", "--model", str(run), "--corpus", c, *F,
                 "--knn-dir", str(tmp_path / "knn"), "--no-progress"]) == 0  # fmt: skip
    rec = json.loads((run / POSTPROCESS_FILE).read_text())
    assert set(rec["methods"]) == {"label-transfer"}  # the M-CNN was not tuned
    lt = rec["methods"]["label-transfer"]
    assert list(lt["values"]) == list(KNOBS["label-transfer"]) and lt["grid"] == LT_GRID
    assert "label-transfer: {" in capsys.readouterr().out
    # every value of every knob was tried, in grid order; each knob took its best value, ties the earliest
    table = lt["table"]
    assert [(r["parameter"], r["value"]) for r in table] == [(n, v) for n, vs in LT_GRID.items() for v in vs]
    for name in LT_GRID:
        rows = [r for r in table if r["parameter"] == name]
        assert len({round(r["avg_f1"], 6) for r in rows}) > 1, name  # each knob changes the parse here
        best = max(r["avg_f1"] for r in rows)
        assert lt["values"][name] == next(r["value"] for r in rows if r["avg_f1"] > best - 1e-9), name
        # the later knobs were at their starting (profile) values, the earlier at their chosen ones
        done = list(LT_GRID)[: list(LT_GRID).index(name)]
        assert all(rows[0][d] == pytest.approx(lt["values"][d]) for d in done), name
    assert lt["score"]["avg_f1"] == pytest.approx(max(r["avg_f1"] for r in table if r["parameter"] == "n_segments"))
    # a flag on each knob is honoured and recorded (the chosen setting, given as flags, scores the same)
    v = lt["values"]
    out = tmp_path / "lt-flags"
    assert main(["evaluate", "--method", "label-transfer", "--corpus", c, "--split", "val", *F, "--out", str(out),
                 "--lt-rank-power", str(v["rank_power"]), "--lt-bg-weight", str(v["bg_weight"]),
                 "--lt-min-share", str(v["min_share"]), "--n-segments", str(v["n_segments"])]) == 0  # fmt: skip
    sc = json.loads((out / "scores.json").read_text())
    assert sc["run"]["postprocess"]["sources"] == dict.fromkeys(KNOBS["label-transfer"], "flag")
    assert sc["run"]["postprocess"]["values"] == pytest.approx(v)
    assert sc["avg_f1"] == pytest.approx(lt["score"]["avg_f1"], abs=1e-6)
    # and another value of a knob changes the parse the flag asks for
    out2 = tmp_path / "lt-bg"
    assert main(["evaluate", "--method", "label-transfer", "--corpus", c, "--split", "val", *F, "--out", str(out2),
                 "--lt-bg-weight", "0.3", "--n-segments", "0"]) == 0  # fmt: skip
    sc2 = json.loads((out2 / "scores.json").read_text())
    assert sc2["run"]["parser"]["bg_weight"] == 0.3 and sc2["run"]["postprocess"]["sources"]["bg_weight"] == "flag"
    assert sc2["fg_accuracy"] != pytest.approx(sc["fg_accuracy"])


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


def test_with_superpixels_keeps_a_smoothing_choice_and_otherwise_takes_the_best_count_tried():
    """The "with ss" side of the superpixel claim: the tuned values, smoothing at the best non-zero count."""
    from qparse_lite.errors import QparseError
    from qparse_lite.evaluation.tuning import with_superpixels

    table = [{"parameter": "xi1", "value": 0.3, "avg_f1": 30.0},
             {"parameter": "n_segments", "value": 200, "avg_f1": 31.0},
             {"parameter": "n_segments", "value": 800, "avg_f1": 31.5},
             {"parameter": "n_segments", "value": 1600, "avg_f1": 31.5},  # a tie: the earlier count wins
             {"parameter": "n_segments", "value": 0, "avg_f1": 32.0}]  # fmt: skip
    entry = {"values": {"xi1": 0.3, "xi2": 0.2, "n_segments": 0, "displacement_scale": 1.0}, "table": table}
    assert with_superpixels(entry) == {"xi1": 0.3, "xi2": 0.2, "n_segments": 800, "displacement_scale": 1.0}
    assert entry["values"]["n_segments"] == 0  # the entry itself is left as chosen
    smooth = {"values": {**entry["values"], "n_segments": 400}, "table": table}
    assert with_superpixels(smooth)["n_segments"] == 400
    with pytest.raises(QparseError, match="no non-zero segment count"):
        with_superpixels({"values": entry["values"], "table": table[:1]})
