"""The dataset interface: :class:`Sample` and the :class:`Dataset` base class.

It lives apart from :mod:`qparse_lite.data.datasets` so that the dataset implementations
(:mod:`qparse_lite.data.synthetic`, and ``CCP``/``ATR`` in :mod:`qparse_lite.data.datasets`) can import it without an
import cycle: ``datasets`` imports ``synthetic``, and both import this module. ``qparse_lite.data.datasets``
re-exports both names, which remain the public spelling (``from qparse_lite.data.datasets import Sample``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from qparse_lite.io import atomic_write_text
from qparse_lite.labels import LabelSet

__all__ = ["Sample", "Dataset", "SPLITS"]

#: The split names every dataset has, in order.
SPLITS = ("train", "val", "test")


class Sample(NamedTuple):
    """One dataset item: RGB uint8 H×W×3 image, uint8 H×W label map, string id."""

    image: np.ndarray
    label: np.ndarray
    id: str


class Dataset:
    """A labelled image collection with a deterministic split.

    Attributes:
        name: ``synthetic``, ``ccp`` or ``atr``.
        label_set: the :class:`LabelSet` of the label maps.
        version: what exactly is read (e.g. the CCP commit, the synthetic generator version and seed).
        ids: the image ids, index ``i`` ↔ ``ids[i]``.
        root: the folder read (``None`` for synthetic data).
    """

    name: str = "dataset"
    label_set: LabelSet
    version: str = ""
    ids: list[str]
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        n = len(self.ids)
        if not isinstance(i, int | np.integer):
            raise TypeError(f"{type(self).__name__} indices are integers; use .get(id) for ids")
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        return self.load(int(i) % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def load(self, i: int) -> Sample:  # pragma: no cover - abstract
        """Read item ``i`` (0 <= i < len)."""
        raise NotImplementedError

    def index(self, id: str) -> int:
        """Index of the image with id ``id``."""
        if not hasattr(self, "_index"):
            self._index = {x: k for k, x in enumerate(self.ids)}
        try:
            return self._index[id]
        except KeyError:
            raise KeyError(f"{id!r} is not an id of {self.name}") from None

    def get(self, id: str) -> Sample:
        """The sample with id ``id``."""
        return self.load(self.index(id))

    def splits(self) -> dict[str, list[str]]:  # pragma: no cover - abstract
        """``{"train": ids, "val": ids, "test": ids}`` (deterministic)."""
        raise NotImplementedError

    def write_splits(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``<out_dir>/<split>.txt`` (one id per line) for train, val and test; return the paths."""
        out = Path(out_dir)
        paths = {}
        for k, ids in self.splits().items():
            paths[k] = atomic_write_text(out / f"{k}.txt", "".join(f"{x}\n" for x in ids))
        return paths

    def prepare_args(self) -> list[str]:
        """The ``qparse prepare`` arguments that select this dataset (for messages and meta.json)."""
        args = ["--dataset", self.name]
        if self.root is not None:
            args += ["--data-root", str(self.root)]
        return args + ["--labels", self.label_set.name]

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (recorded in prepared caches)."""
        return {
            "name": self.name,
            "version": self.version,
            "root": None if self.root is None else str(self.root),
            "label_set": self.label_set.name,
            "num_images": len(self),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, labels={self.label_set.name}, version={self.version!r})"
