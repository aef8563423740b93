"""The label-balanced pair sampler of the M-CNN training (paper Sec. 4.1; docs/paper.md §1.9)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qparse_lite.errors import QparseError
from qparse_lite.train.pairs import (
    EMPTY_FRACTION_STRATIFIED,
    SAMPLERS,
    STRATA,
    DeviceCorpus,
    PairBatch,
    PairIndex,
    TargetNorm,
    image_to_input,
    knn_region,
    label_box,
    translate,
)


@dataclass
class _Candidates:
    """Every candidate triple (i, k, l), sorted by query row i (then k, then l), with its draw weight."""

    flat: Tensor  # (qi·K + k)·L + l, int64, ascending
    stratum: Tensor  # 0 pos, 1 neg, 2 empty (int64)
    cum: Tensor  # cumulative draw weights (float64, last = total)
    count: Tensor  # 3×L candidates per (stratum, label)
    img_lo: Tensor  # Q: first candidate of query row qi
    img_hi: Tensor  # Q: one past its last
    img_cum: Tensor  # Q: cumulative weight of the query rows (for grouped draws)


class PairSampler:
    """Label-balanced pairs of query images and KNN regions, as batches on the corpus's device.

    Iterating yields one epoch: ``pairs_per_epoch // batch_size`` :class:`PairBatch` es (per rank under
    DDP: each rank draws ``pairs_per_epoch // (batch_size · world_size)`` batches from its own stream).
    With ``group_size`` B_R > 1 every batch is B_I = batch_size / B_R query images × B_R regions each
    (:meth:`draw_grouped`; the batch carries ``group`` and ``I`` holds each distinct test image once).
    Index sampling uses a CPU ``torch.Generator`` seeded with ``seed + 1_000_003·rank`` — the same seed
    gives the same pairs on every device; ``state_dict``/``load_state_dict`` carry it through checkpoints.

    Args:
        data: the corpus on the device (:class:`DeviceCorpus`).
        queries: Q corpus indices of the query images I (e.g. the train split).
        knn: Q×K corpus indices of their KNN images (negative entries are ignored; g_k = I is excluded).
        batch_size, pairs_per_epoch, seed: see above.
        sampler: ``"natural"`` (default: balanced labels, each label's natural P(c = 1 | l ∈ ϕ(g_k))) or
            ``"stratified"`` (the kit's first scheme: fixed stratum fractions for every label).
        neg_fraction: ``stratified`` only — fraction of pairs from the ``neg`` stratum.
        empty_fraction: fraction from the ``empty`` stratum (g_kl = μ); 0 drops the stratum.
        empty_target: c of an empty pair: ``"zero"`` (c = 1[l ∈ ϕ(I) ∩ ϕ(g_k)] = 0, learnable: the region is
            blank) or ``"label"`` (c = 1[l ∈ ϕ(I)], Eq. (1) as written: not visible to the network);
            default ``"zero"`` for ``natural`` with ``empty_fraction`` > 0, else ``"label"`` (the two differ
            only on empty pairs).
        label_power: label weight = count^label_power (0 = balanced labels, 1 = natural frequencies).
        group_size: B_R, regions per query image in a training batch (1 = independent pairs).
        augment: draw zoom/mirror variants (needs ``data`` built with ``augment=True``).
        rank, world_size: DDP rank and size.
        shift: random translation of training batches (not in the paper; 0 = none, the default): I and each
            g_k move by independent whole-pixel offsets (dx, dy) uniform in ±round(shift·S), the uncovered
            pixels become μ, and c, t come from the moved label maps (:meth:`next_batch`).
    """

    def __init__(
        self, data: DeviceCorpus, queries: Any, knn: Any, *, batch_size: int = 128,
        pairs_per_epoch: int = 12_800, seed: int = 0, sampler: str = "natural", neg_fraction: float = 0.4,
        empty_fraction: float | None = None, empty_target: str | None = None, label_power: float = 0.0,
        group_size: int = 1, augment: bool = True, rank: int = 0, world_size: int = 1, shift: float = 0.0,
    ) -> None:  # fmt: skip
        self.data = data
        self.queries = torch.as_tensor(np.asarray(queries), dtype=torch.long).reshape(-1)
        self.knn = torch.as_tensor(np.asarray(knn), dtype=torch.long)
        if self.knn.ndim != 2 or self.knn.shape[0] != len(self.queries):
            raise QparseError(
                f"PairSampler: KNN table of shape {tuple(self.knn.shape)} does not match {len(self.queries)} "
                "queries. Fix: compute the KNN for the same split (qparse knn / --knn)."
            )
        if len(self.queries) and (int(self.queries.max()) >= data.n or int(self.knn.max()) >= data.n):
            raise QparseError(
                "PairSampler: KNN/query indices beyond the corpus. Fix: recompute the KNN file."
            )
        if augment and data.num_variants != 4:
            raise QparseError("PairSampler(augment=True) needs a DeviceCorpus built with augment=True")
        if sampler not in SAMPLERS:
            raise QparseError(f"unknown pair sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if empty_fraction is None:
            empty_fraction = EMPTY_FRACTION_STRATIFIED if sampler == "stratified" else 0.0
        if empty_target is None:  # Eq. (1) as written, unless the natural sampler draws empty pairs
            empty_target = "zero" if sampler == "natural" and empty_fraction > 0 else "label"
        if empty_target not in ("zero", "label"):
            raise QparseError(f"empty_target must be 'zero' or 'label', not {empty_target!r}")
        nf = neg_fraction if sampler == "stratified" else 0.0
        if not (0 <= nf and 0 <= empty_fraction and nf + empty_fraction <= 1 and empty_fraction < 1):
            raise QparseError(
                f"bad pair fractions neg={neg_fraction} empty={empty_fraction} (each ≥ 0, sum ≤ 1, empty < 1)"
            )
        if group_size < 1 or batch_size % group_size:
            raise QparseError(
                f"group_size {group_size} must be ≥ 1 and divide batch_size {batch_size} "
                "(a batch is batch_size/group_size images × group_size regions)"
            )
        self.batch_size, self.pairs_per_epoch = int(batch_size), int(pairs_per_epoch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.sampler, self.empty_target = sampler, empty_target
        self.neg_fraction, self.empty_fraction = float(neg_fraction), float(empty_fraction)
        self.label_power, self.augment, self.group_size = float(label_power), bool(augment), int(group_size)
        if not 0 <= shift < 0.5:
            raise QparseError(f"shift must be in [0, 0.5) (a fraction of the image size), got {shift}")
        self.shift_px = int(round(float(shift) * data.size))
        self.K = self.knn.shape[1]
        self.generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.rank)
        self._build_candidates()

    # -- candidates ----------------------------------------------------------------------------------
    def _build_candidates(self) -> None:
        L, K, Q = self.data.num_labels, self.K, len(self.queries)
        p0 = self.data.present[: self.data.n].cpu()  # variant 0 = unaugmented
        valid = (self.knn >= 0) & (self.knn != self.queries[:, None])  # no pair of an image with itself
        pI = p0[self.queries][:, None, :].expand(-1, K, -1)  # Q×K×L
        pG = p0[self.knn.clamp_min(0)]  # Q×K×L
        stratum = torch.where(pG, torch.where(pI, 0, 1), 2).reshape(-1)
        ok = valid[:, :, None].expand(-1, -1, L).clone()
        ok[:, :, 0] = False  # foreground labels only
        flat = ok.reshape(-1).nonzero()[:, 0]  # ascending: sorted by (qi, k, l)
        st, lab = stratum[flat], flat % L
        count = torch.bincount(st * L + lab, minlength=3 * L).reshape(3, L)
        w = self._weights(count)[st, lab]  # per candidate
        cum = torch.cumsum(w, 0)
        if not len(flat) or float(cum[-1]) <= 0:
            raise QparseError(
                "PairSampler: no candidate pairs (no query shares a foreground label with its KNN images). "
                "Fix: check the corpus labels and the KNN table."
            )
        qi = flat // (K * L)
        lo = torch.searchsorted(qi, torch.arange(Q), right=False)
        hi = torch.searchsorted(qi, torch.arange(Q), right=True)
        img_cum = torch.where(hi > 0, cum[(hi - 1).clamp_min(0)], torch.zeros(Q, dtype=cum.dtype))
        self._cand = _Candidates(flat, st, cum, count, lo, hi, img_cum)

    def _weights(self, count: Tensor) -> Tensor:
        """3×L draw weight of ONE candidate of (stratum, label); the weights of all candidates sum to 1.

        ``natural``: P(l) ∝ n_l^label_power over labels with region candidates (n_l = pos_l + neg_l), then
        (i, k) uniform among the n_l: P(pos | l) = pos_l / n_l, the natural rate; the empty stratum gets
        ``empty_fraction`` (balanced over labels the same way). ``stratified``: P(stratum) fixed, then P(l |
        stratum) ∝ count^label_power, then uniform.
        """
        c = count.double()
        has = count.sum(1) > 0
        if self.sampler == "stratified":
            frac = torch.tensor([1 - self.neg_fraction - self.empty_fraction, self.neg_fraction,
                                 self.empty_fraction], dtype=torch.float64)  # fmt: skip
            frac = torch.where(has, frac, torch.zeros_like(frac))
            if float(frac.sum()) <= 0:
                return torch.zeros_like(c)
            frac = frac / frac.sum()
            lw = c.pow(self.label_power) * (count > 0)
            lp = lw / lw.sum(1, keepdim=True).clamp_min(1e-300)
            return frac[:, None] * lp / c.clamp_min(1)
        region = c[0] + c[1]
        e = self.empty_fraction if bool(has[2]) else 0.0
        r = 1.0 - e if bool(region.sum() > 0) else 0.0
        out = torch.zeros_like(c)
        lw = region.pow(self.label_power) * (region > 0)
        if float(lw.sum()) > 0:
            out[0] = out[1] = r * lw / lw.sum() / region.clamp_min(1)
        ew = c[2].pow(self.label_power) * (c[2] > 0)
        if e > 0:
            out[2] = e * ew / ew.sum() / c[2].clamp_min(1)
        tot = float((out * c).sum())
        return out / tot if tot > 0 else out

    def expected_rates(self) -> dict[str, dict[str, float]]:
        """Per foreground label: its natural rate P(c = 1 | l ∈ ϕ(g_k)) = pos_l / (pos_l + neg_l) among the
        candidates, the rate the sampler draws (``sampled_pos_rate``, same formula on drawn pairs), the share
        of all drawn pairs with that label (``share``) and the share of empty pairs (``empty_share``)."""
        c = self._cand.count.double()
        w = self._weights(self._cand.count) * c  # total probability of (stratum, label)
        out = {}
        for lab in range(1, self.data.num_labels):
            n_r = float(c[0, lab] + c[1, lab])
            p_r = float(w[0, lab] + w[1, lab])
            out[self.data.label_names[lab]] = {
                "natural_pos_rate": float(c[0, lab]) / n_r if n_r else float("nan"),
                "sampled_pos_rate": float(w[0, lab]) / p_r if p_r > 0 else float("nan"),
                "share": float(w[:, lab].sum()),
                "empty_share": float(w[2, lab]),
            }
        return out

    def stats(self) -> dict[str, Any]:
        """Candidate counts per stratum and label, natural and sampled stratum fractions, per-label rates."""
        c = self._cand.count
        tot = int(c.sum())
        w = self._weights(c) * c.double()
        return {
            "sampler": self.sampler,
            "empty_target": self.empty_target,
            "group_size": self.group_size,
            "candidates": tot,
            "per_stratum": {s: int(c[i].sum()) for i, s in enumerate(STRATA)},
            "natural_fractions": {s: (int(c[i].sum()) / tot if tot else 0.0) for i, s in enumerate(STRATA)},
            "sampling_fractions": {s: float(w[i].sum()) for i, s in enumerate(STRATA)},
            "per_label": {
                self.data.label_names[lab]: {s: int(c[i, lab]) for i, s in enumerate(STRATA)}
                for lab in range(1, self.data.num_labels)
            },
            "rates": self.expected_rates(),
        }

    # -- drawing -------------------------------------------------------------------------------------
    def _index(self, pos: Tensor, zoom_i: Tensor, zoom_g: Tensor, flip: Tensor) -> PairIndex:
        flat = self._cand.flat[pos]
        L = self.data.num_labels
        qk, label = flat // L, flat % L
        qi, k = qk // self.K, qk % self.K
        return PairIndex(
            self.queries[qi], self.knn[qi, k], label, zoom_i, zoom_g, flip, self._cand.stratum[pos]
        )

    def _aug(self, n: int, g: torch.Generator) -> Tensor:
        if self.augment:
            return torch.randint(0, 2, (3, n), generator=g)
        return torch.zeros(3, n, dtype=torch.long)

    def draw(self, n: int, generator: torch.Generator | None = None) -> PairIndex:
        """Draw ``n`` independent pairs (indices only) with the scheme of the module docstring."""
        g = self.generator if generator is None else generator
        cum = self._cand.cum
        u = torch.rand(n, generator=g, dtype=torch.float64) * cum[-1]
        pos = torch.searchsorted(cum, u, right=True).clamp_max(len(cum) - 1)
        aug = self._aug(n, g)
        return self._index(pos, aug[0], aug[1], aug[2])

    def draw_grouped(
        self, n_images: int, per_image: int, generator: torch.Generator | None = None
    ) -> PairIndex:
        """``n_images`` groups of ``per_image`` pairs that share the test image I (and its zoom/mirror variant).

        The query row is drawn with probability W_i / W (W_i: the summed weight of its candidates), then its
        pairs with probability w_c / W_i each, so every pair has exactly the marginal w_c / W of
        :meth:`draw`: the same pair distribution, grouped. Pairs ``g·per_image .. (g+1)·per_image − 1`` form
        group g.
        """
        g = self.generator if generator is None else generator
        c = self._cand
        u = torch.rand(n_images, generator=g, dtype=torch.float64) * c.img_cum[-1]
        img = torch.searchsorted(c.img_cum, u, right=True).clamp_max(len(c.img_cum) - 1)
        lo, hi = c.img_lo[img], c.img_hi[img]
        base = torch.where(lo > 0, c.cum[(lo - 1).clamp_min(0)], torch.zeros_like(u))
        top = c.cum[(hi - 1).clamp_min(0)]
        v = (
            base[:, None]
            + torch.rand(n_images, per_image, generator=g, dtype=torch.float64) * (top - base)[:, None]
        )
        pos = torch.searchsorted(c.cum, v.reshape(-1), right=True)
        pos = torch.minimum(
            torch.maximum(pos, lo.repeat_interleave(per_image)), hi.repeat_interleave(per_image) - 1
        )
        aug = self._aug(n_images, g)
        zoom_g = self._aug(n_images * per_image, g)[1]
        return self._index(
            pos, aug[0].repeat_interleave(per_image), zoom_g, aug[2].repeat_interleave(per_image)
        )

    def fixed_pairs(self, n: int, seed: int) -> PairIndex:
        """A fixed pair set (e.g. validation) drawn from its own generator: same ``seed`` → same pairs."""
        return self.draw(n, torch.Generator().manual_seed(int(seed)))

    def scored_pairs(self, k: int | None = None, max_pairs: int | None = None, seed: int = 0) -> PairIndex:
        """The pairs that parsing scores (docs/paper.md §1.8): every query image I with
        each of its first ``k`` KNN images g_k and every foreground label l ∈ ϕ(g_k) (strata pos and neg),
        unaugmented, sorted by query. ``max_pairs`` keeps whole query images (a seeded subset) up to that
        many pairs."""
        c = self._cand
        L = self.data.num_labels
        kk = (c.flat // L) % self.K
        keep = (c.stratum < 2) & (kk < (self.K if k is None else int(k)))
        pos = keep.nonzero()[:, 0]
        if max_pairs is not None and len(pos) > max_pairs:
            qi = c.flat[pos] // (self.K * L)
            per = torch.bincount(qi, minlength=len(self.queries))
            order = torch.randperm(len(self.queries), generator=torch.Generator().manual_seed(int(seed)))
            take = torch.zeros(len(self.queries), dtype=torch.bool)
            take[order[torch.cumsum(per[order], 0) <= max_pairs]] = True
            pos = pos[take[qi]]
        z = torch.zeros(len(pos), dtype=torch.long)
        return self._index(pos, z, z, z)

    # -- targets and batches -------------------------------------------------------------------------
    def _rows(self, idx: PairIndex) -> tuple[Tensor, Tensor, Tensor]:
        dev = self.data.device
        q, g, lab = idx.query.to(dev), idx.knn.to(dev), idx.label.to(dev)
        zi, zg, m = idx.zoom_i.to(dev), idx.zoom_g.to(dev), idx.flip.to(dev)
        lab = torch.where(m.bool(), self.data.mirror_lut[lab], lab)  # the region's label after mirroring
        return self.data.row(q, 2 * zi + m), self.data.row(g, 2 * zg + m), lab

    def targets(self, idx: PairIndex) -> tuple[Tensor, Tensor, Tensor]:
        """(c, t, has_t) of the pairs, from the (augmented) presence and boxes — no images touched.

        c = 1[l ∈ ϕ(I)] (``empty_target="label"``) or 1[l ∈ ϕ(I) ∩ ϕ(g_k)] (``"zero"``: the two agree on
        every pair whose region is real); t = box_l(g_k) − box_l(I) where has_t = l ∈ ϕ(g_k) ∩ ϕ(I), else 0.
        """
        rI, rG, lab = self._rows(idx)
        d = self.data
        return self._targets(d.present[rI, lab], d.boxes[rI, lab], d.present[rG, lab], d.boxes[rG, lab])

    def _targets(self, in_i: Tensor, box_i: Tensor, in_g: Tensor, box_g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        has_t = in_i & in_g
        c = has_t if self.empty_target == "zero" else in_i
        t = torch.where(has_t[:, None], box_g - box_i, torch.zeros((), dtype=box_g.dtype, device=box_g.device))
        return c.float(), t, has_t

    def materialise(
        self, idx: PairIndex, grouped: bool = False, shift_i: Tensor | None = None, shift_g: Tensor | None = None
    ) -> PairBatch:
        """The pairs as network inputs and targets on the device (gathers, no per-pair loop).

        ``grouped``: ``I`` holds each distinct test image (corpus index, zoom, mirror) once and ``group[b]``
        is pair b's row in it (for ``model(I, R, group)``, the test path computed once per image).
        ``shift_i`` (one (dx, dy) row per row of ``I``) and ``shift_g`` (B×2) translate I and g_k
        (:func:`translate`); the targets then come from the translated label maps (:func:`label_box`).
        """
        rI, rG, lab = self._rows(idx)
        d = self.data
        group = None
        if grouped:
            rI, group = torch.unique(rI, return_inverse=True)
        if shift_i is None and shift_g is None:
            I = image_to_input(d.images[rI], d.mean)
            R = image_to_input(knn_region(d.images[rG], d.labels[rG], lab, d.mean), d.mean)
            c, t, has_t = self.targets(idx)
            return PairBatch(I, R, c, t, has_t, lab, idx, group)
        zero_i, zero_g = torch.zeros(len(rI), 2, dtype=torch.long), torch.zeros(len(rG), 2, dtype=torch.long)
        img_i, lab_i = translate(d.images[rI], d.labels[rI], zero_i if shift_i is None else shift_i, d.mean)
        img_g, lab_g = translate(d.images[rG], d.labels[rG], zero_g if shift_g is None else shift_g, d.mean)
        I = image_to_input(img_i, d.mean)
        R = image_to_input(knn_region(img_g, lab_g, lab, d.mean), d.mean)
        pair_lab_i = lab_i if group is None else lab_i[group]
        in_i, box_i = label_box(pair_lab_i, lab)
        in_g, box_g = label_box(lab_g, lab)
        c, t, has_t = self._targets(in_i, box_i, in_g, box_g)
        return PairBatch(I, R, c, t, has_t, lab, idx, group)

    def iter_pairs(
        self, idx: PairIndex, batch_size: int | None = None, grouped: bool = False
    ) -> Iterator[PairBatch]:
        """Batches over a fixed pair set, in order (``grouped``: see :meth:`materialise`)."""
        bs = batch_size or self.batch_size
        for s in range(0, len(idx), bs):
            yield self.materialise(idx.slice(s, s + bs), grouped)

    def fit_target_norm(self, n: int = 200_000, seed: int | None = None) -> TargetNorm:
        """:class:`TargetNorm` from ``n`` pairs of this sampler's distribution (own generator)."""
        g = torch.Generator().manual_seed(self.seed + 7_777 if seed is None else int(seed))
        c, t, has_t = self.targets(self.draw(n, g))
        return TargetNorm.fit(c, t, has_t)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch on this rank."""
        return max(1, self.pairs_per_epoch // (self.batch_size * self.world_size))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def next_batch(self) -> PairBatch:
        """One training batch: grouped (B_I × B_R) when ``group_size`` > 1, else independent pairs; with
        ``shift`` > 0, I and each g_k translated by offsets drawn from the sampler's generator (after the
        pairs, so a resumed run draws the same ones)."""
        grouped = self.group_size > 1
        if grouped:
            idx = self.draw_grouped(self.batch_size // self.group_size, self.group_size)
        else:
            idx = self.draw(self.batch_size)
        if not self.shift_px:
            return self.materialise(idx, grouped=grouped)
        n_i = len(torch.unique(self._rows(idx)[0])) if grouped else len(idx)
        m, g = self.shift_px, self.generator
        shift_i = torch.randint(-m, m + 1, (n_i, 2), generator=g)
        shift_g = torch.randint(-m, m + 1, (len(idx), 2), generator=g)
        return self.materialise(idx, grouped, shift_i, shift_g)

    def __iter__(self) -> Iterator[PairBatch]:
        for _ in range(self.steps_per_epoch):
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """The generator state (resume continues the same pair stream)."""
        return {"generator": self.generator.get_state(), "seed": self.seed, "rank": self.rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
