"""The paper's claims, each judged on committed results with the uncertainty that decides it, for each M-CNN family.

A claim that compares two parsers (``a`` beats ``b``) is judged by a paired bootstrap over the test
images of the difference in average F1 (:func:`qparse_lite.evaluation.bootstrap.bootstrap_difference`, 95 % interval):

* **reproduced**: the whole interval lies above 0 (a beats b on these images at this budget);
* **contradicted**: the whole interval lies below 0 (b beats a);
* **not reproduced at this budget**: the interval contains 0 (these 100 images cannot tell them apart).

The interval is over test images of one training seed per model; where several seeds exist their spread
is reported beside it. Fig. 5's claim (K = 9 best, K = 1 competitive) and the new-label claim use their own
rules, stated in :data:`CLAIMS`. Everything is computed from the files of a results folder (``pred/<key>/``,
``gt/``, ``tables/<key>_table1.csv``, ``fig5.csv``, ``fig5_trunk.csv``, ``newlabels.csv``), so anyone can
re-judge a claim from what is committed.

**Families.** Each claim is judged once per M-CNN family (``family`` column; the keys of
:data:`qparse_lite.evaluation.report.FAMILIES`): ``scratch``, the paper's networks as published, and ``trunk``,
the same cross-image ideas on the frozen ImageNet trunk (:mod:`qparse_lite.model.trunk`). :data:`CLAIMS` names
the scratch keys; a trunk row reads each M-CNN key's **twin**, :func:`family_key`: the key's variant
(:data:`qparse_lite.model.mcnn.TABLE1_VARIANTS`) gets the ``trunk-`` prefix of
:data:`~qparse_lite.model.mcnn.TRUNK_VARIANTS` and keeps its suffix (``mcnn`` → ``trunk-mcnn``,
``mcnn-tuned-wo-ss`` → ``trunk-mcnn-tuned-wo-ss``, ``siamese-seed1`` → ``trunk-siamese-seed1``); a key of no
variant (the baselines: label transfer, the mean label map, :data:`DETERMINISTIC`) is the same in both
families. Fig. 5's claim reads ``fig5.csv`` (scratch) or ``fig5_trunk.csv`` (the trunk family's default),
the new-label claim the rows of :data:`NEWLABELS_METHODS` in ``newlabels.csv``.

**Post-processing chosen on validation.** In the kit's fair setting (``qparse reproduce --profile ccp``, issue 31)
every Table 1 row already carries the post-processing chosen on the validation split (``qparse tune``'s
coordinate ascent; each M-CNN family its own values, chosen on its default model; label transfer its own knobs),
so no claim needs a separate "tuned" twin: "M-CNN beats label transfer" compares ``mcnn`` with
``label-transfer``, both with their values chosen on validation, and "superpixel smoothing helps" compares
``mcnn-ss`` (the family's values, superpixels at the best non-zero segment count on validation) with
``mcnn-wo-ss`` (the same without superpixels); the former rows "... also when both get post-processing tuned on
validation" (``mcnn-tuned`` vs ``label-transfer-tuned``) and "... with the post-processing chosen on validation"
(``mcnn-tuned`` vs ``mcnn-tuned-wo-ss``) are gone with the earlier setting's untuned rows.

**Not applicable.** A claim whose variant has no twin in a family is not judged there: the trunk reads four
levels (strides 4-32, the paper's conv2..conv5) and has no conv1 level, so "cross filters at conv1 hurt"
(``cross54321``) is *not applicable* to the trunk family. *Not measured* means the results folder lacks a file
the claim needs (for instance a folder with only scratch results yields every trunk row *not measured*).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["CLAIMS", "DETERMINISTIC", "FIG5_FILES", "NEWLABELS_METHODS", "NEWLABELS_REFERENCE_METHODS",
           "TRUNK_NEWLABELS_METHOD", "family_key", "judge_pair", "judge_claims", "seed_avg_f1", "seed_keys"]

CLAIMS: list[dict[str, Any]] = [
    {"claim": "M-CNN beats the non-parametric baseline (KNN label transfer)", "a": "mcnn", "b": "label-transfer",
     "paper_rows": ("M-CNN", "PaperDoll [28]")},
    {"claim": "cross-image filters help: M-CNN (cross 5,4,3,2) beats w/o cross", "a": "mcnn", "b": "wo-cross",
     "paper_rows": ("M-CNN", "M-CNN (w/o cross)")},
    {"claim": "one cross layer already helps: cross 5 beats w/o cross", "a": "cross5", "b": "wo-cross",
     "paper_rows": ("M-CNN (cross 5)", "M-CNN (w/o cross)")},
    {"claim": "cross filters at conv1 hurt: cross 5,4,3,2 beats cross 5,4,3,2,1", "a": "mcnn", "b": "cross54321",
     "paper_rows": ("M-CNN", "M-CNN (cross 5,4,3,2,1)")},
    {"claim": "the feature-map fusion beats a Siamese network", "a": "mcnn", "b": "siamese",
     "paper_rows": ("M-CNN", "Siamese [2]")},
    {"claim": "superpixel smoothing helps", "a": "mcnn-ss", "b": "mcnn-wo-ss",
     "paper_rows": ("M-CNN", "M-CNN (w/o ss)")},
    {"claim": "K = 9 is best and K = 1 is competitive (Fig. 5)", "rule": "fig5"},
    {"claim": "a new label can be added without retraining", "rule": "newlabels",
     "paper": "Sec. 1/5: 'easily extended to newly annotated images and labels' (no number)"},
]  # fmt: skip
"""The claims judged, in the paper's order; ``a``/``b`` are result keys (``pred/<key>/``), each with the
post-processing chosen on validation (see the module docstring)."""


def judge_pair(
    results: str | Path, a: str, b: str, n: int = 2000, seed: int = 0, cache: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Bootstrap verdict of "``a`` beats ``b``" from ``results/pred/{a,b}`` and ``results/gt``; None if missing.

    ``cache`` (key -> per-image confusions) lets several claims read each parser's maps once."""
    from qparse_lite.evaluation.bootstrap import bootstrap_difference
    from qparse_lite.evaluation.folders import per_image_confusions
    from qparse_lite.labels import get_label_set

    results = Path(results)
    gt = results / "gt"
    if not ((results / "pred" / a).is_dir() and (results / "pred" / b).is_dir() and gt.is_dir()):
        return None
    ls = get_label_set("ccp-coarse")
    cache = {} if cache is None else cache
    for key in (a, b):
        if key not in cache:
            cache[key] = per_image_confusions(results / "pred" / key, gt, ls)[1]
    bs = bootstrap_difference(cache[a], cache[b], ls, n=n, seed=seed)
    verdict = "reproduced" if bs["lo"] > 0 else "contradicted" if bs["hi"] < 0 else "not reproduced at this budget"
    return {**bs, "verdict": verdict}


