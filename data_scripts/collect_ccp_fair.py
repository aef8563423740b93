"""Build ``results/ccp/`` in the fair setting (issue 31) from one ``qparse reproduce --profile ccp`` run and its seeds.

The fair setting: the ccp profile as it is now (``warp`` crops at 145 px, out-of-fold training neighbours, Huber,
sqrt-count label shares), both M-CNN families (the paper's networks from scratch and on the frozen ImageNet trunk),
every Table 1 row with the post-processing chosen on the validation split (notebook 05), all from one run::

    qparse reproduce --profile ccp --data-root DIR --device cpu --out RUN          # (data_scripts/ccp_train_models.py
    python data_scripts/ccp_train_models.py seeds RUN --data-root DIR              #  chapters first, if wanted)
    python data_scripts/collect_ccp_fair.py RUN --evals EVALS --seed-commands      # prints, for every seed:
    qparse evaluate --model RUN/seeds/V-seedN --corpus RUN/corpus --split test --k 9 --out EVALS/V-seedN <flags>
    python data_scripts/collect_ccp_fair.py RUN --evals EVALS --clean              # this script

(the seeds' ``<flags>``: the family's post-processing chosen on val, from ``RUN/results/05_postprocess_val.json``;
give RUN and EVALS as absolute paths: ``qparse evaluate`` records ``--model`` as given, and the check below wants
``RUN/seeds/V-seedN`` once scrubbed).

It reads (the contract of notebook 05/06 and ``ccp_train_models.py``): ``RUN/eval/<key>/`` (one ``qparse
evaluate`` folder per Table 1 key), ``RUN/models/<name>/`` (run.json, log.csv), ``RUN/seeds/<V>-seed<N>/`` with
``EVALS/<V>-seed<N>/``, ``RUN/results/`` (fig5.csv, fig5_trunk.csv, ablations.csv, new_labels.csv,
05_postprocess_val.json, ...), ``RUN/status.json``, ``RUN/run.json``, ``RUN/report.md``; and writes into DEST
(default ``results/ccp``), nothing outside it:

- ``tables/<key>_table1|table2|table1_full|table2_full.csv/.md``, ``tables/<key>_scores.json``, ``pred/<key>/`` for
  every Table 1 key (:data:`TABLE1_KEYS`) and every seed (``<V>-seed<N>``); ``gt/`` (the split's crop-level ground
  truth, rewritten: the crop changed); ``full/pred/<key>/`` and ``full/gt/`` (full resolution) for the headline
  keys only (:data:`~qparse_lite.evaluation.ccp_report.CCP_HEADLINE_KEYS`; the full-resolution maps are large);
- ``models/<name>/run.json`` + ``log.csv`` of every model of the run and of its seeds (no checkpoint); the run's
  ``trunk-cross54`` goes to ``models/trunk-cross54-reproduce/`` since ``models/trunk-cross54/`` is the shipped
  model (:data:`SHIPPED_MODELS`, kept with its checkpoint and run record);
- ``fig5.csv``, ``fig5_trunk.csv`` (+ .md) and ``fig5.png`` (both families), ``ablations.csv``,
  ``tuning/postprocess_val.json``, ``newlabels.csv`` (converted to the columns
  :mod:`qparse_lite.evaluation.claims` reads, :func:`convert_newlabels`), ``rows.csv`` (:func:`rows_table`: each
  row's family, recipe, model, train and evaluate commands), ``reproduce/`` (the run's records, tables and
  ``timing.md``, ``collect_ccp_reproduce.py``), ``report.md`` and ``claims.csv``.

Every machine path is replaced by its placeholder (``RUN``, ``EVALS``, ``CORPUS``, ``DIR``; see
``collect_ccp_results.clean``); any absolute path left over becomes ``OUT`` with a warning. ``--clean`` first
removes what the new layout replaces (:data:`CLEAN_REMOVE`, ``models/*`` but the shipped ones, the raw-photo
folders of the earlier from-scratch model and their ``photos/summary.csv`` rows) and keeps the design studies
(``crop/``, ``trunk/``, ``disp_head.*``, ``size_budget.*``, ``stages.png``, ``retrieval/``, ``match_rcnn/``,
``photos/gt``, ``photos/labels-crop``, ``photos/trunk-fg-head``, ``gt/``, ``README.md``, ``claims_changes.csv``).

The script checks what it commits (every key present, each model's profile, variant, seed, recipe and a clean git
commit, each row's post-processing against the values chosen on validation, the scores.json's model) and exits
with 1, after writing everything, when a check fails; each failure is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collect_ccp_reproduce  # noqa: E402
from ccp_train_models import SEED_VARIANTS, SEEDS  # noqa: E402
from collect_ccp_results import Patterns, _same_pngs, add_eval, add_model, clean  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "results" / "ccp"

RECIPE = "ccp profile: warp 145 px, out-of-fold neighbours, Huber, sqrt-count label shares"
"""The recipe of every M-CNN row of the fair setting (``rows.csv``; ``tests/test_results.py::RECIPES``)."""
RECIPE_FIELDS: dict[str, Any] = {"crop": "warp", "image_size": 145, "disp_loss": "huber", "label_power": 0.5}
"""The run record's ``profile_fields`` that :data:`RECIPE` states."""
PARAMETRIC_RECIPE = "LR-ASPP on EfficientNet-Lite0, ccp profile: warp crops at a 160-px input"
"""The recipe of the parametric rows (their run.json: ``crop`` and ``config.input_size``)."""

