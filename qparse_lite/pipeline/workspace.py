"""One experiment's folder, shared by the notebooks: corpus, KNN tables, models, results, figures.

Every notebook starts with the same five parameters (``profile``, ``data_root``, ``device``, ``seed``,
``output_dir``) and builds a :class:`Workspace` from them. The workspace makes or reuses, under
``output_dir``:

- ``corpus/``            the prepared corpus cache (``qparse prepare``);
- ``knn/``               KNN tables per (features, split, K);
- ``models/<variant>/``  training runs (``qparse train``), resumed when present, skipped when complete;
- ``results/``           CSV + Markdown tables (the names :mod:`qparse_lite.evaluation.report` reads);
- ``figures/``           PNG figures.

So notebooks run in order share their work (notebook 03 trains the default M-CNN, notebook 05 reuses
it), and each notebook also runs alone (it makes what it lacks). Nothing is hidden between cells:
every cached artefact is a file named after what produced it.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_path, atomic_write_text
from qparse_lite.pipeline.scheduler import mcnn_job, parallel_jobs, parametric_job, run_side_by_side
from qparse_lite.profiles import Profile, get_profile
from qparse_lite.runinfo import PACKAGE_ROOT, get_device, set_seed

__all__ = ["Workspace", "default_output_dir", "validate_parameters", "CCP_ROOT_ENV"]

#: Environment variable naming a CCP folder, the default ``data_root`` of the ccp profile.
CCP_ROOT_ENV = "QPARSE_CCP_ROOT"


def validate_parameters(
    profile: Any = "quick", output_dir: Any = None, data_root: Any = None, device: Any = "auto", seed: Any = None
) -> None:
    """Check the notebooks' five parameters before any work (papermill ``-p`` passes what it is given).

    ``profile`` a name of :data:`~qparse_lite.profiles.PROFILES` (or a :class:`Profile`); ``device`` one of
    :data:`~qparse_lite.runinfo.DEVICES` (or ``cuda:N``/``mps``); ``seed`` a whole number ≥ 0 or None;
    ``output_dir`` not an existing file; ``data_root`` a folder name or None (checked when the data is read). Raises
    :class:`QparseError` naming the parameter, the value and the fix (``-p NAME VALUE``).
    """
    import re

    from qparse_lite.profiles import PROFILES
    from qparse_lite.runinfo import DEVICES

    def bad(name: str, value: Any, want: str) -> QparseError:
        return QparseError(f"notebook parameter {name} = {value!r}: {want}. Fix: -p {name} <value> (papermill) or "
                           f"edit the parameters cell.")  # fmt: skip

    if not isinstance(profile, Profile) and profile not in PROFILES:
        raise bad("profile", profile, f"not a profile; choose one of {', '.join(PROFILES)}")
    if not (isinstance(device, str) and (device in DEVICES or device == "mps" or re.fullmatch(r"cuda:\d+", device))):
        raise bad("device", device, f"not a device; choose one of {', '.join(DEVICES)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0):
        raise bad("seed", seed, "not a whole number ≥ 0")
    if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise bad("output_dir", str(output_dir), "an existing file, not a folder")
    if data_root is not None and not isinstance(data_root, str | os.PathLike):
        raise bad("data_root", data_root, "not a folder name")


def default_output_dir(profile: str, seed: int | None = None) -> Path:
    """``runs/notebooks-<profile>`` at the repository root (``…-seed<N>`` for a seed other than the
    profile's); used when ``output_dir`` is None."""
    suffix = "" if seed is None or seed == get_profile(profile).seed else f"-seed{seed}"
    return PACKAGE_ROOT / "runs" / f"notebooks-{profile}{suffix}"


class Workspace:
    """The folder of one experiment (see the module docstring).

    Args:
        profile: ``quick`` | ``ccp`` | ``atr`` or a :class:`Profile`.
        output_dir: the folder; None → ``runs/notebooks-<profile>``.
        data_root: dataset root for ccp/atr (None for the synthetic quick profile; for ccp it defaults to
            the environment variable ``QPARSE_CCP_ROOT`` when that is set).
        device: ``auto`` | ``cpu`` | ``cuda``.
        seed: the experiment's seed (overrides the profile's).
        overrides: any profile field (``epochs=2``).
    """

    def __init__(
        self, profile: str | Profile = "quick", output_dir: str | Path | None = None,
        data_root: str | Path | None = None, device: str = "auto", seed: int | None = None,
        **overrides: Any,
    ) -> None:  # fmt: skip
        validate_parameters(profile, output_dir, data_root, device, seed)
        name = profile if isinstance(profile, str) else profile.name
        base = get_profile(name) if isinstance(profile, str) else profile
        fields = {k: v for k, v in base.to_dict().items() if k != "name"}
        self.profile: Profile = get_profile(name, **{**fields, "seed": seed, **overrides})
        self.out = Path(output_dir) if output_dir else default_output_dir(name, self.profile.seed)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_profile()
        if data_root is None and self.profile.dataset == "ccp":
            data_root = os.environ.get(CCP_ROOT_ENV) or None
        self.data_root = Path(data_root) if data_root else None
        self.device = get_device(device)
        set_seed(self.profile.seed)

    def _check_profile(self) -> None:
        """A folder holds one profile's work: ``workspace.json`` records it, and a folder made with other
        settings is refused (its corpus and models would silently not match). A field the record lacks was
        added to the kit after the folder was made: it counts as its default, which keeps the behaviour the
        folder was made with (a new field's default reproduces the kit before it)."""
        import dataclasses

        rec_path = self.out / "workspace.json"
        want = self.profile.to_dict()
        if rec_path.is_file():
            have = json.loads(rec_path.read_text()).get("profile", {})
            added = {f.name: f.default for f in dataclasses.fields(Profile) if f.name not in have
                     and f.default is not dataclasses.MISSING}  # fmt: skip
            have = {**added, **have}
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            if diff:
                raise QparseError(
                    f"{self.out} holds work of another setting ({', '.join(f'{k}: {have.get(k)!r} there, {want.get(k)!r} now' for k in diff)}). "
                    f"Fix: pass another output_dir, or delete {self.out}."
                )
        else:
            atomic_write_text(rec_path, json.dumps({"profile": want}, indent=1) + "\n")

    # -- folders --------------------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        """``output_dir/results`` (created)."""
        return _mkdir(self.out / "results")

    @property
    def figures_dir(self) -> Path:
        """``output_dir/figures`` (created)."""
        return _mkdir(self.out / "figures")

    def save_figure(self, fig: Any, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` atomically."""
        target = self.figures_dir / f"{name}.png"
        with atomic_path(target, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        return target

    def save_table(self, df: Any, name: str, decimals: int = 2) -> Path:
        """Save a DataFrame as ``results/<name>.csv`` and ``.md`` atomically; returns the CSV path."""
        from qparse_lite.evaluation.evaluate import write_tables

        return write_tables(df, self.results_dir, name, decimals)[0]

    # -- data -----------------------------------------------------------------------------------------
    def dataset(self) -> Any:
        """The profile's dataset (synthetic, CCP or ATR)."""
        from qparse_lite.data.datasets import get_dataset

        p = self.profile
        if p.dataset == "synthetic":
            return get_dataset("synthetic", n=p.n_images or 400, size=max(128, p.image_size), seed=p.seed)
        if self.data_root is None:
            raise QparseError(
                f"profile {p.name} needs its dataset. Fix: pass data_root (notebook parameter) or "
                f"--data-root, after `qparse data download --dataset {p.dataset} --data-root DIR`."
            )
        kw = {"labels": p.label_set} if p.dataset == "ccp" else {}
        return get_dataset(p.dataset, root=self.data_root, **kw)

    @cached_property
    def corpus(self) -> Any:
        """The prepared corpus (``output_dir/corpus``; prepared on first use)."""
        from qparse_lite.data.crops import corpus_crop
        from qparse_lite.data.prepare import Corpus, prepare_corpus

        p, path = self.profile, self.out / "corpus"
        if not (path / "meta.json").is_file():  # the profile's size, feature size and crop (docs/paper.md §1.1)
            prepare_corpus(self.dataset(), p.image_size, path, feature_size=p.feature_size, crop=p.crop)
        corpus = Corpus.load(path)
        if (corpus.size, corpus_crop(corpus)) != (p.image_size, p.crop):
            raise QparseError(
                f"{path}: corpus prepared at {corpus.size} px with the {corpus_crop(corpus)!r} crop, profile "
                f"{p.name} wants {p.image_size} px, {p.crop!r}. Fix: delete {path} or use another output_dir."
            )
        return corpus

    def knn(self, split: str = "test", k: int | None = None, features: str | None = None) -> np.ndarray:
        """KNN corpus indices (rows in ``corpus.split(split)`` order) from the train split, cached in ``knn/``.

        Training images never retrieve themselves.
        """
        from qparse_lite.retrieval.search import split_neighbours

        p = self.profile
        k = k or (p.k_train if split == "train" else max(p.k_test, 15))
        return split_neighbours(self.corpus, split, k, features or p.features, self.out / "knn")

    # -- models ---------------------------------------------------------------------------------------
    def run_dir(self, variant: str | None = None, holdout_label: str | None = None) -> Path:
        """``models/<variant>[-without-<label>]``."""
        v = variant or self.profile.variant
        return self.out / "models" / (v + (f"-without-{holdout_label}" if holdout_label else ""))

    def train(self, variant: str | None = None, holdout_label: str | None = None, **kw: Any) -> Path:
        """Train (or resume, or reuse when complete) ``variant``; returns its run folder."""
        from qparse_lite.train.loop import train

        run = self.run_dir(variant, holdout_label)
        if self.is_trained(variant, holdout_label):
            return run  # complete: reuse
        return train(
            self.profile, variant or self.profile.variant, run, resume=True, device=self.device,
            corpus=self.corpus, knn=self.knn("train"), val_knn=self.knn("val", k=self.profile.k_train),
            holdout_label=holdout_label, **kw,
        )  # fmt: skip

    def is_trained(self, variant: str | None = None, holdout_label: str | None = None) -> bool:
        """True when ``models/<variant>`` holds a complete training (all the profile's epochs)."""
        done = self.run_dir(variant, holdout_label) / "run.json"
        if not done.is_file():
            return False
        rec = json.loads(done.read_text())
        return rec.get("epochs_done", 0) >= rec.get("profile_fields", {}).get("epochs", 1 << 30)

    def train_many(
        self, variants: list[str], holdout_label: str | None = None, jobs: int | None = None,
        log: Any = print,
    ) -> dict[str, Path]:  # fmt: skip
        """Train (or resume, or reuse) several M-CNN variants, ``jobs`` at a time (default
        :func:`~qparse_lite.pipeline.scheduler.parallel_jobs`); returns ``{variant: run folder}`` in the order given. See
        :meth:`train_side_by_side`."""
        return self.train_side_by_side(variants, holdout_label=holdout_label, jobs=jobs, log=log)

    def train_parametric_many(
        self, configs: dict[str, Any], jobs: int | None = None, log: Any = print
    ) -> dict[str, Path]:
        """Train the parametric baselines ``{name: ParametricConfig}`` into ``models/<name>/``, ``jobs`` at a
        time; returns ``{name: run folder}``. See :meth:`train_side_by_side`."""
        return self.train_side_by_side((), configs, jobs=jobs, log=log)

    def train_side_by_side(
        self, variants: Any = (), parametric: dict[str, Any] | None = None, holdout_label: str | None = None,
        jobs: int | None = None, log: Any = print,
    ) -> dict[str, Path]:  # fmt: skip
        """Train M-CNN ``variants`` (into ``models/<variant>[-without-<holdout_label>]``) and parametric
        baselines ``{name: ParametricConfig}`` (into ``models/<name>``), ``jobs`` at a time (default
        :func:`~qparse_lite.pipeline.scheduler.parallel_jobs`: the cores the profile's one-thread trainings
        leave free) by :func:`~qparse_lite.pipeline.scheduler.run_side_by_side`.

        A complete folder is reused (an M-CNN with all the profile's epochs, a parametric run with its
        ``run.json``); an interrupted one resumes exactly (each training writes an atomic checkpoint per
        epoch). The corpus and the KNN tables are made first, here, so that the worker processes only
        read them; each worker trains exactly as :meth:`train` / ``train_parametric`` would in this
        process (same seed, same pairs), so side by side changes the wall time, not the models. ``log``
        gets a line per reused model, one when the trainings start and one as each ends. Returns
        ``{variant or name: run folder}`` in the order given.
        """
        runs: dict[str, Path] = {}
        todo: dict[str, Any] = {}  # name → ParametricConfig, or None for an M-CNN variant
        for v in dict.fromkeys(variants):
            runs[v] = self.run_dir(v, holdout_label)
            if self.is_trained(v, holdout_label):
                log(f"{v:>11}: complete in {runs[v]}, reused")
            else:
                todo[v] = None
        for name, cfg in (parametric or {}).items():
            runs[name] = self.out / "models" / name
            if (runs[name] / "run.json").is_file():
                log(f"{name}: complete in {runs[name]}, reused")
            else:
                todo[name] = cfg
        if not todo:
            return runs
        corpus, corpus_dir, dev, p = self.corpus, str(self.out / "corpus"), self.device, self.profile  # prepared once
        tasks: dict[str, tuple[Any, tuple, tuple]] = {}  # name → (job, its worker args, its args here)
        for name, cfg in todo.items():
            if cfg is None:
                knn_tr, knn_va = self.knn("train"), self.knn("val", k=p.k_train)
                tasks[name] = (mcnn_job, (str(runs[name]), p, name, corpus_dir, knn_tr, knn_va, dev, holdout_label),
                               (runs[name], p, name, corpus, knn_tr, knn_va, dev, holdout_label))  # fmt: skip
            else:
                tasks[name] = (parametric_job, (corpus_dir, str(runs[name]), cfg, dev, p.name),
                               (corpus, runs[name], cfg, dev, p.name))  # fmt: skip
        jobs = parallel_jobs(p, dev, len(tasks)) if jobs is None else max(1, jobs)
        kind = "models" if len(tasks) > 1 else "model"
        log(f"training {len(tasks)} {kind}, {jobs} at a time ({p.threads} thread(s) each): {', '.join(tasks)}")
        run_side_by_side(tasks, jobs, log)
        return runs

    def model(self, variant: str | None = None, holdout_label: str | None = None) -> tuple[Any, Any, dict]:
        """(model, TargetNorm, meta) of a trained variant, training it first when needed."""
        from qparse_lite.train.checkpoint import load_model

        return load_model(self.train(variant, holdout_label), map_location=self.device)

    def parser(self, variant: str | None = None, holdout_label: str | None = None, **kw: Any) -> Any:
        """An :class:`~qparse_lite.parse.parser.MCNNParser` for a trained variant (trained first when needed), by
        :meth:`~qparse_lite.parse.parser.MCNNParser.from_run`: the profile's ξ1, ξ2, erosion and superpixels
        (or the run's ``postprocess.json`` when ``qparse tune`` wrote one); ``kw`` overrides any of them."""
        from qparse_lite.parse.parser import MCNNParser

        return MCNNParser.from_run(self.train(variant, holdout_label), self.corpus, **{"device": self.device, **kw})

    def describe(self) -> str:
        """A short Markdown summary of the workspace (profile, folder, device)."""
        p = self.profile
        text = (
            f"profile **{p.name}**: {p.dataset} ({p.label_set}), {p.image_size}×{p.image_size}, "
            f"seed {p.seed}, device {self.device}; folder `{self.out}`"
        )
        atomic_write_text(self.out / "workspace.md", text + "\n")
        return text


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
