"""One experiment's folder, shared by the notebooks: corpus, KNN tables, models, results, figures.

Every notebook starts with the same five parameters (``profile``, ``data_root``, ``device``, ``seed``,
``output_dir``) and builds a :class:`Workspace` from them. The workspace makes or reuses, under
``output_dir``:

- ``corpus/``            the prepared corpus cache (``qparse prepare``);
- ``knn/``               KNN tables per (features, split, K);
- ``models/<variant>/``  training runs (``qparse train``), resumed when present, skipped when complete;
- ``results/``           CSV + Markdown tables (the names :mod:`qparse_lite.report` reads);
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

from .errors import QparseError
from .io import atomic_path, atomic_write_text
from .profiles import Profile, get_profile
from .runinfo import PACKAGE_ROOT, get_device, set_seed

__all__ = ["Workspace", "default_output_dir", "CCP_ROOT_ENV"]

#: Environment variable naming a CCP folder, the default ``data_root`` of the ccp profile.
CCP_ROOT_ENV = "QPARSE_CCP_ROOT"


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
        settings is refused (its corpus and models would silently not match)."""
        rec_path = self.out / "workspace.json"
        want = self.profile.to_dict()
        if rec_path.is_file():
            have = json.loads(rec_path.read_text()).get("profile", {})
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
        from .evaluate import write_tables

        return write_tables(df, self.results_dir, name, decimals)[0]

    # -- data -----------------------------------------------------------------------------------------
    def dataset(self) -> Any:
        """The profile's dataset (synthetic, CCP or ATR)."""
        from .datasets import get_dataset

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
        from .prepare import Corpus, prepare_corpus

        path = self.out / "corpus"
        if not (path / "meta.json").is_file():
            prepare_corpus(self.dataset(), self.profile.image_size, path, feature_size=self.profile.feature_size)
        corpus = Corpus.load(path)
        if corpus.size != self.profile.image_size:
            raise QparseError(
                f"{path}: corpus prepared at {corpus.size} px, profile {self.profile.name} wants "
                f"{self.profile.image_size}. Fix: delete {path} or use another output_dir."
            )
        return corpus

    def knn(self, split: str = "test", k: int | None = None, features: str | None = None) -> np.ndarray:
        """KNN corpus indices (rows in ``corpus.split(split)`` order) from the train split, cached in ``knn/``.

        Training images never retrieve themselves.
        """
        from .retrieval import split_neighbours

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
        from .train import train

        run = self.run_dir(variant, holdout_label)
        done = run / "run.json"
        if done.is_file():
            rec = json.loads(done.read_text())
            if rec.get("epochs_done", 0) >= rec.get("profile_fields", {}).get("epochs", 1 << 30):
                return run  # complete: reuse
        return train(
            self.profile, variant or self.profile.variant, run, resume=True, device=self.device,
            corpus=self.corpus, knn=self.knn("train"), val_knn=self.knn("val", k=self.profile.k_train),
            holdout_label=holdout_label, **kw,
        )  # fmt: skip

    def model(self, variant: str | None = None, holdout_label: str | None = None) -> tuple[Any, Any, dict]:
        """(model, TargetNorm, meta) of a trained variant, training it first when needed."""
        from .checkpoint import load_model

        return load_model(self.train(variant, holdout_label), map_location=self.device)

    def parser(self, variant: str | None = None, holdout_label: str | None = None, **kw: Any) -> Any:
        """An :class:`~qparse_lite.parse.MCNNParser` for a trained variant with the profile's ξ1, ξ2, erosion."""
        from .parse import MCNNParser

        model, tn, _ = self.model(variant, holdout_label)
        p = self.profile
        opts = {"xi1": p.xi1, "xi2": p.xi2, "erosion": p.erosion_px, "device": self.device, **kw}
        return MCNNParser(model, tn, self.corpus, **opts)

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