SS_KEYS: dict[str, str] = {"mcnn-ss": "mcnn", "mcnn-wo-ss": "mcnn", "trunk-mcnn-ss": "trunk-mcnn",
                           "trunk-mcnn-wo-ss": "trunk-mcnn"}  # fmt: skip
"""The superpixel rows of each family and the model they parse with."""
BASELINES = ("label-transfer", "mean-label-map", "parametric-imagenet", "parametric-scratch")
SHIPPED_MODELS = ("trunk-cross54",)
"""Model folders of DEST that ``--clean`` keeps (a shipped checkpoint with its own run record); the run's model of
the same name is committed as ``models/<name>-reproduce/``."""

CLEAN_REMOVE = ["tables", "pred", "full", "rows.csv", "claims.csv", "fig5.csv", "fig5.md", "fig5.png", "fig5_trunk.csv",
                "fig5_trunk_seeds.csv", "fig5_trunk.md", "newlabels.csv", "newlabels.png", "parses.png", "tuning", "reproduce", "compute.csv", "compute.png",
                "ablations.csv", "report.md", "photos/fg-head", "photos/hog", "photos/labels-crop"]  # fmt: skip
"""What ``--clean`` removes from DEST (with ``models/*`` but :data:`SHIPPED_MODELS`): the earlier setting's rows
(from-scratch models on square 113-px crops) and everything this script writes."""
REMOVED_DETECTORS = ("fg-head", "hog", "labels")
"""The raw-photo runs of the earlier from-scratch model and its corpus-path rows (``labels``, 113-px crops): their
folders and ``photos/summary.csv`` rows go; :func:`corpus_path_rows` adds the trunk default's."""

_LEFT = re.compile(r"(?<![\w.])/(?:tmp|work|home|root|mnt|scratch|data|Users|var)/[^\s\"'`|,;)\]]*")


def table1_keys() -> list[str]:
    """Every Table 1 key of the fair setting, in the report's order: each family's variants and superpixel rows,
    then the baselines."""
    from qparse_lite.model.mcnn import TABLE1_VARIANTS, TRUNK_VARIANTS

    ss = list(SS_KEYS)
    return [*TABLE1_VARIANTS, *ss[:2], *TRUNK_VARIANTS, *ss[2:], *BASELINES]


def seed_names() -> list[str]:
    """``<variant>-seed<N>`` of every seed ``ccp_train_models.py seeds`` trains."""
    return [f"{v}-seed{s}" for v in SEED_VARIANTS for s in SEEDS]


def model_folder(name: str) -> str:
    """The folder under DEST/models/ of the run's model ``name`` (:data:`SHIPPED_MODELS`: ``<name>-reproduce``)."""
    return f"{name}-reproduce" if name in SHIPPED_MODELS else name


# -- paths --------------------------------------------------------------------------------------------------------
def path_patterns(run: Path, evals: Path, data_root: Path | None = None) -> Patterns:
    """``(regex, placeholder)`` of this collection's folders, the longest path first: the run's corpus →
    ``CORPUS``, the run → ``RUN``, the seeds' evaluations → ``EVALS``, the dataset → ``DIR``."""
    named: list[tuple[str, str]] = []
    for path, rep in ((run / "corpus", "CORPUS"), (run, "RUN"), (evals, "EVALS"), (data_root, "DIR")):
        if path is not None:
            named += [(s, rep) for s in {str(path), str(Path(path).resolve())}]
    named.sort(key=lambda x: -len(x[0]))
    return [(re.compile(re.escape(s) + r"(?![\w.-])"), rep) for s, rep in named]


def corpus_data_root(run: Path) -> Path | None:
    """The dataset folder the run's corpus was prepared from (its meta.json), if it says."""
    meta = run / "corpus" / "meta.json"
    if not meta.is_file():
        return None
    m = json.loads(meta.read_text())
    for v in (m.get("data_root"), (m.get("source") or {}).get("root") if isinstance(m.get("source"), dict) else None):
        if isinstance(v, str) and v.startswith("/"):
            return Path(v)
    return None


