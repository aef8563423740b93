"""``data_scripts/reproduce_ccp.py``: the one command behind results/ccp plans every step, skips what is complete,
runs lanes side by side, stops a lane at its first failure and records each step (no training here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rc() -> Any:
    path = REPO / "data_scripts" / "reproduce_ccp.py"
    spec = importlib.util.spec_from_file_location("reproduce_ccp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_of_an_empty_folder_plans_every_step_and_writes_nothing(rc, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    assert rc.main([str(run), "--data-root", str(tmp_path / "nodata"), "--dest", str(tmp_path / "dest"),
                    "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    for step in ("notebooks 00-02", "chapters trainings", "notebooks 03, 04, 07", "seeds trainings",
                 "notebooks 05, 06", "compute curve: from-scratch trainings", "compute curve: validation of label-transfer",
                 "seed evaluations (after notebook 05)", "collect into DEST", "executed chapters"):  # fmt: skip
        assert f"[plan] {step}" in out, step
    assert "[done]" not in out and not run.exists() and not (tmp_path / "dest").exists()


def test_a_complete_notebook_step_is_skipped(rc, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    run.mkdir()
    status = {"_profile": "ccp", **{n: {"status": "ok"} for n in ("00_a", "01_b", "02_c")}}
    (run / "status.json").write_text(json.dumps(status))
    rc.main([str(run), "--data-root", str(tmp_path), "--dest", str(tmp_path / "dest"), "--dry-run"])
    out = capsys.readouterr().out
    assert "[done] notebooks 00-02" in out and "[plan] notebooks 03, 04, 07" in out


def test_lanes_run_side_by_side_stop_at_a_failure_and_record_each_step(rc, tmp_path):
    rec = rc.Recorder(tmp_path / "rec.json")
    py = sys.executable
    ok = rc.Step("ok", [py, "-c", "pass"])
    bad = rc.Step("bad", [py, "-c", "raise SystemExit(3)"])
    never = rc.Step("after bad", [py, "-c", "pass"])
    skipped = rc.Step("complete", ["false"], done=lambda: True)
    failed = rc.run_lanes([[skipped, ok], [bad, never]], rec, dry=False)
    rec.close(1.0, ok=not failed)
    steps = {s["step"]: s for s in json.loads((tmp_path / "rec.json").read_text())["invocations"][-1]["steps"]}
    assert failed == ["bad"] and set(steps) == {"ok", "bad"} and steps["bad"]["rc"] == 3
    assert all(len(s["load_before"]) == 3 and s["wall_s"] >= 0 for s in steps.values())


def test_refuses_more_than_one_thread_per_job_and_a_missing_dataset(rc, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert rc.main([str(tmp_path / "run"), "--data-root", str(tmp_path)]) == 2
    assert "OMP_NUM_THREADS=1" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert rc.main([str(tmp_path / "run"), "--data-root", str(tmp_path)]) == 2
    assert "qparse data download --dataset ccp" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_step_waits_for_a_step_of_the_other_lane(rc, tmp_path, monkeypatch):
    monkeypatch.setattr(rc, "POLL_S", 0.05)
    rec, py = rc.Recorder(tmp_path / "rec.json"), sys.executable
    marker = tmp_path / "first"
    first = rc.Step("first", [py, "-c", f"import time, pathlib; time.sleep(0.5); pathlib.Path({str(marker)!r}).touch()"])
    then = rc.Step("then", [py, "-c", f"import pathlib, sys; sys.exit(0 if pathlib.Path({str(marker)!r}).exists() else 5)"],
                   ready=first.finished.is_set)  # fmt: skip
    assert rc.run_lanes([[first], [then]], rec, dry=False) == []
    assert first.finished.is_set() and then.finished.is_set()
