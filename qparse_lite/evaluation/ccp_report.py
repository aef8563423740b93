"""``results/ccp/report.md``: the committed real-data results of the kit, read back from their own files.

:mod:`qparse_lite.evaluation.report` writes the report of one ``qparse reproduce`` run (its notebooks' CSV
files); this module writes the report of the committed CCP results folder (``results/ccp``), whose rows come
from several commands (``results/ccp/rows.csv``): Table 1 of both M-CNN families and the baselines, crop level
and full resolution, the training seeds, Table 2, the parses figure, the post-processing chosen on
validation, the compute curves, the new-label study, the raw photos and the paper's claims judged per family
(:mod:`qparse_lite.evaluation.claims`). Every number is read from a file of the folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from qparse_lite.evaluation import reported
from qparse_lite.evaluation.report import FAMILIES, T1_COLS, md_table, side_by_side_fig5, side_by_side_table2
from qparse_lite.io import atomic_write_text

__all__ = ["ccp_table1", "ccp_seed_table", "ccp_family", "ccp_setting", "write_ccp_report", "write_label_map_figure",
           "CCP_ROWS", "CCP_HEADLINE_KEYS", "CCP_TABLE2_KEYS", "claims_table", "CLAIMS_CHANGES_COLUMNS"]


CCP_ROWS: list[tuple[str, str]] = [
    # the from-scratch family (the paper's networks as published)
    ("mcnn", "M-CNN (cross 5,4,3,2)"), ("wo-cross", "M-CNN (w/o cross)"), ("cross5", "M-CNN (cross 5)"),
    ("cross54", "M-CNN (cross 5,4)"), ("cross543", "M-CNN (cross 5,4,3)"), ("cross54321", "M-CNN (cross 5,4,3,2,1)"),
    ("siamese", "Siamese [2]"), ("mcnn-ss", "M-CNN, superpixels at the best count on val"),
    ("mcnn-wo-ss", "M-CNN (w/o ss)"),
    # the frozen ImageNet trunk family (no conv1 level: no cross54321)
    ("trunk-mcnn", "M-CNN (cross 5,4,3,2), ImageNet trunk"), ("trunk-wo-cross", "M-CNN (w/o cross), ImageNet trunk"),
    ("trunk-cross5", "M-CNN (cross 5), ImageNet trunk"), ("trunk-cross54", "M-CNN (cross 5,4), ImageNet trunk"),
    ("trunk-cross543", "M-CNN (cross 5,4,3), ImageNet trunk"), ("trunk-siamese", "Siamese [2], ImageNet trunk"),
    ("trunk-mcnn-ss", "M-CNN, ImageNet trunk, superpixels at the best count on val"),
    ("trunk-mcnn-wo-ss", "M-CNN (w/o ss), ImageNet trunk"),
    # the baselines
    ("label-transfer", "KNN label transfer"), ("mean-label-map", "mean label map (prior)"),
    ("parametric-imagenet", "LR-ASPP + EfficientNet-Lite0, ImageNet (not in the paper)"),
    ("parametric-scratch", "LR-ASPP + EfficientNet-Lite0, scratch (not in the paper)"),
    # the earlier setting only (square 113-px crops, untuned rows beside tuned ones)
    ("mcnn-tuned", "M-CNN, post-processing tuned on val"), ("mcnn-tuned-wo-ss", "M-CNN, tuned on val, w/o ss"),
    ("label-transfer-tuned", "KNN label transfer, tuned on val"),
]  # fmt: skip
"""Result keys of ``results/ccp`` (``tables/<key>_table1.csv``, ``pred/<key>/``) and their row names, both M-CNN
families (:func:`ccp_family`) and the baselines. In the fair setting (issue 31) every row carries the
post-processing chosen on validation (its family's values; ``-ss``: superpixels at the best non-zero count on
val, ``-wo-ss``: none); training seeds beyond 0 are ``<key>-seed<N>`` (:func:`~qparse_lite.evaluation.claims.seed_keys`,
:func:`ccp_seed_table`). The last three keys are the earlier setting's (absent from a fair-setting folder)."""

CCP_HEADLINE_KEYS: tuple[str, ...] = ("mcnn", "trunk-mcnn", "trunk-cross54", "label-transfer")
"""The rows whose full-resolution label maps are committed (``full/pred/<key>/``, beside ``full/gt/``): each
family's full model, the trunk family's default (the profile's ``trunk_variant``) and label transfer."""

