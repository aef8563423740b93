"""Choose the training schedule on the VALIDATION split for a profile's CPU budget (issue 12, notebook 03).

One command::

    python benchmarks/sweep_schedule.py --profile quick --out benchmarks/results/ --work /tmp/sweep

trains the profile's default variant once per candidate schedule below (optimiser, learning rate, warm-up,
decay), every run with the same pairs (the profile's ``epochs × pairs_per_epoch``), the same corpus, KNN
tables and seed, through :func:`qparse_lite.train.loop.train` (what ``qparse train`` runs), and writes
``<out>/schedule_<profile>.csv`` and ``.md``: per candidate the final validation loss (Eq. (1) on the pairs
parsing scores), the label-level AUC beside the neighbour vote, the displacement error beside the trivial
predictor, and the training seconds. The test split is never read. The best validation loss is the
choice; the profile's fields are then set to it by hand (``qparse_lite/profiles.py``).

``--corpus/--knn/--val-knn`` reuse a prepared corpus and KNN tables (e.g. those of a
``qparse train`` run folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_write_text
from qparse_lite.profiles import get_profile

__all__ = ["CANDIDATES", "run_sweep", "main"]

#: name → profile overrides. "paper" is the paper's SGD (lr 5e-4, momentum 0.9, wd 5e-4, ÷10 on plateau).
CANDIDATES: dict[str, dict[str, Any]] = {
    "paper sgd 5e-4 plateau": {"optimizer": "sgd", "lr": 5e-4, "schedule": "plateau"},
    "adamw 3e-3 warm-up+cosine": {"optimizer": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup": 0.03},
    "adamw 1e-3 warm-up+cosine": {"optimizer": "adamw", "lr": 1e-3, "schedule": "cosine", "warmup": 0.03},
    "sgd 1e-2 warm-up+cosine": {"optimizer": "sgd", "lr": 1e-2, "schedule": "cosine", "warmup": 0.03},
    "adamw 3e-3 warm-up, constant": {"optimizer": "adamw", "lr": 3e-3, "schedule": "constant", "warmup": 0.03},
    "adamw 6e-3 warm-up+cosine": {"optimizer": "adamw", "lr": 6e-3, "schedule": "cosine", "warmup": 0.03},
    "adamw 3e-3 no warm-up, cosine": {"optimizer": "adamw", "lr": 3e-3, "schedule": "cosine", "warmup": 0.0},
}


def run_sweep(profile: str, work: Path, names: list[str] | None = None, corpus: str | None = None,
              knn: str | None = None, val_knn: str | None = None, on_row: Any = None,
              **overrides: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Train every candidate (or ``names``) into ``work/<i>`` (resuming/reusing what is there); returns one
    row per candidate. ``on_row(rows)`` is called after each (e.g. to write the table so far)."""
    from qparse_lite.train.loop import train

    rows = []
    for i, (name, kw) in enumerate(CANDIDATES.items()):
        if names and name not in names:
            continue
        out = Path(work) / f"{i:02d}"
        t0 = time.perf_counter()
        run = train(profile, None, out, resume=True, device="cpu", corpus=corpus, knn=knn, val_knn=val_knn,
                    progress=False, **{**kw, **overrides})  # fmt: skip
        rec = json.loads((run / "run.json").read_text())
        f = rec["final_val"]
        rows.append({
            "schedule": name, "optimizer": kw["optimizer"], "lr": kw["lr"], "decay": kw["schedule"],
            "warmup": kw.get("warmup", 0.0), "pairs": f["pairs_seen"], "val_loss": f["val_loss"],
            "val_auc": f["val_auc"], "vote_auc": f["val_auc_vote"], "val_disp_err": f["val_disp_err"],
            "trivial_disp_err": f["val_disp_err_trivial"], "train_s": rec["train_s"],
        })  # fmt: skip
        print(f"[sweep] {name}: val loss {f['val_loss']:.4f} AUC {f['val_auc']:.3f} disp {f['val_disp_err']:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
        if on_row is not None:
            on_row(rows)
    return rows


def to_markdown(rows: list[dict[str, Any]], profile: str, command: str) -> str:
    """A Markdown table of the sweep, best validation loss first."""
    rows = sorted(rows, key=lambda r: r["val_loss"])
    lines = [f"# Schedule sweep — profile {profile} (validation split)", "", f"command: `{command}`", "",
             "| schedule | pairs | val loss | val AUC | vote AUC | disp err | trivial disp err | train s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['schedule']} | {r['pairs']:,} | {r['val_loss']:.4f} | {r['val_auc']:.3f} | "
                     f"{r['vote_auc']:.3f} | {r['val_disp_err']:.4f} | {r['trivial_disp_err']:.4f} | "
                     f"{r['train_s']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--out", default="benchmarks/results", help="folder for schedule_<profile>.csv/.md")
    p.add_argument("--work", required=True, help="folder for the runs (not in the repository)")
    p.add_argument("--only", action="append", help="candidate name(s) to run (default: all)")
    p.add_argument("--corpus", default=None)
    p.add_argument("--knn", default=None)
    p.add_argument("--val-knn", default=None)
    args = p.parse_args(argv)
    try:
        import pandas as pd

        get_profile(args.profile)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python benchmarks/sweep_schedule.py", *(sys.argv[1:] if argv is None else argv)])

        def write(rows: list[dict[str, Any]]) -> None:
            df = pd.DataFrame(rows).sort_values("val_loss")
            atomic_write_text(out / f"schedule_{args.profile}.csv", df.to_csv(index=False))
            atomic_write_text(out / f"schedule_{args.profile}.md", to_markdown(rows, args.profile, command))

        run_sweep(args.profile, Path(args.work), args.only, args.corpus, args.knn, args.val_knn, on_row=write)
    except QparseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / f"schedule_{args.profile}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
