"""Choose the post-processing of a CCP M-CNN and of label transfer on the VALIDATION split (never test).

Usage: ``python data_scripts/ccp_tune_postprocessing.py OUT MODEL CORPUS``. Writes ``OUT/mcnn_val_tuning.csv``
(every value tried, :func:`qparse_lite.evaluation.evaluate.tune_postprocessing`) and ``OUT/tuning.json`` (the chosen values;
label transfer gets the same kind of budget: its superpixel count, 0 = none).

Superseded by ``qparse tune --model RUN --corpus CORPUS --split val`` (:mod:`qparse_lite.evaluation.tuning`:
the same coordinate ascent, the segment counts with 0 = none added, written into ``RUN/postprocess.json``
that ``qparse evaluate`` and ``qparse parse`` read). Kept because ``results/ccp/tuning/`` came from it.
"""

from __future__ import annotations

import sys
import time

import torch

from qparse_lite.data.prepare import Corpus
from qparse_lite.evaluation.evaluate import evaluate_parser, grid_edges, make_parser_fn, tune_postprocessing
from qparse_lite.io import atomic_write_json
from qparse_lite.parse.parser import MCNNParser
from qparse_lite.profiles import Profile
from qparse_lite.retrieval.search import split_neighbours
from qparse_lite.train.checkpoint import load_model

#: The values tried, default first (ties keep it). A first run chose an END of every grid (ξ1 0.5,
#: displacement scale 1.0, 400 segments, ξ2 0.3); these grids reach past those choices where the parameter
#: allows (``at_grid_edge`` in tuning.json names any choice still at an end).
GRID = {"xi1": [0.8, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9], "displacement_scale": [1.0, 0.0, 0.25, 0.5, 0.75, 1.25, 1.5],
        "n_segments": [200, 50, 100, 400, 800, 1600], "xi2": [0.5, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6]}  # fmt: skip
LT_SEGMENTS = [200, 50, 100, 400, 0]


def main(out: str, model: str, corpus_dir: str) -> dict:
    torch.set_num_threads(1)
    c = Corpus.load(corpus_dir)
    net, tn, meta = load_model(model)
    prof = Profile(**meta["profile"])
    parser = MCNNParser(net, tn, c, xi1=prof.xi1, xi2=prof.xi2, erosion=prof.erosion_px)
    nb = split_neighbours(c, "val", 9, prof.features, f"{out}/knn")
    t0 = time.time()
    chosen, table = tune_postprocessing(parser, c, "val", nb, GRID, progress=False)
    table.to_csv(f"{out}/mcnn_val_tuning.csv", index=False, float_format="%.2f")
    lt_rows = []
    for ns in LT_SEGMENTS:
        fn = make_parser_fn("label-transfer", c, "val", nb, 9, None, "slic" if ns else None, ns or 200)
        sc = evaluate_parser(fn, c, c.split("val"), c.label_set, desc="label transfer", progress=False)
        lt_rows.append({"n_segments": ns, "avg_f1": sc["avg_f1"], "accuracy": sc["accuracy"]})
    best = max(lt_rows, key=lambda r: r["avg_f1"])
    rec = {"mcnn": chosen, "label_transfer": {"n_segments": best["n_segments"]}, "label_transfer_rows": lt_rows,
           "split": "val", "grid": GRID, "at_grid_edge": grid_edges(chosen, GRID), "wall_s": time.time() - t0}  # fmt: skip
    atomic_write_json(f"{out}/tuning.json", rec)
    return rec


if __name__ == "__main__":
    print(main(*sys.argv[1:4]))