CCP_TABLE2_KEYS: tuple[str, ...] = ("mcnn", "mcnn-tuned", "trunk-mcnn", "trunk-cross54", "label-transfer",
                                    "label-transfer-tuned", "parametric-imagenet")  # fmt: skip
"""The rows of the report's Table 2 (those present): the headline rows of both families beside label transfer
and the LR-ASPP."""


def ccp_family(key: str) -> str:
    """The M-CNN family of a result key (``scratch`` / ``trunk``: the variant it starts with, any ``-<suffix>``
    after it, as :func:`~qparse_lite.evaluation.claims.family_key` reads keys); "" for a baseline."""
    from qparse_lite.model.mcnn import TABLE1_VARIANTS, TRUNK_VARIANTS

    for family, variants in (("trunk", TRUNK_VARIANTS), ("scratch", TABLE1_VARIANTS)):
        if any(key == v or key.startswith(v + "-") for v in variants):
            return family
    return ""


def _first_row(path: Path) -> dict | None:
    return pd.read_csv(path).iloc[0].to_dict() if path.is_file() else None


def ccp_table1(results: str | Path) -> pd.DataFrame:
    """Table 1 of every committed CCP row: key, row name, ``family`` (:func:`ccp_family`), paper row, the five
    metrics at the crop and ``avg_f1 (full res.)``, the avg F1 of the same maps pasted back into the photos
    (``tables/<key>_table1_full.csv``; NaN where the row has none)."""
    t = Path(results) / "tables"
    rows = []
    for key, name in CCP_ROWS:
        r = _first_row(t / f"{key}_table1.csv")
        if r is None:
            continue
        full = _first_row(t / f"{key}_table1_full.csv")
        pm = r.get("paper_method") if isinstance(r.get("paper_method"), str) else ""
        rows.append({"key": key, "method": name, "family": ccp_family(key), "paper_method": pm,
                     **{c: r[c] for c in T1_COLS},
                     "avg_f1 (full res.)": full["avg_f1"] if full else float("nan")})  # fmt: skip
    return pd.DataFrame(rows, columns=["key", "method", "family", "paper_method", *T1_COLS, "avg_f1 (full res.)"])


def ccp_seed_table(results: str | Path) -> pd.DataFrame:
    """Rows of :data:`CCP_ROWS` (both families) trained with more than one seed: avg F1 per seed, mean and
    sample std."""
    import numpy as np

    from qparse_lite.evaluation.claims import seed_avg_f1

    rows = []
    for key, name in CCP_ROWS:
        f1 = seed_avg_f1(results, key)
        if len(f1) > 1:
            rows.append({"method": name, "family": FAMILIES.get(ccp_family(key), ""), "seeds": len(f1),
                         "avg_f1 per seed": ", ".join(f"{x:.2f}" for x in f1),
                         "mean": round(float(np.mean(f1)), 2), "std": round(float(np.std(f1, ddof=1)), 2)})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "family", "seeds", "avg_f1 per seed", "mean", "std"])


def ccp_setting(results: str | Path) -> str:
    """The crop the committed rows were scored at, from the files: ``warp crops, 145 px`` (their scores.json
    ``run.crop``/``run.size``, else the models' run.json ``profile_fields``), the most common over the rows."""
    import collections

    res = Path(results)
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    for key, _ in CCP_ROWS:
        f = res / "tables" / f"{key}_scores.json"
        if f.is_file():
            run = json.loads(f.read_text()).get("run") or {}
            if run.get("size"):
                seen[(run.get("crop") or "square", int(run["size"]))] += 1
    if not seen:
        for f in sorted(res.glob("models/*/run.json")):
            prof = json.loads(f.read_text()).get("profile_fields") or {}
            if prof.get("image_size"):
                seen[(prof.get("crop") or "square", int(prof["image_size"]))] += 1
    if not seen:
        return "crops of the corpus's size"
    (crop, size), _ = seen.most_common(1)[0]
    return f"{crop} crops, {size} px"


_SHORT = {"mcnn": "M-CNN", "mcnn-tuned": "M-CNN, tuned", "label-transfer": "label transfer",
          "parametric-imagenet": "LR-ASPP (ImageNet)"}  # fmt: skip


