"""Speed benchmark of the M-CNN: training pairs/s and the inference (matching) stage of parsing.

One command::

    python benchmarks/bench_mcnn.py --size 227 --width 1.0 --batch 128 --iters 50 --device auto \\
        --out benchmarks/results/

measures, in the same run and on the same device:

* **training** pairs/s of the default M-CNN (``cross 5,4,3,2``): forward + loss + backward + SGD step
  (the paper's SGD: lr 5e-4, momentum 0.9, weight decay 5e-4) on a batch of random pairs that already
  sits on the device (no data loading), for
  (a) ``reference``: plain eager fp32 (TF32 off on CUDA), contiguous NCHW tensors,
  (b) ``optimised``: channels_last, bf16 autocast on CUDA (fp32 on CPU), cuDNN autotuning on CUDA and,
  with ``--compile``, ``torch.compile``; every pair runs the whole network (the training path before
  grouped batches), and
  (c) ``grouped``: (b) on a batch of B_I = batch / B_R test images × B_R regions (``--group-size``):
  ``model(I, R, group)`` runs I's path and the I-term of Eq. (2) once per image, with gradients (what
  ``qparse train`` does with ``Profile.group_size``); same pairs per step, same loss, same optimiser;
* **fraction of the fp32 FMA peak** of every training mode: achieved FLOP/s / peak FLOP/s, where achieved
  = 2 × (multiply-adds actually computed per step) / (seconds per step), the multiply-adds of a step being
  3 × the forward multiply-adds (forward + gradients w.r.t. inputs and weights) from
  ``qparse_lite.model.summary.describe`` — for ``grouped`` the I path and the I-terms of the cross convolutions
  counted once per image, not per pair — and peak = threads × clock × FMA units per core × fp32 SIMD lanes
  × 2 FLOP (CPU: the clock from ``/proc/cpuinfo`` "cpu MHz" or ``--cpu-ghz``, lanes 16 with AVX-512, 8 with
  AVX2, 4 otherwise, ``--fma-units`` 2 per core by default — an assumption the JSON records; CUDA: not
  computed);
* **inference** pairs/s of the M-CNN stage of parsing (``qparse_lite.parse.parser.MCNNParser.match``): each test
  image is paired with K × L KNN regions (K = 9 neighbours, L = 17 foreground labels of ATR by default);
  ``plain`` runs ``model(I, R)`` with the test image repeated for every pair, ``cached`` runs
  ``encode_test(I)`` once and ``forward_cached`` for the pairs (the test image's path shared), both in the
  reference and the optimised setting;
* **peak memory** of each measurement: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak
  resident set size of the process (``VmHWM`` of ``/proc/self/status``, reset before each measurement via
  ``/proc/self/clear_refs``; where that is unavailable, ``ru_maxrss``, which cannot be reset) — the JSON
  says which (``memory_kind``).

Warm-up iterations (``--warmup``) are run before every timed loop and excluded; on CUDA the timed loop is
bracketed by ``torch.cuda.synchronize()``. Results go to ``<out>/bench_mcnn_<device>_<size>px_w<width>.json``
and ``.md`` (atomic writes), with the device name, torch version, git commit and every setting
(``qparse_lite.runinfo.run_record``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_write_json, atomic_write_text
from qparse_lite.model.mcnn import build_model
from qparse_lite.model.summary import count_parameters, describe
from qparse_lite.runinfo import get_device, run_record

__all__ = ["run_benchmark", "write_results", "to_markdown", "step_macs", "fp32_peak", "main"]

MODES = ("reference", "optimised")
TRAIN_MODES = ("reference", "optimised", "grouped")


# ---------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class _PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or the process's peak RSS on CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.kind = "cuda_max_memory_allocated"
        if not self.cuda:
            resettable = _proc_status_kb("VmHWM") is not None and os.access("/proc/self/clear_refs", os.W_OK)
            self.kind = "cpu_peak_rss_vmhwm" if resettable else "cpu_ru_maxrss_process_lifetime"

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        self.baseline = 0
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        elif self.kind == "cpu_peak_rss_vmhwm":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.baseline = 1024 * (_proc_status_kb("VmRSS") or 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        elif self.kind == "cpu_peak_rss_vmhwm":
            self.peak = 1024 * (_proc_status_kb("VmHWM") or 0)
        else:  # ru_maxrss is in KiB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak = rss if sys.platform == "darwin" else 1024 * rss

    def record(self) -> dict[str, Any]:
        return {
            "peak_mem_bytes": int(self.peak),
            "peak_mem_above_start_bytes": int(self.peak - self.baseline),
        }


# ---------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(step: Callable[[], Any], iters: int, warmup: int, device: str) -> float:
    """Seconds for ``iters`` calls of ``step`` after ``warmup`` untimed calls (CUDA-synchronised)."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _precision(mode: str, device: str):
    """Reference: strict fp32 (TF32 off), no autotuning. Optimised: cuDNN autotuning, bf16 autocast (CUDA)."""
    cuda = device.startswith("cuda")
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    try:
        if cuda:
            torch.backends.cudnn.benchmark = mode == "optimised"
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        amp = (
            torch.autocast(device_type="cuda", dtype=torch.bfloat16)
            if cuda and mode == "optimised"
            else contextlib.nullcontext()
        )
        with amp:
            yield
    finally:
        if cuda:
            (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32) = saved  # fmt: skip


