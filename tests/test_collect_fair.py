"""``data_scripts/collect_ccp_fair.py``: the fair setting's ``results/ccp`` from a ``qparse reproduce --profile ccp``
run and its seeds, on a fabricated stand-in of the run (a few 8×8 label maps, the contract's files), written over a
minimal results folder of the earlier setting."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
IDS = ["0003", "0009", "0013", "0026", "0037", "0047"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABEL = "outerwear"  # notebook 06's held-out label


def _load(name: str, path: Path) -> Any:
    import sys

    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fair():
    return _load("collect_ccp_fair", REPO / "data_scripts" / "collect_ccp_fair.py")


@pytest.fixture(scope="module")
def results_tests():
    return _load("results_tests", REPO / "tests" / "test_results.py")


# -- the stand-in ---------------------------------------------------------------------------------------------------
def _save(path: Path, m: np.ndarray) -> None:
    from qparse_lite.io import atomic_save_image
    from qparse_lite.labels import get_label_set

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_image(path, m.astype(np.uint8), get_label_set("ccp-coarse").palette)


def _gts(shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(0, 8, shape).astype(np.uint8) for i in IDS}


GT, GT_FULL = _gts((8, 8), 0), _gts((12, 10), 1)
OLD_GT = _gts((6, 6), 2)  # the earlier setting's crops: another size


def _wrong(gt: np.ndarray, every: int) -> np.ndarray:
    m = gt.copy()
    if every:
        m[::every] = 0
    return m


def _table(path: Path, row: dict[str, Any]) -> None:
    pd.DataFrame([row]).to_csv(path.with_suffix(".csv"), index=False, float_format="%.2f")
    path.with_suffix(".md").write_text(pd.DataFrame([row]).to_markdown(index=False) + "\n")


def _scores(pred: Path, gt: Path) -> dict[str, Any]:
    from qparse_lite.evaluation.folders import confusion_from_dirs
    from qparse_lite.labels import get_label_set
    from qparse_lite.metrics import scores

    ls = get_label_set("ccp-coarse")
    return scores(confusion_from_dirs(pred, gt, ls, progress=False), ls)


def _eval(out: Path, method: str, name: str, paper: str, every: int, model: str | None, variant: str | None,
          values: dict[str, Any] | None, run: Path, data: Path) -> None:  # fmt: skip
    """One `qparse evaluate` folder: crop and full-resolution maps, the tables, scores.json with a run record."""
    from qparse_lite.metrics import table1_row, table2_row

    for i in IDS:
        _save(out / "gt" / f"{i}.png", GT[i])
        _save(out / "pred" / f"{i}.png", _wrong(GT[i], every))
        _save(out / "full" / "gt" / f"{i}.png", GT_FULL[i])
        _save(out / "full" / "pred" / f"{i}.png", _wrong(GT_FULL[i], every))
    sc, full = _scores(out / "pred", out / "gt"), _scores(out / "full" / "pred", out / "full" / "gt")
    for suffix, s in (("", sc), ("_full", full)):
        _table(out / f"table1{suffix}", {**table1_row(s, name), "paper_method": paper})
        _table(out / f"table2{suffix}", {**table2_row(s, name), "paper_method": paper})
    n = (values or {}).get("n_segments")
    parser = {"xi1": None, "xi2": None, "erosion": None, "superpixels": "slic" if n else None, "n_segments": n,
              "background": "geodesic", "displacement_scale": None, **(values or {})}  # fmt: skip
    post = None  # a method with no tuned knob records none
    if values:
        post = {"method": method, "values": values, "sources": dict.fromkeys(values, "flag"), "file": None}
    rec = {"profile": "ccp" if model else None, "seed": 0, "dataset": "ccp", "git_commit": COMMIT,
           "hardware": {"processor": "x86_64", "cpu_count": 2}, "wall_time_s": 3.2, "stage": "evaluate",
           "method": method, "model": str(model) if model else None, "variant": variant, "corpus": str(run / "corpus"),
           "split": "test", "k": 9, "features": "efficientnet-lite0-learned", "images": len(IDS), "crop": "warp",
           "size": 145, "full_resolution": True, "data_root": str(data), "parser": parser,
           "postprocess": post}  # fmt: skip
    (out / "scores.json").write_text(json.dumps({**sc, "per_label": {}, "full_resolution": {"avg_f1": full["avg_f1"]},
                                                 "method": name, "run": rec}, default=float))  # fmt: skip


def _model(folder: Path, variant: str | None, seed: int = 0, parametric: bool = False, pretrained: bool = True,
           commit: str = COMMIT) -> None:  # fmt: skip
    from qparse_lite.profiles import get_profile

    folder.mkdir(parents=True)
    if parametric:
        rec = {"profile": "ccp", "seed": 0, "git_commit": commit, "stage": "train-parametric", "crop": "warp",
               "config": {"input_size": 160, "pretrained": pretrained}, "train_s": 700.0, "images_seen": 8040,
               "corpus": str(folder.parent.parent / "corpus")}  # fmt: skip
    else:
        rec = {"profile": "ccp", "seed": seed, "git_commit": commit, "stage": "train", "variant": variant,
               "corpus": str(folder.parent.parent / "corpus"), "train_s": 1200.0, "wall_time_s": 1300.0,
               "wall_time_total_s": 1300.0, "final_val": {"pairs_seen": 204800}, "torch_threads": 1,
               "profile_fields": {**get_profile("ccp").to_dict(), "seed": seed}}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(rec))
    (folder / "log.csv").write_text("epoch,val_auc\n1,0.7\n")
    (folder / "checkpoint.pt").write_bytes(b"not committed")


def _post_val() -> dict[str, Any]:
    from qparse_lite.parse.defaults import profile_values
    from qparse_lite.profiles import get_profile

    lt = {**profile_values(get_profile("ccp"), "label-transfer"), "n_segments": 400}
    fam = {"scratch": ("mcnn", 0.3, 0), "trunk": ("trunk-mcnn", 0.4, 800)}
    out: dict[str, Any] = {"split": "val"}
    for f, (m, xi1, n) in fam.items():
        values = {"xi1": xi1, "xi2": 0.2, "n_segments": n, "displacement_scale": 0.75}
        out[f] = {"model": m, "values": values, "values_ss": {**values, "n_segments": n or 1600},
                  "score": {"avg_f1": 30.0}, "table": [{"xi1": xi1, "avg_f1": 30.0}], "grid_edges": []}  # fmt: skip
    out["label-transfer"] = {"values": lt, "score": {"avg_f1": 27.0}, "table": [], "grid_edges": ["n_segments"]}
    return out


def make_run(root: Path) -> tuple[Path, Path]:
    """A fabricated RUN and EVALS with the contract of notebooks 05/06 and ccp_train_models.py."""
    from qparse_lite.model.mcnn import TABLE1_VARIANTS, TRUNK_VARIANTS, method_name, paper_row

    run, evals, data = root / "work" / "ccp-fair", root / "evals", root / "datasets" / "ccp"
    (run / "corpus").mkdir(parents=True)
    (run / "corpus" / "meta.json").write_text(json.dumps({"dataset": "ccp", "source": {"root": str(data)}}))
    pv = _post_val()
    worse = {v: 1 + i % 3 for i, v in enumerate((*TABLE1_VARIANTS, *TRUNK_VARIANTS))}
    for v in (*TABLE1_VARIANTS, *TRUNK_VARIANTS):
        fam = "trunk" if v.startswith("trunk-") else "scratch"
        _model(run / "models" / v, v)
        every = 0 if v == "trunk-mcnn" else worse[v] + 1
        _eval(run / "eval" / v, "mcnn", method_name(v), paper_row(v), every, run / "models" / v, v, pv[fam]["values"],
              run, data)  # fmt: skip
    for base, fam in (("mcnn", "scratch"), ("trunk-mcnn", "trunk")):
        off = {**pv[fam]["values"], "n_segments": 0}
        for suffix, values, every in (("-ss", pv[fam]["values_ss"], 3), ("-wo-ss", off, 2)):
            _eval(run / "eval" / f"{base}{suffix}", "mcnn", f"{method_name(base)} ({suffix[1:]})", "M-CNN", every,
                  run / "models" / base, base, values, run, data)  # fmt: skip
    _eval(run / "eval" / "label-transfer", "label-transfer", "KNN label transfer (PaperDoll-like)", "PaperDoll [28]", 4,
          None, None, pv["label-transfer"]["values"], run, data)  # fmt: skip
    _eval(run / "eval" / "mean-label-map", "mean-label-map", "mean label map (prior)", "", 1, None, None, None, run,
          data)  # fmt: skip
    for name, pre in (("parametric-imagenet", True), ("parametric-scratch", False)):
        _model(run / "models" / name, None, parametric=True, pretrained=pre)
        _eval(run / "eval" / name, "parametric", name, "", 5, run / "models" / name, "lraspp-efficientnet-lite0", None,
              run, data)  # fmt: skip
    _eval(run / "eval" / "mcnn-oracle-knn", "mcnn", "M-CNN, oracle KNN", "", 0, run / "models" / "mcnn", "mcnn",
          pv["scratch"]["values"], run, data)  # an extra: not a Table 1 row  # fmt: skip
    _model(run / "models" / f"mcnn-without-{LABEL}", "mcnn")
    _model(run / "models" / f"trunk-cross54-without-{LABEL}", "trunk-cross54")
    _model(run / "models" / f"parametric-without-{LABEL}", None, parametric=True)
    trained = _load("ccp_train_models", REPO / "data_scripts" / "ccp_train_models.py")
    for v in trained.SEED_VARIANTS:  # the seeds ccp_train_models.py trains
        fam = "trunk" if v.startswith("trunk-") else "scratch"
        for s in trained.SEEDS:
            _model(run / "seeds" / f"{v}-seed{s}", v, seed=s)
            _eval(evals / f"{v}-seed{s}", "mcnn", method_name(v), paper_row(v), s + 1, run / "seeds" / f"{v}-seed{s}",
                  v, pv[fam]["values"], run, data)  # fmt: skip
            if v == "trunk-cross54":  # `qparse evaluate --fig5`: the trunk default's Fig. 5 per seed
                pd.DataFrame({"k": [1, 5, 9], "avg_f1": [30.0 + s, 32.0 - s, 31.0]}).to_csv(
                    evals / f"{v}-seed{s}" / "fig5.csv", index=False)
    res = run / "results"
    res.mkdir()
    (res / "05_postprocess_val.json").write_text(json.dumps(pv))
    for name, f1 in (("fig5", [20.0, 21.0, 22.0]), ("fig5_trunk", [30.0, 32.0, 31.0])):
        _table(res / name, {"k": 0})  # the .md; the csv below
        pd.DataFrame({"k": [1, 5, 9], "avg_f1": f1, "accuracy": 90.0, "fg_accuracy": 40.0, "avg_precision": 30.0,
                      "avg_recall": 25.0}).to_csv(res / f"{name}.csv", index=False)  # fmt: skip
    pd.DataFrame([{"ablation": "xi1", "setting": "0.3", "avg_f1": 22.0, "accuracy": 90.0, "fg_accuracy": 40.0,
                   "paper avg_f1": None}]).to_csv(res / "ablations.csv", index=False)  # fmt: skip
    nl = []
    for frac, imgs in ((0.0, 0), (0.5, 203), (1.0, 406)):
        nl += [{"model": "KNN label transfer", "trained_on_label": "", "annotated_fraction": frac,
                "label_f1": 40 * frac},
               {"model": f"M-CNN A (trained without {LABEL})", "trained_on_label": False, "annotated_fraction": frac,
                "label_f1": 30 * frac},
               {"model": f"trunk-cross54 A′ (trained without {LABEL})", "trained_on_label": False,
                "annotated_fraction": frac, "label_f1": 35 * frac}]  # fmt: skip
        for r in nl[-3:]:
            r["annotated_images"] = imgs
    nl += [{"model": f"M-CNN B (trained with {LABEL})", "trained_on_label": True, "annotated_fraction": 1.0,
            "annotated_images": 406, "label_f1": 45.0},
           {"model": f"trunk-cross54 B′ (trained with {LABEL})", "trained_on_label": True, "annotated_fraction": 1.0,
            "annotated_images": 406, "label_f1": 50.0}]  # fmt: skip
    pd.DataFrame([{**r, "label": LABEL, "other_avg_f1": 25.0, "other_avg_f1_fg": 20.0, "avg_f1": 24.0,
                   "n_test_images": 100} for r in nl]).to_csv(res / "new_labels.csv", index=False)  # fmt: skip
    (res / "table1.csv").write_text("method,paper_method,family,avg_f1\nM-CNN,M-CNN,scratch,22.0\n")
    nbs = ["00_setup_and_data", "01_knn_retrieval", "02_mcnn_architecture", "03_training", "04_parsing_step_by_step",
           "05_reproduce_tables", "06_new_labels_without_retraining", "07_match_rcnn_deepfashion2"]  # fmt: skip
    status = {"_profile": "ccp", **{n: {"status": "ok", "wall_time_s": 600.0, "load_before": [2.0, 2.0, 2.0],
                                        "load_after": [2.1, 2.0, 2.0]} for n in nbs}}  # fmt: skip
    (run / "status.json").write_text(json.dumps(status))
    step = {"step": "notebooks 00-02", "command": f"qparse reproduce --out {run}", "rc": 0, "wall_s": 1800.0,
            "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 2.0, 2.0]}  # fmt: skip
    (run / "reproduce_ccp.json").write_text(json.dumps({"invocations": [
        {"started": "2026-12-07T18:00:00", "steps": [step], "wall_s": 1800.0, "ok": False},
        {"started": "2026-12-08T09:00:00", "steps": [{**step, "step": "seeds trainings"}]}]}))  # fmt: skip
    (run / "run.json").write_text(json.dumps({"profile": "ccp", "git_commit": COMMIT, "out": str(run),
                                              "note": "/home/someone/notes.txt"}))  # fmt: skip
    (run / "report.md").write_text(f"# report\n\nRun folder `{run}`, corpus `{run / 'corpus'}`.\n")
    return run, evals


def make_old_dest(dest: Path) -> None:
    """A minimal results folder of the earlier setting: rows, models and raw photos to replace, studies to keep."""
    for i, g in OLD_GT.items():
        _save(dest / "gt" / f"{i}.png", g)
        _save(dest / "pred" / "mcnn-tuned" / f"{i}.png", g)
    (dest / "tables").mkdir()
    (dest / "tables" / "mcnn-tuned_table1.csv").write_text("method,avg_f1\nM-CNN,27.23\n")
    for f in ("rows.csv", "claims.csv", "fig5.csv", "fig5.md", "newlabels.csv", "compute.csv", "report.md",
              "README.md", "disp_head.csv", "disp_head.md", "size_budget.csv"):  # fmt: skip
        (dest / f).write_text("old\n")
    for f in ("fig5.png", "parses.png", "compute.png", "stages.png", "disp_head.png", "size_budget.png"):
        (dest / f).write_bytes(b"\x89PNG old")
    for d in ("tuning", "reproduce", "crop", "trunk", "retrieval", "match_rcnn", "photos/gt", "photos/labels-crop",
              "photos/trunk-fg-head", "photos/fg-head/pred", "photos/hog/pred", "models/mcnn",
              "models/mcnn-oof"):  # fmt: skip
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tuning" / "tuning.json").write_text("{}")
    (dest / "reproduce" / "compare.md").write_text("# old\n")
    (dest / "crop" / "README.md").write_text("crop study\n")
    (dest / "retrieval" / "README.md").write_text("retrieval\n")
    (dest / "match_rcnn" / "report.md").write_text("match r-cnn\n")
    (dest / "trunk" / "README.md").write_text("trunk study\n")
    pd.DataFrame({"run": ["trunk-cross54-p1366", "trunk-cross54-p40960"], "variant": "trunk-cross54",
                  "pairs": [6400, 204800],
                  "val_auc_macro": [0.57, 0.68], "val_full_avg_f1": [23.82, 29.07], "train_s": [12.7, 68.0],
                  "wall_s": [46.0, 94.3]}).to_csv(dest / "trunk" / "curve.csv", index=False)  # fmt: skip
    (dest / "trunk" / "curve.png").write_bytes(b"\x89PNG")
    _save(dest / "photos" / "gt" / "0003.png", GT_FULL["0003"])
    (dest / "photos" / "labels-crop" / "presence.json").write_text("{}")
    (dest / "photos" / "trunk-fg-head" / "scores.json").write_text("{}")
    (dest / "photos" / "summary.csv").write_text(
        "path,detector,scored at,avg_f1\ncorpus crop (labels),labels,113-px crop,22.030\n"
        "raw photo,fg-head,full photo,20.852\nraw photo,hog,full photo,19.366\n"
        "raw photo (trunk-cross54),trunk-fg-head,full photo,27.422\n")  # fmt: skip
    (dest / "models" / "mcnn" / "run.json").write_text("{}")
    shipped = dest / "models" / "trunk-cross54"
    shipped.mkdir(parents=True)
    (shipped / "run.json").write_text('{"shipped": true}')
    (shipped / "checkpoint.pt").write_bytes(b"shipped checkpoint")


@pytest.fixture(scope="module")
def collected(tmp_path_factory, fair):
    """The stand-in collected once with --clean over the earlier setting's folder; (run, evals, dest, exit code,
    printed output)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("fair")
    run, evals = make_run(root)
    dest = root / "results" / "ccp"
    make_old_dest(dest)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fair.main([str(run), "--evals", str(evals), "--dest", str(dest), "--clean", "--n-bootstrap", "50"])
    return run, evals, dest, code, out.getvalue()


