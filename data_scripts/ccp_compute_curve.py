"""The compute curves of results/ccp: each M-CNN family's validation avg F1 against its training budget.

Both families at the ccp profile's setting (``warp`` crops at 145 px, K = 9 neighbours of the learned retrieval),
each point one ``qparse train`` run at ``P`` pairs per epoch (5 epochs, its own cosine schedule, seed 0, one
thread), scored on the **validation** split at full resolution with the profile's post-processing fallbacks
(no flag: ξ1 0.3, ξ2 0.2, no superpixels, scale 0.75), so every point is parsed the same way:

* the paper's networks from scratch (``mcnn``, cross 5,4,3,2): ``RUNS/mcnn-p<P>`` for P = 1,366, 4,552, 13,653
  (1/30, 1/9, 1/3 of the profile's 40,960), trained by
  ``python data_scripts/ccp_trunk_curve.py run --corpus RUN/corpus --knn KNN_TRAIN --val-knn KNN_VAL --runs RUNS
  --variant mcnn --pairs 1366 4552 13653``, and the full budget, the reproduction run's ``RUN/models/mcnn``;
* the trunk family's default (``trunk-cross54``), from ``results/ccp/trunk/curve.csv`` (its own compute curve at
  the same crop, retrieval and evaluation, issue 30: 6,400 to 5,529,600 pairs);
* KNN label transfer (no training) as a line: ``qparse evaluate --method label-transfer --split val``.

Usage::

    qparse evaluate --model M --corpus RUN/corpus --split val --k 9 --data-root DIR --out EVALS/<name>
        # for M = RUNS/mcnn-p1366, RUNS/mcnn-p4552, RUNS/mcnn-p13653, RUN/models/mcnn (<name>: M's folder name)
    qparse evaluate --method label-transfer --corpus RUN/corpus --split val --k 9 --data-root DIR \\
        --out EVALS/label-transfer
    python data_scripts/ccp_compute_curve.py --runs RUNS --evals EVALS --model RUN/models/mcnn

writes ``results/ccp/compute.csv`` (one row per point) and ``compute.png`` (avg F1 against the training pairs and
against the seconds of training on one core; the trunk's seconds exclude its one-off feature cache).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from qparse_lite.io import atomic_path, atomic_write_text

R = Path(__file__).resolve().parent.parent / "results" / "ccp"
BUDGETS = (1366, 4552, 13653)  # pairs per epoch: 1/30, 1/9, 1/3 of the ccp profile's 40,960
TRUNK_VARIANT = "trunk-cross54"  # the ccp profile's trunk_variant, whose curve results/ccp/trunk/ holds
COLUMNS = ["family", "variant", "seed", "pairs_per_epoch", "pairs_seen", "train_s", "val_full_avg_f1",
           "val_auc_macro", "val_auc", "disp_err_below_trivial", "run"]  # fmt: skip


def _val_f1(scores: Path) -> float:
    """The validation avg F1 at full resolution that ``qparse evaluate --split val --data-root DIR`` wrote."""
    rec = json.loads(scores.read_text())
    if rec.get("run", {}).get("split", "val") != "val" or "full_resolution" not in rec:
        raise SystemExit(f"{scores}: not a full-resolution validation evaluation. Fix: qparse evaluate --split val "
                         "--data-root DIR")  # fmt: skip
    return round(float(rec["full_resolution"]["avg_f1"]), 2)


def scratch_rows(runs: Path, evals: Path, model: Path) -> list[dict]:
    """The from-scratch family's points: ``runs/mcnn-p<P>`` and the full-budget ``model``, each with its
    evaluation ``evals/<folder name>/scores.json``."""
    points = [runs / f"mcnn-p{p}" for p in BUDGETS] + [model]
    rows = []
    for run in points:
        ev = evals / run.name / "scores.json"
        if not (run / "run.json").is_file() or not ev.is_file():
            raise SystemExit(f"{run}: missing run.json or {ev}. Fix: train and evaluate it (see this script's "
                             "docstring)")  # fmt: skip
        r = json.loads((run / "run.json").read_text())
        fv = r["final_val"]
        rows.append({"family": "scratch", "variant": r["variant"], "seed": r["profile_fields"]["seed"],
                     "pairs_per_epoch": r["profile_fields"]["pairs_per_epoch"], "pairs_seen": fv["pairs_seen"],
                     "train_s": round(r["train_s"], 1), "val_full_avg_f1": _val_f1(ev),
                     "val_auc_macro": round(fv["val_auc_macro"], 4), "val_auc": round(fv["val_auc"], 4),
                     "disp_err_below_trivial": round(fv["disp_err_below_trivial"], 4),
                     "run": f"curve/{run.name}" if run != model else "models/mcnn"})  # fmt: skip
    return rows


def trunk_rows(curve: Path) -> list[dict]:
    """The trunk default's points (seed 0) of the trunk family's own compute curve."""
    df = pd.read_csv(curve)
    df = df[(df.variant == TRUNK_VARIANT) & (df.seed == 0) & df.run.str.fullmatch(r".*-p\d+")]
    df = df.dropna(subset=["val_full_avg_f1"])
    return [{"family": "trunk", "variant": TRUNK_VARIANT, "seed": 0,
             "pairs_per_epoch": int(re.fullmatch(r".*-p(\d+)", x.run).group(1)),  # the run's --set ...=P
             "pairs_seen": x.pairs, "train_s": x.train_s, "val_full_avg_f1": x.val_full_avg_f1,
             "val_auc_macro": x.val_auc_macro, "val_auc": x.val_auc,
             "disp_err_below_trivial": x.disp_err_below_trivial, "run": f"trunk/runs/cross54-145/{x.run}"}
            for x in df.itertuples()]  # fmt: skip


def draw(df: pd.DataFrame, lt: float, path: Path) -> Path:
    """avg F1 against pairs and against training seconds, one line per family, label transfer as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    names = {"scratch": "M-CNN from scratch (cross 5,4,3,2)", "trunk": f"M-CNN on the ImageNet trunk ({TRUNK_VARIANT})"}
    for ax, x, xlabel in ((axes[0], "pairs_seen", "training pairs seen"),
                          (axes[1], "train_s", "seconds of training (1 CPU thread)")):  # fmt: skip
        for fam, g in df.groupby("family", sort=False):
            g = g.sort_values(x)
            ax.plot(g[x], g.val_full_avg_f1, "o-", label=names[fam])
        ax.axhline(lt, color="tab:gray", ls="--", label="KNN label transfer (no training)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation avg F1, full resolution (%)")
    axes[0].legend(fontsize="small")
    fig.suptitle("CCP validation (warp 145 px, K = 9, the profile's post-processing), seed 0 per point", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="folder of the mcnn-p<P> runs")
    ap.add_argument("--evals", type=Path, required=True, help="folder of the validation evaluations")
    ap.add_argument("--model", type=Path, required=True, help="the full-budget model (RUN/models/mcnn)")
    ap.add_argument("--out", type=Path, default=R, help="results folder (default results/ccp)")
    args = ap.parse_args(argv)
    df = pd.DataFrame(scratch_rows(args.runs, args.evals, args.model) + trunk_rows(args.out / "trunk" / "curve.csv"),
                      columns=COLUMNS)  # fmt: skip
    lt = _val_f1(args.evals / "label-transfer" / "scores.json")
    df["label_transfer_val_full_avg_f1"] = lt
    atomic_write_text(args.out / "compute.csv", df.to_csv(index=False))
    draw(df, lt, args.out / "compute.png")
    print(df.drop(columns="run").to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