class Scrubber:
    """Path scrubbing of everything written: :func:`collect_ccp_results.clean` with this run's patterns first,
    then any absolute path left → ``OUT``, each one remembered (:attr:`left`)."""

    def __init__(self, patterns: Patterns) -> None:
        self.patterns, self.left = patterns, set()

    def __call__(self, obj: Any) -> Any:
        obj = clean(obj, self.patterns)
        if isinstance(obj, str):
            self.left.update(_LEFT.findall(obj))
            return _LEFT.sub("OUT", obj)
        if isinstance(obj, dict):
            return {k: self(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self(v) for v in obj]
        return obj

    def file(self, path: Path) -> None:
        """Scrub a text file in place."""
        text = path.read_text()
        new = self(text)
        if new != text:
            path.write_text(new)


# -- --clean ------------------------------------------------------------------------------------------------------
def clean_dest(dest: Path) -> list[str]:
    """Remove the earlier setting's files from ``dest`` (:data:`CLEAN_REMOVE`, ``models/*`` but
    :data:`SHIPPED_MODELS`, the :data:`REMOVED_DETECTORS` rows of ``photos/summary.csv``); return what went."""
    gone = []
    for name in CLEAN_REMOVE:
        p = dest / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.is_file():
            p.unlink()
        else:
            continue
        gone.append(name)
    for p in sorted((dest / "models").glob("*")) if (dest / "models").is_dir() else []:
        if p.name not in SHIPPED_MODELS:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            gone.append(f"models/{p.name}")
    summary = dest / "photos" / "summary.csv"
    if summary.is_file():
        lines = summary.read_text().splitlines(keepends=True)
        rows = list(csv.reader(lines))
        col = rows[0].index("detector") if rows and "detector" in rows[0] else None
        if col is not None:
            keep = [ln for ln, r in zip(lines, rows, strict=True) if not (len(r) > col and r[col] in REMOVED_DETECTORS)]
            if len(keep) < len(lines):
                summary.write_text("".join(keep))
                gone.append(f"photos/summary.csv: {len(lines) - len(keep)} rows ({', '.join(REMOVED_DETECTORS)})")
    return gone


def corpus_path_rows(dest: Path) -> None:
    """``photos/summary.csv``'s corpus-path rows (the raw-photo table's reference): the run's trunk default
    (``tables/<trunk_variant>_table1.csv`` at the crop, ``_table1_full.csv`` pasted back into the photo), the
    same weights as the shipped ``models/<trunk_variant>`` whose raw-photo row they sit beside, parsed with the
    family's values chosen on val (the shipped model parses with its own ``postprocess.json``)."""
    from qparse_lite.profiles import get_profile

    summary, trunk = dest / "photos" / "summary.csv", get_profile("ccp").trunk_variant
    if not summary.is_file() or not (dest / "tables" / f"{trunk}_table1.csv").is_file():
        return
    df = pd.read_csv(summary)
    df = df[df["detector"] != "labels"]
    new = []
    for suffix, at in (("", f"{RECIPE_FIELDS['image_size']}-px crop"), ("_full", "full photo")):
        if not (dest / "tables" / f"{trunk}_table1{suffix}.csv").is_file():
            continue
        t = pd.read_csv(dest / "tables" / f"{trunk}_table1{suffix}.csv").iloc[0]
        new.append({"path": f"corpus crop (labels), run's {trunk}, family's values", "detector": "labels",
                    "scored at": at, "crop_iou": 1.0, "accuracy": t["accuracy"], "fg_accuracy": t["fg_accuracy"],
                    "avg_f1": t["avg_f1"]})  # fmt: skip
    pd.concat([pd.DataFrame(new), df], ignore_index=True)[df.columns].to_csv(summary, index=False, float_format="%.3f")


def _replace_pngs(src: Path, dst: Path) -> None:
    """``dst`` holds exactly the PNGs of ``src`` (the split's ground truth of the new setting)."""
    dst.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in src.glob("*.png")}
    for p in dst.glob("*.png"):
        if p.name not in names:
            p.unlink()
    for n in names:
        shutil.copy(src / n, dst / n)


# -- rows.csv -----------------------------------------------------------------------------------------------------
def _evaluate_options() -> dict[str, argparse.Action]:
    """``qparse evaluate``'s options by their dest (``xi1``, ``n_segments``, ``lt_rank_power``, ...)."""
    from qparse_lite.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["evaluate"]._actions}


def knob_flags(values: dict[str, Any], sources: dict[str, str] | None = None) -> list[str]:
    """The ``qparse evaluate`` flags that give ``values`` (post-processing knob → value, as
    ``qparse_lite.parse.defaults.KNOBS`` names them); with ``sources``, only those a flag gave (a value from the
    model's postprocess.json or the profile needs none). The flag of a knob is the option whose dest is the knob or
    ``lt_<knob>`` (label transfer's own, ``--lt-rank-power``); ``n_segments`` 0 is ``--superpixels none``.

    Raises:
        SystemExit: a knob with no ``qparse evaluate`` option.
    """
    opts, out = _evaluate_options(), []
    for k, v in values.items():
        if sources is not None and sources.get(k) != "flag":
            continue
        if k == "n_segments" and not v:
            out += ["--superpixels", "none"]
            continue
        act = opts.get(k) or opts.get(f"lt_{k}")
        if act is None:
            raise SystemExit(f"post-processing value {k!r}: no `qparse evaluate` option sets it (dest {k} or lt_{k})")
        out += [next(o for o in act.option_strings if o.startswith("--")), str(v)]
    return out


