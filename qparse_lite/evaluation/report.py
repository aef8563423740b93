"""``report.md``: this run's Table 1, Table 2 and Fig. 5 beside the paper's reported numbers.

The notebooks write their results into ``<run>/results/`` with these names (the contract):

- ``table1.csv``: ``method, paper_method, accuracy, fg_accuracy, avg_precision, avg_recall, avg_f1``
  (``paper_method`` is the row name in the paper's Table 1, empty when the paper has no such row), and
  optionally ``family``: :data:`FAMILIES` key of an M-CNN row (``scratch``: the paper's networks as published;
  ``trunk``: the same rows on the frozen ImageNet trunk, :mod:`qparse_lite.model.trunk`), empty for a baseline.
  A trunk row names the paper row of its from-scratch counterpart (``qparse_lite.model.mcnn.paper_row``), so
  one paper row may stand beside one row of each family;
- ``table2.csv``: ``method, paper_method`` (optionally ``family``) and one column of F1 per foreground label
  (``_`` for ``-``);
- ``fig5.csv``: ``k, avg_f1`` (the from-scratch default M-CNN); ``fig5_trunk.csv`` (optional): the same for
  the trunk family's default;
- ``ablations.csv`` (optional): ``ablation, setting, avg_f1, ...``;
- ``new_labels.csv`` (optional, notebook 06).

Differences are *this run minus the paper*. The quick profile runs on synthetic data, so its numbers
test the pipeline, not the paper's claims; the ccp profile uses CCP's coarse labels, whose label set
differs from ATR's (only the shared labels are compared in Table 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from qparse_lite.evaluation import reported
from qparse_lite.io import atomic_write_text

__all__ = ["side_by_side_table1", "side_by_side_table2", "side_by_side_fig5", "write_report", "ccp_table1",
           "write_ccp_report", "CCP_ROWS", "committed_results", "FAMILIES", "claims_table", "CLAIMS_CHANGES_COLUMNS"]

T1_COLS = ["accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"]

FAMILIES: dict[str, str] = {"scratch": "from scratch (as published)", "trunk": "frozen ImageNet trunk"}
"""The ``family`` column's keys (``qparse_lite.model.mcnn.variant_family``) and how the report names them."""


def _family(r: pd.Series) -> str:
    """A row's family in words ("" for a baseline or a table without the column)."""
    f = r.get("family")
    return FAMILIES.get(f, f) if isinstance(f, str) else ""


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".2f")


