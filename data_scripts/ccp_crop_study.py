"""The crop study (issue 29): square vs warp crops at two sizes, every method scored at the photos' resolution.

Each cell is one method (KNN label transfer, the LR-ASPP baseline, the default M-CNN) on a CCP corpus prepared
with ``qparse prepare ... --crop square|warp --size S --feature-size 224``, evaluated on the **validation**
split by ``qparse evaluate ... --split val``, which scores the S×S maps at the crop and, pasted back into the
photos, against the photos' own ground truth (``scores.json["full_resolution"]``). Only the full-resolution
numbers compare across crops and sizes: they are scored on the same pixels (docs/paper.md §1.1, §2).

Usage::

    python data_scripts/ccp_crop_study.py METHOD:CROP:SIZE=EVAL_DIR[:RUN_DIR] ...
    python data_scripts/ccp_crop_study.py --ceiling CROP:SIZE=CORPUS ...

``RUN_DIR`` (a ``qparse train`` or ``qparse baseline train`` folder) adds its training wall time. Writes
``results/ccp/crop/crop.csv`` (one row per cell: full-resolution and crop-level scores, the person's share of
the crop and its median box inside the crop on the val split, wall times), ``crop_per_label.csv``
(full-resolution F1 per label), ``crop.md`` and ``crop.png``. ``--ceiling`` writes ``crop_ceiling.csv``: the
full-resolution scores of a perfect parser at the crop (the corpus's own S×S ground truth pasted back), i.e.
what the crop geometry and size alone cost at the photos' resolution.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "results" / "ccp" / "crop"
METHODS = {"lt": "label transfer", "lraspp": "LR-ASPP", "mcnn": "M-CNN"}


def person_geometry(eval_dir: Path) -> dict[str, float]:
    """The person's share of the crop pixels and the median person box (w × h px) inside the crop, over the
    crop-level ground truth the evaluation wrote (``gt/<id>.png``)."""
    from qparse_lite.labels import read_label_png

    share, ws, hs = [], [], []
    for f in sorted((eval_dir / "gt").glob("*.png")):
        g = read_label_png(f) > 0
        share.append(g.mean())
        rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
        if rows.size:
            ws.append(cols[-1] - cols[0] + 1)
            hs.append(rows[-1] - rows[0] + 1)
    return {"person_share_pct": 100 * float(np.mean(share)), "person_box_w": float(np.median(ws)),
            "person_box_h": float(np.median(hs))}  # fmt: skip


def row_of(spec: str) -> tuple[dict, dict]:
    key, _, paths = spec.partition("=")
    method, crop, size = key.split(":")
    ev, _, run = paths.partition(":")
    sc = json.loads((Path(ev) / "scores.json").read_text())
    full = sc["full_resolution"]
    train_s = None
    if run:
        rec = json.loads((Path(run) / "run.json").read_text())
        train_s = rec.get("wall_time_total_s", rec.get("wall_time_s"))
    row = {
        "method": METHODS.get(method, method), "crop": crop, "size": int(size),
        "full_avg_f1": full["avg_f1"], "full_fg_accuracy": full["fg_accuracy"], "full_accuracy": full["accuracy"],
        "crop_avg_f1": sc["avg_f1"], "crop_fg_accuracy": sc["fg_accuracy"], "crop_accuracy": sc["accuracy"],
        **person_geometry(Path(ev)), "images": sc["run"]["images"], "split": sc["run"]["split"],
        "train_wall_s": round(float(train_s), 1) if train_s is not None else float("nan"),
        "eval_wall_s": sc["run"]["wall_time_s"],
    }  # fmt: skip
    per_label = {"method": row["method"], "crop": crop, "size": int(size),
                 **{name: v["f1"] for name, v in full["per_label"].items()}}  # fmt: skip
    return row, per_label


def plot(df: pd.DataFrame, path: Path) -> None:
    """Full-resolution average F1 per method, one bar per (crop, size); cells not run yet are marked n/a."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    sizes = sorted(df["size"].unique())
    settings = [(c, s) for s in sizes for c in ("square", "warp")]
    methods = list(METHODS.values())
    w = 0.8 / len(settings)
    for j, (c, s) in enumerate(settings):
        vals = [df[(df.method == m) & (df.crop == c) & (df["size"] == s)].full_avg_f1 for m in methods]
        ys = [float(v.iloc[0]) if len(v) else np.nan for v in vals]
        xs = np.arange(len(methods)) + (j - (len(settings) - 1) / 2) * w
        ax.bar(xs, ys, w, label=f"{c} {s} px", hatch="//" if c == "warp" else None, edgecolor="k", lw=0.4,
               color=plt.cm.tab20(2 * sizes.index(s) + (c == "warp")))  # fmt: skip
        for x, y in zip(xs, ys, strict=True):
            ax.text(x, (0.3 if np.isnan(y) else y + 0.3), "n/a" if np.isnan(y) else f"{y:.1f}", ha="center",
                    va="bottom", fontsize=6, rotation=90)  # fmt: skip
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set_ylabel("avg F1 (%), full resolution")
    ax.set_ylim(0, np.nanmax(df.full_avg_f1) * 1.25)
    ax.set_title("CCP validation (100 photos): label maps pasted back into the photos", fontsize=9)
    ax.legend(fontsize=7, ncols=4, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(specs: list[str]) -> pd.DataFrame:
    rows, labels = zip(*(row_of(s) for s in specs), strict=True)
    order = {m: i for i, m in enumerate(METHODS.values())}
    df = pd.DataFrame(rows).sort_values(["method", "size", "crop"], key=lambda c: c.map(order) if c.name == "method" else c)
    pl = pd.DataFrame(labels).set_index(["method", "crop", "size"]).loc[[tuple(r) for r in df[["method", "crop", "size"]].values]].reset_index()
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(OUT / "crop.csv", index=False, float_format="%.2f")
    pl.to_csv(OUT / "crop_per_label.csv", index=False, float_format="%.2f")
    cols = ["method", "crop", "size", "full_avg_f1", "full_fg_accuracy", "full_accuracy", "crop_avg_f1",
            "person_share_pct", "person_box_w", "person_box_h", "train_wall_s", "eval_wall_s"]  # fmt: skip
    (OUT / "crop.md").write_text(df[cols].to_markdown(index=False, floatfmt=".2f") + "\n")
    plot(df, OUT / "crop.png")
    return df


def ceiling(specs: list[str], split: str = "val") -> pd.DataFrame:
    """Full-resolution scores of the corpus's own S×S ground truth pasted back (``CROP:SIZE=CORPUS``)."""
    from qparse_lite.data.prepare import Corpus, source_dataset
    from qparse_lite.evaluation.evaluate import evaluate_parser, full_resolution_gt

    rows = []
    for spec in specs:
        key, _, path = spec.partition("=")
        crop, size = key.split(":")
        c = Corpus.load(path, verify=False)
        sc = evaluate_parser(lambda i, c=c: np.asarray(c.labels[i]), c, c.split(split), c.label_set,
                             full_gt=full_resolution_gt(c, source_dataset(c)), progress=False)["full_resolution"]  # fmt: skip
        rows.append({"crop": crop, "size": int(size), "split": split, "full_avg_f1": sc["avg_f1"],
                     "full_fg_accuracy": sc["fg_accuracy"], "full_accuracy": sc["accuracy"]})  # fmt: skip
    df = pd.DataFrame(rows)
    df.to_csv(OUT / "crop_ceiling.csv", index=False, float_format="%.2f")
    return df


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="+", help="METHOD:CROP:SIZE=EVAL_DIR[:RUN_DIR] (with --ceiling: CROP:SIZE=CORPUS)")
    ap.add_argument("--ceiling", action="store_true", help="score a perfect parser at each corpus's crop")
    a = ap.parse_args()
    print((ceiling(a.specs) if a.ceiling else main(a.specs)).to_string(index=False))