def evaluate_command(rec: dict[str, Any], with_model: bool) -> str:
    """The ``qparse evaluate`` command of a scores.json ``run`` record: method, model (``RUN``), split, K and the
    post-processing flags its ``postprocess`` record says a flag gave (:func:`knob_flags`)."""
    from qparse_lite.parse.defaults import KNOBS
    from qparse_lite.profiles import get_profile

    method = rec["method"]
    words = ["qparse", "evaluate"] + (["--method", method] if method != "mcnn" else [])
    words += (["--model", "RUN"] if with_model else []) + ["--corpus", "CORPUS", "--split", rec["split"], "--k",
                                                           str(rec["k"]), "--out", "DIR"]  # fmt: skip
    if rec.get("features") and rec["features"] != get_profile("ccp").features:
        words += ["--features", rec["features"]]
    parser = rec.get("parser") or {}
    if method in KNOBS and parser.get("superpixels") not in (None, "slic"):
        words += ["--superpixels", parser["superpixels"]]
    if method in KNOBS and parser.get("background") not in (None, "geodesic"):
        words += ["--background", parser["background"]]
    post = rec.get("postprocess")
    if post:
        words += knob_flags({k: post["values"][k] for k in KNOBS.get(method, post["values"]) if k in post["values"]},
                            post.get("sources"))  # fmt: skip
    return shlex.join(words)


def _key_parts(key: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)-seed(\d+)", key)
    return (m.group(1), int(m.group(2))) if m else (key, None)


def row_model(key: str) -> tuple[str | None, str | None]:
    """(the run's model name, its variant) behind a key: a variant (and its seeds) is its own model, a superpixel
    row its family's full model, a parametric row its net; label transfer and the mean label map have none."""
    from qparse_lite.model.mcnn import VARIANTS

    base, seed = _key_parts(key)
    if base in SS_KEYS:
        return SS_KEYS[base], SS_KEYS[base]
    if base in VARIANTS:
        return key, base
    if base.startswith("parametric-"):
        return key, None
    return None, None


def train_command(key: str) -> str:
    """The command that trains the model behind ``key`` (a seed: ``--seed N``); "" for a key with no model."""
    name, variant = row_model(key)
    if name is None:
        return ""
    if variant is None:  # a parametric net
        scratch = ["--scratch"] if key == "parametric-scratch" else []
        return shlex.join(["qparse", "baseline", "train", "--profile", "ccp", *scratch, "--corpus", "CORPUS", "--out",
                           "RUN"])  # fmt: skip
    seed = _key_parts(name)[1]
    seed_flag = ["--seed", str(seed)] if seed else []
    return shlex.join(["qparse", "train", "--profile", "ccp", "--variant", variant, *seed_flag, "--corpus", "CORPUS",
                       "--out", "RUN", "--device", "cpu"])  # fmt: skip


def row_name(key: str) -> str:
    from qparse_lite.evaluation.ccp_report import CCP_ROWS

    base, seed = _key_parts(key)
    return dict(CCP_ROWS).get(base, base) + (f", seed {seed}" if seed else "")


def rows_table(dest: Path, keys: list[str]) -> pd.DataFrame:
    """``rows.csv``: ``key, row, family, recipe, model, train, evaluate`` of each committed key (its scores.json
    in ``dest/tables``); ``model`` is the folder under ``models/``."""
    from qparse_lite.evaluation.ccp_report import ccp_family

    rows = []
    for key in keys:
        rec = json.loads((dest / "tables" / f"{key}_scores.json").read_text())["run"]
        name, variant = row_model(key)
        recipe = "" if name is None else RECIPE if variant else PARAMETRIC_RECIPE
        rows.append({"key": key, "row": row_name(key), "family": ccp_family(key), "recipe": recipe,
                     "model": model_folder(name) if name else "", "train": train_command(key),
                     "evaluate": evaluate_command(rec, name is not None)})  # fmt: skip
    return pd.DataFrame(rows, columns=["key", "row", "family", "recipe", "model", "train", "evaluate"])


# -- checks -------------------------------------------------------------------------------------------------------
def _close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, int | float) and isinstance(y, int | float):
            if abs(float(x) - float(y)) > 1e-9:
                return False
        elif x != y:
            return False
    return True


def chosen_values(key: str, post_val: dict[str, Any]) -> list[dict[str, Any]]:
    """The post-processing ``05_postprocess_val.json`` chose on val for ``key``'s row (candidates: a ``-wo-ss`` row
    is its family's values or superpixel values with no superpixels); [] for a key with no such values."""
    from qparse_lite.evaluation.ccp_report import ccp_family

    base, _ = _key_parts(key)
    if base == "label-transfer":
        return [dict((post_val.get("label-transfer") or {}).get("values") or {})]
    fam = ccp_family(base)
    entry = post_val.get(fam) if fam else None
    if not isinstance(entry, dict):
        return []
    values, values_ss = dict(entry.get("values") or {}), dict(entry.get("values_ss") or entry.get("values") or {})
    if base.endswith("-wo-ss"):
        return [{**values, "n_segments": 0}, {**values_ss, "n_segments": 0}]
    if base.endswith("-ss"):
        return [values_ss]
    return [values]