def side_by_side_table1(ours: pd.DataFrame) -> pd.DataFrame:
    """Table 1: for each metric, this run, the paper, and the difference; with a ``family`` column, it is kept
    (in words, :data:`FAMILIES`) after ``method``, so each family's row stands beside the same paper row."""
    paper = reported.table1().set_index("method")
    families = "family" in ours.columns
    rows = []
    for _, r in ours.iterrows():
        pm = r.get("paper_method")
        pm = pm if isinstance(pm, str) and pm in paper.index else None
        row: dict[str, object] = {"method": r["method"], **({"family": _family(r)} if families else {}),
                                  "paper row": pm or "—"}  # fmt: skip
        for c in T1_COLS:
            row[f"{c} (run)"] = r[c]
            row[f"{c} (paper)"] = paper.loc[pm, c] if pm else float("nan")
        row["Δ avg_f1"] = r["avg_f1"] - row["avg_f1 (paper)"] if pm else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side_table2(ours: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per-label F1 on the labels both share: each run row, and under the run rows that stand for one
    paper row (one per family, with a ``family`` column: kept, in words), that paper row once."""
    paper = reported.table2().set_index("method")
    labels = [c for c in ours.columns if c in paper.columns]
    fam = ["family"] if "family" in ours.columns else []

    def key(r: pd.Series) -> str | None:
        pm = r.get("paper_method")
        return pm if isinstance(pm, str) and pm in paper.index else None

    rows, done, run_rows = [], set(), [r for _, r in ours.iterrows()]
    for i, r in enumerate(run_rows):
        pm = key(r)
        if pm in done:
            continue
        group = [r] if pm is None else [q for q in run_rows[i:] if key(q) == pm]
        for q in group:
            rows.append({"method": q["method"], **({"family": _family(q)} if fam else {}), "source": "run",
                         **{c: q[c] for c in labels}})  # fmt: skip
        if pm is not None:
            done.add(pm)
            rows.append({"method": pm, **({"family": ""} if fam else {}), "source": "paper",
                         **{c: paper.loc[pm, c] for c in labels}})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", *fam, "source", *labels])


def side_by_side_fig5(ours: pd.DataFrame, trunk: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fig. 5: avg F1 against K, with the two points the paper's text states; with ``trunk`` (the trunk
    family's default model swept over the same K), its avg F1 as ``avg_f1 (trunk run)`` beside this run's."""
    paper = reported.fig5().set_index("k")["avg_f1"]
    df = ours[["k", "avg_f1"]].rename(columns={"avg_f1": "avg_f1 (run)"}).copy()
    if trunk is not None:
        tr = trunk.set_index("k")["avg_f1"]
        df["avg_f1 (trunk run)"] = [tr.get(k, float("nan")) for k in df["k"]]
    df["avg_f1 (paper)"] = [paper.get(k, float("nan")) for k in df["k"]]
    return df


def write_report(run_dir: str | Path, profile: str) -> Path:
    """Assemble ``<run>/report.md`` from ``<run>/results`` and ``run.json``; return its path."""
    run_dir = Path(run_dir)
    res = run_dir / "results"
    parts = [f"# qparse-lite reproduction report — profile `{profile}`\n"]
    rec_path = run_dir / "run.json"
    if rec_path.exists():
        rec = json.loads(rec_path.read_text())
        hw = rec.get("hardware", {})
        parts.append(
            "| run | value |\n|---|---|\n"
            f"| profile | {rec.get('profile')} |\n| seed | {rec.get('seed')} |\n"
            f"| dataset | {rec.get('dataset')} |\n| git commit | `{rec.get('git_commit')}` |\n"
            f"| hardware | {hw.get('processor')}, {hw.get('cpu_count')} cores, GPU: {hw.get('gpu', 'none')} |\n"
            f"| torch | {hw.get('torch')} |\n| wall time (notebooks) | {rec.get('wall_time_s')} s |\n"
            f"| finished | {rec.get('finished_at')} |\n"
        )
    if profile == "quick":
        parts.append(
            "> The quick profile runs on the kit's synthetic paper-doll people (ATR-18 labels, small images, "
            "a few minutes of CPU training). Its numbers check the pipeline end to end; they are not "
            "expected to equal the paper's, which come from ATR at 227×227 after ~50 GPU epochs.\n"
        )
    elif profile == "ccp":
        parts.append(
            "> The ccp profile runs on Clothing Co-Parsing with the kit's coarse label set; the paper's "
            "tables are on ATR-18, so Table 2 compares only the labels both sets share.\n"
        )
    trunk5 = pd.read_csv(res / "fig5_trunk.csv") if (res / "fig5_trunk.csv").exists() else None
    for name, title, fn in [
        ("table1.csv", "Table 1 — overall metrics (%)", side_by_side_table1),
        ("table2.csv", "Table 2 — per-label F1 (%)", side_by_side_table2),
        ("fig5.csv", "Fig. 5 — average F1 against K", lambda df: side_by_side_fig5(df, trunk5)),
    ]:
        parts.append(f"## {title}\n")
        if (res / name).exists():
            ours = pd.read_csv(res / name)
            if "family" in ours.columns and name != "fig5.csv":
                parts.append(f"Two families of M-CNN (`family`): {FAMILIES['scratch']} and the same rows on the "
                             f"{FAMILIES['trunk']} (qparse_lite.model.trunk); each row stands beside the paper row "
                             "it corresponds to.\n")  # fmt: skip
            parts.append(_md(fn(ours)) + "\n")
        else:
            parts.append(f"_not produced in this run (`results/{name}` missing)_\n")
    for name, title in [("ablations.csv", "Ablations"), ("new_labels.csv", "New labels without retraining")]:
        if (res / name).exists():
            parts.append(f"## {title}\n\n" + _md(pd.read_csv(res / name)) + "\n")
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
    if figs:
        parts.append("## Figures\n\n" + "\n".join(f"![{f.stem}](figures/{f.name})" for f in figs) + "\n")
    parts.append(
        "Reported numbers: Liu et al., CVPR 2015, Tables 1-2 and Fig. 5 (only K = 1 and K = 9 are stated "
        "in the text). Avg F1 is the mean of per-label F1 over all labels including background, the "
        "definition that reproduces the paper's arithmetic (see qparse_lite.metrics).\n"
    )
    return atomic_write_text(run_dir / "report.md", "\n".join(parts))


# ---------------------------------------------------------------------------------------------------
# the committed real-data report (results/ccp/report.md)
# ---------------------------------------------------------------------------------------------------

CCP_ROWS: list[tuple[str, str]] = [
    ("mcnn", "M-CNN (cross 5,4,3,2)"), ("wo-cross", "M-CNN (w/o cross)"), ("cross5", "M-CNN (cross 5)"),
    ("cross54", "M-CNN (cross 5,4)"), ("cross543", "M-CNN (cross 5,4,3)"), ("cross54321", "M-CNN (cross 5,4,3,2,1)"),
    ("siamese", "Siamese [2]"), ("mcnn-wo-ss", "M-CNN (w/o ss)"), ("label-transfer", "KNN label transfer"),
    ("mean-label-map", "mean label map (prior)"), ("mcnn-tuned", "M-CNN, post-processing tuned on val"),
    ("mcnn-tuned-wo-ss", "M-CNN, tuned on val, w/o ss"), ("label-transfer-tuned", "KNN label transfer, tuned on val"),
    ("parametric-imagenet", "LR-ASPP + EfficientNet-Lite0, ImageNet (not in the paper)"),
    ("parametric-scratch", "LR-ASPP + EfficientNet-Lite0, scratch (not in the paper)"),
]  # fmt: skip
"""Result keys of ``results/ccp`` (``tables/<key>_table1.csv``, ``pred/<key>/``) and their row names."""


def ccp_table1(results: str | Path) -> pd.DataFrame:
    """Table 1 of every committed CCP row (key, row name, paper row, the five metrics)."""
    t = Path(results) / "tables"
    rows = []
    for key, name in CCP_ROWS:
        f = t / f"{key}_table1.csv"
        if f.is_file():
            r = pd.read_csv(f).iloc[0].to_dict()
            rows.append({"key": key, "method": name, "paper_method": r.get("paper_method") if isinstance(r.get("paper_method"), str) else "", **{c: r[c] for c in T1_COLS}})  # fmt: skip
    return pd.DataFrame(rows, columns=["key", "method", "paper_method", *T1_COLS])


def ccp_seed_table(results: str | Path) -> pd.DataFrame:
    """Rows of :data:`CCP_ROWS` trained with more than one seed: avg F1 per seed, mean and sample std."""
    import numpy as np

    from qparse_lite.evaluation.claims import seed_avg_f1

    rows = []
    for key, name in CCP_ROWS:
        f1 = seed_avg_f1(results, key)
        if len(f1) > 1:
            rows.append({"method": name, "seeds": len(f1), "avg_f1 per seed": ", ".join(f"{x:.2f}" for x in f1),
                         "mean": round(float(np.mean(f1)), 2), "std": round(float(np.std(f1, ddof=1)), 2)})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "seeds", "avg_f1 per seed", "mean", "std"])


