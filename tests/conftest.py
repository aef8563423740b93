"""Shared fixtures: the read-only CCP mirror, and a temporary output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CCP_MIRROR = Path(os.environ.get("QPARSE_CCP_ROOT", REPO.parent / "shared/datasets/clothing-co-parsing"))


@pytest.fixture(scope="session")
def ccp_root() -> Path:
    """The CCP mirror (read-only; never write into it). Skips when it is not beside the repo."""
    if not (CCP_MIRROR / "label_list.mat").is_file():
        pytest.skip(f"CCP mirror not found at {CCP_MIRROR} (set QPARSE_CCP_ROOT)")
    return CCP_MIRROR
