"""Parsing throughput per stage (paper Sec. 3.3): the M-CNN stage and the post-processing, separately and end
to end, on CPU or GPU.

One command::

    python benchmarks/bench_parse.py --corpus runs/notebooks-quick/corpus \\
        --model runs/notebooks-quick/models/mcnn --images 40 --k 9 --device auto --out benchmarks/results/

For each of ``--images`` test images (with their K nearest train images, retrieved before timing):

* **M-CNN stage** — ``MCNNParser.match``: all K × (L−1) KNN regions built on the device, the test image's
  path computed once and shared (``encode_test`` / ``forward_cached``), ĉ and t̂ back on the host;
* **post-processing** — ``MCNNParser.postprocess``: label confidence, ξ1, box moves and mask warps, p_fg, ξ2,
  seeds, geodesic background probability, MAP and SLIC superpixel smoothing (each sub-stage is timed too);
* **end to end** — both.

Images/s = images / summed wall time of the stage (one warm-up image is excluded; on CUDA every stage is
bracketed by ``torch.cuda.synchronize()``). Without ``--model`` an untrained default M-CNN is used with
ξ1 = 0 so that every label is visible (the post-processing's worst case). Results:
``<out>/bench_parse_<device>_<size>px.json`` and ``.md``, with the run record (device, versions, commit).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qparse_lite.data.prepare import Corpus
from qparse_lite.io import atomic_write_json, atomic_write_text
from qparse_lite.model.mcnn import build_model
from qparse_lite.parse import postprocess as pp
from qparse_lite.parse.parser import MCNNParser, label_boxes
from qparse_lite.retrieval.search import corpus_knn
from qparse_lite.runinfo import get_device, run_record
from qparse_lite.train.checkpoint import load_model
from qparse_lite.train.pairs import TargetNorm


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _substages(parser: MCNNParser, image: np.ndarray, nb: np.ndarray, present, c, t) -> dict[str, float]:
    """Wall time of each post-processing sub-stage (the same calls as MCNNParser.postprocess)."""
    out: dict[str, float] = {}
    S = image.shape[0]
    tic = time.perf_counter()
    nb_labels = np.asarray(parser.corpus.labels[nb])
    present = present.copy()
    present[:, 0] = False
    conf = pp.label_confidence(c, present)
    visible = pp.visible_labels(conf, parser.xi1)
    _, boxes = label_boxes(nb_labels, parser.L)
    M = pp.probability_maps(nb_labels, boxes, t, present, visible, (S, S))
    out["transfer (ĉ_l, ξ1, boxes, warps, M_l)"] = time.perf_counter() - tic
    tic = time.perf_counter()
    fg = pp.foreground_probability(M)
    fs, bs = pp.seeds(pp.rough_foreground(fg, parser.xi2), parser.erosion, p_fg=fg)
    bg = pp.background_probability(image, fs, bs)
    out["fg/bg (seeds, geodesic P_bg)"] = time.perf_counter() - tic
    tic = time.perf_counter()
    lab = pp.map_labels(M, bg)
    seg = pp.superpixels(image, method=parser.superpixel_method or "slic", n_segments=parser.n_segments)
    pp.superpixel_vote(lab, seg)
    out["MAP + superpixels"] = time.perf_counter() - tic
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="prepared corpus cache (qparse prepare)")
    ap.add_argument("--model", default=None, help="a qparse train run (default: an untrained M-CNN, ξ1 = 0)")
    ap.add_argument("--images", type=int, default=40, help="test images timed")
    ap.add_argument("--k", type=int, default=9, help="KNN images per test image (paper: 9)")
    ap.add_argument("--features", default="hog-color", help="retrieval features (not timed)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default="benchmarks/results", help="output folder")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    corpus = Corpus.load(args.corpus)
    S = int(corpus.size)
    if args.model:
        net, tn, meta = load_model(args.model, map_location=dev)
        xi1, width, variant = meta["profile"]["xi1"], meta["profile"]["width"], meta["variant"]
    else:
        width, variant, xi1 = 0.25 if S <= 64 else 0.5 if S <= 128 else 1.0, "mcnn", 0.0
        net = build_model(variant, input_size=S, width=width)
        tn = TargetNorm(0.5, 0.5, [0.0] * 4, [0.1] * 4)
    parser = MCNNParser(net, tn, corpus, xi1=xi1, erosion=max(1, round(10 * S / 227)), device=dev)
    test = np.asarray(corpus.split("test"))[: args.images + 1]
    nbs = corpus_knn(corpus, test, args.k, args.features, progress=False).neighbours
    times = {"match": [], "postprocess": []}
    sub: dict[str, list[float]] = {}
    for j, i in enumerate(test):
        image = np.asarray(corpus.images[i])
        _sync(dev)
        tic = time.perf_counter()
        present, c, t = parser.match(image, nbs[j])
        _sync(dev)
        t_match = time.perf_counter() - tic
        tic = time.perf_counter()
        parser.postprocess(image, nbs[j], present, c, t)
        t_post = time.perf_counter() - tic
        if j == 0:
            continue  # warm-up
        times["match"].append(t_match)
        times["postprocess"].append(t_post)
        for k, v in _substages(parser, image, nbs[j], present, c, t).items():
            sub.setdefault(k, []).append(v)
    n = len(times["match"])
    L1 = corpus.label_set.num_labels - 1
    res = {
        "images": n, "k": args.k, "pairs_per_image": args.k * L1, "size": S, "width": width, "variant": variant,
        "trained_model": bool(args.model), "xi1": xi1, "device": dev, "threads": torch.get_num_threads(),
        "images_per_s": {
            "M-CNN stage": n / sum(times["match"]),
            "post-processing": n / sum(times["postprocess"]),
            "end to end": n / (sum(times["match"]) + sum(times["postprocess"])),
        },
        "mcnn_pairs_per_s": n * args.k * L1 / sum(times["match"]),
        "postprocess_ms_per_image": {k: 1e3 * float(np.mean(v)) for k, v in sub.items()},
    }  # fmt: skip
    res["run"] = run_record(profile=None, seed=None, dataset=(corpus.meta or {}).get("dataset"),
                            dataset_version=(corpus.meta or {}).get("version"), stage="bench_parse")  # fmt: skip
    out = Path(args.out)
    stem = f"bench_parse_{dev.split(':')[0]}_{S}px"
    atomic_write_json(out / f"{stem}.json", res)
    hw = res["run"]["hardware"]
    md = [f"# Parsing throughput — {dev} ({hw.get('gpu') or hw.get('processor')}, {res['threads']} threads), "
          f"{S}×{S}, K = {args.k}, {n} images, {'trained' if args.model else 'untrained (ξ1 = 0)'} {variant} "
          f"(width {width}), commit `{res['run']['git_commit']}`\n",
          "| stage | images/s |", "|---|---|"]  # fmt: skip
    md += [f"| {k} | {v:.2f} |" for k, v in res["images_per_s"].items()]
    md += ["", f"M-CNN stage: {res['mcnn_pairs_per_s']:.0f} pairs/s ({res['pairs_per_image']} pairs per image).", "",
           "| post-processing sub-stage | ms / image |", "|---|---|"]  # fmt: skip
    md += [f"| {k} | {v:.1f} |" for k, v in res["postprocess_ms_per_image"].items()]
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))
    print(json.dumps(res["images_per_s"]))
    return res


if __name__ == "__main__":
    main()
