"""Peak memory (RSS) of ``qparse parse`` on one photo of growing size, up to 10000×10000.

One command::

    python benchmarks/bench_photo_memory.py --sides 600 4000 10000 --out benchmarks/results/

For every side N it writes an N×N JPEG (a synthetic person scaled up, with noise so it compresses like a
photo), runs ``qparse parse`` on it in a fresh process (``--threads 1``) and reads that process's peak resident
set size from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh wrapper process (so each number is
one run's). The increase over the smallest photo is the photo's own cost: the decoded RGB photo (3 bytes per
pixel, which the overlay is blended into in place), the decoder's copy while it decodes (PIL keeps RGB at 4
bytes per pixel), the H×W label map (1 byte per pixel) and the encoders' buffers; the detector, crop and
features see a copy of at most ``WORK_SIDE`` px (``qparse_lite.parse.parser``). Without ``--model``/``--corpus``
the tiny quick-profile model of ``bench_threads.py`` is made in ``--work``. Results:
``<out>/bench_photo_memory.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from qparse_lite.io import atomic_write_json, atomic_write_text
from qparse_lite.runinfo import run_record

_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.stderr.write(r.stderr[-3000:] if r.returncode else '')"
)


def make_photo(path: Path, side: int) -> Path:
    """An N×N JPEG (quality 90) of a synthetic person scaled up, with ±6 noise."""
    import cv2
    import numpy as np

    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.io import atomic_save_image

    s = get_dataset("synthetic", n=1, size=160, seed=5)[0]
    big = cv2.resize(s.image, (side, side), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(0)
    for y in range(0, side, 1024):  # in strips: the benchmark's own memory stays small
        strip = big[y : y + 1024].astype(np.int16) + rng.integers(-6, 7, big[y : y + 1024].shape, dtype=np.int16)
        big[y : y + 1024] = strip.clip(0, 255).astype(np.uint8)
    return atomic_save_image(path, big, quality=90)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[600, 4000, 10000], help="photo sides (px)")
    ap.add_argument("--model", default=None, help="a `qparse train` run (default: a tiny one made in --work)")
    ap.add_argument("--corpus", default=None, help="its corpus (with --model)")
    ap.add_argument("--work", default="runs/bench-threads", help="scratch folder (tiny model, photos, outputs)")
    ap.add_argument("--out", default="benchmarks/results", help="results folder")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.model:
        model, corpus = Path(args.model), Path(args.corpus)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_threads import tiny_run

        corpus, model = tiny_run(work)
    rows = []
    for side in args.sides:
        photo = make_photo(work / "memory" / f"photo_{side}.jpg", side)
        cmd = [sys.executable, "-m", "qparse_lite", "parse", str(photo), "--model", str(model), "--corpus",
               str(corpus), "--out", str(work / "memory" / f"out_{side}"), "--device", "cpu", "--threads", "1"]  # fmt: skip
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rc, kib = (int(v) for v in res.stdout.split())
        if rc != 0:
            raise RuntimeError(f"qparse parse failed on {photo} ({rc}): {res.stderr}")
        rows.append({"side": side, "megapixels": round(side * side / 1e6, 2), "jpeg_mb": round(photo.stat().st_size / 1e6, 1),
                     "peak_rss_mib": round(kib / 1024, 1), "wall_s": round(wall, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["peak_rss_mib"]
    for r in rows:
        px = r["side"] ** 2 - rows[0]["side"] ** 2
        r["over_smallest_mib"] = round(r["peak_rss_mib"] - base, 1)
        r["bytes_per_extra_pixel"] = round((r["peak_rss_mib"] - base) * 2**20 / px, 2) if px > 0 else None
    record = run_record(profile=None, seed=None, command="bench_photo_memory", load_1min=os.getloadavg()[0])
    out = Path(args.out)
    atomic_write_json(out / "bench_photo_memory.json", {"rows": rows, "run": record})
    lines = ["# Peak memory of `qparse parse` on one N×N photo", "",
             f"`python benchmarks/bench_photo_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
             "(peak RSS of the whole `qparse parse` process: Python, torch, the model, the corpus and its features "
             "included; the smallest photo's is that baseline).", "",
             "| photo | megapixels | JPEG MB | peak RSS MiB | over the smallest MiB | bytes per extra pixel | wall s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['side']}×{r['side']} | {r['megapixels']} | {r['jpeg_mb']} | {r['peak_rss_mib']} | "
                     f"{r['over_smallest_mib']} | {r['bytes_per_extra_pixel'] or '–'} | {r['wall_s']} |")  # fmt: skip
    atomic_write_text(out / "bench_photo_memory.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'bench_photo_memory.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
