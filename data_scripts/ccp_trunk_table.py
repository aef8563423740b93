"""Tables of the trunk M-CNN family on CCP (issue 30) from its training runs and their `qparse evaluate` folders.

    python data_scripts/ccp_trunk_table.py --out results/ccp/trunk [--name variants] NAME=RUN:EVAL [NAME=RUN:EVAL ...]

For every ``NAME`` (a row), ``RUN`` is a ``qparse train --variant trunk-...`` folder and ``EVAL`` a ``qparse
evaluate`` output folder of that run (any split). Writes ``<name>.csv`` / ``<name>.md`` (default ``variants``): the run's matching
quality on the validation pairs (per-label and pooled AUC of ĉ_l, the retrieval's frozen presence head on the
same pairs, the displacement error below the trivial predictor's), its training seconds, and the parse scored
at full resolution (``full_*``: pasted back into the photo, the metric of ``qparse photos``) and at the crop
(``crop_*``), and ``<name>_per_label.csv`` (full-resolution F1 per label).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from qparse_lite.io import atomic_write_text


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _post(run: dict) -> str:
    """The post-processing values the evaluation used and where each came from (flag, postprocess.json, profile)."""
    post = run.get("postprocess") or {}
    values, sources = post.get("values", {}), post.get("sources", {})
    return " ".join(f"{k}={v}({sources.get(k, '?')[0]})" for k, v in values.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", nargs="+", help="NAME=RUN:EVAL")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--name", default="variants", help="file stem (default variants)")
    a = p.parse_args()
    rows, per_label = [], []
    for spec in a.rows:
        name, paths = spec.split("=", 1)
        run, ev = (Path(x) for x in paths.split(":", 1))
        r = json.loads((run / "run.json").read_text())
        s = json.loads((ev / "scores.json").read_text())
        full = s["full_resolution"]
        fv = r["final_val"]
        rows.append({
            "row": name, "variant": r["variant"], "seed": r["seed"],
            "trunk_label": r["profile_fields"].get("trunk_label", "none"), "pairs": fv["pairs_seen"],
            "val_auc_macro": round(fv["val_auc_macro"], 4), "val_auc": round(fv["val_auc"], 4),
            "presence_head_auc_macro": round(r.get("presence_head_val", {}).get("auc_macro", float("nan")), 4),
            "disp_err_below_trivial": round(fv["disp_err_below_trivial"], 4), "train_s": r["train_s"],
            "split": s["run"].get("split", ""), "postprocess": _post(s["run"]),
            "full_avg_f1": round(full["avg_f1"], 2),
            "full_fg_accuracy": round(full["fg_accuracy"], 2), "full_accuracy": round(full["accuracy"], 2),
            "crop_avg_f1": round(s["avg_f1"], 2), "crop_fg_accuracy": round(s["fg_accuracy"], 2),
        })  # fmt: skip
        per_label.append({"row": name, **{k: round(v, 1) for k, v in full["per_label_f1"].items()}})
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / f"{a.name}.csv", _csv(rows))
    atomic_write_text(a.out / f"{a.name}_per_label.csv", _csv(per_label))
    head = ["row", "seed", "val_auc_macro", "presence_head_auc_macro", "val_auc", "disp_err_below_trivial", "train_s",
            "split", "full_avg_f1", "full_fg_accuracy", "crop_avg_f1"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x[h]) for h in head) + " |" for x in rows]
    atomic_write_text(a.out / f"{a.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
