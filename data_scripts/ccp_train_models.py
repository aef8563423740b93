"""Train every model of the ccp reproduction two at a time, longest first, before the notebooks run (issue 31).

``qparse reproduce --profile ccp`` trains its models inside notebooks 03, 05 and 06, a few at a time in the
order the chapters need them, so a core often waits (notebook 03 trains the from-scratch default alone for
~35 min). This script trains the same models into the same run folder first, through the same function the
notebooks call (:func:`qparse_lite.pipeline.scheduler.mcnn_job` / ``parametric_job``: the profile, seed,
corpus and KNN tables of the run's :class:`~qparse_lite.pipeline.workspace.Workspace`), all in one pool of
two one-thread workers, the longest first; the notebooks then find every model complete and reuse it.
Every training is seeded on its own, so the order changes the wall time, not the models.

``seeds`` trains seeds 1 and 2 of the headline rows of both families (full model, w/o cross, Siamese) and of
the trunk default (its Fig. 5 gets a seed spread) into
``RUN/seeds/<variant>-seed<N>/``: each is ``qparse train --profile ccp --variant V --seed N`` on the run's
corpus and neighbour tables (the retrieval is seed 0's, shared by every row, as in the notebooks).

Usage (after notebooks 00-02 of ``qparse reproduce --profile ccp --out RUN``, which prepare the corpus and the
KNN tables; then ``qparse reproduce --profile ccp --out RUN --resume`` runs the rest)::

    OMP_NUM_THREADS=1 python data_scripts/ccp_train_models.py chapters RUN --data-root DIR
    OMP_NUM_THREADS=1 python data_scripts/ccp_train_models.py seeds RUN --data-root DIR
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# longest first (measured at 145 px on one thread: trunk-mcnn ~50 min, a from-scratch model ~35 min,
# trunk-cross543 ~30 min, an LR-ASPP ~12 min, trunk-cross54 ~8 min, the rest a few minutes), but for the trunk
# family's default third: with the first two it is all notebooks 03, 04 and 07 need (data_scripts/reproduce_ccp.py
# starts them then)
CHAPTER_MCNNS: list[tuple[str, bool]] = [  # (variant, trained without the held-out label of notebook 06)
    ("trunk-mcnn", False), ("mcnn", False), ("trunk-cross54", False), ("cross54321", False), ("cross543", False), ("cross54", False),
    ("cross5", False), ("wo-cross", False), ("siamese", False), ("mcnn", True), ("trunk-cross543", False),
    ("trunk-cross54", True), ("trunk-cross5", False), ("trunk-wo-cross", False),
    ("trunk-siamese", False),
]  # fmt: skip
N_LONG = 10  # the parametric nets go after the first N_LONG M-CNNs, before the short trunk ones
SEED_VARIANTS = ("trunk-mcnn", "mcnn", "wo-cross", "siamese", "trunk-cross54", "trunk-wo-cross", "trunk-siamese")
"""The headline rows of both families (full model, w/o cross, Siamese) and the trunk default, whose Fig. 5 gets
a seed spread."""
SEEDS = (1, 2)


def _log(s: str) -> None:
    print(time.strftime("%H:%M:%S"), s, flush=True)


def chapter_tasks(ws: Any) -> dict[str, tuple]:
    """Every training notebooks 03, 05 and 06 ask for, as ``run_side_by_side`` tasks, longest first."""
    from qparse_lite.baselines.parametric import parametric_config
    from qparse_lite.evaluation.newlabels import choose_holdout_label
    from qparse_lite.pipeline.scheduler import mcnn_job, parametric_job

    p, corpus = ws.profile, ws.corpus
    label = choose_holdout_label(corpus)  # notebook 06's l*
    knn_tr, knn_va, cd = ws.knn("train"), ws.knn("val", k=p.k_train), str(ws.out / "corpus")
    mcnns: list[tuple[str, tuple]] = []
    for v, held in CHAPTER_MCNNS:
        h = label if held else None
        if ws.is_trained(v, h):
            _log(f"reuse {ws.run_dir(v, h)}")
            continue
        mcnns.append((ws.run_dir(v, h).name, (mcnn_job, (str(ws.run_dir(v, h)), p, v, cd, knn_tr, knn_va, "cpu", h), None)))
    cfg = parametric_config(p, corpus.num_labels)
    nets = {"parametric-imagenet": replace(cfg, pretrained=True), "parametric-scratch": replace(cfg, pretrained=False),
            f"parametric-without-{label}": parametric_config(p, corpus.num_labels, holdout_label=label)}  # fmt: skip
    pars: list[tuple[str, tuple]] = []
    for name, c in nets.items():
        run = ws.out / "models" / name
        if (run / "run.json").is_file():
            _log(f"reuse {run}")
            continue
        pars.append((name, (parametric_job, (cd, str(run), c, "cpu", p.name), None)))
    return dict(mcnns[:N_LONG] + pars + mcnns[N_LONG:])


def seed_tasks(ws: Any, variants: tuple[str, ...] = SEED_VARIANTS) -> dict[str, tuple]:
    """Seeds :data:`SEEDS` of ``variants`` (default :data:`SEED_VARIANTS`) into ``RUN/seeds/<variant>-seed<N>/``,
    longest first."""
    from qparse_lite.pipeline.scheduler import mcnn_job

    p = ws.profile
    knn_tr, knn_va, cd = ws.knn("train"), ws.knn("val", k=p.k_train), str(ws.out / "corpus")
    tasks: dict[str, tuple] = {}
    for v in variants:
        for s in SEEDS:
            run = ws.out / "seeds" / f"{v}-seed{s}"
            rec = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
            if rec.get("epochs_done", 0) >= p.epochs:
                _log(f"reuse {run}")
                continue
            tasks[run.name] = (mcnn_job, (str(run), replace(p, seed=s), v, cd, knn_tr, knn_va, "cpu", None), None)
    return tasks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["chapters", "seeds"])
    ap.add_argument("run", type=Path, help="the qparse reproduce run folder (after notebooks 00-02)")
    ap.add_argument("--data-root", required=True, help="the CCP dataset root")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time (one thread each)")
    ap.add_argument("--variants", nargs="+", choices=SEED_VARIANTS, default=list(SEED_VARIANTS),
                    help="seeds: only these variants (two processes may then train disjoint sets side by side)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from qparse_lite.pipeline.scheduler import run_side_by_side
    from qparse_lite.pipeline.workspace import Workspace
    from qparse_lite.train.trunk_cache import trunk_maps

    ws = Workspace("ccp", output_dir=args.run, data_root=args.data_root, device="cpu", seed=0)
    t0 = time.perf_counter()
    trunk_maps(ws.corpus, ws.profile.feature_size, progress=False)  # built once here, read by every worker
    tasks = chapter_tasks(ws) if args.what == "chapters" else seed_tasks(ws, tuple(args.variants))
    _log(f"{len(tasks)} trainings, {args.jobs} at a time: {', '.join(tasks)}")
    run_side_by_side(tasks, args.jobs, _log)
    _log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":  # spawned workers import this file: the pool starts only here
    raise SystemExit(main())