def _seeds(results: str | Path, key: str) -> list[tuple[int, str]]:
    """(seed, result key) of ``key``'s training seeds: ``(0, key)`` then ``(N, key-seed<N>)`` in seed order."""
    import re

    t = Path(results) / "tables"
    extra = [(int(m.group(1)), f.name[: -len("_table1.csv")]) for f in t.glob(f"{key}-seed*_table1.csv")
             if (m := re.fullmatch(re.escape(key) + r"-seed(\d+)_table1\.csv", f.name))]  # fmt: skip
    return ([(0, key)] if (t / f"{key}_table1.csv").is_file() else []) + sorted(extra)


def seed_keys(results: str | Path, key: str) -> list[str]:
    """The result keys of ``key``'s training seeds: ``key`` itself (seed 0) then ``key-seed<N>`` in seed order."""
    return [k for _, k in _seeds(results, key)]


def seed_avg_f1(results: str | Path, key: str) -> list[float]:
    """avg F1 (test, %) of each training seed of ``key`` (:func:`seed_keys` order)."""
    t = Path(results) / "tables"
    return [float(pd.read_csv(t / f"{k}_table1.csv").iloc[0]["avg_f1"]) for k in seed_keys(results, key)]


DETERMINISTIC = frozenset({"label-transfer", "label-transfer-tuned", "mean-label-map"})
"""Result keys with no training seed (deterministic given the shared retrieval head and the corpus)."""

FIG5_FILES: dict[str, str] = {"scratch": "fig5.csv", "trunk": "fig5_trunk.csv"}
"""Fig. 5's sweep (``k, avg_f1, ...``) of each family's default model, in a results folder."""

TRUNK_NEWLABELS_METHOD = "trunk M-CNN (no retraining)"
"""``newlabels.csv``'s ``method`` of the trunk family's model trained without the held-out label, parsed with
the label's annotations added to the corpus (notebook 06's A′, "<trunk variant> A′ (trained without <label>)")."""