def check_row(row: dict[str, Any], rec: dict[str, Any], post_val: dict[str, Any]) -> list[str]:
    """What is wrong with a row: its scores.json against the values chosen on val, its model's record."""
    key, problems = row["key"], []
    if (rec.get("split"), rec.get("k")) != ("test", 9):
        problems.append(f"{key}: scored on split {rec.get('split')!r} with K = {rec.get('k')} (want test, 9)")
    want = chosen_values(key, post_val)
    got = (rec.get("postprocess") or {}).get("values")
    if want and got is None:
        problems.append(f"{key}: scores.json records no post-processing (want one of {want})")
    elif want and not any(_close(got, w) for w in want):
        problems.append(f"{key}: post-processing {got} is not the one chosen on val ({' or '.join(map(str, want))})")
    name = row_model(key)[0]
    if name and rec.get("model") not in (f"RUN/models/{name}", f"RUN/seeds/{name}"):
        problems.append(f"{key}: scored the model {rec.get('model')!r}, not RUN/models|seeds/{name}")
    return problems


def check_model(key: str, run: dict[str, Any]) -> list[str]:
    """A row's model record against its train command and recipe (profile, variant, seed, fields, clean commit)."""
    name, variant = row_model(key)
    seed = _key_parts(name or "")[1] or 0
    out = []
    if not re.fullmatch(r"[0-9a-f]{40}", str(run.get("git_commit"))):
        out.append(f"{key}: model {name} recorded git commit {run.get('git_commit')!r} (not a clean 40-hex commit)")
    if run.get("profile") != "ccp":
        out.append(f"{key}: model {name} trained with profile {run.get('profile')!r}, not ccp")
    if variant:
        fields = run.get("profile_fields") or {}
        if run.get("variant") != variant or fields.get("seed") != seed:
            out.append(f"{key}: model {name} is variant {run.get('variant')!r} seed {fields.get('seed')!r}, "
                       f"not {variant} seed {seed}")  # fmt: skip
        bad = {k: fields.get(k) for k, v in RECIPE_FIELDS.items() if fields.get(k) != v}
        if bad:
            out.append(f"{key}: model {name}'s profile fields {bad} are not the recipe's {RECIPE_FIELDS}")
    else:  # the LR-ASPP: the corpus's warp crops, resized to the ccp budget's network input (not the M-CNN's S)
        from qparse_lite.baselines.parametric import PARAMETRIC_BUDGETS

        size, want = (run.get("config") or {}).get("input_size"), PARAMETRIC_BUDGETS["ccp"]["input_size"]
        if (run.get("crop"), size) != (RECIPE_FIELDS["crop"], want):
            out.append(f"{key}: model {name} trained on {run.get('crop')!r} crops at a {size}-px input, not warp "
                       f"crops at the ccp budget's {want} px")  # fmt: skip
    return out


# -- the other files ----------------------------------------------------------------------------------------------
def _train_seconds(run: Path) -> float:
    rec = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    return float(rec.get("train_s") or rec.get("wall_time_total_s") or rec.get("wall_time_s") or 0.0)


def convert_newlabels(df: pd.DataFrame, models: Path) -> pd.DataFrame:
    """Notebook 06's ``new_labels.csv`` (``model, trained_on_label, annotated_fraction, annotated_images, label,
    label_f1, other_avg_f1, ...``) in the columns the claims read (``method, fraction, annotated_images, label_f1,
    other_avg_f1, retrain_s, note``): model A → ``M-CNN (no retraining)``, A′ → ``claims.TRUNK_NEWLABELS_METHOD``,
    label transfer as it is, the references B and B′ (trained with the label;
    ``claims.NEWLABELS_REFERENCE_METHODS``, ``retrain_s`` their training time from ``models/<variant>/run.json``)."""
    from qparse_lite.evaluation.claims import NEWLABELS_METHODS, NEWLABELS_REFERENCE_METHODS
    from qparse_lite.profiles import get_profile

    scratch = get_profile("ccp").variant
    rows = []
    for r in df.to_dict("records"):
        m, label = str(r["model"]), str(r.get("label", ""))
        retrain, method = 0.0, m
        if m == "KNN label transfer":
            note = "no training"
        elif mm := re.fullmatch(r"M-CNN A \(trained without (.+)\)", m):
            method = NEWLABELS_METHODS["scratch"]
            note = f"trained without {mm.group(1)} (models/{scratch}-without-{mm.group(1)})"
        elif mm := re.fullmatch(r"M-CNN B \(trained with (.+)\)", m):
            method, retrain = NEWLABELS_REFERENCE_METHODS["scratch"], _train_seconds(models / scratch)
            note = f"the same budget, {mm.group(1)} in training (models/{model_folder(scratch)})"
        elif mm := re.fullmatch(r"(\S+) A[′'] \(trained without (.+)\)", m):
            method = NEWLABELS_METHODS["trunk"]
            note = f"{mm.group(1)} trained without {mm.group(2)} (models/{mm.group(1)}-without-{mm.group(2)})"
        elif mm := re.fullmatch(r"(\S+) B[′'] \(trained with (.+)\)", m):
            method, retrain = NEWLABELS_REFERENCE_METHODS["trunk"], _train_seconds(models / mm.group(1))
            note = f"{mm.group(1)}, the same budget, {mm.group(2)} in training (models/{model_folder(mm.group(1))})"
        else:
            note = f"held out: {label}" if label else ""
        rows.append({"method": method, "fraction": float(r["annotated_fraction"]),
                     "annotated_images": int(r["annotated_images"]), "label_f1": float(r["label_f1"]),
                     "other_avg_f1": float(r["other_avg_f1"]), "retrain_s": retrain, "note": note})  # fmt: skip
    rows += _finetune_rows(models, models.parent / "eval", {str(r.get("label", "")) for r in df.to_dict("records")})
    return pd.DataFrame(rows, columns=["method", "fraction", "annotated_images", "label_f1", "other_avg_f1",
                                       "retrain_s", "note"])  # fmt: skip