def write_label_map_figure(results: str | Path, n: int = 6) -> Path | None:
    """``results/parses.png``: ground truth and each committed parser's maps for the ``n`` test images with
    the most labels (the paper's Fig. 4 layout, label maps only): the from-scratch M-CNN, the trunk family's
    default (the ccp profile's ``trunk_variant``), label transfer and the LR-ASPP; None when the maps are missing."""
    import matplotlib.pyplot as plt
    import numpy as np

    from qparse_lite.io import atomic_path
    from qparse_lite.labels import get_label_set, read_label_png
    from qparse_lite.model.mcnn import method_name
    from qparse_lite.profiles import get_profile
    from qparse_lite.viz.plots import label_map_grid

    res = Path(results)
    gt_dir = res / "gt"
    trunk = get_profile("ccp").trunk_variant
    short = {**_SHORT, trunk: method_name(trunk).replace(", ImageNet trunk", " (trunk)")}
    keys = [k for k in ("mcnn", "mcnn-tuned", trunk, "label-transfer", "parametric-imagenet")
            if (res / "pred" / k).is_dir()]  # fmt: skip
    if not gt_dir.is_dir() or not keys:
        return None
    names = sorted(p.name for p in gt_dir.glob("*.png"))
    gts = {x: read_label_png(gt_dir / x) for x in names}
    pick = sorted(names, key=lambda x: (-len(np.unique(gts[x])), x))[:n]
    cols = {"ground truth": [gts[x] for x in pick]}
    for k in keys:
        cols[short[k]] = [read_label_png(res / "pred" / k / x) for x in pick]
    fig = label_map_grid(cols, get_label_set("ccp-coarse"), row_names=[x[:-4] for x in pick])
    out = res / "parses.png"
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


CLAIMS_CHANGES_COLUMNS: list[str] = ["claim", "family", "previous verdict", "why"]
"""The columns of a results folder's optional ``claims_changes.csv`` (:func:`claims_table`)."""


def claims_table(claims: pd.DataFrame, changes: str | Path | None = None) -> pd.DataFrame:
    """The claims table of ``report.md`` from :func:`qparse_lite.evaluation.claims.judge_claims`'s rows: each
    claim's rows of both families together, the claim and its paper numbers written on the first of them only,
    the family in words (:data:`FAMILIES`).

    ``changes`` (optional; absent file or None: no such columns): a CSV, ``claims_changes.csv`` beside the
    results, that says what changed from the previous setting and why, with the columns
    :data:`CLAIMS_CHANGES_COLUMNS`: ``claim`` (the claim's text as in ``claims.csv``), ``family`` (its key,
    ``scratch`` or ``trunk``), ``previous verdict`` (the verdict under the previous setting) and ``why`` (what
    changed since, in words). Its ``previous verdict`` and ``why`` are joined onto the rows by (claim, family);
    a claim and family with no row there gets empty cells. A row naming no judged (claim, family), or two rows
    naming the same one, is an error (a stale or mistyped file)."""
    df = claims.copy()
    if changes is not None and Path(changes).is_file():
        ch = pd.read_csv(changes, dtype=str, keep_default_na=False)
        missing = [c for c in CLAIMS_CHANGES_COLUMNS if c not in ch.columns]
        if missing:
            raise ValueError(f"{changes}: no column {', '.join(missing)} (needs {', '.join(CLAIMS_CHANGES_COLUMNS)})")
        ch = ch[CLAIMS_CHANGES_COLUMNS]
        dup = ch[ch.duplicated(["claim", "family"])]
        known = set(zip(df["claim"], df["family"], strict=True))
        unknown = [(c, f) for c, f in zip(ch["claim"], ch["family"], strict=True) if (c, f) not in known]
        if len(dup) or unknown:
            bad = [*unknown, *zip(dup["claim"], dup["family"], strict=True)]
            raise ValueError(f"{changes}: rows naming no judged (claim, family), or named twice: {bad}")
        df = df.merge(ch, on=["claim", "family"], how="left").fillna({"previous verdict": "", "why": ""})
    df = df.iloc[pd.factorize(df["claim"])[0].argsort(kind="stable")].reset_index(drop=True)
    repeat = df["claim"].duplicated()  # a claim's second family: its claim and paper cells left empty
    df.loc[repeat, ["claim", "paper"]] = ""
    df["family"] = [FAMILIES.get(f, f) for f in df["family"]]
    return df


