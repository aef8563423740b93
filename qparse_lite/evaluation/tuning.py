"""``qparse tune``: choose a run's post-processing on the validation split and store it with the model.

The M-CNN's four values (ξ1, the displacement scale, the SLIC segment count, ξ2; docs/paper.md §1.6-1.8) are
chosen by coordinate ascent (:func:`qparse_lite.evaluation.evaluate.tune_postprocessing`), and KNN label
transfer's four (rank power γ, background weight β, minimum label share τ, segment count; the kit's knobs,
:mod:`qparse_lite.baselines.nonparametric`) by the same coordinate ascent
(:func:`qparse_lite.evaluation.evaluate.tune_label_transfer`): it has no model, but the same budget of choice
is fair to it. Both grids list the default first (ties keep it), and every value tried is recorded. Both go
into ``RUN/postprocess.json`` (:func:`qparse_lite.parse.defaults.write_postprocess`), which ``qparse evaluate``
and ``qparse parse`` read when no flag overrides a value. The test split is refused.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.evaluation.evaluate import grid_edges, tune_label_transfer, tune_postprocessing
from qparse_lite.evaluation.tables import json_safe
from qparse_lite.parse.defaults import KNOBS, POSTPROCESS_FILE, profile_values, run_profile, write_postprocess
from qparse_lite.retrieval.search import split_neighbours
from qparse_lite.runinfo import run_record

__all__ = ["MCNN_GRID", "LT_GRID", "tune_run", "with_superpixels"]

MCNN_GRID: dict[str, list[Any]] = {
    # ξ1 down to 0.1: the choices of the from-scratch (0.3) and trunk (0.3) models sat at the old grid's low end
    "xi1": [0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9],
    "displacement_scale": [1.0, 0.0, 0.25, 0.5, 0.75, 1.25, 1.5],
    "n_segments": [200, 50, 100, 400, 800, 1600, 0],
    "xi2": [0.5, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6],
}
"""The M-CNN's values tried, in the order they are chosen; the paper's value first (ties keep it).
``n_segments`` 0 = no superpixel smoothing. The ranges reach past the ends a first CCP tuning chose
(``grid_edges`` in the file names any choice still at an end)."""

LT_GRID: dict[str, list[Any]] = {
    "rank_power": [1.0, 0.0, 0.5, 2.0],
    "bg_weight": [1.0, 0.9, 0.8, 0.7, 0.6, 1.2],
    "min_share": [0.0, 0.005, 0.01, 0.02, 0.05],
    "n_segments": [200, 50, 100, 400, 800, 1600, 0],
}
"""KNN label transfer's values tried, in the order they are chosen; the untuned value first (ties keep it):
rank power γ (1: weights 1/(1+k); 0: equal votes), background weight β (1: none; 1.2 so that 1 is not an end),
minimum label share τ (0: none), SLIC segments (0: none)."""


def tune_run(
    model: str | Path, corpus: Any, *, split: str = "val", k: int | None = None, features: str | None = None,
    methods: tuple[str, ...] = ("mcnn", "label-transfer"), device: str = "cpu", knn_dir: str | Path | None = None,
    limit: int | None = None, progress: bool | None = None, write: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Choose the post-processing of the run in ``model`` (and of label transfer) on ``split`` of ``corpus``
    and, with ``write``, store it in ``model/postprocess.json``.

    ``k`` and ``features`` default to the run's profile (``k_test``, ``features``); ``knn_dir`` caches the
    split's neighbours (default ``model/knn_tune``). Returns ``{method: entry}`` with each entry's chosen
    ``values``, ``score`` (the chosen setting's Table 1 metrics), ``table`` (every value tried), ``grid`` and
    ``grid_edges``; ``run`` is the shared run record.

    Raises:
        QparseError: ``split`` is ``test``, an unknown method, or a run trained on another label set.
    """
    import torch

    from qparse_lite.model.mcnn import variant_family
    from qparse_lite.parse.parser import make_parser
    from qparse_lite.train.checkpoint import load_model

    if split == "test":
        raise QparseError("qparse tune: choosing post-processing on the test split would fit it to the numbers it "
                          "is scored by. Fix: --split val")  # fmt: skip
    bad = [m for m in methods if m not in KNOBS]
    if bad:
        raise QparseError(f"qparse tune: no tunable post-processing for {bad}; choose from {', '.join(KNOBS)}")
    if write and limit is not None:
        raise QparseError("qparse tune: --limit scores part of the split, so its choice is not stored. Fix: drop "
                          "--limit, or add --dry-run")  # fmt: skip
    t0 = time.perf_counter()
    model = Path(model)
    prof = run_profile(model)
    k = prof.k_test if k is None else k
    features = features or prof.features
    nb = split_neighbours(corpus, split, k, features, Path(knn_dir or model / "knn_tune"))
    out: dict[str, Any] = {}
    if "mcnn" in methods:
        net, tn, meta = load_model(model, map_location=device)
        if meta["label_set"]["names"] != list(corpus.label_set.names):
            raise QparseError(f"{model}: trained on label set {meta['label_set']['name']}, the corpus {corpus.path} "
                              f"has {corpus.label_set.name}. Fix: tune on the corpus the model was trained with.")  # fmt: skip
        start = profile_values(prof, "mcnn", variant_family(meta["variant"]))  # the ascent starts at the fallbacks
        parser = make_parser(net, tn, corpus, xi1=start["xi1"], xi2=start["xi2"], erosion=prof.erosion_px,
                             device=device, n_segments=start["n_segments"],
                             displacement_scale=start["displacement_scale"])  # fmt: skip
        with torch.inference_mode():
            chosen, table = tune_postprocessing(parser, corpus, split, nb, MCNN_GRID, k=k, limit=limit,
                                                progress=progress)  # fmt: skip
        out["mcnn"] = _entry("mcnn", chosen, table, MCNN_GRID)
    if "label-transfer" in methods:  # from the profile's values (lt_*), like the M-CNN from its own
        chosen, table = tune_label_transfer(corpus, split, nb, LT_GRID, profile_values(prof, "label-transfer"),
                                            k=k, limit=limit, progress=progress)  # fmt: skip
        out["label-transfer"] = _entry("label-transfer", chosen, table, LT_GRID)
    rec = run_record(
        stage="tune", profile=prof.name, seed=prof.seed, model=str(model), corpus=str(corpus.path),
        dataset=(corpus.meta or {}).get("dataset"), dataset_version=(corpus.meta or {}).get("version"),
        split=split, k=k, features=features, images=len(np.asarray(corpus.split(split))[:limit]),
        method="coordinate ascent in grid order (qparse_lite.evaluation.evaluate.coordinate_ascent)",
        wall_time_s=time.perf_counter() - t0,
    )  # fmt: skip
    if write:
        for method, entry in out.items():
            write_postprocess(model, method, entry["values"], split=split, grid=entry["grid"],
                              table=json_safe(entry["table"]), score=json_safe(entry["score"]),
                              record={**rec, "grid_edges": entry["grid_edges"]})  # fmt: skip
    return {**out, "run": rec, "file": str(model / POSTPROCESS_FILE) if write else None}


