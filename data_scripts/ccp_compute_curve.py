"""The compute curve of results/ccp: the default M-CNN at smaller budgets beside the committed full-budget model.

Usage: ``python data_scripts/ccp_compute_curve.py RUNS EVALS``, where ``RUNS/budget<ppe>/`` come from
``qparse train --profile ccp --variant mcnn --set pairs_per_epoch=<ppe>`` and ``EVALS/budget<ppe>/`` from
``qparse evaluate --model RUNS/budget<ppe> ...``. Writes ``results/ccp/compute.csv`` and ``compute.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

R = Path(__file__).resolve().parent.parent / "results" / "ccp"
BUDGETS = (1366, 4552, 13653)  # pairs per epoch: 1/30, 1/9, 1/3 of the ccp profile's 40,960


def _row(ppe: int, rec: dict, avg_f1: float) -> dict:
    fv = rec["final_val"]
    keys = ("val_auc", "val_auc_vote", "val_disp_err", "val_disp_err_trivial")
    return {"pairs_per_epoch": ppe, "pairs_seen": fv["pairs_seen"], "train_s": rec["train_s"], "test_avg_f1": avg_f1,
            **{k: fv[k] for k in keys}}  # fmt: skip


def main(runs: str, evals: str) -> pd.DataFrame:
    rows = []
    for ppe in BUDGETS:
        e, r = Path(evals) / f"budget{ppe}" / "scores.json", Path(runs) / f"budget{ppe}" / "run.json"
        if e.is_file() and r.is_file():
            rows.append(_row(ppe, json.loads(r.read_text()), json.loads(e.read_text())["avg_f1"]))
    full = pd.read_csv(R / "tables" / "mcnn_table1.csv").iloc[0]["avg_f1"]
    rows.append(_row(40960, json.loads((R / "models" / "mcnn" / "run.json").read_text()), full))
    df = pd.DataFrame(rows).sort_values("pairs_seen")
    lt = pd.read_csv(R / "tables" / "label-transfer_table1.csv").iloc[0]["avg_f1"]
    df["label_transfer_avg_f1"] = lt
    df.to_csv(R / "compute.csv", index=False, float_format="%.4f")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(df.pairs_seen, df.test_avg_f1, "o-", label="M-CNN (cross 5,4,3,2), seed 0")
    ax.axhline(lt, color="tab:orange", ls="--", label="KNN label transfer (no training)")
    ax.set_xscale("log")
    ax.set_xlabel("training pairs seen")
    ax.set_ylabel("test avg F1 (%)")
    ax.set_title("CCP test, 2 CPU cores: avg F1 against training pairs", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(R / "compute.png", dpi=110, bbox_inches="tight")
    return df


if __name__ == "__main__":
    print(main(*sys.argv[1:3]).to_string())
