"""Shared fixtures: the read-only CCP mirror, and a temporary output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CCP_MIRROR = Path(os.environ.get("QPARSE_CCP_ROOT", REPO.parent / "shared/datasets/clothing-co-parsing"))


def resolve_dotted(ref: str) -> object | None:
    """The object a dotted ``qparse_lite.x.y`` name refers to (a module, or a name inside the longest importable
    module prefix), or None when it does not resolve: the one check behind the docs' and chapters' name tests."""
    import importlib

    parts = ref.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj: object | None = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


@pytest.fixture(scope="session")
def ccp_root() -> Path:
    """The CCP mirror (read-only; never write into it). Skips when it is not beside the repo."""
    if not (CCP_MIRROR / "label_list.mat").is_file():
        pytest.skip(f"CCP mirror not found at {CCP_MIRROR} (set QPARSE_CCP_ROOT)")
    return CCP_MIRROR


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small prepared synthetic corpus (48 px) and an M-CNN trained on it for one short epoch.

    Returns ``(corpus, run_dir)``. The model is barely trained: tests that use it check plumbing and
    shapes, not parsing quality.
    """
    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import Corpus, prepare_corpus
    from qparse_lite.train.loop import train

    base = tmp_path_factory.mktemp("tiny_run")
    prepare_corpus(get_dataset("synthetic", n=60, size=128, seed=3), 48, base / "corpus", progress=False)
    corpus = Corpus.load(base / "corpus")
    run = train(
        "quick", "mcnn", base / "run", device="cpu", corpus=corpus, epochs=1, pairs_per_epoch=256,
        batch_size=32, val_pairs=64, k_train=4, width=0.25, progress=False,
    )  # fmt: skip
    return corpus, run
