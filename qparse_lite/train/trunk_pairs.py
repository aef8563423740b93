"""Training pairs of the trunk M-CNN family as cached trunk maps (issue 30; docs/paper.md §1.3-1.5, §1.9).

:class:`TrunkPairSampler` wraps the kit's :class:`~qparse_lite.train.sampler.PairSampler` — the same
label-balanced pairs, augmentation draws, targets (c, t) and generator state — and turns each batch of pair
indices into the trunk family's inputs instead of images: the cached maps of I's rows and a
:class:`~qparse_lite.model.trunk.RegionMaps` of the regions g_kl (the neighbour's maps, the mean image's
maps, and at each level the share of label l in every cell of the neighbour's augmented label map). It has
the sampler's interface (iteration, ``iter_pairs``, ``targets``, ``state_dict``, ...), so the engine's
:func:`~qparse_lite.train.engine.train_one_epoch`, :func:`~qparse_lite.train.engine.evaluate` and the
validation metrics run on it unchanged, with the loss of Eq. (1) (:mod:`qparse_lite.train.loss`).
:func:`trunk_setup` is what ``qparse train --variant trunk-...`` calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qparse_lite.errors import QparseError
from qparse_lite.model.trunk import RegionMaps, TrunkConfig
from qparse_lite.train.pairs import PairIndex
from qparse_lite.train.sampler import PairSampler
from qparse_lite.train.trunk_cache import TrunkMaps

__all__ = ["LabelShares", "TrunkBatch", "TrunkPairSampler", "presence_head_val", "trunk_setup"]


class TrunkBatch(NamedTuple):
    """A batch of trunk pairs: ``I`` level → maps of the test images (each distinct one once when
    ``group`` is set), ``R`` the regions, and the targets of :class:`~qparse_lite.train.pairs.PairBatch`."""

    I: dict[int, Tensor]
    R: RegionMaps
    c: Tensor
    t: Tensor
    has_t: Tensor
    label: Tensor
    index: PairIndex
    group: Tensor | None = None


class LabelShares:
    """The share of each label in every cell of every corpus row's (augmented) label map at a trunk level,
    computed once per level (``adaptive_avg_pool2d`` of the one-hot map, the same numbers as per batch) for the
    levels of stride ≥ 8 (float32, 4·N × L × s × s: 200 MB at stride 8 for CCP); stride 4 is pooled per batch."""

    PRECOMPUTE_FROM_LEVEL = 3

    def __init__(self, data: Any) -> None:
        self.data = data
        self._levels: dict[int, Tensor] = {}

    @staticmethod
    def pool(labels: Tensor, label: Tensor, side: int) -> Tensor:
        """B×1×side×side shares of ``label`` (B) in ``labels`` (B×S×S)."""
        onehot = (labels == label.to(labels.dtype)[:, None, None]).float()[:, None]
        return F.adaptive_avg_pool2d(onehot, side)

    def __call__(self, rows: Tensor, label: Tensor, level: int, side: int) -> Tensor:
        """B×1×side×side shares of ``label`` in the label maps of DeviceCorpus ``rows``."""
        d = self.data
        if level < self.PRECOMPUTE_FROM_LEVEL:
            return self.pool(d.labels[rows], label, side)
        if level not in self._levels:
            n, L = d.labels.shape[0], d.num_labels
            table = torch.empty(n, L, side, side, dtype=torch.float32, device=d.device)
            for st in range(0, n, 64):
                lab = d.labels[st : st + 64]
                for j in range(L):
                    table[st : st + 64, j] = self.pool(lab, torch.full((len(lab),), j, device=d.device), side)[:, 0]
            self._levels[level] = table
        return self._levels[level][rows, label][:, None]


class TrunkPairSampler:
    """The pairs of ``sampler`` as cached trunk maps for a model of config ``cfg`` (see the module docstring).

    Attributes not defined here (``data``, ``knn``, ``queries``, ``scored_pairs``, ``targets``, ``stats``,
    ``state_dict``, ...) are the wrapped sampler's.
    """

    def __init__(
        self, sampler: PairSampler, maps: TrunkMaps, cfg: TrunkConfig, shares: LabelShares | None = None
    ) -> None:
        if sampler.shift_px:
            raise QparseError("the trunk family does not support shift > 0 (its maps are cached per crop). "
                              "Fix: --set shift=0")  # fmt: skip
        if maps.n != sampler.data.n:
            raise QparseError(f"trunk maps of {maps.n} images for a corpus of {sampler.data.n}. Fix: rebuild the "
                              "trunk cache of this corpus.")  # fmt: skip
        self.sampler, self.maps, self.cfg = sampler, maps, cfg
        self.shares = shares if shares is not None and shares.data is sampler.data else LabelShares(sampler.data)
        self.channels = {lvl: cfg.in_channel(lvl) for lvl in cfg.levels}
        self._mean = {lvl: maps.mean(lvl, k) for lvl, k in self.channels.items()}

    def __getattr__(self, name: str) -> Any:
        if name in ("sampler", "maps", "cfg", "channels", "_mean", "shares"):
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def materialise(self, idx: PairIndex, grouped: bool = False) -> TrunkBatch:
        """The pairs ``idx`` as maps and targets (``grouped``: I holds each distinct test image once)."""
        s, d = self.sampler, self.sampler.data
        dev = d.device
        vi = (2 * idx.zoom_i + idx.flip).to(dev)
        vg = (2 * idx.zoom_g + idx.flip).to(dev)
        rI, rG = d.row(idx.query.to(dev), vi), d.row(idx.knn.to(dev), vg)
        lab = idx.label.to(dev)
        lab = torch.where(idx.flip.to(dev).bool(), d.mirror_lut[lab], lab)  # the region's label after mirroring
        group = None
        if grouped:
            rI, group = torch.unique(rI, return_inverse=True)
        urows, row = torch.unique(rG, return_inverse=True)
        I, maps, masks = {}, {}, {}
        for lvl, k in self.channels.items():
            I[lvl] = self.maps.rows(lvl, rI, k).to(dev)
            maps[lvl] = self.maps.rows(lvl, urows, k).to(dev)
            masks[lvl] = self.shares(rG, lab, lvl, self.cfg.map_size(lvl))  # l's share of each cell of g_k
        R = RegionMaps(maps, {lvl: m.to(dev) for lvl, m in self._mean.items()}, masks, row, vg, lab)
        c, t, has_t = s.targets(idx)
        return TrunkBatch(I, R, c, t, has_t, lab, idx, group)

    def iter_pairs(self, idx: PairIndex, batch_size: int | None = None, grouped: bool = False) -> Iterator[TrunkBatch]:
        """Batches over a fixed pair set, in order."""
        bs = batch_size or self.sampler.batch_size
        for st in range(0, len(idx), bs):
            yield self.materialise(idx.slice(st, st + bs), grouped)

    def next_batch(self) -> TrunkBatch:
        """One training batch, drawn exactly as :meth:`PairSampler.next_batch` draws it."""
        s = self.sampler
        if s.group_size > 1:
            return self.materialise(s.draw_grouped(s.batch_size // s.group_size, s.group_size), grouped=True)
        return self.materialise(s.draw(s.batch_size))

    def __iter__(self) -> Iterator[TrunkBatch]:
        for _ in range(self.sampler.steps_per_epoch):
            yield self.next_batch()

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch


def trunk_setup(
    prof: Any, variant: str, corpus: Any, sampler: PairSampler, val_sampler: PairSampler,
    device: torch.device, progress: bool | None = None,
) -> tuple[Any, TrunkPairSampler, TrunkPairSampler]:  # fmt: skip
    """The trunk family's model and its training and validation samplers: the corpus's trunk maps (cached
    beside it, :func:`~qparse_lite.train.trunk_cache.trunk_maps`, at the corpus's ``feature_size``, else 224 px)
    and the model of ``variant`` for that input (width 1: the profile's ``width`` sizes the from-scratch
    family; its ``dropout`` applies)."""
    from qparse_lite.model.mcnn import build_model
    from qparse_lite.train.trunk_cache import trunk_maps

    if prof.trunk_label not in ("one-hot", "none"):
        raise QparseError(f"trunk_label = {prof.trunk_label!r}: choose 'one-hot' or 'none'. Fix: --set trunk_label=one-hot")
    maps = trunk_maps(corpus, getattr(prof, "feature_size", None) or None, progress=progress)
    model = build_model(variant, input_size=maps.input_size, dropout=prof.dropout,
                        num_labels=sampler.data.num_labels if prof.trunk_label == "one-hot" else 0)  # fmt: skip
    model.set_projection(maps.pca)  # the checkpoint carries the cache's projection: it parses new images too
    model = model.to(device)
    cfg = model.cfg  # type: ignore[attr-defined]
    shares = LabelShares(sampler.data)  # one table for both samplers (they share the DeviceCorpus)
    return model, TrunkPairSampler(sampler, maps, cfg, shares), TrunkPairSampler(val_sampler, maps, cfg, shares)


def presence_head_val(corpus: Any, sampler: PairSampler, val: Any, tn: Any, progress: bool | None = None) -> dict[str, Any]:
    """The frozen presence head the retrieval trains (:class:`~qparse_lite.retrieval.imagenet.LearnedRetrievalExtractor`,
    a linear head on the same frozen trunk) scored as an M-CNN would be, on the same validation pairs: ĉ_kl := p̂_l(I)
    for every scored pair (I, g_kl), so its label confidence ĉ_l = p̂_l(I) over the same (I, l) — the bar the
    trunk family's ĉ_l is judged against (issue 30). Returns ``auc_macro``, ``auc`` and ``per_label`` AUCs."""
    from qparse_lite.retrieval.features import get_extractor
    from qparse_lite.train.engine import _metrics

    ext = get_extractor("efficientnet-lite0-learned", corpus=corpus)
    src = corpus.feature_images if getattr(corpus, "feature_images", None) is not None else corpus.images
    q = val.pairs.query.numpy()
    ids = np.unique(q)
    p_hat, _ = ext.outputs(np.asarray(src[ids]), progress=progress)
    row = {int(i): r for r, i in enumerate(ids)}
    score = p_hat[[row[int(i)] for i in q], val.pairs.label.numpy()]
    c, t, has_t = (x.cpu().numpy() for x in sampler.targets(val.pairs))
    m = _metrics(val, tn, score, np.zeros_like(t), c, t, has_t)
    return {"auc_macro": m["auc_macro"], "auc": m["auc"],
            "per_label": {k: v["auc"] for k, v in m["per_label"].items()}}  # fmt: skip
