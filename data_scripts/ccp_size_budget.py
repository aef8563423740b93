"""Where the CPU budget buys the most: M-CNN runs on CCP side by side, against pairs seen and time.

Each run is ``qparse train --profile ccp [--set FIELD=VALUE ...]`` (image size, pairs per epoch, dropout, the
displacement loss, translation, ...) on a corpus prepared at its size (``qparse prepare ... --size S
--feature-size 224``); one thread each, two runs side by side on the 2-core machine. Every number is on the
**validation** split (the test split is never read here).

Usage::

    python data_scripts/ccp_size_budget.py [--name STEM] [--title TITLE] KEY=RUN_DIR[:VAL_EVAL_DIR] ...

``VAL_EVAL_DIR`` (optional) is ``qparse evaluate --model RUN_DIR --split val ...``: its average F1 is added to
the run's last row. Writes ``results/ccp/STEM.csv``, the table of ``STEM.md`` (a page written by hand,
its table between markers) and ``STEM.png`` (default STEM
``size_budget``: the image-size study; ``disp_head``: the displacement-head study).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import pandas as pd

from qparse_lite.io import atomic_write_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

R = Path(__file__).resolve().parent.parent / "results" / "ccp"


def rows_of(key: str, run: Path, val_eval: Path | None, extra: bool = False) -> list[dict]:
    """One row per epoch of a run: pairs seen, cumulative training seconds and the validation metrics."""
    rec = json.loads((run / "run.json").read_text())
    log = pd.read_csv(run / "log.csv")
    pf, tv = rec["profile_fields"], rec["trivial_val"]
    f1 = json.loads((val_eval / "scores.json").read_text())["avg_f1"] if val_eval else float("nan")
    out, t = [], 0.0
    for i, r in log.iterrows():
        t += rec["epoch_times_s"][i]
        last = i == len(log) - 1
        out.append({
            "run": key, "image_size": pf["image_size"], "width": pf["width"], "dropout": pf.get("dropout", 0.0),
            **({"shift": pf.get("shift", 0.0), "disp_loss": pf.get("disp_loss", "l2"),
                "disp_weight": pf.get("disp_weight", 1.0), "label_power": pf["label_power"], "seed": rec["seed"]}
               if extra else {}),
            "pairs_per_epoch": pf["pairs_per_epoch"], "epoch": int(r["epoch"]), "pairs_seen": int(r["pairs_seen"]),
            "elapsed_s": round(t, 1), "val_auc": r["val_auc"], "val_auc_vote": rec["vote_val"]["auc"],
            "val_disp_err": r["val_disp_err"], "val_disp_err_trivial": tv["disp_err"],
            "disp_err_below_trivial": 1.0 - r["val_disp_err"] / tv["disp_err"],
            "val_avg_f1": f1 if last else float("nan"),
        })  # fmt: skip
    return out


TABLE_START, TABLE_END = "<!-- table: written by data_scripts/ccp_size_budget.py -->", "<!-- end of table -->"


def write_table(page: Path, table: str) -> None:
    """Put ``table`` between the page's table markers (the page's prose is written by hand and kept);
    a page without the markers is created holding the table alone."""
    block = f"{TABLE_START}\n{table}\n{TABLE_END}"
    text = page.read_text() if page.is_file() else ""
    if TABLE_START in text and TABLE_END in text:
        head, _, rest = text.partition(TABLE_START)
        text = head + block + rest.partition(TABLE_END)[2]
    else:
        text = block + "\n"
    atomic_write_text(page, text)


def page_table(df: pd.DataFrame, name: str) -> str:
    """The Markdown table of the page: each run's last epoch. ``disp_head`` keeps the columns that differ
    between runs (the csv keeps all)."""
    last = df.groupby("run").tail(1)
    if name != "size_budget":
        same = [c for c in ("image_size", "width", "dropout", "shift", "pairs_per_epoch", "epoch", "pairs_seen")
                if last[c].nunique() == 1]  # fmt: skip
        last = last.drop(columns=same)
    return last.to_markdown(index=False, floatfmt=".4f")


def main(specs: list[str], name: str = "size_budget", title: str | None = None) -> pd.DataFrame:
    """Rows of every run (``KEY=RUN_DIR[:VAL_EVAL_DIR]``) into ``results/ccp/NAME.{csv,md,png}``."""
    rows = []
    for spec in specs:
        key, _, paths = spec.partition("=")
        run, _, ev = paths.partition(":")
        rows += rows_of(key, Path(run), Path(ev) if ev else None, extra=name != "size_budget")
    df = pd.DataFrame(rows)
    df.to_csv(R / f"{name}.csv", index=False, float_format="%.6f")
    write_table(R / f"{name}.md", page_table(df, name))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, g in df.groupby("run", sort=False):
        axes[0].plot(g["pairs_seen"], g["disp_err_below_trivial"] * 100, "o-", label=key)
        axes[1].plot(g["elapsed_s"] / 60, g["disp_err_below_trivial"] * 100, "o-", label=key)
    for ax, xl in zip(axes, ("pairs seen", "minutes of training + validation (1 thread)"), strict=True):
        ax.axhline(20, color="grey", ls="--", lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel("val displacement error below trivial (%)")
    axes[0].set_xscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle(title or "CCP, default M-CNN (width 0.5): image size vs pairs in a CPU budget (validation split)")
    fig.tight_layout()
    fig.savefig(R / f"{name}.png", dpi=110)
    return df


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="KEY=RUN_DIR[:VAL_EVAL_DIR]")
    ap.add_argument("--name", default="size_budget", help="output stem in results/ccp (default size_budget)")
    ap.add_argument("--title", default=None, help="figure title")
    a = ap.parse_args()
    print(main(a.runs, a.name, a.title).groupby("run").tail(1).to_string(index=False))
