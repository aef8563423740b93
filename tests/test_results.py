"""The committed real-data results (results/ccp/) are what their own files say: re-scoring reproduces them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from qparse_lite.evaluation.ccp_report import CCP_ROWS

RESULTS = Path(__file__).resolve().parent.parent / "results" / "ccp"


@pytest.mark.parametrize("method", [k for k, _ in CCP_ROWS])
def test_committed_ccp_rows_rescore_from_the_committed_label_maps(method, capsys):
    from qparse_lite.cli import main

    table = RESULTS / "tables" / f"{method}_table1.csv"
    if not table.is_file():
        pytest.skip(f"{table} not committed")
    row = next(csv.DictReader(table.open()))
    pred, gt = RESULTS / "pred" / method, RESULTS / "gt"
    assert sorted(p.name for p in pred.glob("*.png")) == sorted(p.name for p in gt.glob("*.png"))
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--labels", "ccp-coarse", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"):
        assert got[key] == pytest.approx(float(row[key]), abs=0.006), key
    full = RESULTS / "full" / "pred" / method  # the headline rows' maps at full resolution (fair setting)
    if full.is_dir():
        row = next(csv.DictReader((RESULTS / "tables" / f"{method}_table1_full.csv").open()))
        assert main(["score", "--pred", str(full), "--gt", str(RESULTS / "full" / "gt"), "--labels", "ccp-coarse",
                     "--json"]) == 0  # fmt: skip
        got = json.loads(capsys.readouterr().out)
        for key in ("accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"):
            assert got[key] == pytest.approx(float(row[key]), abs=0.006), ("full", key)


@pytest.mark.parametrize("model", ["mcnn", "trunk-cross54"])
def test_committed_model_loads_with_its_retrieval_head(model):
    from qparse_lite.retrieval.features import get_extractor
    from qparse_lite.train.checkpoint import load_model

    run = RESULTS / "models" / model
    if not (run / "checkpoint.pt").is_file():
        pytest.skip(f"no committed model {model}")
    net, tn, meta = load_model(run)
    assert meta["variant"] == model and meta["label_set"]["name"] == "ccp-coarse"
    head = get_extractor("efficientnet-lite0-learned", head=run / "retrieval_head.pt")
    assert head.input_size == json.loads((run / "corpus.json").read_text())["feature_size"] == 224
    assert head.dim == len(meta["label_set"]["names"])


@pytest.mark.parametrize("detector", ["fg-head", "hog", "trunk-fg-head"])
def test_committed_raw_photo_scores_rescore_from_the_full_size_maps(detector, capsys):
    from qparse_lite.cli import main

    photos = RESULTS / "photos"
    summary = photos / "summary.csv"
    if not summary.is_file():
        pytest.skip("no committed raw-photo results")
    row = next((r for r in csv.DictReader(summary.open()) if r["detector"] == detector), None)
    if row is None or not (photos / detector / "pred").is_dir():
        pytest.skip(f"no committed raw-photo results of {detector}")
    pred = photos / detector / "pred"
    assert main(["score", "--pred", str(pred), "--gt", str(photos / "gt"), "--labels", "ccp-coarse", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["avg_f1"] == pytest.approx(float(row["avg_f1"]), abs=0.006)
    rec = json.loads((photos / detector / "parse.json").read_text())
    assert len(rec["parsed"]) == 100 and rec["summary"]["photos"] == 100
    assert all("/" not in d["image"] for d in rec["parsed"])  # no machine path committed


def test_seed_rows_and_claims_use_every_seed(tmp_path):
    """Seeds are found by name, summarised with their spread, and a verdict needs every seed to agree."""
    import pandas as pd

    from qparse_lite.evaluation.ccp_report import ccp_seed_table
    from qparse_lite.evaluation.claims import _with_seeds, seed_keys

    t = tmp_path / "tables"
    t.mkdir()
    for key, f1 in {"mcnn": 22.0, "mcnn-seed2": 21.0, "mcnn-seed1": 20.0, "mcnn-seedx": 1.0,
                    "wo-cross": 21.0, "wo-cross-seed1": 21.5, "wo-cross-seed2": 19.0, "label-transfer": 18.0}.items():  # fmt: skip
        pd.DataFrame([{"avg_f1": f1}]).to_csv(t / f"{key}_table1.csv", index=False)
    assert seed_keys(tmp_path, "mcnn") == ["mcnn", "mcnn-seed1", "mcnn-seed2"]
    st = ccp_seed_table(tmp_path).set_index("method")
    assert st.loc["M-CNN (cross 5,4,3,2)", "mean"] == 21.0 and st.loc["M-CNN (cross 5,4,3,2)", "std"] == 1.0
    r = {"verdict": "reproduced", "detail": ""}
    _with_seeds(tmp_path, "mcnn", "wo-cross", r)  # +1.0, -1.5, +2.0: the seeds disagree
    assert r["seed_diffs"] == [1.0, -1.5, 2.0] and r["verdict"] == "not reproduced at this budget"
    r = {"verdict": "reproduced", "detail": ""}
    _with_seeds(tmp_path, "mcnn", "label-transfer", r)  # a deterministic baseline meets every seed
    assert r["seed_diffs"] == [4.0, 2.0, 3.0] and r["verdict"] == "reproduced"


def test_committed_rerun_agrees_where_nothing_is_trained_and_says_its_wall_time():
    """results/ccp/reproduce: the full `qparse reproduce --profile ccp` run. Its untrained rows equal the
    committed ones exactly; every notebook completed; no machine path is left in its records."""
    import pandas as pd

    rerun = RESULTS / "reproduce"
    status = json.loads((rerun / "status.json").read_text())
    notebooks = {k: v for k, v in status.items() if not k.startswith("_")}
    assert status["_profile"] == "ccp" and len(notebooks) == 8 and all(v["status"] == "ok" for v in notebooks.values())
    wall = sum(v["wall_time_s"] for v in notebooks.values())
    assert f"{wall:.0f} s" in (rerun / "timing.md").read_text()
    t1 = pd.read_csv(rerun / "table1.csv").set_index("paper_method")
    committed = pd.read_csv(RESULTS / "tables" / "label-transfer_table1.csv").iloc[0]  # no training: equal
    assert t1.loc["PaperDoll [28]", "avg_f1"] == committed.avg_f1
    assert t1.loc["PaperDoll [28]", "accuracy"] == committed.accuracy
    for name in ("run.json", "report.md"):
        text = (rerun / name).read_text()
        assert "/tmp/" not in text and "/work/" not in text, name


# -- the CCP study pages (results/ccp/size_budget.md, disp_head.md; notebook 03 §7-§8 link them) ----------
def _study_script():
    import importlib.util

    path = RESULTS.parent.parent / "data_scripts" / "ccp_size_budget.py"
    spec = importlib.util.spec_from_file_location("ccp_size_budget", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["size_budget", "disp_head"])
def test_study_page_shows_its_csv(name):
    """The page's table is the last epoch of every run in its csv, the ratio column is what its name says,
    and the page is a readable page: its sections, its figure and its commands."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(RESULTS / f"{name}.csv")
    # 1 − error / trivial error, on the validation split
    assert np.allclose(df.disp_err_below_trivial, 1 - df.val_disp_err / df.val_disp_err_trivial, atol=1e-4)
    assert (df.groupby("run", sort=False).pairs_seen.apply(lambda s: s.is_monotonic_increasing)).all()
    page = (RESULTS / f"{name}.md").read_text()
    assert _study_script().page_table(df, name) in page, f"{name}.md: rerun data_scripts/ccp_size_budget.py"
    for section in ("## The question", "## The setting", "## The commands", "## Conclusion"):
        assert section in page, f"{name}.md lacks {section!r}"
    assert f"]({name}.png)" in page and (RESULTS / f"{name}.png").is_file()
    assert "data_scripts/ccp_size_budget.py" in page and "--split val" in page


