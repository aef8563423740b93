"""Smoke tests of benchmarks/bench_mcnn.py: a tiny run of every measurement, its files and its CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from qparse_lite.errors import QparseError

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_mcnn.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mcnn", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = dict(size=32, width=0.125, batch=4, iters=2, warmup=1, device="cpu", k=2, labels=3, test_images=2,
            progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def result(bench):
    threads = torch.get_num_threads()
    try:
        return bench.run_benchmark(**TINY, threads=1)
    finally:
        torch.set_num_threads(threads)


def test_every_measurement_is_positive_and_finite(result):
    r = result["results"]
    for mode in ("reference", "optimised"):
        t = r["train"][mode]
        assert t["pairs_per_s"] > 0 and t["timed_pairs"] == 2 * 4
        assert t["peak_mem_bytes"] > 0
        for name in ("plain", "cached"):
            i = r["infer"][mode][name]
            assert i["pairs_per_s"] > 0 and i["timed_pairs"] == 2 * 2 * 2 * 3  # iters × images × K × L
        # the shared test path computes the same outputs as the plain forward pass
        assert r["infer"][mode]["max_abs_diff_cached_vs_plain"] < 1e-4
    assert r["train"]["optimised_speedup"] == pytest.approx(
        r["train"]["optimised"]["pairs_per_s"] / r["train"]["reference"]["pairs_per_s"]
    )


def test_record_and_settings(result):
    s = result["settings"]
    assert s["device"] == "cpu" and s["memory_kind"].startswith("cpu_")
    assert s["inference_pairs_per_step"] == 2 * 2 * 3
    assert result["model"]["params"] > 0 and result["model"]["config"]["input_size"] == 32
    rec = result["record"]
    assert rec["hardware"]["torch"] == torch.__version__ and "git_commit" in rec


def test_write_results(bench, result, tmp_path):
    js, md = bench.write_results(result, tmp_path / "res")
    assert js.name == "bench_mcnn_cpu_32px_w0.125.json"
    loaded = json.loads(js.read_text())
    assert loaded["results"]["train"]["reference"]["pairs_per_s"] == pytest.approx(
        result["results"]["train"]["reference"]["pairs_per_s"]
    )
    text = md.read_text()
    assert "| training step | reference |" in text and "shared test path" in text


def test_cli_and_bad_arguments(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        argv = ["--size", "32", "--width", "0.125", "--batch", "2", "--iters", "1", "--warmup", "0",
                "--device", "cpu", "--k", "1", "--labels", "2", "--test-images", "1", "--threads", "1",
                "--out", str(tmp_path)]  # fmt: skip
        assert bench.main(argv) == 0
        res = json.loads((tmp_path / "bench_mcnn_cpu_32px_w0.125.json").read_text())
        assert res["settings"]["command"].endswith("--out " + str(tmp_path))
        assert bench.main(["--iters", "0", "--out", str(tmp_path)]) == 2
        assert "--iters must be ≥ 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(QparseError, match="--width"):
        bench.run_benchmark(**{**TINY, "width": 0.0})