# -- the tests ------------------------------------------------------------------------------------------------------
def test_every_check_passes_on_a_well_formed_run(collected):
    *_, code, out = collected
    assert code == 0, out
    assert "CHECK FAILED" not in out and "sizes: pred/" in out
    assert "/home/someone/notes.txt" in out  # a path no pattern knew: replaced by OUT, and said


def test_layout_every_table1_key_every_seed_and_the_headline_maps_at_full_resolution(collected, fair):
    from qparse_lite.evaluation.ccp_report import CCP_HEADLINE_KEYS

    run, evals, dest, *_ = collected
    keys, seeds = fair.table1_keys(), fair.seed_names()
    assert len(keys) == 7 + 6 + 4 + 4 and len(seeds) == 2 * len(fair.SEED_VARIANTS) >= 12
    for key in keys + seeds:
        for name in ("table1", "table2", "table1_full", "table2_full"):
            for ext in ("csv", "md"):
                assert (dest / "tables" / f"{key}_{name}.{ext}").is_file(), (key, name, ext)
        assert sorted(p.stem for p in (dest / "pred" / key).glob("*.png")) == IDS, key
        assert (dest / "full" / "pred" / key).is_dir() == (key in CCP_HEADLINE_KEYS), key
    assert not (dest / "tables" / "mcnn-oracle-knn_table1.csv").exists()  # an extra, not a row
    # the split's ground truth of the new crop replaced the earlier one; the full-resolution one beside it
    for i in IDS:
        assert (dest / "gt" / f"{i}.png").read_bytes() == (run / "eval" / "mcnn" / "gt" / f"{i}.png").read_bytes()
    assert sorted(p.stem for p in (dest / "full" / "gt").glob("*.png")) == IDS
    # models: every one of the run and of the seeds, run.json and log.csv only
    names = [p.name for p in (run / "models").iterdir()] + [p.name for p in (run / "seeds").iterdir()]
    for name in names:
        folder = dest / "models" / fair.model_folder(name)
        assert sorted(p.name for p in folder.iterdir()) == ["log.csv", "run.json"], name
    assert (dest / "models" / "trunk-cross54-reproduce" / "run.json").is_file()
    shipped = dest / "models" / "trunk-cross54"  # the shipped model, untouched
    assert (shipped / "run.json").read_text() == '{"shipped": true}' and (shipped / "checkpoint.pt").is_file()
    assert json.loads((dest / "models" / "mcnn" / "run.json").read_text())["git_commit"] == COMMIT
    # the run's result files
    for f in ("fig5.csv", "fig5_trunk.csv", "fig5.md", "fig5.png", "ablations.csv", "tuning/postprocess_val.json",
              "newlabels.csv", "rows.csv", "claims.csv", "report.md", "parses.png", "reproduce/timing.md",
              "reproduce/status.json", "reproduce/run.json", "reproduce/report.md",
              "reproduce/fig5_trunk.csv"):  # fmt: skip
        assert (dest / f).is_file(), f
    assert (dest / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    seeds5 = pd.read_csv(dest / "fig5_trunk_seeds.csv")  # seed 0 from the run, seeds 1-2 from their --fig5
    assert list(seeds5.columns) == ["k", "seed", "avg_f1"] and sorted(set(seeds5.seed)) == [0, 1, 2]
    assert seeds5[seeds5.k == 1].avg_f1.tolist() == [30.0, 31.0, 32.0]
    assert "trunk run, 3 seeds (mean ± std)" in (dest / "report.md").read_text()
    assert not (dest / "reproduce" / "compare.md").exists()
    timing = (dest / "reproduce" / "timing.md").read_text()  # reproduce_ccp.py's steps, per invocation
    assert "**Invocation 2**" in timing and "seeds trainings" in timing and "stopped before its end" in timing
    assert "Sum of the invocations' wall times: 1800 s" in timing
    assert (dest / "reproduce" / "reproduce_ccp.json").is_file()
    pv = json.loads((dest / "tuning" / "postprocess_val.json").read_text())
    assert set(pv) == {"split", "scratch", "trunk", "label-transfer"} and pv["trunk"]["model"] == "trunk-mcnn"


def test_no_machine_path_is_written(collected):
    run, evals, dest, *_ = collected
    for f in dest.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".csv", ".md", ".txt"):
            text = f.read_text()
            for bad in ("/tmp", "/work", "/home", str(run.parent.parent)):
                assert bad not in text, (str(f.relative_to(dest)), bad)
    rec = json.loads((dest / "tables" / "mcnn_scores.json").read_text())["run"]
    assert (rec["model"], rec["corpus"], rec["data_root"]) == ("RUN/models/mcnn", "CORPUS", "DIR")
    seed = json.loads((dest / "tables" / "mcnn-seed1_scores.json").read_text())["run"]
    assert seed["model"] == "RUN/seeds/mcnn-seed1"
    assert "`RUN`" in (dest / "reproduce" / "report.md").read_text()


