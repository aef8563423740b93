"""Compute curve of the trunk M-CNN family on CCP (issue 30): `qparse train` at several budgets, one job at a time.

    python data_scripts/ccp_trunk_curve.py run --corpus CORPUS --knn KNN_TRAIN --val-knn KNN_VAL \\
        --runs RUNS --variant trunk-cross5 --pairs 1366 4552 13653 40960 122880 [--set FIELD=VALUE ...]
    python data_scripts/ccp_trunk_curve.py collect --runs RUNS --out results/ccp/trunk [--eval RUN_NAME=EVAL_DIR ...]

``run`` trains one run folder per budget (``RUNS/<variant>-p<P>``: the ccp profile's 5 epochs of P pairs, as
``results/ccp/compute.*`` does for the from-scratch model; or ``-e<E>``: E epochs of 40,960), each with its own
cosine schedule, 1 thread, sequentially, and records each command and its wall
time in ``RUNS/commands.json``. ``collect`` writes ``curve.csv`` and ``curve.md``: per budget the validation
per-label AUC of ĉ_l (``final_val.val_auc_macro``), the pooled label-level AUC, the displacement error and
its share below the trivial predictor's, the training seconds — beside the frozen presence head's per-label
AUC on the same validation pairs (the retrieval's head on the same trunk, measured by each run:
``run.json`` ``presence_head_val``) — and, for the runs given an ``--eval`` folder (``qparse evaluate --split val``
of that run), the parse's validation avg F1 at full resolution; ``curve.png`` draws them against the pairs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from qparse_lite.io import atomic_write_json, atomic_write_text


def run(a: argparse.Namespace) -> None:
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    log_path = runs / "commands.json"
    budgets = [("e", e, ["--epochs", str(e)]) for e in a.epochs or []]
    field = "trunk_pairs_per_epoch" if a.variant.startswith("trunk-") else "pairs_per_epoch"  # the family's budget
    budgets += [("p", n, ["--set", f"{field}={n}"]) for n in a.pairs or []]
    for kind, n, flags in budgets:
        out = runs / f"{a.variant}-{kind}{n}{a.tag}"
        cmd = ["qparse", "train", "--profile", "ccp", "--variant", a.variant, "--corpus", a.corpus, "--knn", a.knn,
               "--val-knn", a.val_knn, *flags, "--threads", "1", "--out", str(out), "--no-progress",
               *[x for s in a.set for x in ("--set", s)]]  # fmt: skip
        if (out / "run.json").is_file():
            continue
        t0 = time.perf_counter()
        r = subprocess.run([str(Path(sys.executable).parent / "qparse"), *cmd[1:]], check=False)
        _append(log_path, {"command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1), "rc": r.returncode})


def _append(log_path: Path, entry: dict) -> None:
    """Add one record to ``commands.json``, re-read under a lock, so two ``run`` jobs sharing one RUNS folder
    keep each other's records."""
    import fcntl

    with open(log_path.with_name(log_path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = json.loads(log_path.read_text()) if log_path.is_file() else []
        atomic_write_json(log_path, [*done, entry])


def collect(a: argparse.Namespace) -> None:
    runs, out = Path(a.runs), Path(a.out)
    cmds: dict[str, dict] = {}
    log = json.loads((runs / "commands.json").read_text()) if (runs / "commands.json").is_file() else []
    for c in log:
        parts = shlex.split(c["command"])
        cmds[Path(parts[parts.index("--out") + 1]).name] = c
    evals = dict(x.split("=", 1) for x in a.eval)
    rows = []
    for d in sorted(runs.iterdir()):
        if not (d / "run.json").is_file():
            continue
        r = json.loads((d / "run.json").read_text())
        fv = r["final_val"]
        rows.append({
            "run": d.name, "variant": r["variant"], "seed": r["seed"], "epochs": r["epochs_done"],
            "pairs": fv["pairs_seen"], "trunk_label": r["profile_fields"].get("trunk_label", "none"),
            "val_auc_macro": round(fv["val_auc_macro"], 4), "val_auc": round(fv["val_auc"], 4),
            "val_auc_vote_macro": round(fv["val_auc_vote_macro"], 4),
            "val_disp_err": round(fv["val_disp_err"], 5), "val_disp_err_trivial": round(fv["val_disp_err_trivial"], 5),
            "disp_err_below_trivial": round(fv["disp_err_below_trivial"], 4),
            "presence_head_val_auc_macro": round(r.get("presence_head_val", {}).get("auc_macro", float("nan")), 4),
            "val_full_avg_f1": _full_f1(evals.get(d.name)),
            "train_s": r.get("train_s"), "wall_s": cmds.get(d.name, {}).get("wall_s"),
            "command": cmds.get(d.name, {}).get("command", ""),
        })  # fmt: skip
    rows.sort(key=lambda x: (x["variant"], x["trunk_label"], x["pairs"], x["seed"]))
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "curve.csv", buf.getvalue())
    lines = ["| run | seed | pairs | val avg F1 (full res.) | val AUC per label | (vote) | presence head | val AUC pooled | disp err | below trivial | train s | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for x in rows:
        f1 = "" if x["val_full_avg_f1"] is None else f"{x['val_full_avg_f1']:.2f}"
        lines.append(f"| {x['run']} | {x['seed']} | {x['pairs']:,} | {f1} | {x['val_auc_macro']:.3f} | {x['val_auc_vote_macro']:.3f} | "
                     f"{x['presence_head_val_auc_macro']:.3f} | {x['val_auc']:.3f} | {x['val_disp_err']:.4f} | "
                     f"{100 * x['disp_err_below_trivial']:.1f} % | {x['train_s']:.0f} | {x['wall_s'] or ''} |")  # fmt: skip
    atomic_write_text(out / "curve.md", "\n".join(lines) + "\n")
    _plot(rows, out / "curve.png")
    print("\n".join(lines))


def _full_f1(ev: str | None) -> float | None:
    if not ev:
        return None
    return round(json.loads((Path(ev) / "scores.json").read_text())["full_resolution"]["avg_f1"], 2)


def _plot(rows: list[dict], path: Path) -> None:
    """Per-label AUC (with the presence head and the vote), displacement error below trivial and val avg F1
    against the pairs trained, one line per variant (seed 0 runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for variant in sorted({x["variant"] for x in rows}):
        rs = sorted((x for x in rows if x["variant"] == variant and x["seed"] == 0 and x["trunk_label"] != "none"),
                    key=lambda x: x["pairs"])  # fmt: skip
        if len(rs) < 2:
            continue
        n = [x["pairs"] for x in rs]
        axes[0].plot(n, [x["val_auc_macro"] for x in rs], "o-", label=f"{variant}: ĉ_l")
        axes[0].plot(n, [x["presence_head_val_auc_macro"] for x in rs], "k--", lw=1, label="frozen presence head")
        axes[0].plot(n, [x["val_auc_vote_macro"] for x in rs], "k:", lw=1, label="neighbour vote")
        axes[1].plot(n, [100 * x["disp_err_below_trivial"] for x in rs], "o-", label=variant)
        f1 = [(x["pairs"], x["val_full_avg_f1"]) for x in rs if x["val_full_avg_f1"] is not None]
        if f1:
            axes[2].plot(*zip(*f1, strict=True), "o-", label=variant)
    titles = ("per-label AUC of ĉ_l (val)", "displacement error below trivial, %", "val avg F1, full resolution")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("training pairs")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    for name in ("--corpus", "--knn", "--val-knn", "--runs", "--variant"):
        r.add_argument(name, required=True)
    r.add_argument("--epochs", type=int, nargs="+", help="budgets as epochs of the profile's pairs per epoch for the family")
    r.add_argument("--pairs", type=int, nargs="+", help="budgets as pairs per epoch (the trunk family's trunk_pairs_per_epoch) at the profile's 5 epochs")
    r.add_argument("--set", action="append", default=[])
    r.add_argument("--tag", default="", help="suffix of the run folders (e.g. -seed1)")
    c = sub.add_parser("collect")
    c.add_argument("--runs", required=True)
    c.add_argument("--eval", action="append", default=[], help="RUN_NAME=EVAL_DIR (a qparse evaluate --split val)")
    c.add_argument("--out", required=True)
    a = p.parse_args()
    (run if a.cmd == "run" else collect)(a)


if __name__ == "__main__":
    main()