def write_label_map_figure(results: str | Path, n: int = 6) -> Path | None:
    """``results/parses.png``: ground truth and each committed parser's maps for the ``n`` test images with
    the most labels (the paper's Fig. 4 layout, label maps only); None when the maps are missing."""
    import matplotlib.pyplot as plt
    import numpy as np

    from qparse_lite.io import atomic_path
    from qparse_lite.labels import get_label_set, read_label_png
    from qparse_lite.viz.plots import label_map_grid

    res = Path(results)
    gt_dir = res / "gt"
    keys = [k for k in ("mcnn", "mcnn-tuned", "label-transfer", "parametric-imagenet") if (res / "pred" / k).is_dir()]
    if not gt_dir.is_dir() or not keys:
        return None
    names = sorted(p.name for p in gt_dir.glob("*.png"))
    gts = {x: read_label_png(gt_dir / x) for x in names}
    pick = sorted(names, key=lambda x: (-len(np.unique(gts[x])), x))[:n]
    short = {"mcnn": "M-CNN", "mcnn-tuned": "M-CNN, tuned", "label-transfer": "label transfer",
             "parametric-imagenet": "LR-ASPP (ImageNet)"}  # fmt: skip
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


def write_ccp_report(results: str | Path, n_bootstrap: int = 2000) -> Path:
    """Assemble ``results/report.md`` (and ``claims.csv``) from the committed files of a CCP results folder.

    Every number is read from a file beside it (tables, run records, the tuning and new-label CSVs, the
    raw-photo scores); the claims are judged by :func:`qparse_lite.evaluation.claims.judge_claims` for each
    family, and ``claims_changes.csv`` (optional, :func:`claims_table`: ``claim, family, previous verdict, why``)
    adds to their table what changed from the previous setting and why.
    """
    from qparse_lite.evaluation.claims import judge_claims

    res = Path(results)
    parts = ["# qparse-lite on CCP: the paper's tables and claims on real data, 2 CPU cores\n",
             "Generated by `qparse_lite.evaluation.report.write_ccp_report` from the files in this folder "
             "(`python data_scripts/collect_ccp_results.py --report`); see README.md for the commands behind "
             "each file. Test split: 100 photos; crops 113 px; the kit's 16 coarse CCP labels. The paper's "
             "numbers are on ATR-18 at 227 px after ~50 GPU epochs: compare orderings, not values.\n"]  # fmt: skip
    t1 = ccp_table1(res)
    if len(t1):
        paper = reported.table1().set_index("method")["avg_f1"]
        t1 = t1.assign(**{"paper avg_f1 (ATR)": [paper.get(p, float("nan")) if p else float("nan") for p in t1.paper_method]})
        parts.append("## Table 1 (test split, %)\n\nOne seed per model (seed 0), unless a row says otherwise. "
                     "Rows marked *not in the paper* are the kit's additions.\n\n" + _md(t1.drop(columns=["key"])) + "\n")  # fmt: skip
    seeds = ccp_seed_table(res)
    if len(seeds):
        parts.append("## Training seeds (test avg F1, %)\n\nThe rows retrained with more seeds "
                     "(seed 0 is the Table 1 row; same corpus, same KNN, same budget). KNN label transfer has no "
                     "training seed: it is deterministic given the retrieval head, which every row shares.\n\n"
                     + _md(seeds) + "\n")  # fmt: skip
    t2_keys = [k for k in ("mcnn", "mcnn-tuned", "label-transfer", "label-transfer-tuned", "parametric-imagenet")
               if (res / "tables" / f"{k}_table2.csv").is_file()]
    if t2_keys:
        names = dict(CCP_ROWS)
        t2 = pd.concat([pd.read_csv(res / "tables" / f"{k}_table2.csv").assign(method=names[k]) for k in t2_keys])
        t2["paper_method"] = t2["paper_method"].fillna("")
        parts.append("## Table 2: per-label F1 (test, %)\n\nEach run row with the paper's row for the same method "
                     "under it, on the labels the kit's CCP set shares with ATR-18 (other CCP labels: "
                     "`tables/<key>_table2.csv`).\n\n" + _md(side_by_side_table2(t2)) + "\n")  # fmt: skip
    fig4 = write_label_map_figure(res)
    if fig4 is not None:
        parts.append(f"## Parsed test images beside their ground truth (label maps only; no dataset photo)\n\n![parses]({fig4.name})\n")
    runs = sorted((res / "models").glob("*/run.json")) if (res / "models").is_dir() else []
    if runs:
        recs = []
        for p in runs:
            r = json.loads(p.read_text())
            recs.append({"model": p.parent.name, "stage": r.get("stage"), "seed": r.get("seed"),
                         "train_s": r.get("train_s"), "wall_s": r.get("wall_time_s"),
                         "pairs or images seen": (r.get("final_val") or {}).get("pairs_seen") or r.get("images_seen"),
                         "threads": r.get("torch_threads"), "git": (r.get("git_commit") or "")[:8]})  # fmt: skip
        parts.append("## Training runs (2 shared CPU cores; wall times measured under load)\n\n"
                     + _md(pd.DataFrame(recs)) + "\n")  # fmt: skip
    if (res / "fig5.csv").is_file():
        trunk5 = pd.read_csv(res / "fig5_trunk.csv") if (res / "fig5_trunk.csv").is_file() else None  # trunk default
        fig5 = side_by_side_fig5(pd.read_csv(res / "fig5.csv"), trunk5)
        parts.append("## Fig. 5: avg F1 against K (default M-CNN, test)\n\n" + _md(fig5) + "\n\n![Fig. 5](fig5.png)\n")
    tune = res / "tuning" / "tuning.json"
    if tune.is_file():
        tj = json.loads(tune.read_text())
        parts.append("## Post-processing chosen on the validation split\n\n"
                     f"M-CNN (coordinate ascent over {', '.join(tj['grid'])}, in that order): chosen "
                     f"`{tj['mcnn']}`; label transfer (its superpixel count, 0 = none): chosen "
                     f"`{tj['label_transfer']}`. Every value tried: `tuning/mcnn_val_tuning.csv`, "
                     "`tuning/tuning.json`. The *tuned* rows of Table 1 apply these to the test split.\n")  # fmt: skip
        from qparse_lite.evaluation.evaluate import grid_edges

        edges = grid_edges(tj["mcnn"], tj["grid"])
        if edges:
            at = ", ".join(f"{n} = {tj['mcnn'][n]}" for n in edges)
            parts.append(f"**At the end of its grid:** {at} "
                         "(the best value on val may lie beyond the values tried; a wider grid is the next run).\n")  # fmt: skip
    comp = res / "compute.csv"
    if comp.is_file():
        parts.append("## How results grow with compute (default M-CNN, test avg F1 against training pairs)\n\n"
                     + _md(pd.read_csv(comp)) + "\n\n![compute](compute.png)\n")  # fmt: skip
    nl = res / "newlabels.csv"
    if nl.is_file():
        parts.append("## A new label without retraining (held out: outerwear)\n\n" + _md(pd.read_csv(nl)) + "\n")
    ph = res / "photos" / "summary.csv"
    if ph.is_file():
        parts.append("## Raw photos: the `qparse parse` path on the original test photos\n\n"
                     "Scored at the photos' full resolution against their full-resolution ground truth "
                     "(`photos/<detector>/pred/` vs `photos/gt/`, `qparse score`), beside the corpus path "
                     "(the same parses' crops from the labelled person, pasted back).\n\n"
                     + _md(pd.read_csv(ph)) + "\n")  # fmt: skip
    rerun = res / "reproduce" / "compare.md"
    if rerun.is_file():
        status = json.loads((res / "reproduce" / "status.json").read_text())
        wall = sum(v.get("wall_time_s", 0.0) for k, v in status.items() if not k.startswith("_"))
        body = rerun.read_text().split("\n", 2)[2]  # without its title
        parts.append(f"## A full rerun: `qparse reproduce --profile ccp` ({wall:.0f} s = {wall / 3600:.2f} h on "
                     "2 CPU cores, every notebook from an empty folder; `reproduce/`)\n\n" + body)  # fmt: skip
    claims = judge_claims(res, n=n_bootstrap)
    atomic_write_text(res / "claims.csv", claims.to_csv(index=False))
    table = claims_table(claims, res / "claims_changes.csv")
    changed = ("The last two columns (`claims_changes.csv`) give a row's verdict under the previous setting and "
               "why it changed.\n\n" if "why" in table.columns else "")  # fmt: skip
    parts.append("## The paper's claims, judged\n\nVerdicts from a paired bootstrap over the 100 test images "
                 f"({n_bootstrap} resamples, 95 % interval of the avg-F1 difference; `qparse_lite.evaluation.claims`): "
                 "*reproduced* if the interval lies above 0, *contradicted* if below, otherwise *not reproduced "
                 "at this budget*. The interval (seed 0's models) covers test-image sampling; where both sides "
                 "were trained with several seeds, the per-seed differences are shown and a verdict stands only "
                 "if every seed's difference has its sign.\n\n"
                 f"Each claim is judged for both families: {FAMILIES['scratch']}, and the same networks on the "
                 f"{FAMILIES['trunk']}, where each M-CNN row is read from its twin (`mcnn` → `trunk-mcnn`, "
                 "`cross5` → `trunk-cross5`, ...; the baselines are shared). *Not applicable*: the family has no "
                 "twin of the claim's network (the trunk has no conv1 level); *not measured*: this folder lacks "
                 "the family's results.\n\n" + changed + _md(table) + "\n")  # fmt: skip
    parts.append("Published numbers for context only (other label sets, resolutions and metrics; never mixed "
                 "with the rows above): SCHP, ATR mIoU 82.29; a from-scratch U-Net++ on a 9-class CCP variant, "
                 "mIoU 55.3 and pixel accuracy 90.7.\n")  # fmt: skip
    return atomic_write_text(res / "report.md", "\n".join(parts))


def committed_results(name: str = "ccp") -> Path:
    """The repository's committed results folder ``results/<name>`` (beside the package in a clone; it
    does not exist in an installed wheel, which ships no results)."""
    from qparse_lite.runinfo import PACKAGE_ROOT

    return Path(PACKAGE_ROOT) / "results" / name