def test_rows_name_their_commands_and_qparse_parses_them(collected, fair):
    from qparse_lite.cli import build_parser

    _, _, dest, *_ = collected
    rows = pd.read_csv(dest / "rows.csv", dtype=str, keep_default_na=False)
    assert list(rows.columns) == ["key", "row", "family", "recipe", "model", "train", "evaluate"]
    assert list(rows.key) == fair.table1_keys() + fair.seed_names()
    pv = json.loads((dest / "tuning" / "postprocess_val.json").read_text())
    for r in rows.itertuples():
        words = shlex.split(r.evaluate)
        args = build_parser().parse_args(words[1:])
        assert words[:2] == ["qparse", "evaluate"] and (args.split, args.k, args.corpus) == ("test", 9, "CORPUS")
        if r.train:
            targs = build_parser().parse_args(shlex.split(r.train)[1:])
            assert targs.profile == "ccp" and targs.corpus == "CORPUS" and targs.out == "RUN"
        if r.family:
            assert r.recipe == fair.RECIPE and r.train.startswith("qparse train --profile ccp --variant ")
            want = pv[r.family]["values"]
            if r.key.endswith("-wo-ss"):
                assert args.superpixels == "none" and args.xi1 == want["xi1"]
            elif r.key.endswith("-ss"):
                assert args.n_segments == pv[r.family]["values_ss"]["n_segments"] > 0
            else:
                got = (args.xi1, args.xi2, args.displacement_scale)
                assert got == (want["xi1"], want["xi2"], want["displacement_scale"])
    by = rows.set_index("key")
    assert by.loc["trunk-cross54", "model"] == "trunk-cross54-reproduce" and by.loc["mcnn-ss", "model"] == "mcnn"
    assert by.loc["trunk-siamese-seed2", "train"] == ("qparse train --profile ccp --variant trunk-siamese --seed 2 "
                                                      "--corpus CORPUS --out RUN --device cpu")  # fmt: skip
    assert by.loc["mcnn", "family"] == "scratch" and by.loc["trunk-mcnn-wo-ss", "family"] == "trunk"
    assert by.loc["label-transfer", ["model", "train", "recipe"]].tolist() == ["", "", ""]
    lt = build_parser().parse_args(shlex.split(by.loc["label-transfer", "evaluate"])[1:])
    assert (lt.method, lt.n_segments) == ("label-transfer", 400)  # its own values, chosen on val, by flag
    assert by.loc["parametric-scratch", "train"].endswith("--scratch --corpus CORPUS --out RUN")
    assert by.loc["parametric-imagenet", "recipe"] == fair.PARAMETRIC_RECIPE