FINETUNE_METHOD = "LR-ASPP, fine-tuned on the subset (not in the paper)"
"""``newlabels.csv``'s name for notebook 06's parametric route: the LR-ASPP trained without the label, then
fine-tuned for one epoch on the corpus with the given share of the label's annotations."""


def _finetune_rows(models: Path, evals: Path, labels: set[str]) -> list[dict[str, Any]]:
    """Notebook 06's fine-tuned LR-ASPPs (``models/parametric-<label>-<pct>/run.json``, scored in
    ``eval/parametric-<label>-<pct>/scores.json``), then the LR-ASPP trained with the label from the start
    (``parametric-imagenet``), as ``newlabels.csv`` rows with their training seconds."""
    from qparse_lite.evaluation.newlabels import label_f1_summary

    def f1(folder: Path, label: str) -> dict[str, float]:
        return label_f1_summary(json.loads((evals / folder.name / "scores.json").read_text()), label)

    rows = []
    for label in sorted(x for x in labels if x):
        runs = [p for p in models.glob(f"parametric-{label}-*")
                if (p / "run.json").is_file() and (evals / p.name / "scores.json").is_file()]  # fmt: skip
        recs = sorted(((json.loads((p / "run.json").read_text()), p) for p in runs), key=lambda rp: rp[0]["fraction"])
        for rec, run in recs:
            s = f1(run, label)
            rows.append({"method": FINETUNE_METHOD, "fraction": float(rec["fraction"]),
                         "annotated_images": int(rec["images_annotated"]), "label_f1": s["label_f1"],
                         "other_avg_f1": s["other_avg_f1"], "retrain_s": float(rec.get("train_s") or 0.0),
                         "note": f"{(rec.get('final_val') or {}).get('epoch', '')} epoch from "
                                 f"models/{rec.get('init_from')} (models/{run.name})"})  # fmt: skip
        ref = models / "parametric-imagenet"
        if (ref / "run.json").is_file() and (evals / ref.name / "scores.json").is_file():
            s = f1(ref, label)
            every = max((int(rec.get("images_with_label") or 0) for rec, _ in recs), default=0)  # all its annotations
            rows.append({"method": "LR-ASPP trained with the label (not in the paper)", "fraction": 1.0,
                         "annotated_images": every, "label_f1": s["label_f1"], "other_avg_f1": s["other_avg_f1"],
                         "retrain_s": _train_seconds(ref),
                         "note": f"the same budget, {label} in training (models/parametric-imagenet)"})  # fmt: skip
    return rows


def fig5_seeds(fig5_trunk: Path, evals: Path) -> pd.DataFrame:
    """``fig5_trunk_seeds.csv``: avg F1 against K of the trunk default for every training seed, ``k, seed,
    avg_f1``: seed 0 from the run's ``fig5_trunk.csv``, seed N from ``EVALS/<trunk_variant>-seed<N>/fig5.csv``
    (``qparse evaluate --fig5``, :func:`seed_commands`), where present."""
    from qparse_lite.profiles import get_profile

    frames = [pd.read_csv(fig5_trunk)[["k", "avg_f1"]].assign(seed=0)]
    for s in SEEDS:
        f = evals / f"{get_profile('ccp').trunk_variant}-seed{s}" / "fig5.csv"
        if f.is_file():
            frames.append(pd.read_csv(f)[["k", "avg_f1"]].assign(seed=s))
    return pd.concat(frames, ignore_index=True)[["k", "seed", "avg_f1"]]