def _values(v: dict | None) -> str:
    """``xi1 0.3, xi2 0.2, ...`` (n_segments 0: ``no superpixels``)."""
    if not v:
        return "—"
    return ", ".join("no superpixels" if k == "n_segments" and not x else f"{k} {x}" for k, x in v.items())


def _tuning_section(res: Path) -> list[str]:
    """The post-processing chosen on validation: ``tuning/postprocess_val.json`` (the fair setting: both families
    and label transfer, notebook 05), else the earlier setting's ``tuning/tuning.json``."""
    from qparse_lite.evaluation.evaluate import grid_edges

    pv_path, tune = res / "tuning" / "postprocess_val.json", res / "tuning" / "tuning.json"
    if pv_path.is_file():
        pv = json.loads(pv_path.read_text())
        rows, edges = [], []
        for fam in (*FAMILIES, "label-transfer"):
            e = pv.get(fam)
            if not isinstance(e, dict):
                continue
            score = (e.get("score") or {}).get("avg_f1")
            rows.append({"family": FAMILIES.get(fam, ""), "chosen on": e.get("model") or "KNN label transfer",
                         "values (every row of the family)": _values(e.get("values")),
                         "with superpixels (the -ss row)": _values(e.get("values_ss")) if fam in FAMILIES else "",
                         "val avg F1": score if score is not None else float("nan")})  # fmt: skip
            at = e.get("grid_edges") or (grid_edges(e["values"], e["grid"]) if isinstance(e.get("grid"), dict) else [])
            edges += [f"{fam}: {n} = {e['values'].get(n)}" for n in at]
        out = [f"## Post-processing chosen on the validation split ({pv.get('split', 'val')})\n\n"
               "Notebook 05 chose each family's post-processing on its default model (`qparse tune`'s coordinate "
               "ascent) and label transfer's own knobs, on the validation split; every Table 1 row of a family "
               "carries its family's values (`-ss`: superpixels at the best non-zero count on val; `-wo-ss`: none), "
               "each row's `qparse evaluate` command in *Every row* below gives them as flags. Every value tried: "
               "`tuning/postprocess_val.json` (`table`).\n\n" + md_table(pd.DataFrame(rows)) + "\n"]  # fmt: skip
        if edges:
            out.append(f"**At the end of its grid:** {'; '.join(edges)} (the best value on val may lie beyond the "
                       "values tried).\n")  # fmt: skip
        return out
    if not tune.is_file():
        return []
    tj = json.loads(tune.read_text())
    out = ["## Post-processing chosen on the validation split\n\n"
           f"M-CNN (coordinate ascent over {', '.join(tj['grid'])}, in that order): chosen "
           f"`{tj['mcnn']}`; label transfer (its superpixel count, 0 = none): chosen "
           f"`{tj['label_transfer']}`. Every value tried: `tuning/mcnn_val_tuning.csv`, "
           "`tuning/tuning.json`. The *tuned* rows of Table 1 apply these to the test split.\n"]  # fmt: skip
    edges = grid_edges(tj["mcnn"], tj["grid"])
    if edges:
        at = ", ".join(f"{n} = {tj['mcnn'][n]}" for n in edges)
        out.append(f"**At the end of its grid:** {at} (the best value on val may lie beyond the values tried; a "
                   "wider grid is the next run).\n")  # fmt: skip
    return out