def test_every_row_passes_the_committed_rows_check(collected, results_tests, fair):
    """tests/test_results.py's own check of a committed row (label maps, report, command, model, recipe) on every
    row the stand-in gives, so the real rows pass it next session."""
    _, _, dest, *_ = collected
    assert fair.RECIPE == results_tests.FAIR_RECIPE and fair.RECIPE in results_tests.RECIPES
    assert fair.PARAMETRIC_RECIPE in results_tests.PARAMETRIC_RECIPES
    rows = results_tests._rows(dest)
    assert len(rows) == len(fair.table1_keys()) + len(fair.seed_names()) == 21 + 2 * len(fair.SEED_VARIANTS)
    for row in rows:
        results_tests.check_row(dest, row)


def test_newlabels_gets_the_fine_tuned_lraspp_rows(tmp_path, fair):
    """Notebook 06's parametric route (the LR-ASPP fine-tuned on each subset) joins newlabels.csv with its training
    seconds and its held-out label's F1 from the subset model's test evaluation."""
    models, evals = tmp_path / "models", tmp_path / "eval"
    for frac, f1, secs in ((0.25, 5.6, 63.2), (1.0, 52.1, 60.4)):
        name = f"parametric-{LABEL}-{int(100 * frac)}"
        (models / name).mkdir(parents=True)
        (models / name / "run.json").write_text(json.dumps({
            "fraction": frac, "images_annotated": int(406 * frac), "train_s": secs, "init_from":
            f"parametric-without-{LABEL}", "final_val": {"epoch": 1}}))  # fmt: skip
        (evals / name).mkdir(parents=True)
        (evals / name / "scores.json").write_text(json.dumps({"avg_f1": 40.0, "per_label_f1": {
            "background": 90.0, LABEL: f1, "hair": 70.0}}))  # fmt: skip
    nb = pd.DataFrame([{"model": "KNN label transfer", "annotated_fraction": 1.0, "annotated_images": 406,
                        "label": LABEL, "label_f1": 48.0, "other_avg_f1": 23.0}])  # fmt: skip
    nl = fair.convert_newlabels(nb, models)
    ft = nl[nl.method == fair.FINETUNE_METHOD]
    assert list(ft.fraction) == [0.25, 1.0] and list(ft.label_f1) == [5.6, 52.1] and list(ft.retrain_s) == [63.2, 60.4]
    assert list(ft.annotated_images) == [101, 406] and ft.other_avg_f1.iloc[0] == pytest.approx(80.0)
    assert "models/parametric-outerwear-25" in ft.note.iloc[0]


