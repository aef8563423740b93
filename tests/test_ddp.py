"""DistributedDataParallel: ``train`` under ``torchrun --nproc_per_node 2`` on CPU (Gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
from test_train import TINY, _corpus, _knn
from qparse_lite.train.loop import train

torch.set_num_threads(1)
corpus = _corpus()
knn_tr, knn_va = _knn(corpus)
train("quick", "mcnn", {out!r}, corpus=corpus, knn=knn_tr, val_knn=knn_va, device="cpu", epochs=1,
      progress=False, **TINY)
"""


@pytest.mark.timeout(120)
def test_torchrun_two_ranks_cpu(tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(REPO / "tests"), out=str(out))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("epoch,step")
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    # two ranks share the epoch's pairs: 256 pairs / (32 per batch · 2 ranks) = 4 steps each
    assert ck["epoch"] == 1 and ck["global_step"] == 4
    assert len(ck["sampler"]) == 2 and not torch.equal(
        ck["sampler"][0]["generator"], ck["sampler"][1]["generator"]
    )
    rec = json.loads((out / "run.json").read_text())
    assert rec["world_size"] == 2