def _compute_section(res: Path) -> list[str]:
    """Validation avg F1 against training budget: both families (``compute.csv``, ``compute.png``, written by
    ``data_scripts/ccp_compute_curve.py``), else the trunk family's own curve (``trunk/curve.csv``) alone."""
    comp, curve = res / "compute.csv", res / "trunk" / "curve.csv"
    if comp.is_file():
        df = pd.read_csv(comp)
        lt = df.pop("label_transfer_val_full_avg_f1").iloc[0] if "label_transfer_val_full_avg_f1" in df else None
        img = "\n\n![compute](compute.png)" if (res / "compute.png").is_file() else ""
        note = f" KNN label transfer (no training) scores {lt:.2f} on the same split and scoring." if lt is not None else ""
        return ["## How results grow with compute (validation avg F1 against training budget)\n",
                "Each point is one training of the family's default at a budget of pairs per epoch (5 epochs, seed 0,"
                " one thread), scored on the validation split at full resolution with the profile's post-processing"
                f" (`compute.csv`; commands in README.md).{note} The trunk family's whole curve, its other variants"
                " and seeds: `trunk/curve.md`.\n\n" + md_table(df.drop(columns=["run"], errors="ignore")) + img + "\n"]  # fmt: skip
    if curve.is_file():
        df = pd.read_csv(curve)
        cols = [c for c in ("run", "variant", "pairs", "val_auc_macro", "disp_err_below_trivial", "val_full_avg_f1",
                            "train_s", "wall_s") if c in df.columns]  # fmt: skip
        img = "\n\n![trunk compute](trunk/curve.png)" if (res / "trunk" / "curve.png").is_file() else ""
        return ["## How results grow with compute (avg F1 against training pairs)\n",
                "### The trunk family's default (validation split; `trunk/curve.csv`, commands in `trunk/README.md`)"
                "\n\n" + md_table(df[cols]) + img + "\n"]  # fmt: skip
    return []


def write_newlabels_figure(results: str | Path) -> Path | None:
    """``results/newlabels.png`` from ``newlabels.csv``: the held-out label's F1 against the share of its
    annotations in the corpus for every method swept over that share (the M-CNNs without retraining, label
    transfer, the fine-tuned LR-ASPP), and each model trained with the label as a horizontal line; None when the
    file is missing."""
    import matplotlib.pyplot as plt

    from qparse_lite.evaluation.newlabels import plot_fraction_sweep
    from qparse_lite.io import atomic_path

    res = Path(results)
    if not (res / "newlabels.csv").is_file():
        return None
    df = pd.read_csv(res / "newlabels.csv")
    swept = df.groupby("method")["fraction"].transform("nunique") > 1
    sweep = df[swept].rename(columns={"method": "model", "fraction": "annotated_fraction"})
    refs = {m.replace("trained with the label", "trained with it"): float(f)
            for m, f in zip(df[~swept]["method"], df[~swept]["label_f1"], strict=True)}  # fmt: skip
    held = re.search(r"trained without ([\w-]+)", " ".join(map(str, df.get("note", pd.Series(dtype=str)))))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    plot_fraction_sweep(sweep, held.group(1) if held else "the held-out label", refs, ax=ax)
    ax.set_title("A new label without retraining (CCP test)", fontsize=10)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes, not over the lines
    out = res / "newlabels.png"
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


def _newlabels_section(res: Path) -> list[str]:
    """``newlabels.csv`` with each row's family: A (scratch) and A′ (trunk) without retraining, their references
    B and B′ trained with the label, and label transfer."""
    import re

    from qparse_lite.evaluation.claims import NEWLABELS_METHODS, NEWLABELS_REFERENCE_METHODS

    nl = res / "newlabels.csv"
    if not nl.is_file():
        return []
    df = pd.read_csv(nl)
    fam = {m: f for d in (NEWLABELS_METHODS, NEWLABELS_REFERENCE_METHODS) for f, m in d.items()}
    df.insert(1, "family", [FAMILIES.get(fam.get(m, ""), "") for m in df["method"]])
    held = {m.group(1) for n in df.get("note", pd.Series(dtype=str)).dropna()
            if (m := re.search(r"trained without ([\w-]+)", str(n)))}  # fmt: skip
    label = f" (held out: {', '.join(sorted(held))})" if held else ""
    both = sorted({f for f in fam.values() if f in set(fam.get(m, "") for m in df["method"])})
    says = (f"Both families: {FAMILIES['scratch']} (model A, `{NEWLABELS_METHODS['scratch']}`) and the "
            f"{FAMILIES['trunk']} (A′, `{NEWLABELS_METHODS['trunk']}`), each trained without the label and parsed "
            "against corpora holding a growing share of its annotations; their references (B, B′) were trained "
            "with it.\n\n" if len(both) == 2 else "")  # fmt: skip
    img = "\n![new label](newlabels.png)\n" if (res / "newlabels.png").is_file() else ""
    return [f"## A new label without retraining{label}\n\n" + says + md_table(df) + "\n" + img]