def test_newlabels_converted_and_claims_judged_for_both_families(collected):
    from qparse_lite.evaluation.claims import CLAIMS, NEWLABELS_METHODS, NEWLABELS_REFERENCE_METHODS

    _, _, dest, *_ = collected
    nl = pd.read_csv(dest / "newlabels.csv")
    cols = ["method", "fraction", "annotated_images", "label_f1", "other_avg_f1", "retrain_s", "note"]
    assert list(nl.columns) == cols
    lraspp = "LR-ASPP trained with the label (not in the paper)"  # the parametric reference, from its own row
    assert set(nl.method) == {*NEWLABELS_METHODS.values(), *NEWLABELS_REFERENCE_METHODS.values(), "KNN label transfer",
                              lraspp}  # fmt: skip
    assert nl[nl.method == lraspp].retrain_s.iloc[0] == 700.0
    assert (dest / "newlabels.png").read_bytes()[:4] == b"\x89PNG"  # the report's figure of the study
    a = nl[nl.method == NEWLABELS_METHODS["trunk"]].set_index("fraction")
    assert list(a.index) == [0.0, 0.5, 1.0] and a.loc[1.0, "label_f1"] == 35.0 and (a.retrain_s == 0).all()
    b = nl[nl.method == NEWLABELS_REFERENCE_METHODS["scratch"]].iloc[0]
    assert b.retrain_s == 1200.0 and "models/mcnn" in b.note
    claims = pd.read_csv(dest / "claims.csv")
    assert len(claims) == 2 * len(CLAIMS) and set(claims.family) == {"scratch", "trunk"}
    v = {(r.claim, r.family): r.verdict for r in claims.itertuples()}
    new = next(c["claim"] for c in CLAIMS if c.get("rule") == "newlabels")
    assert v[new, "scratch"] == v[new, "trunk"] == "reproduced"  # 0 → 30 and 0 → 35 points
    measured = claims[claims.verdict != "not measured"]
    assert set(measured.family) == {"scratch", "trunk"} and len(measured) == len(claims)  # every file is there
    first = claims[(claims.claim == CLAIMS[0]["claim"]) & (claims.family == "trunk")].iloc[0]
    assert "trunk-mcnn − label-transfer" in first["this kit (CCP, 2 CPU cores)"] and "per seed (3 seeds: 0, 1, 2)" in first[
        "this kit (CCP, 2 CPU cores)"]  # fmt: skip


