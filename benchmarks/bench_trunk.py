"""Training speed of the trunk M-CNN family beside the paper's from-scratch M-CNN (issue 30).

One command::

    python benchmarks/bench_trunk.py --corpus CORPUS --threads 1 2 --iters 30 --out benchmarks/results/

measures on the CPU, for each thread count, in one process:

* **paper** — the from-scratch M-CNN of the ccp profile (``mcnn``, 113 px, width 0.5) in the ``grouped`` mode of
  ``benchmarks/bench_mcnn.py`` (B_I = 8 test images × B_R = 16 regions, SGD step, inputs already on the device);
* **trunk, step** — every trunk variant (``qparse_lite.model.mcnn.TRUNK_VARIANTS``) on one fixed real batch of
  the same shape, drawn from the corpus's cached trunk maps (``qparse_lite.train.trunk_pairs``): forward,
  Eq. (1), backward, AdamW step — the counterpart of the paper row;
* **trunk, end to end** — the same, each step on a fresh batch from the sampler (pair draw, gathers of the
  cached maps, region masks, targets): what ``qparse train`` sees.

The fraction of the fp32 FMA peak is 2 × (3 × the forward multiply-adds of a step) / step time over
``bench_mcnn.fp32_peak`` (the same convention as bench_mcnn: the unneeded input gradients of the first layer are
not subtracted). Writes ``bench_trunk_cpu_<F>px.json`` and ``.md`` (atomic), with the load average before
and after (the machine may be shared: then every number is a lower bound of the idle machine's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mcnn import _train as _paper_train  # noqa: E402
from bench_mcnn import fp32_peak, step_macs  # noqa: E402

from qparse_lite.data.prepare import Corpus  # noqa: E402
from qparse_lite.io import atomic_write_json, atomic_write_text  # noqa: E402
from qparse_lite.model.mcnn import TRUNK_VARIANTS, build_model  # noqa: E402
from qparse_lite.model.trunk import trunk_macs  # noqa: E402
from qparse_lite.runinfo import run_record  # noqa: E402
from qparse_lite.train.loss import matching_loss  # noqa: E402
from qparse_lite.train.pairs import DeviceCorpus  # noqa: E402
from qparse_lite.train.sampler import PairSampler  # noqa: E402
from qparse_lite.train.trunk_cache import trunk_maps  # noqa: E402
from qparse_lite.train.trunk_pairs import TrunkPairSampler  # noqa: E402


def _sampler(corpus: Any, maps: Any, variant: str, batch: int, group: int, seed: int) -> TrunkPairSampler:
    data = DeviceCorpus.from_corpus(corpus)
    tr = np.asarray(corpus.split("train"))
    rng = np.random.default_rng(seed)
    knn = np.stack([rng.choice(tr[tr != q], 30, replace=False) for q in tr])  # random neighbours: same cost
    s = PairSampler(data, tr, knn, batch_size=batch, pairs_per_epoch=batch * 10_000, group_size=group,
                    seed=seed, label_power=0.5)  # fmt: skip
    return TrunkPairSampler(s, maps, build_model(variant, input_size=maps.input_size, num_labels=data.num_labels).cfg)


def _trunk(sampler: TrunkPairSampler, variant: str, iters: int, warmup: int, fresh: bool, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = build_model(variant, input_size=sampler.maps.input_size, num_labels=sampler.cfg.num_labels).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fixed = sampler.next_batch()
    u = []

    def step() -> None:
        b = sampler.next_batch() if fresh else fixed
        u.append(len(b.R.maps[5]))
        loss, _, _ = matching_loss(model(b.I, b.R, b.group), b.c, b.t, b.has_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sec = time.perf_counter() - t0
    B, n_img = len(fixed.c), len(fixed.I[5])
    m = trunk_macs(model)
    fwd = B * m["per_pair"] + n_img * m["per_image"]
    return {"pairs_per_s": iters * B / sec, "ms_per_iter": 1e3 * sec / iters, "step_macs": 3 * fwd,
            "params": sum(p.numel() for p in model.parameters()), "distinct_neighbours_per_batch": float(np.mean(u))}  # fmt: skip


def run(corpus_path: str, threads: list[int], iters: int, warmup: int, batch: int, group: int, seed: int) -> dict[str, Any]:
    """Every measurement of the module docstring → a result dict."""
    corpus = Corpus.load(corpus_path)
    maps = trunk_maps(corpus)
    load0 = os.getloadavg()
    out: dict[str, Any] = {"threads": {}}
    for t in threads:
        torch.set_num_threads(t)
        peak = fp32_peak(t)["peak_flops"]
        cfg = dict(size=113, width=0.5, batch=batch, iters=iters, warmup=warmup, variant="mcnn", group_size=group)
        paper = _paper_train(cfg, "grouped", "cpu", False, seed)
        probe = build_model("mcnn", input_size=113, width=0.5)
        paper["step_macs"] = step_macs(probe, batch, batch // group)["step_macs"]
        rows = {"paper mcnn (113 px, w0.5)": paper}
        for v in TRUNK_VARIANTS:
            s = _sampler(corpus, maps, v, batch, group, seed)
            rows[f"{v} step"] = _trunk(s, v, iters, warmup, False, seed)
            rows[f"{v} end-to-end"] = _trunk(s, v, iters, warmup, True, seed)
        for r in rows.values():
            r["fraction_of_fp32_peak"] = 2 * r["step_macs"] / (r["ms_per_iter"] / 1e3) / peak if peak else None
            r.pop("loss_first", None), r.pop("loss_last", None)
        out["threads"][str(t)] = rows
        print(f"[bench_trunk] {t} thread(s): " + ", ".join(f"{k} {r['pairs_per_s']:.0f}" for k, r in rows.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    out["settings"] = {"corpus": corpus_path, "trunk_input": maps.input_size, "batch": batch, "group_size": group,
                       "iters": iters, "warmup": warmup, "seed": seed, "fp32_peak_1_thread": fp32_peak(1),
                       "loadavg_before": load0, "loadavg_after": os.getloadavg(), "cpu_count": os.cpu_count()}  # fmt: skip
    out["record"] = run_record(profile=None, seed=seed, benchmark="bench_trunk")
    out["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def to_markdown(res: dict[str, Any], command: str) -> str:
    """The result as a Markdown table."""
    s = res["settings"]
    lines = [
        "# Training speed: the trunk M-CNN family beside the paper's (CPU)",
        "",
        f"- command: `{command}`; git {res['record']['git_commit']}, {res['created']}",
        f"- batch {s['batch']} = {s['batch'] // s['group_size']} test images × {s['group_size']} regions; "
        f"{s['iters']} timed steps after {s['warmup']}; trunk input {s['trunk_input']} px (cached maps of {s['corpus']})",
        f"- fp32 FMA peak of one thread: {s['fp32_peak_1_thread']['peak_flops'] / 1e9:,.1f} GFLOP/s "
        f"({s['fp32_peak_1_thread']['cpu']}, {s['fp32_peak_1_thread']['ghz']:.2f} GHz × 2 FMA units (assumed) × "
        f"{s['fp32_peak_1_thread']['fp32_lanes']} lanes × 2)",
        f"- **the machine was shared**: {s['cpu_count']} cores, load average {s['loadavg_before'][0]:.1f} before and "
        f"{s['loadavg_after'][0]:.1f} after — every number is a lower bound of the idle machine's",
        "",
        "| threads | measurement | pairs/s | ms/step | parameters | fp32 peak |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for t, rows in res["threads"].items():
        for name, r in rows.items():
            frac = r.get("fraction_of_fp32_peak")
            lines.append(f"| {t} | {name} | {r['pairs_per_s']:,.0f} | {r['ms_per_iter']:.1f} | "
                         f"{r.get('params', '')} | {'' if frac is None else f'{100 * frac:.1f} %'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True, help="a prepared corpus (its trunk cache is built when missing)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    res = run(a.corpus, a.threads, a.iters, a.warmup, a.batch, a.group_size, a.seed)
    command = " ".join(["python benchmarks/bench_trunk.py", *(sys.argv[1:] if argv is None else argv)])
    res["settings"]["command"] = command
    stem = Path(a.out) / f"bench_trunk_cpu_{res['settings']['trunk_input']}px"
    atomic_write_json(stem.with_suffix(".json"), res)
    md = atomic_write_text(stem.with_suffix(".md"), to_markdown(res, command))
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