def _rows_section(res: Path) -> list[str]:
    """``rows.csv``: each committed row's avg F1 (crop, full resolution), its model and its two commands."""
    rows_csv = res / "rows.csv"
    if not rows_csv.is_file():
        return []
    rows = pd.read_csv(rows_csv, dtype=str, keep_default_na=False)
    if "family" not in rows.columns:  # the earlier setting's rows: README.md lists them with their commands
        return []
    out = []
    for r in rows.itertuples():
        crop = _first_row(res / "tables" / f"{r.key}_table1.csv")
        full = _first_row(res / "tables" / f"{r.key}_table1_full.csv")
        out.append({"key": f"`{r.key}`", "row": r.row, "family": FAMILIES.get(r.family, ""),
                    "avg F1 (crop)": crop["avg_f1"] if crop else float("nan"),
                    "avg F1 (full res.)": full["avg_f1"] if full else float("nan"),
                    "model": f"`models/{r.model}`" if r.model else "—", "train": f"`{r.train}`" if r.train else "—",
                    "evaluate": f"`{r.evaluate}`"})  # fmt: skip
    recipes = sorted({x for x in rows["recipe"] if x})
    return ["## Every row: its model, its recipe and its commands (`rows.csv`)\n\n"
            f"Recipes: {'; '.join(f'*{x}*' for x in recipes) or '—'}. CORPUS is the run's corpus (`qparse prepare "
            "... --out CORPUS` with the profile's crop and size, or the run's `RUN/corpus`), RUN the train command's "
            "output folder (`models/<model>/` holds its run.json and log.csv), DIR any output folder. "
            "`tests/test_results.py` re-scores each row's label maps, resolves its evaluate command as `qparse "
            "evaluate` does and compares it with the post-processing its scores.json recorded, and checks its "
            "model's run record against the train command and the recipe.\n\n" + md_table(pd.DataFrame(out)) + "\n"]


def _rerun_section(res: Path) -> list[str]:
    """The ``qparse reproduce`` run in ``reproduce/``: its wall time (and the earlier setting's compare.md)."""
    rep = res / "reproduce"
    if not (rep / "status.json").is_file():
        return []
    status = json.loads((rep / "status.json").read_text())
    wall = sum(v.get("wall_time_s", 0.0) for k, v in status.items() if not k.startswith("_"))
    head = (f"## The run: `qparse reproduce --profile ccp` ({wall:.0f} s = {wall / 3600:.2f} h of notebook wall time "
            "on 2 CPU cores, every notebook from an empty folder; trainings that ran beside the notebooks are listed "
            "below with their own times; `reproduce/`)\n\n")  # fmt: skip
    compare = rep / "compare.md"
    if compare.is_file():  # the earlier setting: a rerun beside the committed rows
        return [head + compare.read_text().split("\n", 2)[2]]
    timing = rep / "timing.md"
    body = timing.read_text().split("\n", 2)[2] if timing.is_file() else ""
    return [head + "Every row above comes from this run (its seeds 1-2 from `qparse train --seed N` on its corpus). "
            "Its own report: `reproduce/report.md`; per notebook and per model (`reproduce/timing.md`):\n\n" + body]


