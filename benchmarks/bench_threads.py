"""``qparse parse`` throughput against ``--threads``, on an idle machine and with cores kept busy.

One command::

    python benchmarks/bench_threads.py --photos "$QPARSE_CCP_ROOT/photos" --n 20 --threads 1 2 0 --busy 0 1 \\
        --out benchmarks/results/

For every ``--busy`` B and ``--threads`` T it starts B spinning processes (each keeps one core busy: another
job on a shared machine), then runs ``qparse parse`` on the first ``--n`` photos with ``--threads T --json`` in a
fresh process whose environment has no ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (so T = 0 is torch's own
default, one thread per core), and reads photos/s from its summary line (the parse loop only: model, corpus
and features are loaded before the clock starts). The 1-minute load average before each run is recorded:
on a shared machine "idle" means "no spinner of ours", not an idle machine.

Without ``--model``/``--corpus`` a small quick-profile model (64 px synthetic corpus, one short epoch) is
trained once in ``--work`` (a few CPU minutes); the throughput of the CLI around it (person detector, features,
KNN, M-CNN, post-processing, paste-back, two verified image writes) is what is measured. Without ``--photos``,
``--n`` CCP-size (550×825) synthetic photos are made. Results: ``<out>/<--name>.json`` and ``.md`` (default
``bench_threads``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qparse_lite.io import atomic_write_json, atomic_write_text
from qparse_lite.runinfo import run_record


def tiny_run(work: Path) -> tuple[Path, Path]:
    """A 64-px synthetic corpus and a quick-profile M-CNN trained for one short epoch (made once in ``work``)."""
    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import prepare_corpus
    from qparse_lite.train.loop import train

    corpus, run = work / "corpus", work / "run"
    if not (corpus / "meta.json").is_file():
        prepare_corpus(get_dataset("synthetic", n=120, size=128, seed=3), 64, corpus, progress=False)
    if not (run / "checkpoint.pt").is_file():
        train("quick", "mcnn", run, device="cpu", corpus=corpus, epochs=1, pairs_per_epoch=512, batch_size=32,
              val_pairs=64, k_train=4, progress=False)  # fmt: skip
    return corpus, run


def synthetic_photos(folder: Path, n: int, size: tuple[int, int] = (550, 825)) -> list[Path]:
    """``n`` CCP-size photos: a synthetic person on a grey background."""
    import cv2
    import numpy as np

    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.io import atomic_save_image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, s in enumerate(get_dataset("synthetic", n=n, size=256, seed=7)):
        w, h = size
        photo = np.full((h, w, 3), 110, np.uint8)
        person = cv2.resize(s.image, (w - 50, w - 50))
        photo[100 : 100 + w - 50, 25 : w - 25] = person
        out.append(atomic_save_image(folder / f"{i:04d}.jpg", photo))
    return out


def _spin() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def measure(photos: list[Path], model: Path, corpus: Path, threads: int, busy: int, scratch: Path) -> dict[str, Any]:
    """One ``qparse parse --threads`` run with ``busy`` spinning processes; photos/s from its summary."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    spinners = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(2.0 if busy else 0.0)
        load = os.getloadavg()[0]
        out = scratch / f"t{threads}-b{busy}"
        cmd = [sys.executable, "-m", "qparse_lite", "parse", *map(str, photos), "--model", str(model), "--corpus",
               str(corpus), "--out", str(out), "--device", "cpu", "--threads", str(threads), "--json"]  # fmt: skip
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    finally:
        for p in spinners:
            p.terminate()
            p.join()
    if res.returncode != 0:
        raise RuntimeError(f"qparse parse failed ({res.returncode}): {res.stderr[-2000:]}")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    return {"threads": threads, "busy_cores": busy, "load_1min_before": round(load, 2),
            "photos": summary["photos"], "photos_per_s": summary["photos_per_s"], "loop_s": summary["wall_s"],
            "process_wall_s": round(wall, 2), "mean_timings_s": summary["mean_timings_s"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", default=None, help="folder of photos (default: --n synthetic CCP-size photos)")
    ap.add_argument("--n", type=int, default=20, help="photos per run (default 20)")
    ap.add_argument("--model", default=None, help="a `qparse train` run (default: a tiny one made in --work)")
    ap.add_argument("--corpus", default=None, help="its corpus (with --model)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0], help="--threads values (0 = torch's)")
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="cores kept busy (default 0 1)")
    ap.add_argument("--work", default="runs/bench-threads", help="scratch folder (tiny model, photos, outputs)")
    ap.add_argument("--out", default="benchmarks/results", help="results folder")
    ap.add_argument("--name", default="bench_threads", help="file stem of the results (default bench_threads)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.model:
        model, corpus = Path(args.model), Path(args.corpus)
    else:
        corpus, model = tiny_run(work)
    if args.photos:
        photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        photos = photos[: args.n]
    else:
        photos = synthetic_photos(work / "photos", args.n)
    rows = []
    for busy in args.busy:
        for t in args.threads:
            rows.append(measure(photos, model, corpus, t, busy, work / "out"))
            print(json.dumps(rows[-1]), flush=True)
    record = run_record(profile=None, seed=None, command="bench_threads", cores=os.cpu_count(),
                        photos_source=args.photos or "synthetic 550×825", n=len(photos))  # fmt: skip
    out = Path(args.out)
    atomic_write_json(out / f"{args.name}.json", {"rows": rows, "run": record})
    lines = ["# `qparse parse` photos/s against --threads", "",
             f"{len(photos)} photos ({args.photos or 'synthetic 550×825'}), {os.cpu_count()} cores, "
             f"`python benchmarks/bench_threads.py {' '.join(argv if argv is not None else sys.argv[1:])}`. "
             "busy = spinning processes of the benchmark; load = the 1-minute load average just before the run "
             "(the machine is shared: other jobs add to it).", "",
             "| busy cores | --threads | load before | photos/s | loop s |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        t = "0 (torch: one per core)" if r["threads"] == 0 else str(r["threads"])
        lines.append(f"| {r['busy_cores']} | {t} | {r['load_1min_before']} | {r['photos_per_s']} | {r['loop_s']} |")
    atomic_write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    print(f"wrote {out / (args.name + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