NEWLABELS_METHODS: dict[str, str] = {"scratch": "M-CNN (no retraining)", "trunk": TRUNK_NEWLABELS_METHOD}
"""``newlabels.csv``'s ``method`` that the new-label claim reads, per family (scratch: notebook 06's model A,
"M-CNN A (trained without <label>)", as ``data_scripts/collect_ccp_fair.py`` converts it)."""

NEWLABELS_REFERENCE_METHODS: dict[str, str] = {"scratch": "M-CNN trained with the label",
                                               "trunk": "trunk M-CNN trained with the label"}  # fmt: skip
"""``newlabels.csv``'s ``method`` of each family's reference row: the same network trained with the label (notebook
06's B and B′), what adding the label without retraining is compared with; no claim reads it."""


def family_key(key: str, family: str) -> str | None:
    """The result key that stands for ``key`` (a scratch key of :data:`CLAIMS`) in ``family``; None if it has no twin.

    The scratch family is ``key`` itself. In the trunk family an M-CNN key (a scratch variant of
    :data:`~qparse_lite.model.mcnn.TABLE1_VARIANTS`, optionally followed by ``-<suffix>``: ``-wo-ss``, ``-tuned``,
    ``-seed1``, ...) becomes its trunk variant (:data:`~qparse_lite.model.mcnn.TRUNK_VARIANTS`, the same name with
    ``trunk-`` before it) with the same suffix, or None where no such variant exists (``cross54321``: the trunk
    has no conv1 level); a key of no variant (a baseline) is the same in every family."""
    from qparse_lite.model.mcnn import TABLE1_VARIANTS, TRUNK_VARIANTS

    if family == "scratch" or key in DETERMINISTIC:
        return key
    if family != "trunk":
        raise ValueError(f"unknown family {family!r}: 'scratch' or 'trunk'")
    twins = {v.removeprefix("trunk-"): v for v in TRUNK_VARIANTS}  # the naming rule of mcnn.TRUNK_PAPER_NAMES
    # the longest scratch variant that the key starts with ("cross54" before "cross5")
    variant = max((v for v in TABLE1_VARIANTS if key == v or key.startswith(v + "-")), key=len, default=None)
    if variant is None:
        return key
    return twins[variant] + key[len(variant) :] if variant in twins else None


def _no_twin(key: str, family: str) -> str:
    """Why ``key`` has no twin in ``family`` (the detail of a *not applicable* row)."""
    from qparse_lite.model.trunk import LEVELS

    strides = f"{2 ** min(LEVELS)}-{2 ** max(LEVELS)}"
    return (f"no {family} twin of {key}: the trunk has {len(LEVELS)} levels (strides {strides}, the paper's "
            f"conv{min(LEVELS)}..conv{max(LEVELS)}), no conv1 level for cross filters")  # fmt: skip


def _seed_f1(results: Path, key: str) -> dict[int, float]:
    """{seed: avg F1} of ``key``'s training seeds (seed 0 is ``key`` itself)."""
    t = Path(results) / "tables"
    return {s: float(pd.read_csv(t / f"{k}_table1.csv").iloc[0]["avg_f1"]) for s, k in _seeds(results, key)}


def _with_seeds(results: Path, a: str, b: str, r: dict[str, Any]) -> None:
    """Add the per-seed differences to ``r`` where ``a`` and ``b`` share at least two training seeds (seed i of a
    against seed i of b; a seed only one side has is left out) or ``b`` has none (:data:`DETERMINISTIC`: every
    seed of a against the same b); a reproduced/contradicted verdict stands only if every seed's difference agrees
    in sign."""
    import numpy as np

    fa, fb = _seed_f1(results, a), _seed_f1(results, b)
    if b in DETERMINISTIC and len(fb) == 1:  # no training seed: every seed of a meets the same b
        fb = dict.fromkeys(fa, next(iter(fb.values())))
    common = sorted(set(fa) & set(fb))
    n = len(common)
    if n < 2:
        return
    d = np.array([fa[s] - fb[s] for s in common])
    r["seed_diffs"] = [float(x) for x in d]
    r["detail"] += (f"; per seed ({n} seeds: {', '.join(map(str, common))}): " + ", ".join(f"{x:+.2f}" for x in d)
                    + f" (mean {d.mean():+.2f} ± {d.std(ddof=1):.2f})")  # fmt: skip
    if (r["verdict"] == "reproduced" and not (d > 0).all()) or (r["verdict"] == "contradicted" and not (d < 0).all()):
        r["verdict"] = "not reproduced at this budget"
        r["detail"] += "; the seeds disagree"


