"""``qparse reproduce``: run every notebook in order with papermill, then write ``report.md``.

A run folder ``runs/<profile>-<timestamp>/`` receives:

- ``notebooks/NN_name.ipynb`` (executed) and ``notebooks/NN_name.html`` (static copy);
- ``results/`` (CSV and Markdown tables the notebooks write), ``figures/`` (PNG);
- ``status.json`` (which notebooks completed, with wall times and the load averages before/after), ``run.json`` (profile, seed, dataset
  version, git commit, hardware, wall time) and ``report.md`` (Table 1, Table 2 and Fig. 5 beside
  the paper's reported numbers, built by :mod:`qparse_lite.evaluation.report`).

A failing notebook stops the run with a :class:`~qparse_lite.errors.QparseError` naming the notebook,
the cell and the error; ``--resume`` reruns into the same folder and skips notebooks already complete.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_write_json, atomic_write_text
from qparse_lite.profiles import get_profile
from qparse_lite.runinfo import PACKAGE_ROOT, run_record

__all__ = ["NOTEBOOK_DIR", "list_notebooks", "reproduce", "latest_run"]

NOTEBOOK_DIR = PACKAGE_ROOT / "notebooks"
RUNS_DIR = PACKAGE_ROOT / "runs"


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in reading order."""
    nbs = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise QparseError(
            f"{notebook_dir}: no notebooks NN_*.ipynb found. Fix: run from a clone of qparse-lite."
        )
    return nbs


def latest_run(profile: str, runs_dir: Path = RUNS_DIR) -> Path | None:
    """The newest ``runs/<profile>-*`` folder, if any."""
    runs = sorted(Path(runs_dir).glob(f"{profile}-2*"))
    return runs[-1] if runs else None


def _load() -> list[float] | None:
    """The 1/5/15-minute load averages (how busy the machine was; None where the OS does not say)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _html(executed: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    atomic_write_text(executed.with_suffix(".html"), body)


def _failure_message(nb: Path, executed: Path, err: Any) -> str:
    cell = getattr(err, "exec_count", None) or getattr(err, "cell_index", "?")
    ename = getattr(err, "ename", type(err).__name__)
    evalue = str(getattr(err, "evalue", err)).strip().splitlines()
    first = evalue[0] if evalue else ""
    return (
        f"notebook {nb.name} failed in cell {cell}: {ename}: {first}\n"
        f"  executed copy with the traceback: {executed}\n"
        f"  fix the cause, then rerun with --resume to skip the notebooks already complete"
    )


def reproduce(
    profile: str = "quick",
    out: str | Path | None = None,
    *,
    resume: bool = False,
    seed: int | None = None,
    data_root: str | None = None,
    device: str = "auto",
    notebooks: Sequence[str] | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    timeout_s: int = 3600,
) -> Path:
    """Execute the notebooks into a run folder; return the folder (see the module docstring).

    Args:
        profile: ``quick`` | ``ccp`` | ``atr`` (:mod:`qparse_lite.profiles`).
        out: run folder; default ``runs/<profile>-<timestamp>`` (with ``resume``: the newest one).
        resume: skip notebooks that ``status.json`` marks complete.
        seed: overrides the profile's seed.
        data_root: dataset root passed to every notebook (ignored by the synthetic quick profile).
        device: ``auto`` | ``cpu`` | ``cuda``.
        notebooks: run only these (names or ``NN`` prefixes), in reading order.
        timeout_s: per-cell execution timeout.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    prof = get_profile(profile)
    seed = prof.seed if seed is None else seed
    if out is None:
        prev = latest_run(profile) if resume else None
        out = prev or RUNS_DIR / f"{profile}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out).resolve()
    (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    status_path = run_dir / "status.json"
    status: dict[str, Any] = json.loads(status_path.read_text()) if status_path.exists() else {}
    if status.get("_profile", profile) != profile:
        raise QparseError(f"{run_dir} holds a {status['_profile']} run; choose another --out for {profile}")
    status["_profile"] = profile

    nbs = list_notebooks(notebook_dir)
    if notebooks:
        wanted = set(notebooks)
        nbs = [p for p in nbs if p.stem in wanted or p.name in wanted or p.stem[:2] in wanted]
    params = {"profile": profile, "output_dir": str(run_dir), "seed": seed, "device": device}
    if data_root is not None:
        params["data_root"] = str(data_root)

    t0 = time.perf_counter()
    for nb in nbs:
        executed = run_dir / "notebooks" / nb.name
        if resume and status.get(nb.stem, {}).get("status") == "ok":
            print(f"[skip] {nb.name} (complete)")
            continue
        print(f"[run ] {nb.name}", flush=True)
        t_nb, load_before = time.perf_counter(), _load()
        status[nb.stem] = {"status": "running"}
        atomic_write_json(status_path, status)
        try:
            pm.execute_notebook(
                str(nb), str(executed), parameters=params, kernel_name="python3", cwd=str(nb.parent),
                progress_bar=False, log_output=False, execution_timeout=timeout_s,
            )  # fmt: skip
        except PapermillExecutionError as e:
            status[nb.stem] = {"status": "failed", "cell": e.exec_count, "error": f"{e.ename}: {e.evalue}"}
            atomic_write_json(status_path, status)
            raise QparseError(_failure_message(nb, executed, e)) from None
        except Exception as e:  # kernel died, timeout, bad notebook file
            status[nb.stem] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            atomic_write_json(status_path, status)
            raise QparseError(_failure_message(nb, executed, e)) from None
        _html(executed)
        status[nb.stem] = {"status": "ok", "wall_time_s": round(time.perf_counter() - t_nb, 1),
                           "load_before": load_before, "load_after": _load()}  # fmt: skip
        atomic_write_json(status_path, status)
        print(f"[ ok ] {nb.name} in {status[nb.stem]['wall_time_s']:.0f} s", flush=True)

    from qparse_lite.evaluation.report import write_report

    wall = sum(v.get("wall_time_s", 0.0) for k, v in status.items() if not k.startswith("_"))
    record = run_record(
        profile=profile, seed=seed, dataset=prof.dataset, wall_time_s=wall, device=device,
        notebooks={k: v for k, v in status.items() if not k.startswith("_")},
        this_invocation_s=round(time.perf_counter() - t0, 1), profile_settings=prof.to_dict(),
    )  # fmt: skip
    atomic_write_json(run_dir / "run.json", record)
    report = write_report(run_dir, profile)
    print(f"report: {report}")
    return run_dir