def test_study_page_keeps_its_prose_when_the_table_is_rewritten(tmp_path):
    mod = _study_script()
    page = tmp_path / "study.md"
    mod.write_table(page, "| a |\n|---|\n| 1 |")
    assert page.read_text().startswith(mod.TABLE_START)
    page.write_text("# A study\n\nprose before\n\n" + page.read_text() + "\nprose after\n")
    mod.write_table(page, "| a |\n|---|\n| 2 |")
    text = page.read_text()
    assert "| 2 |" in text and "| 1 |" not in text
    assert text.startswith("# A study\n\nprose before") and text.endswith("prose after\n")


def test_the_ccp_profile_is_the_studied_setting():
    """disp_head.md concludes Huber + label_power 0.5 for the ccp profile; the profile says so, and that run
    beats the paper's form on every seed."""
    import pandas as pd

    from qparse_lite.profiles import get_profile

    ccp = get_profile("ccp")
    assert (ccp.disp_loss, ccp.label_power, ccp.disp_weight) == ("huber", 0.5, 1.0)
    last = pd.read_csv(RESULTS / "disp_head.csv").groupby("run", sort=False).tail(1)
    chosen = last[(last.disp_loss == "huber") & (last.label_power == 0.5) & (last.disp_weight == 1.0)]
    paper = last[(last.disp_loss == "l2") & (last.label_power == 0.0)]
    assert len(chosen) == 3 and len(paper) == 2
    assert chosen.disp_err_below_trivial.min() > paper.disp_err_below_trivial.max()