def with_superpixels(entry: dict[str, Any]) -> dict[str, Any]:
    """The values of a tuned entry (``tune_run(...)["mcnn"]`` or ``["label-transfer"]``) with superpixel
    smoothing kept on: when the choice has none (``n_segments`` 0), the segment count that scored best among
    the non-zero counts tried at its step of the coordinate ascent (ties: the earlier in the grid), the other
    values as chosen; a choice that already smooths is returned as it is.

    The "with ss" side of the paper's claim "superpixel smoothing helps", whose "w/o ss" side is the same
    values with ``n_segments`` 0: both are then chosen on the validation split, so neither side is handicapped
    by a count nobody chose (docs/paper.md §1.8).
    """
    values = dict(entry["values"])
    if values["n_segments"]:
        return values
    tried = [r for r in entry["table"] if r["parameter"] == "n_segments" and r["value"]]
    if not tried:
        raise QparseError("with_superpixels: the tuning tried no non-zero segment count (n_segments in its grid)")
    values["n_segments"] = max(tried, key=lambda r: r["avg_f1"])["value"]  # max keeps the first of equals
    return values


def _entry(method: str, chosen: dict[str, Any], table: Any, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """One method's result: the chosen ``values``, the ``score`` of the chosen setting (the last parameter's
    row at its chosen value), every row tried (``table``), the ``grid`` and its ``grid_edges``."""
    rows = table.to_dict("records")
    for r in rows:  # the grid's own value (a DataFrame column of ints and None/floats turns 200 into 200.0)
        r["value"] = next(v for v in grid[r["parameter"]] if v == r["value"])
    last = list(grid)[-1]
    best = next(r for r in rows if r["parameter"] == last and r["value"] == chosen[last])
    return {"values": {n: chosen[n] for n in KNOBS[method]}, "score": _metrics(best), "table": rows, "grid": grid,
            "grid_edges": grid_edges(chosen, grid)}  # fmt: skip


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    keys = ("accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1")
    return {k: float(row[k]) for k in keys}