def write_ccp_report(results: str | Path, n_bootstrap: int = 2000) -> Path:
    """Assemble ``results/report.md`` (and ``claims.csv``) from the committed files of a CCP results folder.

    Every number is read from a file beside it (tables, run records, the tuning and new-label CSVs, the
    raw-photo scores; the crop and size from the rows' scores.json, :func:`ccp_setting`); both M-CNN families
    stand in Table 1 (with a ``family`` column and the avg F1 at the crop and at full resolution), the seeds,
    Table 2, Fig. 5, the post-processing chosen on validation and the new-label study; the claims are judged by
    :func:`qparse_lite.evaluation.claims.judge_claims` for each family, and ``claims_changes.csv`` (optional,
    :func:`claims_table`: ``claim, family, previous verdict, why``) adds to their table what changed from the
    previous setting and why. Works on the fair setting's folder (``data_scripts/collect_ccp_fair.py``) and on the
    earlier one (its tuned rows, ``tuning/tuning.json``, ``compute.csv``, ``reproduce/compare.md``).
    """
    from qparse_lite.evaluation.claims import judge_claims

    res = Path(results)
    n_test = len(list((res / "gt").glob("*.png"))) or 100
    fair = (res / "tuning" / "postprocess_val.json").is_file()
    parts = ["# qparse-lite on CCP: the paper's tables and claims on real data, 2 CPU cores\n",
             "Generated by `qparse_lite.evaluation.ccp_report.write_ccp_report` from the files in this folder "
             "(`python data_scripts/collect_ccp_fair.py RUN --evals EVALS`, or `python data_scripts/"
             "collect_ccp_results.py --report` for the report alone); see README.md for the commands behind "
             f"each file. Test split: {n_test} photos; {ccp_setting(res)}; the kit's 16 coarse CCP labels. Two "
             f"M-CNN families: {FAMILIES['scratch']} and the same networks on the {FAMILIES['trunk']}. The paper's "
             "numbers are on ATR-18 at 227 px after ~50 GPU epochs: compare orderings, not values.\n"]  # fmt: skip
    t1 = ccp_table1(res)
    if len(t1):
        paper = reported.table1().set_index("method")["avg_f1"]
        paper_f1 = [paper.get(p, float("nan")) if p else float("nan") for p in t1.paper_method]
        t1 = t1.assign(family=[FAMILIES.get(f, "") for f in t1.family], **{"paper avg_f1 (ATR)": paper_f1})
        t1 = t1.rename(columns={"paper_method": "paper row"})
        if t1["avg_f1 (full res.)"].isna().all():
            t1 = t1.drop(columns=["avg_f1 (full res.)"])
        post = ("Every row carries the post-processing chosen on validation (its family's values, *Post-processing* "
                "below; `-ss`: superpixels at the best non-zero count on val, `-wo-ss`: none). " if fair else "")
        parts.append("## Table 1 (test split, %)\n\nOne seed per model (seed 0), unless a row says otherwise. "
                     + post + "The metrics are scored at the crop; *avg_f1 (full res.)* scores the same maps pasted "
                     "back into the photos against their own ground truth. Rows marked *not in the paper* are the "
                     "kit's additions.\n\n" + md_table(t1.drop(columns=["key"])) + "\n")  # fmt: skip
    seeds = ccp_seed_table(res)
    if len(seeds):
        parts.append("## Training seeds (test avg F1, %)\n\nThe rows retrained with more seeds "
                     "(seed 0 is the Table 1 row; same corpus, same KNN, same budget), in both families. KNN label "
                     "transfer has no training seed: it is deterministic given the retrieval head, which every row "
                     "shares.\n\n" + md_table(seeds) + "\n")  # fmt: skip
    t2_keys = [k for k in CCP_TABLE2_KEYS if (res / "tables" / f"{k}_table2.csv").is_file()]
    if t2_keys:
        from qparse_lite.model.mcnn import paper_row

        names, frames = dict(CCP_ROWS), []
        for k in t2_keys:  # the paper row of an M-CNN key of either family, else the one its table names
            df = pd.read_csv(res / "tables" / f"{k}_table2.csv", dtype={"paper_method": object})
            pm = paper_row(k) or df["paper_method"].fillna("")
            frames.append(df.assign(method=names[k], family=ccp_family(k), paper_method=pm))
        t2 = pd.concat(frames, ignore_index=True)
        parts.append("## Table 2: per-label F1 (test, %)\n\nThe headline rows of both families (the full model of "
                     "each, the trunk default) beside label transfer and the LR-ASPP, each with the paper's row for "
                     "the same method under it, on the labels the kit's CCP set shares with ATR-18 (other CCP labels: "
                     "`tables/<key>_table2.csv`).\n\n" + md_table(side_by_side_table2(t2)) + "\n")  # fmt: skip
    fig4 = write_label_map_figure(res)
    if fig4 is not None:
        parts.append(f"## Parsed test images beside their ground truth (label maps only; no dataset photo)\n\n![parses]({fig4.name})\n")
    runs = sorted((res / "models").glob("*/run.json")) if (res / "models").is_dir() else []
    if runs:
        recs = []
        for p in runs:
            r = json.loads(p.read_text())
            prof = r.get("profile_fields") or {}
            recs.append({"model": p.parent.name, "stage": r.get("stage"), "variant": r.get("variant") or "",
                         "seed": r.get("seed"), "crop": prof.get("crop") or r.get("crop") or "",
                         "size": prof.get("image_size") or (r.get("config") or {}).get("input_size") or "",
                         "train_s": r.get("train_s"), "wall_s": r.get("wall_time_s"),
                         "pairs or images seen": (r.get("final_val") or {}).get("pairs_seen") or r.get("images_seen"),
                         "threads": r.get("torch_threads"), "git": (r.get("git_commit") or "")[:8]})  # fmt: skip
        recs = [{k: "" if v is None else v for k, v in r.items()} for r in recs]  # whole numbers stay whole
        parts.append("## Training runs (2 shared CPU cores; wall times measured under load)\n\n"
                     + md_table(pd.DataFrame(recs)) + "\n")  # fmt: skip
    if (res / "fig5.csv").is_file():
        trunk5 = pd.read_csv(res / "fig5_trunk.csv") if (res / "fig5_trunk.csv").is_file() else None  # trunk default
        fig5 = side_by_side_fig5(pd.read_csv(res / "fig5.csv"), trunk5)
        seeds = res / "fig5_trunk_seeds.csv"  # the trunk default's training seeds (k, seed, avg_f1)
        if trunk5 is not None and seeds.is_file():
            by_k = pd.read_csv(seeds).groupby("k")["avg_f1"]
            n = int(by_k.size().min())
            spread = {k: f"{g.mean():.2f} ± {g.std(ddof=1):.2f}" if len(g) > 1 else "" for k, g in by_k}
            fig5.insert(2, f"trunk run, {n} seeds (mean ± std)", [spread.get(k, "") for k in fig5["k"]])
        fams = " of both families" if trunk5 is not None else ""
        parts.append(f"## Fig. 5: avg F1 against K (the default M-CNN{fams}, test)\n\n" + md_table(fig5)
                     + "\n\n![Fig. 5](fig5.png)\n")  # fmt: skip
    parts += _tuning_section(res)
    parts += _compute_section(res)
    write_newlabels_figure(res)  # newlabels.png, shown by the section
    parts += _newlabels_section(res)
    ph = res / "photos" / "summary.csv"
    if ph.is_file():
        parts.append("## Raw photos: the `qparse parse` path on the original test photos\n\n"
                     "Scored at the photos' full resolution against their full-resolution ground truth "
                     "(`photos/<detector>/pred/` vs `photos/gt/`, `qparse score`), beside the corpus path "
                     "(the same parses' crops from the labelled person, pasted back).\n\n"
                     + md_table(pd.read_csv(ph)) + "\n")  # fmt: skip
    parts += _rerun_section(res)
    parts += _rows_section(res)
    claims = judge_claims(res, n=n_bootstrap)
    atomic_write_text(res / "claims.csv", claims.to_csv(index=False))
    table = claims_table(claims, res / "claims_changes.csv")
    changed = ("The last two columns (`claims_changes.csv`) give a row's verdict under the previous setting and "
               "why it changed.\n\n" if "why" in table.columns else "")  # fmt: skip
    parts.append(f"## The paper's claims, judged\n\nVerdicts from a paired bootstrap over the {n_test} test images "
                 f"({n_bootstrap} resamples, 95 % interval of the avg-F1 difference; `qparse_lite.evaluation.claims`): "
                 "*reproduced* if the interval lies above 0, *contradicted* if below, otherwise *not reproduced "
                 "at this budget*. The interval (seed 0's models) covers test-image sampling; where both sides "
                 "were trained with several seeds, the per-seed differences are shown and a verdict stands only "
                 "if every seed's difference has its sign.\n\n"
                 f"Each claim is judged for both families: {FAMILIES['scratch']}, and the same networks on the "
                 f"{FAMILIES['trunk']}, where each M-CNN row is read from its twin (`mcnn` → `trunk-mcnn`, "
                 "`cross5` → `trunk-cross5`, ...; the baselines are shared). *Not applicable*: the family has no "
                 "twin of the claim's network (the trunk has no conv1 level); *not measured*: this folder lacks "
                 "the family's results.\n\n" + changed + md_table(table) + "\n")  # fmt: skip
    parts.append("Published numbers for context only (other label sets, resolutions and metrics; never mixed "
                 "with the rows above): SCHP, ATR mIoU 82.29; a from-scratch U-Net++ on a 9-class CCP variant, "
                 "mIoU 55.3 and pixel accuracy 90.7.\n")  # fmt: skip
    return atomic_write_text(res / "report.md", "\n".join(parts))