# -- every committed CCP row: re-derived from its label maps, its command, its model's profile and recipe -------
FAIR_RECIPE = "ccp profile: warp 145 px, out-of-fold neighbours, Huber, sqrt-count label shares"
"""The recipe of the fair setting's M-CNN rows (issue 31; ``data_scripts/collect_ccp_fair.py``: ``RECIPE``)."""
RECIPES = {
    "in-sample neighbours, Eq. (1) square, equal label shares": {"disp_loss": "l2", "label_power": 0.0, "oof": False},
    "out-of-fold neighbours, Huber, sqrt-count label shares": {"disp_loss": "huber", "label_power": 0.5, "oof": True},
    FAIR_RECIPE: {"disp_loss": "huber", "label_power": 0.5, "oof": True, "crop": "warp", "image_size": 145},
}
"""The recipes of the committed M-CNN rows (results/ccp/rows.csv): the run record's profile fields (``crop`` and
``image_size`` where the recipe names them), and whether its commit has out-of-fold training neighbours (d90ac44,
``LearnedRetrievalExtractor.out_of_fold``). The first two are the earlier setting's (square 113-px crops)."""
PARAMETRIC_RECIPES = {"LR-ASPP on EfficientNet-Lite0, ccp profile: warp crops at a 160-px input": {"crop": "warp", "input_size": 160}}
"""The recipe of the fair setting's parametric rows: the run record's ``crop`` and ``config.input_size``."""
OOF_COMMIT = "d90ac44"
T1 = ("accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1")


def _rows(results: Path = RESULTS) -> list[dict[str, str]]:
    return list(csv.DictReader((results / "rows.csv").open())) if (results / "rows.csv").is_file() else []


def _git_is_ancestor(old: str, new: str) -> bool | None:
    import subprocess

    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", old, new], cwd=RESULTS, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 1: False}.get(r.returncode)  # another code: no git history here, or no such commit


def _rescore(pred: Path, gt: Path, table: Path) -> float:
    """Re-score ``pred`` against ``gt`` as `qparse score` does; compare with ``table``'s row; return its avg F1."""
    from qparse_lite.evaluation.folders import confusion_from_dirs
    from qparse_lite.labels import get_label_set
    from qparse_lite.metrics import scores

    ls = get_label_set("ccp-coarse")
    assert sorted(p.name for p in pred.glob("*.png")) == sorted(p.name for p in gt.glob("*.png")), pred
    got = scores(confusion_from_dirs(pred, gt, ls, progress=False), ls)
    want = next(csv.DictReader(table.open()))
    for k in T1:
        assert got[k] == pytest.approx(float(want[k]), abs=0.006), (str(table), k)
    return float(got["avg_f1"])


def _knob_flags(args, method: str) -> dict:
    """The post-processing values a parsed `qparse evaluate` command gives by flag (None: not given), named as
    ``parse.defaults.KNOBS`` names them (a knob's option is its name or ``lt_<name>``, label transfer's own)."""
    from qparse_lite.parse.defaults import KNOBS

    out = {}
    for k in KNOBS[method]:
        if k == "n_segments":
            out[k] = 0 if args.superpixels == "none" else args.n_segments
        else:
            out[k] = getattr(args, k) if hasattr(args, k) else getattr(args, f"lt_{k}")
    return out


