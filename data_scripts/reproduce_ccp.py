"""Regenerate ``results/ccp/`` (the fair setting, issue 31) from an empty run folder with one command, both cores busy.

    OMP_NUM_THREADS=1 python data_scripts/reproduce_ccp.py RUN --data-root DIR [--dest results/ccp] [--dry-run]

``qparse reproduce --profile ccp`` alone runs the eight chapters one after the other, and a chapter that trains
leaves the second core idle while it evaluates. This script runs the same chapters into ``RUN`` and packs the
trainings around them, in two lanes of one-thread jobs (the machine's 2 cores; load 2-3):

1. notebooks 00-02 (corpus at the profile's crop, retrieval head, KNN tables);
2. lane a: every model the chapters train, two at a time, longest first (``ccp_train_models.py chapters``; the
   chapters then find them complete), then seeds 1, 2 of the headline rows (``ccp_train_models.py seeds``);
   lane b: once the defaults (``mcnn``, ``trunk-mcnn``, ``trunk-cross54``) are trained, notebooks 03, 04 and
   07, which train nothing else; the from-scratch compute curve (``ccp_trunk_curve.py run --variant mcnn``,
   three budgets) and the validation evaluations ``ccp_compute_curve.py`` reads; once lane a's chapter
   trainings are done, notebooks 05 and 06;
3. the seeds' test evaluations, two at a time (``collect_ccp_fair.py --seed-commands``, into ``RUN/seed-evals``);
4. ``collect_ccp_fair.py RUN --evals RUN/seed-evals --clean`` into DEST, then ``ccp_compute_curve.py``,
   ``ccp_stage_figure.py`` and ``export_executed_chapters.py RUN DEST/notebooks``.

Every step is skipped when its output is complete, so the same command resumes after a stop: a training from its
last epoch checkpoint, a notebook from its start (``qparse reproduce --resume``), an evaluation from scratch.
``RUN/reproduce_ccp.json`` records each step's command, wall time and load averages, and the total; the wall
time of this invocation is the reproduction's wall time when it started from an empty ``RUN``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from ccp_compute_curve import BUDGETS  # noqa: E402

from qparse_lite.io import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "data_scripts"
DEFAULTS = ("mcnn", "trunk-mcnn", "trunk-cross54")
"""The models notebooks 03, 04 and 07 use (the profile's ``variant``, the trunk family's twin of it and its
``trunk_variant``): lane b starts them once these are trained."""
POLL_S = 30.0  # seconds between two looks at a waiting step's ``ready``


class Step:
    """One command of a lane: skipped when ``done()`` holds; started once ``ready()`` holds; ``finished`` is set
    when it succeeded or was skipped (another lane's ``ready`` can wait on it)."""

    def __init__(self, name: str, cmd: list[str], done: Callable[[], bool] = lambda: False,
                 ready: Callable[[], bool] = lambda: True) -> None:  # fmt: skip
        self.name, self.cmd, self.done, self.ready = name, cmd, done, ready
        self.finished = threading.Event()


class Recorder:
    """Steps' records in ``RUN/reproduce_ccp.json`` (written after each step, so a stop keeps what finished)."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, threading.Lock()
        self.rec: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"invocations": []}
        self.rec["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": []})

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.rec["invocations"][-1]["steps"].append(entry)
            atomic_write_json(self.path, self.rec)

    def close(self, wall_s: float, ok: bool) -> None:
        with self.lock:
            self.rec["invocations"][-1].update(wall_s=round(wall_s, 1), ok=ok)
            atomic_write_json(self.path, self.rec)


def _log(s: str) -> None:
    print(time.strftime("%H:%M:%S"), s, flush=True)


def run_lane(steps: list[Step], rec: Recorder, dry: bool, failed: list[str]) -> None:
    """Run ``steps`` in order; stop the lane at the first failure (recorded in ``failed``)."""
    for s in steps:
        if s.done():
            _log(f"[done] {s.name}")
            s.finished.set()
            continue
        if dry:
            _log(f"[plan] {s.name}: {shlex.join(s.cmd)}")
            continue
        while not s.ready():
            if failed:
                return
            time.sleep(POLL_S)
        _log(f"[run ] {s.name}")
        t0, load0 = time.perf_counter(), os.getloadavg()
        # every child imports this checkout's package (a git worktree's, not the venv's editable install)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        rc = subprocess.run(s.cmd, cwd=ROOT, env=env, check=False).returncode
        wall = time.perf_counter() - t0
        rec.add({"step": s.name, "command": shlex.join(s.cmd), "rc": rc, "wall_s": round(wall, 1),
                 "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()]})  # fmt: skip
        _log(f"[{'ok' if rc == 0 else 'FAIL':<4}] {s.name} in {wall:.0f} s (rc {rc})")
        if rc != 0:
            failed.append(s.name)
            return
        s.finished.set()


def run_lanes(lanes: list[list[Step]], rec: Recorder, dry: bool) -> list[str]:
    """Run the lanes side by side (one thread each); return the names of the failed steps."""
    failed: list[str] = []
    threads = [threading.Thread(target=run_lane, args=(lane, rec, dry, failed)) for lane in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def plan(run: Path, data_root: Path, dest: Path) -> list[list[list[Step]]]:
    """The phases of the reproduction, each a list of lanes of :class:`Step` (see the module docstring)."""
    from qparse_lite.pipeline.workspace import Workspace

    py, qparse = sys.executable, str(Path(sys.executable).parent / "qparse")
    evals, curve, curve_ev = run / "seed-evals", run / "curve", run / "curve-eval"
    rep = [qparse, "reproduce", "--profile", "ccp", "--data-root", str(data_root), "--device", "cpu", "--out",
           str(run), "--resume", "--notebooks"]  # fmt: skip

    def nb_done(*prefixes: str) -> Callable[[], bool]:
        def f() -> bool:
            st = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
            return all(any(k[:2] == p and v.get("status") == "ok" for k, v in st.items()) for p in prefixes)

        return f

    def trained(*variants: str) -> Callable[[], bool]:
        def f() -> bool:
            if not (run / "workspace.json").is_file():
                return False
            ws = Workspace("ccp", output_dir=run, data_root=data_root, device="cpu", seed=0)
            return all(ws.is_trained(v) for v in variants)

        return f

    def pool(what: str) -> Step:
        return Step(f"{what} trainings", [py, str(SCRIPTS / "ccp_train_models.py"), what, str(run), "--data-root",
                                          str(data_root)])  # fmt: skip

    knn = run / "knn" / "efficientnet-lite0-learned"
    curve_steps = [Step("compute curve: from-scratch trainings",
                        [py, str(SCRIPTS / "ccp_trunk_curve.py"), "run", "--corpus", str(run / "corpus"),
                         "--knn", f"{knn}_train_k30.npz", "--val-knn", f"{knn}_val_k30.npz", "--runs", str(curve),
                         "--variant", "mcnn", "--pairs", *map(str, BUDGETS)],
                        done=lambda: all((curve / f"mcnn-p{p}" / "run.json").is_file() for p in BUDGETS))]  # fmt: skip
    models = [curve / f"mcnn-p{p}" for p in BUDGETS] + [run / "models" / "mcnn"]
    for m in [*models, None]:  # None: label transfer
        name = m.name if m else "label-transfer"
        what = ["--model", str(m)] if m else ["--method", "label-transfer"]
        curve_steps.append(Step(f"compute curve: validation of {name}",
                                [qparse, "evaluate", *what, "--corpus", str(run / "corpus"), "--split", "val", "--k",
                                 "9", "--data-root", str(data_root), "--threads", "1", "--no-progress", "--out",
                                 str(curve_ev / name)],
                                done=lambda n=name: (curve_ev / n / "scores.json").is_file()))  # fmt: skip

    def seed_eval_steps() -> list[list[Step]]:
        if not (run / "results" / "05_postprocess_val.json").is_file():
            return [[Step("seed evaluations (after notebook 05)", ["false"])]]
        from collect_ccp_fair import seed_commands

        steps = []
        for c in seed_commands(run, evals):
            out = Path(shlex.split(c)[shlex.split(c).index("--out") + 1])
            steps.append(Step(f"test evaluation of {out.name}", [qparse, *shlex.split(c)[1:], "--no-progress"],
                              done=lambda o=out: (o / "scores.json").is_file()))  # fmt: skip
        return [steps[0::2], steps[1::2]]

    finish = [[Step("collect into DEST", [py, str(SCRIPTS / "collect_ccp_fair.py"), str(run), "--evals", str(evals),
                                          "--dest", str(dest), "--clean"]),
               Step("compute curves", [py, str(SCRIPTS / "ccp_compute_curve.py"), "--runs", str(curve), "--evals",
                                       str(curve_ev), "--model", str(run / "models" / "mcnn"), "--out", str(dest)]),
               Step("stage figure", [py, str(SCRIPTS / "ccp_stage_figure.py"), str(dest)]),
               Step("executed chapters", [py, str(SCRIPTS / "export_executed_chapters.py"), str(run),
                                          str(dest / "notebooks")])]]  # fmt: skip
    chapters = pool("chapters")
    return [
        [[Step("notebooks 00-02", [*rep, "00", "01", "02"], done=nb_done("00", "01", "02"))]],
        # lane a trains; lane b runs what the models trained so far allow, then the curve while the pool ends
        [[chapters, pool("seeds")],
         [Step("notebooks 03, 04, 07", [*rep, "03", "04", "07"], done=nb_done("03", "04", "07"),
               ready=trained(*DEFAULTS)),
          *curve_steps,
          Step("notebooks 05, 06", [*rep, "05", "06"], done=nb_done("05", "06"), ready=chapters.finished.is_set)]],
        seed_eval_steps,  # planned once notebook 05 has chosen the post-processing
        finish,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run folder (empty, or a stopped run to resume)")
    ap.add_argument("--data-root", type=Path, required=True, help="the CCP dataset root")
    ap.add_argument("--dest", type=Path, default=ROOT / "results" / "ccp", help="results folder (default results/ccp)")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    args = ap.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("error: set OMP_NUM_THREADS=1 (one thread per job: the lanes fill the cores). Fix: "
              "OMP_NUM_THREADS=1 python data_scripts/reproduce_ccp.py ...", file=sys.stderr)  # fmt: skip
        return 2
    if not (args.data_root / "annotations").is_dir() and not args.dry_run:
        print(f"error: {args.data_root}: no CCP dataset (no annotations/). Fix: qparse data download --dataset ccp "
              f"--data-root {args.data_root}", file=sys.stderr)  # fmt: skip
        return 2
    run, data_root, dest = args.run.resolve(), args.data_root.resolve(), args.dest.resolve()
    if not args.dry_run:
        run.mkdir(parents=True, exist_ok=True)
    rec, t0 = Recorder(run / "reproduce_ccp.json"), time.perf_counter()
    failed: list[str] = []
    for phase in plan(run, data_root, dest):
        lanes = phase() if callable(phase) else phase
        failed = run_lanes(lanes, rec, args.dry_run)
        if failed and not args.dry_run:
            break
    if not args.dry_run:
        rec.close(time.perf_counter() - t0, ok=not failed)
    _log(f"{'FAILED: ' + ', '.join(failed) if failed else 'done'} in {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