def draw_fig5(dest: Path) -> Path:
    """``fig5.png``: avg F1 against K of both families' defaults beside the paper's two stated points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qparse_lite.evaluation.evaluate import plot_fig5
    from qparse_lite.io import atomic_path
    from qparse_lite.model.mcnn import method_name
    from qparse_lite.profiles import get_profile

    prof = get_profile("ccp")
    ax = plot_fig5(pd.read_csv(dest / "fig5.csv"), label=f"{method_name(prof.variant)}, from scratch")
    if (dest / "fig5_trunk.csv").is_file():
        tr = pd.read_csv(dest / "fig5_trunk.csv")
        ax.plot(tr["k"], tr["avg_f1"], "^--", label=method_name(prof.trunk_variant))
        seeds = dest / "fig5_trunk_seeds.csv"
        spread = pd.read_csv(seeds).groupby("k")["avg_f1"] if seeds.is_file() else None
        if spread is not None and spread.size().min() > 1:  # the training seeds' min-max at each K
            lo, hi = spread.min(), spread.max()
            ax.fill_between(lo.index, lo.to_numpy(), hi.to_numpy(), alpha=0.2, color=ax.lines[-1].get_color(),
                            label=f"{method_name(prof.trunk_variant)}, {spread.size().min()} seeds (min-max)")  # fmt: skip
        ax.legend(fontsize="small")
    ax.set_title("Fig. 5 on CCP (test)", fontsize="medium")
    out = dest / "fig5.png"
    with atomic_path(out, suffix=".png") as tmp:
        ax.figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(ax.figure)
    return out


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


# -- main ---------------------------------------------------------------------------------------------------------
def seed_commands(run: Path, evals: Path) -> list[str]:
    """The ``qparse evaluate`` command of every seed (:func:`seed_names`): its model in ``RUN/seeds/``, the run's
    corpus, the test split, K = 9 and its family's post-processing chosen on val (05_postprocess_val.json) by flag,
    into ``EVALS/<V>-seed<N>/`` (absolute paths); the trunk default's seeds with ``--fig5`` (:func:`fig5_seeds`)."""
    from qparse_lite.evaluation.ccp_report import ccp_family
    from qparse_lite.profiles import get_profile

    run, evals = run.resolve(), evals.resolve()
    pv = json.loads((run / "results" / "05_postprocess_val.json").read_text())
    out = []
    for name in seed_names():
        values = pv[ccp_family(_key_parts(name)[0])]["values"]
        words = ["qparse", "evaluate", "--model", str(run / "seeds" / name), "--corpus", str(run / "corpus"),
                 "--split", "test", "--k", "9", "--out", str(evals / name), *knob_flags(values)]  # fmt: skip
        if _key_parts(name)[0] == get_profile("ccp").trunk_variant:  # Fig. 5's seed spread of the trunk family
            words.append("--fig5")
        out.append(shlex.join(words))
    return out