def check_row(results: Path, row: dict[str, str]) -> None:
    """One row of ``results/rows.csv``: re-scoring pred/<key>/ gives tables/<key>_table1.csv (and full/pred/<key>/
    gives tables/<key>_table1_full.csv where the full-resolution maps are committed), the documents list its number
    and command (the fair setting: report.md, which collect_ccp_fair.py generates; the earlier one: the READMEs);
    its `qparse evaluate` command, resolved as the command resolves it (flag > the model's postprocess.json > the
    run's profile), gives the post-processing its scores.json records (no hidden flag); the model folder it names
    was trained by the profile, variant and seed its train command names, with the recipe the row states, at a
    recorded clean commit (the one its `git checkout` names)."""
    import re
    import shlex

    from qparse_lite.cli import build_parser
    from qparse_lite.model.mcnn import variant_family
    from qparse_lite.parse.defaults import KNOBS, resolve_postprocess, run_profile
    from qparse_lite.profiles import get_profile, profile_for_dataset

    key, model = row["key"], row["model"]
    f1 = _rescore(results / "pred" / key, results / "gt", results / "tables" / f"{key}_table1.csv")
    if (results / "full" / "pred" / key).is_dir():
        full = results / "full"
        _rescore(full / "pred" / key, full / "gt", results / "tables" / f"{key}_table1_full.csv")
    if "family" in row:  # the fair setting: report.md lists every row, its number and its commands
        report = (results / "report.md").read_text()
        assert f"{f1:.2f}" in report and row["evaluate"] in report, f"{key}: not in report.md"
        if row["train"]:
            assert row["train"] in report, f"{key}: train command not in report.md"
    else:
        assert f"{f1:.2f}" in (results.parent.parent / "README.md").read_text(), f"{key}: not in README.md"
        assert row["evaluate"] in (results / "README.md").read_text(), f"{key}: command not in results/ccp/README.md"
    # the evaluate command, parsed by qparse itself, resolves to what scores.json recorded
    run_dir = results / "models" / model if model else None
    words = shlex.split(row["evaluate"].replace("RUN", str(run_dir)))
    assert words[:2] == ["qparse", "evaluate"]
    args = build_parser().parse_args(words[1:])
    rec = json.loads((results / "tables" / f"{key}_scores.json").read_text())["run"]
    assert (args.split, args.k, args.method) == (rec["split"], rec["k"], rec["method"]) == ("test", 9, rec["method"])
    if args.method in KNOBS:
        prof = run_profile(run_dir) if run_dir else profile_for_dataset("ccp")
        family = variant_family(json.loads((run_dir / "run.json").read_text())["variant"]) if run_dir else "scratch"
        post = resolve_postprocess(args.method, prof, run_dir, family=family, **_knob_flags(args, args.method))
        parser = rec["parser"]
        assert (parser["superpixels"] is None) == (post.values["n_segments"] == 0), key
        if parser["superpixels"]:
            assert parser["n_segments"] == post.values["n_segments"], key
        for k in ("xi1", "xi2", "displacement_scale", "rank_power", "bg_weight", "min_share"):
            if k in post.values and parser.get(k) is not None:
                assert parser[k] == pytest.approx(post.values[k]), (key, k)
        if rec.get("postprocess"):  # recorded since `qparse tune`: the same values, the same sources
            assert rec["postprocess"]["values"] == post.values and rec["postprocess"]["sources"] == post.sources
    if not model:
        assert not row["train"] and not row["recipe"]
        return
    # the model folder: trained by the profile / variant / seed the train command names, with the stated recipe
    run = json.loads((run_dir / "run.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", run["git_commit"]), f"{model}: no clean git commit recorded"
    train = shlex.split(row["train"]) if row["train"] else []
    if "&&" in train:
        checkout, train = train[: train.index("&&")], train[train.index("&&") + 1 :]
        assert checkout[:2] == ["git", "checkout"] and run["git_commit"].startswith(checkout[2]), key
    if train:
        targs = build_parser().parse_args(train[1:])
        assert run["profile"] == targs.profile
        prof = get_profile(targs.profile)
        if "variant" in run:
            assert run.get("variant") == (targs.variant or prof.variant)
            assert run["profile_fields"]["seed"] == (targs.seed if targs.seed is not None else prof.seed)
        if "&&" not in row["train"] and row["recipe"] in RECIPES:  # no checkout: the profile as it is now
            want = RECIPES[row["recipe"]]
            assert (prof.disp_loss, prof.label_power) == (want["disp_loss"], want["label_power"])
            assert all(getattr(prof, k) == want[k] for k in ("crop", "image_size") if k in want), key
    if row["recipe"] in RECIPES:
        want, fields = RECIPES[row["recipe"]], run["profile_fields"]
        assert (fields.get("disp_loss") or "l2", fields["label_power"]) == (want["disp_loss"], want["label_power"]), key
        assert all(fields.get(k) == want[k] for k in ("crop", "image_size") if k in want), key
        assert _git_is_ancestor(OOF_COMMIT, run["git_commit"]) in (want["oof"], None), key
    if row["recipe"] in PARAMETRIC_RECIPES:
        want = PARAMETRIC_RECIPES[row["recipe"]]
        assert (run.get("crop"), (run.get("config") or {}).get("input_size")) == (want["crop"], want["input_size"]), key


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r["key"])
def test_committed_row_is_its_label_maps_its_command_and_its_recipe(row):
    """Each row of results/ccp/rows.csv (:func:`check_row`): its label maps, its documents, its evaluate command,
    its model's record and recipe."""
    check_row(RESULTS, row)


def test_no_machine_path_in_any_committed_result():
    """Every text file under results/ names machines' folders by placeholder (RUN, CORPUS, OUT, ...), never by a
    path of the machine that wrote it (``/tmp/...``, ``/work/...``, ``/home/...``)."""
    import re

    machine = re.compile(r"(?<![\w.])/(?:tmp|work|home|root)/")
    found = [f"{p.relative_to(RESULTS.parent)}: {m.group(0)}" for p in sorted(RESULTS.parent.rglob("*"))
             if p.suffix in {".json", ".csv", ".md", ".txt", ".ipynb"} and p.is_file()
             for m in [machine.search(p.read_text(errors="replace"))] if m]  # fmt: skip
    assert not found, "machine paths committed:\n" + "\n".join(found)