def _fmt(mode: str) -> torch.memory_format:
    return torch.channels_last if mode == "optimised" else torch.contiguous_format


# ---------------------------------------------------------------------------------------------------
# the measurements
# ---------------------------------------------------------------------------------------------------


def _train(cfg: dict[str, Any], mode: str, device: str, compile_: bool, seed: int) -> dict[str, Any]:
    S, B = cfg["size"], cfg["batch"]
    grouped = mode == "grouped"
    base = "optimised" if grouped else mode
    n_img = B // cfg["group_size"] if grouped else B
    mem = _PeakMemory(device)
    with mem:
        torch.manual_seed(seed)
        model = build_model(cfg["variant"], input_size=S, width=cfg["width"]).to(
            device, memory_format=_fmt(base)
        )
        model.train()
        fwd = torch.compile(model) if (compile_ and base == "optimised") else model
        opt = torch.optim.SGD(model.parameters(), lr=5e-4, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        I = torch.randn(n_img, 3, S, S, generator=gen).to(device, memory_format=_fmt(base))
        R = torch.randn(B, 3, S, S, generator=gen).to(device, memory_format=_fmt(base))
        target = torch.randn(B, 5, generator=gen).to(device)
        group = torch.arange(n_img, device=device).repeat_interleave(B // n_img) if grouped else None
        losses: list[torch.Tensor] = []

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with _precision(base, device):
                loss = F.mse_loss(fwd(I, R, group).float(), target)
            loss.backward()
            opt.step()
            losses.append(loss.detach())

        seconds = _timed(step, cfg["iters"], cfg["warmup"], device)
    loss_values = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in loss_values):
        raise QparseError(
            f"training loss became non-finite in mode {mode} ({loss_values}); check the settings"
        )
    n = cfg["iters"] * B
    return {
        "pairs_per_s": n / seconds,
        "ms_per_iter": 1e3 * seconds / cfg["iters"],
        "timed_pairs": n,
        "seconds": seconds,
        "test_images_per_step": n_img,
        "loss_first": loss_values[0],
        "loss_last": loss_values[-1],
        **mem.record(),
    }


def _infer(cfg: dict[str, Any], mode: str, device: str, compile_: bool, seed: int) -> dict[str, Any]:
    S, n_img, per = cfg["size"], cfg["test_images"], cfg["k"] * cfg["labels"]
    torch.manual_seed(seed)
    model = build_model(cfg["variant"], input_size=S, width=cfg["width"]).to(device, memory_format=_fmt(mode))
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    I = torch.randn(n_img, 3, S, S, generator=gen).to(device, memory_format=_fmt(mode))
    R = torch.randn(n_img * per, 3, S, S, generator=gen).to(device, memory_format=_fmt(mode))
    index = torch.arange(n_img, device=device).repeat_interleave(per)  # pair b uses test image index[b]
    use_compile = compile_ and mode == "optimised"
    forward = torch.compile(model) if use_compile else model
    encode = torch.compile(model.encode_test) if use_compile else model.encode_test
    cached_fwd = torch.compile(model.forward_cached) if use_compile else model.forward_cached

    def plain() -> torch.Tensor:
        with torch.inference_mode(), _precision(mode, device):
            return forward(I.index_select(0, index), R)

    def cached() -> torch.Tensor:
        with torch.inference_mode(), _precision(mode, device):
            return cached_fwd(encode(I), R, index)

    out: dict[str, Any] = {}
    for name, fn in (("plain", plain), ("cached", cached)):
        mem = _PeakMemory(device)
        with mem:
            seconds = _timed(fn, cfg["iters"], cfg["warmup"], device)
        n = cfg["iters"] * n_img * per
        out[name] = {"pairs_per_s": n / seconds, "ms_per_test_image": 1e3 * seconds / (cfg["iters"] * n_img),
                     "timed_pairs": n, "seconds": seconds, **mem.record()}  # fmt: skip
    out["cached_speedup"] = out["cached"]["pairs_per_s"] / out["plain"]["pairs_per_s"]
    y_plain, y_cached = plain().float(), cached().float()
    out["max_abs_diff_cached_vs_plain"] = float((y_plain - y_cached).abs().max())
    return out


def step_macs(model: torch.nn.Module, batch: int, images: int) -> dict[str, float]:
    """Multiply-adds of one training step of ``batch`` pairs over ``images`` distinct test images.

    Forward per pair = the sum of ``describe(model).macs``; the "I share" is the I path's conv rows plus, for
    each cross conv, the fraction P/(P+Q+T) of its multiply-adds that reads x^I (Eq. (2)'s I-term). Grouped
    (images < batch): ``batch·(pair − I share) + images·(I share)``. A step = 3 × the forward (forward,
    gradients w.r.t. the inputs and w.r.t. the weights; conv1's unneeded input gradient is not subtracted).
    """
    d = describe(model)
    pair = float(d.macs.sum())
    i_share = float(d[(d.path == "I") & d.layer.str.startswith("conv")].macs.sum())
    cfg = model.cfg
    for j in getattr(cfg, "cross_layers", ()):
        p, q, t = cfg.cross_inputs(j)
        row = d[(d.layer == f"conv{j}") & (d.path == "C")]
        i_share += float(row.macs.sum()) * p / (p + q + t)
    fwd = batch * (pair - i_share) + images * i_share
    return {"forward_macs_per_pair": pair, "i_share_macs_per_pair": i_share, "step_macs": 3.0 * fwd}


def fp32_peak(threads: int, ghz: float | None = None, fma_units: int = 2) -> dict[str, Any]:
    """Peak fp32 FLOP/s of ``threads`` CPU cores: threads × GHz × fma_units × SIMD lanes × 2 (an FMA is 2 FLOP).

    Lanes: 16 with AVX-512F, 8 with AVX2+FMA, 4 otherwise (from ``/proc/cpuinfo`` flags); the clock from
    ``/proc/cpuinfo`` "cpu MHz" unless ``ghz`` is given (turbo may run above it, so the fraction can be an
    over-estimate of efficiency by that ratio). ``fma_units`` per core is an assumption (2 on most server
    cores since Skylake-SP; 1 on some SKUs).
    """
    flags, mhz, model = set(), None, "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(val.split())
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(val)
                elif key == "model name" and model == "unknown CPU":
                    model = val.strip()
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    clock = ghz if ghz else (mhz / 1000 if mhz else None)
    peak = threads * clock * 1e9 * fma_units * lanes * 2 if clock else None
    return {"cpu": model, "threads": threads, "ghz": clock, "clock_source": "--cpu-ghz" if ghz else "/proc/cpuinfo cpu MHz",
            "fma_units_per_core": fma_units, "fp32_lanes": lanes, "peak_flops": peak}  # fmt: skip


def _prime(device: str) -> None:
    """One tiny forward+backward so that one-time library set-up (thread pools, kernels, CUDA context)
    lands in no measurement."""
    model = build_model("mcnn", input_size=32, width=0.125).to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    model(x, x).sum().backward()
    _sync(device)


def run_benchmark(
    size: int = 227,
    width: float = 1.0,
    batch: int = 128,
    iters: int = 20,
    warmup: int = 3,
    device: str = "auto",
    compile: bool = False,
    variant: str = "mcnn",
    k: int = 9,
    labels: int = 17,
    test_images: int = 4,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    group_size: int = 16,
    cpu_ghz: float | None = None,
    fma_units: int = 2,
) -> dict[str, Any]:
    """Measure training and inference throughput of one M-CNN size in both modes → a result dict.

    Args:
        size, width: input side S and channel multiplier of the M-CNN (``build_model``).
        batch: training pairs per SGD step (paper: 128).
        iters, warmup: timed and untimed iterations of every measurement.
        device: ``auto`` | ``cpu`` | ``cuda`` (``qparse_lite.runinfo.get_device``).
        compile: also ``torch.compile`` the model in the optimised mode.
        variant: the M-CNN variant (default ``mcnn`` = cross 5,4,3,2).
        k, labels, test_images: inference pairs per timed step = test_images × k × labels.
        threads: ``torch.set_num_threads`` (CPU); None leaves torch's default.
        seed: seeds the weights and the random inputs.
        progress: print one line per measurement to stderr.
        group_size: B_R of the ``grouped`` training mode (``gcd(batch, group_size)`` is used, so that it
            divides the batch; recorded in the settings).
        cpu_ghz, fma_units: for the fraction of the fp32 FMA peak (:func:`fp32_peak`).
    """
    for name, value in dict(
        size=size, batch=batch, iters=iters, k=k, labels=labels, test_images=test_images
    ).items():
        if value < 1:
            raise QparseError(f"bench_mcnn: --{name.replace('_', '-')} must be ≥ 1, got {value}")
    if warmup < 0 or width <= 0:
        raise QparseError(f"bench_mcnn: --warmup must be ≥ 0 and --width > 0 (got {warmup}, {width})")
    if group_size < 1:
        raise QparseError(f"bench_mcnn: --group-size must be ≥ 1, got {group_size}")
    group_size = math.gcd(batch, group_size)  # B_R must divide the batch (e.g. --batch 4 → B_R = 4)
    dev = get_device(device)
    if threads:
        torch.set_num_threads(threads)
    cfg = dict(size=size, width=width, batch=batch, iters=iters, warmup=warmup, variant=variant, k=k,
               labels=labels, test_images=test_images, group_size=group_size)  # fmt: skip
    probe = build_model(variant, input_size=size, width=width)
    model_info = {
        "variant": probe.variant,
        "params": count_parameters(probe),
        "gmac_per_pair_forward": float(describe(probe).macs.sum()) / 1e9,
        "config": probe.cfg.to_dict(),
    }
    macs = {m: step_macs(probe, batch, batch // group_size if m == "grouped" else batch) for m in TRAIN_MODES}
    del probe
    _prime(dev)
    results: dict[str, Any] = {"train": {}, "infer": {}}
    jobs = [("train", m) for m in TRAIN_MODES] + [("infer", m) for m in MODES]
    for kind, mode in jobs:
        fn = _train if kind == "train" else _infer
        t0 = time.perf_counter()
        results[kind][mode] = fn(cfg, mode, dev, compile, seed)
        if progress:
            r = results[kind][mode]
            rate = r["pairs_per_s"] if kind == "train" else r["cached"]["pairs_per_s"]
            print(f"[bench_mcnn] {kind:5s} {mode:9s} {rate:10.1f} pairs/s ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    tr = results["train"]
    tr["optimised_speedup"] = tr["optimised"]["pairs_per_s"] / tr["reference"]["pairs_per_s"]
    tr["grouped_speedup"] = tr["grouped"]["pairs_per_s"] / tr["optimised"]["pairs_per_s"]
    tr["grouped_vs_reference"] = tr["grouped"]["pairs_per_s"] / tr["reference"]["pairs_per_s"]
    cuda = dev.startswith("cuda")
    peak = None if cuda else fp32_peak(torch.get_num_threads(), cpu_ghz, fma_units)
    for mode in TRAIN_MODES:
        r = tr[mode]
        r["step_macs"] = macs[mode]["step_macs"]
        r["achieved_flops"] = 2 * macs[mode]["step_macs"] / (r["seconds"] / iters)
        r["fraction_of_fp32_peak"] = (
            r["achieved_flops"] / peak["peak_flops"] if peak and peak["peak_flops"] else None
        )
    model_info["i_share_of_forward"] = macs["reference"]["i_share_macs_per_pair"] / macs["reference"][
        "forward_macs_per_pair"
    ]
    settings = {
        **cfg,
        "device": dev,
        "compile": compile,
        "threads": torch.get_num_threads(),
        "seed": seed,
        "inference_pairs_per_step": test_images * k * labels,
        "optimiser": "SGD lr 5e-4, momentum 0.9, weight decay 5e-4",
        "loss": "MSE on the 5 outputs against random targets",
        "modes": {
            "reference": "eager fp32, contiguous NCHW" + (", TF32 off, cudnn.benchmark off" if cuda else ""),
            "optimised": "channels_last"
            + (", bf16 autocast, TF32 off, cudnn.benchmark on" if cuda else ", fp32 (no autocast on CPU)")
            + (", torch.compile" if compile else ""),
        },
        "memory_kind": _PeakMemory(dev).kind,
        "fp32_peak": peak,
        "grouped": f"{batch // group_size} test images × {group_size} regions per step",
        "command": None,  # set by main()
    }
    device_name = torch.cuda.get_device_name(0) if cuda else (os.uname().machine + " CPU")
    record = run_record(profile=None, seed=seed, benchmark="bench_mcnn", device_name=device_name)
    return {"record": record, "settings": settings, "model": model_info, "results": results,
            "created": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def to_markdown(res: dict[str, Any]) -> str:
    """A Markdown report of :func:`run_benchmark`'s result."""
    s, r, m = res["settings"], res["results"], res["model"]
    hw = res["record"]["hardware"]
    lines = [
        f"# M-CNN benchmark — {res['record']['device_name']}",
        "",
        f"- command: `{s['command'] or 'run_benchmark(...)'}`",
        f"- device `{s['device']}`, torch {hw.get('torch')}, {hw.get('cpu_count')} CPUs, threads {s['threads']}, "
        f"git {res['record']['git_commit']}, {res['created']}",
        f"- model `{m['variant']}` at {s['size']}×{s['size']}, width {s['width']}: {m['params']:,} parameters, "
        f"{m['gmac_per_pair_forward']:.3f} GMAC per pair (forward)",
        f"- training: batch {s['batch']}, {s['iters']} timed iterations after {s['warmup']} warm-up; "
        f"inference: {s['test_images']} test image(s) × K={s['k']} × L={s['labels']} = "
        f"{s['inference_pairs_per_step']} pairs per step",
        f"- reference = {s['modes']['reference']}; optimised = {s['modes']['optimised']}",
        f"- peak memory: `{s['memory_kind']}`",
        f"- grouped = optimised on {s.get('grouped', '')} (the I path once per image, with gradients)",
        _peak_line(s.get("fp32_peak")),
        "",
        "| measurement | mode | pairs/s | time | fp32 peak | peak memory | above start |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for mode in TRAIN_MODES:
        t = r["train"][mode]
        frac = t.get("fraction_of_fp32_peak")
        fr = f"{100 * frac:.1f} %" if frac else "—"
        lines.append(f"| training step | {mode} | {t['pairs_per_s']:,.1f} | {t['ms_per_iter']:.1f} ms/iter | {fr} | "
                     f"{_mib(t['peak_mem_bytes'])} | {_mib(t['peak_mem_above_start_bytes'])} |")  # fmt: skip
    for mode in MODES:
        for name in ("plain", "cached"):
            t = r["infer"][mode][name]
            label = "inference, plain forward" if name == "plain" else "inference, shared test path"
            lines.append(f"| {label} | {mode} | {t['pairs_per_s']:,.1f} | {t['ms_per_test_image']:.1f} ms/image | — | "
                         f"{_mib(t['peak_mem_bytes'])} | {_mib(t['peak_mem_above_start_bytes'])} |")  # fmt: skip
    lines += [
        "",
        f"Grouped training vs the ungrouped optimised path: **{r['train']['grouped_speedup']:.2f}×** "
        f"({r['train']['grouped_vs_reference']:.2f}× the reference). "
        f"Training speed-up of the optimised path: **{r['train']['optimised_speedup']:.2f}×**. "
        f"Shared test path vs plain forward: **{r['infer']['reference']['cached_speedup']:.2f}×** (reference), "
        f"**{r['infer']['optimised']['cached_speedup']:.2f}×** (optimised); max |difference| of their outputs "
        f"{r['infer']['reference']['max_abs_diff_cached_vs_plain']:.1e} (fp32).",
        "",
    ]
    return "\n".join(lines)


def _peak_line(peak: dict[str, Any] | None) -> str:
    if not peak or not peak.get("peak_flops"):
        return "- fp32 peak: not computed (CUDA, or no clock found)"
    return (
        f"- fp32 FMA peak = {peak['threads']} thread(s) × {peak['ghz']:.2f} GHz ({peak['clock_source']}) × "
        f"{peak['fma_units_per_core']} FMA units (assumed) × {peak['fp32_lanes']} lanes × 2 = "
        f"{peak['peak_flops'] / 1e9:,.1f} GFLOP/s ({peak['cpu']}); achieved = 2 × 3 × forward multiply-adds "
        "actually computed per step / step time"
    )


def write_results(res: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``bench_mcnn_<device>_<size>px_w<width>.json`` and ``.md`` into ``out_dir`` (atomic)."""
    s = res["settings"]
    stem = f"bench_mcnn_{s['device'].replace(':', '')}_{s['size']}px_w{s['width']:g}" + (
        "_compile" if s["compile"] else ""
    )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QparseError(
            f"bench_mcnn: cannot create the output folder {out} ({e}); pass a writable --out"
        ) from e
    return atomic_write_json(out / f"{stem}.json", res), atomic_write_text(
        out / f"{stem}.md", to_markdown(res)
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Training and inference throughput of the M-CNN (see benchmarks/README.md)."
    )
    p.add_argument("--size", type=int, default=227, help="input side S in pixels (paper: 227)")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = the kit's 227 sizes)")
    p.add_argument("--batch", type=int, default=128, help="training pairs per SGD step (paper: 128)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations before each measurement")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--compile", action="store_true", help="also torch.compile the model in the optimised mode"
    )
    p.add_argument("--variant", default="mcnn", help="M-CNN variant (qparse_lite.model.mcnn.VARIANTS)")
    p.add_argument("--k", type=int, default=9, help="KNN images per test image at inference (paper: 9)")
    p.add_argument("--labels", type=int, default=17, help="foreground labels L per test image (ATR: 17)")
    p.add_argument("--test-images", type=int, default=4, help="test images per inference step")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and random inputs")
    p.add_argument("--group-size", type=int, default=16,
                   help="B_R: regions per test image in the grouped training mode (gcd with --batch is used)")  # fmt: skip
    p.add_argument("--cpu-ghz", type=float, default=None,
                   help="CPU clock for the fp32 peak (default: /proc/cpuinfo cpu MHz)")  # fmt: skip
    p.add_argument("--fma-units", type=int, default=2, help="FMA units per core for the fp32 peak (default 2)")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON and Markdown results")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        res = run_benchmark(
            size=args.size, width=args.width, batch=args.batch, iters=args.iters, warmup=args.warmup,
            device=args.device, compile=args.compile, variant=args.variant, k=args.k, labels=args.labels,
            test_images=args.test_images, threads=args.threads, seed=args.seed, group_size=args.group_size,
            cpu_ghz=args.cpu_ghz, fma_units=args.fma_units,
        )  # fmt: skip
        given = sys.argv[1:] if argv is None else argv
        res["settings"]["command"] = " ".join(["python benchmarks/bench_mcnn.py", *given])
        js, md = write_results(res, args.out)
    except (QparseError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