def test_report_shows_both_families(collected):
    from qparse_lite.evaluation.report import FAMILIES

    _, _, dest, *_ = collected
    text = (dest / "report.md").read_text()
    assert "warp crops, 145 px" in text and "113 px" not in text
    assert FAMILIES["scratch"] in text and FAMILIES["trunk"] in text
    t1 = text.split("## Table 1")[1].split("\n## ")[0]
    assert "| family" in t1 and "avg_f1 (full res.)" in t1 and "M-CNN (cross 5,4), ImageNet trunk" in t1
    seeds = text.split("## Training seeds")[1].split("\n## ")[0]
    assert "M-CNN (cross 5,4,3,2), ImageNet trunk" in seeds and "Siamese [2], ImageNet trunk" in seeds
    t2 = text.split("## Table 2")[1].split("\n## ")[0]
    assert "M-CNN (cross 5,4), ImageNet trunk" in t2 and "KNN label transfer" in t2 and "LR-ASPP" in t2
    tuning = text.split("## Post-processing chosen on the validation split")[1].split("\n## ")[0]
    assert "trunk-mcnn" in tuning and "KNN label transfer" in tuning and "label-transfer: n_segments" in tuning
    assert "### The trunk family's default" in text and "trunk/curve.png" in text
    newl = text.split("## A new label without retraining")[1].split("\n## ")[0]
    assert "(held out: outerwear)" in newl and FAMILIES["trunk"] in newl
    assert "## Every row" in text and "qparse train --profile ccp --variant trunk-cross54 --corpus CORPUS" in text
    assert "## The run: `qparse reproduce --profile ccp` (4800 s" in text
    assert "trunk-fg-head" in text and "| hog" not in text  # the raw photos as they are now