def collect(run: Path, evals: Path, dest: Path, *, do_clean: bool = False, allow_missing: bool = False,
            data_root: Path | None = None, n_bootstrap: int = 2000) -> list[str]:  # fmt: skip
    """Write ``dest`` from ``run`` and ``evals`` (module docstring); return the failed checks (printed too)."""
    run, evals, dest = run.resolve(), evals.resolve(), dest.resolve()
    for p, what in ((run, "RUN"), (evals, "EVALS")):
        if p == dest or dest in p.parents:
            raise SystemExit(f"{what} {p} lies inside DEST {dest}: --clean would remove it")
    if dest in (ROOT, Path("/")) or dest == Path.home():
        raise SystemExit(f"DEST {dest}: not a results folder")
    for need in (run / "eval", run / "models", run / "results" / "05_postprocess_val.json"):
        if not need.exists():
            raise SystemExit(f"{need}: missing; is {run} a finished `qparse reproduce --profile ccp` run?")
    scrub = Scrubber(path_patterns(run, evals, data_root or corpus_data_root(run)))
    problems: list[str] = []
    keys = [k for k in table1_keys() if (run / "eval" / k / "scores.json").is_file()]
    if not keys:
        raise SystemExit(f"{run}/eval: no evaluation of a Table 1 key ({', '.join(table1_keys())})")
    seeds = [s for s in seed_names() if (evals / s / "scores.json").is_file()]
    seeds += sorted(p.name for p in evals.glob("*-seed*") if (p / "scores.json").is_file() and p.name not in seeds)
    missing = [k for k in table1_keys() if k not in keys] + [s for s in seed_names() if s not in seeds]
    missing += [s for s in seeds if not (run / "seeds" / s / "run.json").is_file()]
    if missing and not allow_missing:
        raise SystemExit(f"missing from {run}/eval, {evals} or {run}/seeds: {', '.join(missing)} "
                         "(--allow-missing to collect the rest)")  # fmt: skip
    problems += [f"missing: {m}" for m in missing]
    seeds = [s for s in seeds if (run / "seeds" / s / "run.json").is_file()]
    first = run / "eval" / keys[0]  # every evaluation must hold the same split's ground truth (checked before --clean)
    from qparse_lite.evaluation.ccp_report import CCP_HEADLINE_KEYS

    for folder in [run / "eval" / k for k in keys] + [evals / s for s in seeds]:
        _same_pngs(folder / "gt", first / "gt")
        if folder.name in CCP_HEADLINE_KEYS:
            _same_pngs(folder / "full" / "gt", first / "full" / "gt")
    dest.mkdir(parents=True, exist_ok=True)
    if do_clean:
        for g in clean_dest(dest):
            print(f"removed {g}")
    # the split's ground truth at the crop (and at full resolution): the same in every evaluation
    _replace_pngs(first / "gt", dest / "gt")
    if (first / "full" / "gt").is_dir():
        _replace_pngs(first / "full" / "gt", dest / "full" / "gt")
    for key in keys:
        add_eval(key, run / "eval" / key, dest, full=key in CCP_HEADLINE_KEYS, extra=scrub.patterns)
    for s in seeds:
        add_eval(s, evals / s, dest, extra=scrub.patterns)
    # models: every one of the run (no checkpoint), the seeds', and a row's postprocess.json where it set a value
    names = sorted(p.parent.name for p in (run / "models").glob("*/run.json"))
    for name in names:
        add_model(model_folder(name), run / "models" / name, dest, extra=scrub.patterns)
    for s in seeds:
        add_model(s, run / "seeds" / s, dest, extra=scrub.patterns)
    post_val = json.loads((run / "results" / "05_postprocess_val.json").read_text())
    rows = rows_table(dest, keys + seeds)
    for row in rows.to_dict("records"):
        rec = json.loads((dest / "tables" / f"{row['key']}_scores.json").read_text())["run"]
        problems += check_row(row, rec, post_val)
        name = row_model(row["key"])[0]
        if name:
            src = run / ("seeds" if _key_parts(name)[1] else "models") / name
            problems += check_model(row["key"], json.loads((src / "run.json").read_text()))
            if "model" in ((rec.get("postprocess") or {}).get("sources") or {}).values():  # values from the model
                if (src / "postprocess.json").is_file():
                    (dest / "models" / row["model"] / "postprocess.json").write_text(
                        json.dumps(scrub(json.loads((src / "postprocess.json").read_text())), indent=1) + "\n")
                else:
                    problems.append(f"{row['key']}: values from {src}/postprocess.json, which is missing")
    rows.to_csv(dest / "rows.csv", index=False)
    corpus_path_rows(dest)
    # the run's result tables
    res = run / "results"
    for name in ("fig5", "fig5_trunk"):
        for ext in ("csv", "md"):
            if (res / f"{name}.{ext}").is_file():
                (dest / f"{name}.{ext}").write_text(scrub((res / f"{name}.{ext}").read_text()))
    if (dest / "fig5_trunk.csv").is_file():
        fig5_seeds(dest / "fig5_trunk.csv", evals).to_csv(dest / "fig5_trunk_seeds.csv", index=False)
    if (dest / "fig5.csv").is_file():
        draw_fig5(dest)
    else:
        problems.append(f"{res}/fig5.csv: missing")
    for name, out in (("ablations.csv", "ablations.csv"),):
        if (res / name).is_file():
            (dest / out).write_text(scrub((res / name).read_text()))
    (dest / "tuning").mkdir(parents=True, exist_ok=True)
    (dest / "tuning" / "postprocess_val.json").write_text(json.dumps(scrub(post_val), indent=1, allow_nan=True) + "\n")
    if (res / "new_labels.csv").is_file():
        nl = convert_newlabels(pd.read_csv(res / "new_labels.csv"), run / "models")
        nl.to_csv(dest / "newlabels.csv", index=False, float_format="%.2f")
    else:
        problems.append(f"{res}/new_labels.csv: missing")
    collect_ccp_reproduce.main(str(run), str(dest / "reproduce"), scrub=scrub)
    # any path the patterns missed, in the files written above
    top = ("rows.csv", "newlabels.csv", "ablations.csv", "fig5.csv", "fig5.md", "fig5_trunk.csv", "fig5_trunk.md",
           "fig5_trunk_seeds.csv")
    written = [dest / "tables", dest / "tuning", dest / "reproduce", *(dest / f for f in top),
               *(dest / "models" / model_folder(n) for n in names), *(dest / "models" / s for s in seeds)]
    for w in written:
        for f in [w] if w.is_file() else sorted(w.rglob("*")) if w.is_dir() else []:
            if f.is_file() and f.suffix in (".json", ".csv", ".md", ".txt"):
                scrub.file(f)
    if scrub.left:
        print("warning: paths no pattern knew were replaced by OUT: " + ", ".join(sorted(scrub.left)))
    from qparse_lite.evaluation.ccp_report import write_ccp_report

    print(write_ccp_report(dest, n_bootstrap=n_bootstrap))
    sizes = {"pred/": _size(dest / "pred"), "full/": _size(dest / "full"), "gt/": _size(dest / "gt"),
             "tables/": _size(dest / "tables"), "models/": _size(dest / "models")}  # fmt: skip
    print("sizes: " + ", ".join(f"{k} {_mib(v)}" for k, v in sizes.items()))
    for p in problems:
        print(f"CHECK FAILED: {p}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the `qparse reproduce --profile ccp` run folder")
    ap.add_argument("--evals", type=Path, required=True, help="the seeds' evaluations (EVALS/<V>-seed<N>/)")
    ap.add_argument("--dest", type=Path, default=DEST, help="the results folder to write (default results/ccp)")
    ap.add_argument("--clean", action="store_true", help="first remove the earlier setting's files it replaces")
    ap.add_argument("--allow-missing", action="store_true", help="collect what is there when keys or seeds lack")
    ap.add_argument("--data-root", type=Path, default=None, help="the CCP folder, scrubbed to DIR (default: corpus's)")
    ap.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples of the claims (default 2000)")
    ap.add_argument("--seed-commands", action="store_true",
                    help="print the seeds' `qparse evaluate` commands and write nothing")  # fmt: skip
    args = ap.parse_args(argv)
    if args.seed_commands:
        print("\n".join(seed_commands(args.run, args.evals)))
        return 0
    problems = collect(args.run, args.evals, args.dest, do_clean=args.clean, allow_missing=args.allow_missing,
                       data_root=args.data_root, n_bootstrap=args.n_bootstrap)  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