def _fig5(results: Path, name: str = "fig5.csv") -> dict[str, Any] | None:
    path = results / name
    if not path.is_file():
        return None
    df = pd.read_csv(path).set_index("k")["avg_f1"]
    best_k = int(df.idxmax())
    gap9 = float(df.max() - df.get(9, float("nan")))
    gap1 = float(df.get(9, float("nan")) - df.get(1, float("nan")))
    best = "K = 9 is best" if best_k == 9 else f"best K = {best_k} ({gap9:.2f} above K = 9)"
    # rule: K = 9 within 0.5 avg F1 of the best K, and K = 1 within 2 points of K = 9
    ok9, ok1 = gap9 <= 0.5, gap1 <= 2.0
    verdict = "reproduced" if ok9 and ok1 else "not reproduced at this budget"
    at1 = f"{gap1:.2f} below" if gap1 >= 0 else f"{-gap1:.2f} above"
    return {"diff": -gap1, "detail": f"{best}; K = 1 is {at1} K = 9", "verdict": verdict,
            "rule": "K = 9 within 0.5 of the best K and K = 1 within 2 points of K = 9 (point estimates)"}  # fmt: skip


def _newlabels(results: Path, method: str = NEWLABELS_METHODS["scratch"]) -> dict[str, Any] | None:
    path = results / "newlabels.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    m = df[df["method"] == method].set_index("fraction")["label_f1"]
    if m.empty or 0.0 not in m.index or 1.0 not in m.index:
        return None
    gain = float(m[1.0] - m[0.0])
    verdict = "reproduced" if gain > 5.0 else "not reproduced at this budget"
    return {"diff": gain, "verdict": verdict,
            "detail": f"held-out label F1 {m[0.0]:.1f} with no annotated example → {m[1.0]:.1f} with all, no retraining",
            "rule": "the held-out label's F1 rises by more than 5 points when its annotations enter the corpus"}  # fmt: skip


def _paper(c: dict[str, Any]) -> str:
    from qparse_lite.evaluation import reported

    if "paper" in c:
        return c["paper"]
    if c.get("rule") == "fig5":
        f = reported.fig5().set_index("k")["avg_f1"]
        return f"Fig. 5 text: K = 9 {f[9]:.2f}, K = 1 {f[1]:.2f} avg F1 (ATR)"
    t = reported.table1().set_index("method")["avg_f1"]
    a, b = c["paper_rows"]
    return f"Table 1 (ATR): {a} {t[a]:.2f} vs {b} {t[b]:.2f} avg F1 ({t[a] - t[b]:+.2f})"


def _judge(
    results: Path, c: dict[str, Any], family: str, n: int, seed: int, cache: dict[str, Any]
) -> dict[str, Any] | None:
    """Claim ``c`` judged for ``family``: its numbers and verdict, or None when the results lack what it needs."""
    if c.get("rule") == "fig5":
        return _fig5(results, FIG5_FILES[family])
    if c.get("rule") == "newlabels":
        return _newlabels(results, NEWLABELS_METHODS[family])
    a, b = family_key(c["a"], family), family_key(c["b"], family)
    if a is None or b is None:
        return {"verdict": "not applicable", "detail": _no_twin(c["a"] if a is None else c["b"], family)}
    r = judge_pair(results, a, b, n=n, seed=seed, cache=cache)
    if r is not None:
        r["detail"] = (f"Δ avg F1 ({a} − {b}) {r['diff']:+.2f}, 95 % CI [{r['lo']:+.2f}, "
                       f"{r['hi']:+.2f}] over {r['n_images']} test images")  # fmt: skip
        _with_seeds(results, a, b, r)
    return r


def judge_claims(results: str | Path, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per claim of :data:`CLAIMS` and family (``claim, family, paper, this kit (CCP, 2 CPU cores),
    verdict``; each claim's families in adjacent rows): the numbers that decide it and the verdict ("not
    measured" when the results folder lacks what it needs, "not applicable" when the family has no twin of a
    key, :func:`family_key`)."""
    from qparse_lite.evaluation.report import FAMILIES

    results = Path(results)
    rows: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    for c in CLAIMS:
        paper = _paper(c)
        for family in FAMILIES:
            r = _judge(results, c, family, n, seed, cache)
            rows.append({"claim": c["claim"], "family": family, "paper": paper,
                         "this kit (CCP, 2 CPU cores)": r["detail"] if r else "—",
                         "verdict": r["verdict"] if r else "not measured"})  # fmt: skip
    return pd.DataFrame(rows)