def test_clean_removes_the_earlier_setting_and_keeps_the_studies(collected):
    _, _, dest, *_ = collected
    for gone in ("tables/mcnn-tuned_table1.csv", "pred/mcnn-tuned", "tuning/tuning.json", "reproduce/compare.md",
                 "compute.csv", "compute.png", "photos/fg-head", "photos/hog", "photos/labels-crop",
                 "models/mcnn-oof"):  # fmt: skip
        assert not (dest / gone).exists(), gone
    for kept in ("crop/README.md", "trunk/curve.csv", "trunk/README.md", "disp_head.csv", "disp_head.md",
                 "disp_head.png", "size_budget.csv", "size_budget.png", "stages.png", "retrieval/README.md",
                 "match_rcnn/report.md", "photos/gt/0003.png", "photos/trunk-fg-head/scores.json",
                 "README.md"):  # fmt: skip
        assert (dest / kept).is_file(), kept
    summary = pd.read_csv(dest / "photos" / "summary.csv")  # the earlier corpus path replaced by the trunk default's
    assert list(summary.detector)[-1] == "trunk-fg-head" and set(summary.detector[:-1]) == {"labels"}
    corpus = summary[summary.detector == "labels"]
    assert corpus["path"].str.contains("trunk-cross54").all() and "113-px crop" not in set(corpus["scored at"])
    t1 = pd.read_csv(dest / "tables" / "trunk-cross54_table1.csv").iloc[0]
    assert corpus[corpus["scored at"] == "145-px crop"].avg_f1.iloc[0] == pytest.approx(t1.avg_f1, abs=1e-3)


def test_a_row_off_its_validation_choice_fails_its_check(tmp_path, fair, capsys):
    """A row scored with values other than those chosen on val, or a dirty commit, is collected and reported:
    exit 1; a missing key stops the collection unless --allow-missing."""
    run, evals = make_run(tmp_path)
    rec = json.loads((run / "eval" / "cross5" / "scores.json").read_text())
    rec["run"]["postprocess"]["values"]["xi1"] = 0.8
    (run / "eval" / "cross5" / "scores.json").write_text(json.dumps(rec))
    rr = json.loads((run / "models" / "wo-cross" / "run.json").read_text())
    (run / "models" / "wo-cross" / "run.json").write_text(json.dumps({**rr, "git_commit": COMMIT + "+dirty"}))
    dest = tmp_path / "ccp"
    assert fair.main([str(run), "--evals", str(evals), "--dest", str(dest), "--n-bootstrap", "20"]) == 1
    out = capsys.readouterr().out
    assert "CHECK FAILED: cross5: post-processing" in out and "CHECK FAILED: wo-cross: model wo-cross" in out
    old = tmp_path / "old"  # another split's ground truth in one evaluation: refused before --clean removes a file
    make_old_dest(old)
    _save(evals / "mcnn-seed1" / "gt" / "0003.png", OLD_GT["0003"])
    with pytest.raises(SystemExit, match="ground truth differs"):
        fair.main([str(run), "--evals", str(evals), "--dest", str(old), "--clean"])
    assert (old / "tables" / "mcnn-tuned_table1.csv").is_file() and (old / "compute.csv").is_file()
    import shutil

    shutil.rmtree(evals / "siamese-seed2")
    with pytest.raises(SystemExit, match="siamese-seed2"):
        fair.main([str(run), "--evals", str(evals), "--dest", str(dest)])


def test_seed_commands_give_the_familys_values_by_flag(tmp_path, fair, capsys):
    from qparse_lite.cli import build_parser

    run, evals = make_run(tmp_path)
    assert fair.main([str(run), "--evals", str(evals), "--seed-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(fair.seed_names()) and not (tmp_path / "results").exists()  # wrote nothing
    pv = json.loads((run / "results" / "05_postprocess_val.json").read_text())
    for line, name in zip(lines, fair.seed_names(), strict=True):
        args = build_parser().parse_args(shlex.split(line)[1:])
        want = pv["trunk" if name.startswith("trunk-") else "scratch"]["values"]
        assert args.model == str(run / "seeds" / name) and str(args.out) == str(evals / name)
        assert (args.xi1, args.displacement_scale) == (want["xi1"], want["displacement_scale"])
        assert (args.superpixels == "none") == (want["n_segments"] == 0)
        assert args.fig5 == name.startswith("trunk-cross54-")  # the trunk default's seeds: Fig. 5's spread


def test_knob_flags_name_the_options_of_qparse_evaluate(fair):
    from qparse_lite.parse.defaults import KNOBS

    assert fair.knob_flags({"xi1": 0.3, "n_segments": 0}) == ["--xi1", "0.3", "--superpixels", "none"]
    sources = {"xi1": "model", "n_segments": "flag"}  # a value from the model's postprocess.json needs no flag
    assert fair.knob_flags({"xi1": 0.3, "n_segments": 800}, sources) == ["--n-segments", "800"]
    lt = dict.fromkeys(KNOBS["label-transfer"], 1)
    flags = fair.knob_flags(lt)
    assert len(flags) == 2 * len(lt)  # every label-transfer knob has its option
    with pytest.raises(SystemExit, match="no `qparse evaluate` option"):
        fair.knob_flags({"gamma": 1.0})
