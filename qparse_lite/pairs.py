"""Training pairs (I, g_kl) for the M-CNN and their targets (paper Sec. 3.2 and 4.1, NOTES §1.3-1.5, §1.9).

Everything here runs on the training device: the prepared corpus is put there once as uint8 tensors
(:class:`DeviceCorpus`, with its augmented variants precomputed), and a batch of pairs is gathered from
those tensors with index arithmetic (no per-pair Python loop).

**KNN region** (Sec. 3.2). For a KNN image g_k with label map y_k and a label l::

    g_kl(p) = g_k(p)  if y_k(p) = l        else  μ(p)          (μ: the corpus mean image)

so g_kl is exactly μ when g_k lacks l.

**Targets** of a pair (I, g_kl) (Sec. 3.2). With ϕ(·) the set of labels an image contains,

* c_kl = 1 iff l ∈ ϕ(I) (the matching confidence used in training);
* t_kl = [U_g − U_I, W_g − W_I] = [g^{x1}_kl − I^{x1}, g^{y1}_kl − I^{y1}, g^{x2}_kl − I^{x2},
  g^{y2}_kl − I^{y2}], the differences of the upper-left (U) and lower-right (W) corners of l's bounding
  box in g_k and in I, coordinates normalised by the image width/height into [0, 1]; defined only where
  l ∈ ϕ(g_k) ∩ ϕ(I) (``has_t``; t is 0 elsewhere and never enters the loss).

Boxes are ``(x0, y0, x1, y1)`` = (first column, first row, last column + 1, last row + 1) / S, so a
region filling the image is (0, 0, 1, 1) and a horizontal mirror maps x0' = 1 − x1, x1' = 1 − x0 exactly.
To move l's region of g_k onto I: box_I = box_g − t.

**Target normalisation** (Sec. 4.1): "we first calculate the element-wise mean and variance of the matching
confidence and displacements ... and element-wisely normalise the training output by the mean and
variance"; at test time predictions are mapped back. :class:`TargetNorm` does this; its statistics are
estimated from a large sample of the training pair distribution (t over ``has_t`` pairs only).

**Augmentation** (Sec. 4.1): "we enlarge the cropped human centric images region by 1 and 1.2 times. We
also horizontally mirror the images. In short, each image has 4 variations". Variant v = 2·z + m:
z = 1 is the ×1.2 crop (the crop zoomed out so that the person occupies 1/1.2 of the frame, centred;
the border is the corpus mean image, the label map's border background), m = 1 the mirror (flip and swap
the label set's left/right labels via ``LabelSet.mirror_lut``). Label maps, presence and boxes are
computed from the augmented label maps, so they are consistent with the pixels by construction.

**Sampling** ("after unevenly sampling of the training pairs to balance different labels", Sec. 4.1).
The candidate pairs are the triples (i, k, l): a query image i of the split, one of its K KNN images
g_k = knn[i, k] (never i itself), and a foreground label l ∈ {1..L−1}. They fall into three strata:

* ``pos``: l ∈ ϕ(I) ∩ ϕ(g_k)  (c = 1, t defined) — a real match;
* ``neg``: l ∉ ϕ(I), l ∈ ϕ(g_k)  (c = 0) — a real region of g_k that I lacks;
* ``empty``: l ∉ ϕ(g_k) (g_kl = μ; c = 1[l ∈ ϕ(I)], no t) — Eq. (1) sums over these too, but they carry
  no information about l and the parsing stage ignores them (it averages ĉ over the g_k that contain l).

A pair is drawn by (1) picking the stratum with probabilities ``(1 − neg_fraction − empty_fraction,
neg_fraction, empty_fraction)``, (2) picking the label l among the labels that have candidates in that
stratum with weight ``count_l ** label_power`` (``label_power = 0``: every label equally often — the
label-balancing scheme; 1: the natural frequencies), (3) picking (i, k) uniformly among that label's
candidates, then (4) independent zoom variants for I and g_k and one mirror flag for the pair (when the
pair is mirrored, both images are and the region's label becomes mirror_lut[l], so the stratum and the
balance are kept exactly). Steps (1)-(3) use the unaugmented label maps; the targets always come from the
augmented ones. The natural stratum fractions of the candidate set are in :meth:`PairSampler.stats`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import QparseError

__all__ = [
    "INPUT_SCALE",
    "ZOOM",
    "STRATA",
    "image_to_input",
    "label_presence_boxes",
    "knn_region",
    "zoom_out",
    "mirror",
    "DeviceCorpus",
    "PairIndex",
    "PairBatch",
    "TargetNorm",
    "PairSampler",
]

#: Network inputs are (x − μ) / INPUT_SCALE for pixel values x, μ in 0..255 (masked pixels of g_kl → 0).
INPUT_SCALE = 64.0
#: The enlarged crop of Sec. 4.1.
ZOOM = 1.2
#: The sampling strata (see the module docstring).
STRATA = ("pos", "neg", "empty")


def image_to_input(x: Tensor, mean: Tensor) -> Tensor:
    """Network input from pixel values: ``(x − μ) / INPUT_SCALE``.

    Args:
        x: B×3×S×S images, float (or uint8) in 0..255.
        mean: 3×S×S corpus mean image μ, float in 0..255 (same device).
    """
    return (x.float() - mean) / INPUT_SCALE


def label_presence_boxes(labels: Tensor, num_labels: int, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Per-image label presence and per-label bounding boxes, vectorised over images.

    Args:
        labels: N×H×W integer label maps (any device).
        num_labels: L.
        chunk: images per block (bounds the memory of the H×W masks).

    Returns:
        ``present`` N×L bool and ``boxes`` N×L×4 float32 ``(x0, y0, x1, y1)`` normalised by W and H into
        [0, 1] (x1, y1 one past the last column/row); boxes of absent labels are 0.
    """
    n, h, w = labels.shape
    present = torch.zeros(n, num_labels, dtype=torch.bool, device=labels.device)
    boxes = torch.zeros(n, num_labels, 4, dtype=torch.float32, device=labels.device)
    for s in range(0, n, chunk):
        y = labels[s : s + chunk]
        for lab in range(num_labels):
            m = y == lab
            rows = m.any(2).to(torch.uint8)  # n×H: row r contains l
            cols = m.any(1).to(torch.uint8)  # n×W
            has = rows.any(1).bool()
            y0 = rows.argmax(1)  # argmax returns the first maximal index
            y1 = h - rows.flip(1).argmax(1)
            x0 = cols.argmax(1)
            x1 = w - cols.flip(1).argmax(1)
            b = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], 1).float()
            present[s : s + chunk, lab] = has
            boxes[s : s + chunk, lab] = torch.where(has[:, None], b, torch.zeros_like(b))
    return present, boxes


def knn_region(image: Tensor, labels: Tensor, label: Tensor, mean: Tensor) -> Tensor:
    """The KNN regions g_kl: ``g_kl(p) = g_k(p) if y_k(p) = l else μ(p)`` (float, 0..255).

    Args:
        image: B×3×S×S KNN images g_k (uint8 or float).
        labels: B×S×S their label maps y_k.
        label: B labels l.
        mean: 3×S×S corpus mean image μ.
    """
    keep = (labels.long() == label.long()[:, None, None])[:, None]
    return torch.where(keep, image.float(), mean[None].float())


def zoom_out(images: Tensor, labels: Tensor, mean_u8: Tensor, zoom: float = ZOOM) -> tuple[Tensor, Tensor]:
    """The enlarged crop (×``zoom``): shrink to round(S/zoom), centre, border = mean image / background.

    Args:
        images: B×3×S×S uint8. labels: B×S×S uint8. mean_u8: 3×S×S uint8 (the rounded corpus mean).

    Returns:
        (images, labels) of the same shapes; boxes shrink toward the centre: b' ≈ ½ + (b − ½)/zoom.
    """
    b, _, S, _ = images.shape
    s = int(round(S / zoom))
    o = (S - s) // 2
    small = F.interpolate(images.float(), size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    small_lab = F.interpolate(labels[:, None].float(), size=(s, s), mode="nearest-exact")[:, 0]
    out = mean_u8[None].expand(b, -1, -1, -1).clone()
    out[:, :, o : o + s, o : o + s] = small.round().clamp(0, 255).to(torch.uint8)
    out_lab = torch.zeros_like(labels)
    out_lab[:, o : o + s, o : o + s] = small_lab.round().to(labels.dtype)
    return out, out_lab


def mirror(images: Tensor, labels: Tensor, mirror_lut: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal mirror of B×3×S×S images and B×S×S label maps; left/right labels swapped by the LUT."""
    return images.flip(-1), mirror_lut.to(labels.device)[labels.long()].to(labels.dtype).flip(-1)


class DeviceCorpus:
    """The prepared corpus on the training device, with its 4 augmented variants (or only the original).

    Attributes:
        images: (V·N)×3×S×S uint8; row ``v·N + n`` is variant v of corpus image n.
        labels: (V·N)×S×S uint8.
        present: (V·N)×L bool — l ∈ ϕ(image).
        boxes: (V·N)×L×4 float32 normalised boxes (see :func:`label_presence_boxes`).
        mean: 3×S×S float32 corpus mean image μ (0..255).
        mirror_lut: L int64 (left/right swap).
        num_variants: V (4 with augmentation: v = 2·zoom + mirror; 1 without).
        n: N, size: S, num_labels: L, label_names: names of the labels.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, mean: Tensor, mirror_lut: Tensor, label_names: tuple[str, ...],
        augment: bool = True, chunk: int = 256,
    ) -> None:  # fmt: skip
        n, three, S, S2 = images.shape
        if three != 3 or S != S2 or labels.shape != (n, S, S):
            raise QparseError(
                f"DeviceCorpus: expected images N×3×S×S and labels N×S×S, got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}. Fix: prepare the corpus again (qparse prepare)."
            )
        dev = images.device
        self.n, self.size, self.num_labels = n, S, len(label_names)
        self.label_names = tuple(label_names)
        self.mean = mean.to(dev, torch.float32)
        self.mirror_lut = mirror_lut.to(dev, torch.long)
        self.num_variants = 4 if augment else 1
        if labels.numel() and int(labels.max()) >= self.num_labels:
            raise QparseError(
                f"DeviceCorpus: label id {int(labels.max())} outside the label set (L = {self.num_labels}). "
                "Fix: prepare the corpus with the right label set."
            )
        if not augment:
            self.images, self.labels = images.contiguous(), labels.contiguous()
        else:
            V = self.num_variants
            mean_u8 = self.mean.round().clamp(0, 255).to(torch.uint8)
            self.images = torch.empty((V * n, 3, S, S), dtype=torch.uint8, device=dev)
            self.labels = torch.empty((V * n, S, S), dtype=labels.dtype, device=dev)
            for s in range(0, n, chunk):
                im, lb = images[s : s + chunk], labels[s : s + chunk]
                e = s + len(im)
                im_m, lb_m = mirror(im, lb, self.mirror_lut)
                for v, (x, y) in enumerate(
                    [(im, lb), (im_m, lb_m), zoom_out(im, lb, mean_u8), zoom_out(im_m, lb_m, mean_u8)]
                ):
                    self.images[v * n + s : v * n + e] = x
                    self.labels[v * n + s : v * n + e] = y
        self.present, self.boxes = label_presence_boxes(self.labels, self.num_labels)

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.images.device

    def row(self, index: Tensor, variant: Tensor) -> Tensor:
        """Row of (corpus index, variant) in the stacked tensors."""
        return variant.long() * self.n + index.long()

    @classmethod
    def from_arrays(
        cls, images: np.ndarray, labels: np.ndarray, mean: np.ndarray, label_set: Any,
        device: str | torch.device = "cpu", augment: bool = True, holdout: int | list[int] | None = None,
    ) -> DeviceCorpus:  # fmt: skip
        """From N×S×S×3 uint8 images, N×S×S uint8 labels and the S×S×3 mean image (0..255).

        ``holdout``: label id(s) never used as positives — their pixels become background (0) here.
        """
        lab = torch.from_numpy(np.array(labels, dtype=np.uint8))  # a writable copy (the cache is read-only)
        if holdout is not None:
            for h in [holdout] if isinstance(holdout, int) else holdout:
                if not 0 < int(h) < len(label_set.names):
                    raise QparseError(f"holdout label id {h} is not a foreground label of {label_set.name}")
                lab = torch.where(lab == int(h), torch.zeros_like(lab), lab)
        img = torch.from_numpy(np.array(images, dtype=np.uint8))
        if img.ndim != 4 or img.shape[-1] != 3:
            raise QparseError(f"images must be N×S×S×3 uint8, got shape {tuple(img.shape)}")
        img = img.permute(0, 3, 1, 2).contiguous()
        mu = torch.from_numpy(np.array(mean, np.float32)).permute(2, 0, 1).contiguous()
        lut = torch.as_tensor(label_set.mirror_lut.astype(np.int64))
        return cls(
            img.to(device), lab.to(device), mu.to(device), lut.to(device), tuple(label_set.names), augment
        )

    @classmethod
    def from_corpus(
        cls, corpus: Any, device: str | torch.device = "cpu", augment: bool = True,
        holdout: int | list[int] | None = None,
    ) -> DeviceCorpus:  # fmt: skip
        """From a prepared :class:`qparse_lite.prepare.Corpus` (``.images``, ``.labels``, ``.mean``,
        ``.label_set``)."""
        return cls.from_arrays(
            np.asarray(corpus.images), np.asarray(corpus.labels), np.asarray(corpus.mean), corpus.label_set,
            device=device, augment=augment, holdout=holdout,
        )  # fmt: skip


class PairIndex(NamedTuple):
    """A set of pairs as indices (all 1-d, same length, on the sampler's CPU generator side).

    ``query``/``knn``: corpus indices of I and g_k; ``label``: l in unmirrored ids; ``zoom_i``/``zoom_g``:
    0/1 (×1.0/×1.2); ``flip``: 0/1 (the pair is mirrored); ``stratum``: 0 pos, 1 neg, 2 empty.
    """

    query: Tensor
    knn: Tensor
    label: Tensor
    zoom_i: Tensor
    zoom_g: Tensor
    flip: Tensor
    stratum: Tensor

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.query.shape[0])

    def slice(self, start: int, stop: int) -> PairIndex:
        """Pairs ``start:stop``."""
        return PairIndex(*(x[start:stop] for x in self))


class PairBatch(NamedTuple):
    """A batch of pairs on the training device.

    ``I``, ``R``: B×3×S×S float network inputs (:func:`image_to_input` of I and g_kl); ``c``: B float
    (0/1); ``t``: B×4 float (0 where not ``has_t``); ``has_t``: B bool; ``label``: B the region's label
    (after mirroring); ``index``: the :class:`PairIndex` it came from.
    """

    I: Tensor
    R: Tensor
    c: Tensor
    t: Tensor
    has_t: Tensor
    label: Tensor
    index: PairIndex


class TargetNorm(torch.nn.Module):
    """Element-wise normalisation of the targets (c, t) (Sec. 4.1).

    ``normalise``: c_n = (c − μ_c)/σ_c, t_n = (t − μ_t)/σ_t (t: 4 elements); ``denormalise`` inverts it.
    σ = sqrt(var), var estimated over a sample of training pairs (t: over ``has_t`` pairs only).
    Buffers ``c_mean`` (1), ``c_std`` (1), ``t_mean`` (4), ``t_std`` (4) are saved in checkpoints.
    """

    def __init__(
        self, c_mean: float = 0.0, c_std: float = 1.0, t_mean: Any = (0.0,) * 4, t_std: Any = (1.0,) * 4
    ) -> None:
        super().__init__()
        self.register_buffer("c_mean", torch.tensor([float(c_mean)], dtype=torch.float32))
        self.register_buffer("c_std", torch.tensor([float(c_std)], dtype=torch.float32))
        self.register_buffer("t_mean", torch.as_tensor(t_mean, dtype=torch.float32).reshape(4).clone())
        self.register_buffer("t_std", torch.as_tensor(t_std, dtype=torch.float32).reshape(4).clone())

    @classmethod
    def fit(cls, c: Tensor, t: Tensor, has_t: Tensor, eps: float = 1e-6) -> TargetNorm:
        """Mean and variance of c over all pairs and of t over the ``has_t`` pairs."""
        c = c.double().cpu()
        t = t.double().cpu()[has_t.cpu().bool()]
        if len(c) < 2 or len(t) < 2:
            raise QparseError(
                f"TargetNorm: too few pairs to estimate the statistics ({len(c)} pairs, {len(t)} with t). "
                "Fix: use a larger corpus or more KNN images."
            )
        return cls(
            c.mean().item(), max(c.std().item(), eps), t.mean(0).tolist(), t.std(0).clamp_min(eps).tolist()
        )

    def normalise(self, c: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c, t) → normalised space."""
        return (c - self.c_mean[0]) / self.c_std[0], (t - self.t_mean) / self.t_std

    def denormalise(self, c: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised (ĉ, t̂) → confidence and displacement in normalised image units."""
        return c * self.c_std[0] + self.c_mean[0], t * self.t_std + self.t_mean

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers (for run.json)."""
        return {k: v.tolist() for k, v in self.state_dict().items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TargetNorm:
        """Rebuild from :meth:`state_dict` (or :meth:`as_dict`)."""
        tn = cls()
        tn.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()})
        return tn

    def extra_repr(self) -> str:
        return (
            f"c: {self.c_mean.item():.4f}±{self.c_std.item():.4f}, "
            f"t: {[round(x, 4) for x in self.t_mean.tolist()]}±{[round(x, 4) for x in self.t_std.tolist()]}"
        )


@dataclass
class _Candidates:
    flat: Tensor  # all candidates (i·K + k), grouped by (stratum, label), int64
    offset: Tensor  # 3×L start of each group
    count: Tensor  # 3×L size of each group


class PairSampler:
    """Label-balanced pairs of query images and KNN regions, as batches on the corpus's device.

    Iterating yields one epoch: ``pairs_per_epoch // batch_size`` :class:`PairBatch` es (per rank under
    DDP: each rank draws ``pairs_per_epoch // (batch_size · world_size)`` batches from its own stream).
    Index sampling uses a CPU ``torch.Generator`` seeded with ``seed + 1_000_003·rank`` — the same seed
    gives the same pairs on every device; ``state_dict``/``load_state_dict`` carry it through checkpoints.

    Args:
        data: the corpus on the device (:class:`DeviceCorpus`).
        queries: Q corpus indices of the query images I (e.g. the train split).
        knn: Q×K corpus indices of their KNN images (negative entries are ignored; g_k = I is excluded).
        batch_size, pairs_per_epoch, seed: see above.
        neg_fraction: fraction of pairs from the ``neg`` stratum (c = 0 with a real region).
        empty_fraction: fraction from the ``empty`` stratum (g_kl = μ). ``pos`` gets the rest.
        label_power: label weight = count^label_power within a stratum (0 = balanced labels).
        augment: draw zoom/mirror variants (needs ``data`` built with ``augment=True``).
        rank, world_size: DDP rank and size.
    """

    def __init__(
        self, data: DeviceCorpus, queries: Any, knn: Any, *, batch_size: int = 128,
        pairs_per_epoch: int = 12_800, seed: int = 0, neg_fraction: float = 0.4, empty_fraction: float = 0.05,
        label_power: float = 0.0, augment: bool = True, rank: int = 0, world_size: int = 1,
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
        if not (0 <= neg_fraction and 0 <= empty_fraction and neg_fraction + empty_fraction <= 1):
            raise QparseError(
                f"bad pair fractions neg={neg_fraction} empty={empty_fraction} (each ≥ 0, sum ≤ 1)"
            )
        self.batch_size, self.pairs_per_epoch = int(batch_size), int(pairs_per_epoch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.neg_fraction, self.empty_fraction = float(neg_fraction), float(empty_fraction)
        self.label_power, self.augment = float(label_power), bool(augment)
        self.K = self.knn.shape[1]
        self.generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.rank)
        self._build_candidates()

    # -- candidates ----------------------------------------------------------------------------------
    def _build_candidates(self) -> None:
        L = self.data.num_labels
        p0 = self.data.present[: self.data.n].cpu()  # variant 0 = unaugmented
        valid = (self.knn >= 0) & (self.knn != self.queries[:, None])  # no pair of an image with itself
        pI = p0[self.queries][:, None, :]  # Q×1×L
        pG = p0[self.knn.clamp_min(0)]  # Q×K×L
        fg = torch.zeros(L, dtype=torch.bool)
        fg[1:] = True
        masks = [pI & pG, ~pI & pG, ~pG]
        flats, counts = [], torch.zeros(3, L, dtype=torch.long)
        for s, m in enumerate(masks):
            m = m & valid[:, :, None] & fg
            lab, flat = m.permute(2, 0, 1).reshape(L, -1).nonzero(as_tuple=True)  # sorted by label
            flats.append(flat)
            counts[s] = torch.bincount(lab, minlength=L)
        count = counts
        offset = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), count.reshape(-1)[:-1]]), 0)
        self._cand = _Candidates(torch.cat(flats), offset.reshape(3, L), count)
        frac = torch.tensor(
            [1 - self.neg_fraction - self.empty_fraction, self.neg_fraction, self.empty_fraction]
        )
        frac = torch.where(count.sum(1) > 0, frac, torch.zeros_like(frac)).double()
        if float(frac.sum()) <= 0:
            raise QparseError(
                "PairSampler: no candidate pairs (no query shares a foreground label with its KNN images). "
                "Fix: check the corpus labels and the KNN table."
            )
        self._stratum_p = frac / frac.sum()
        w = count.double().pow(self.label_power) * (count > 0)
        self._label_p = w / w.sum(1, keepdim=True).clamp_min(1e-12)

    def stats(self) -> dict[str, Any]:
        """Candidate counts per stratum and label, natural stratum fractions and the sampling fractions."""
        c = self._cand.count
        tot = int(c.sum())
        return {
            "candidates": tot,
            "per_stratum": {s: int(c[i].sum()) for i, s in enumerate(STRATA)},
            "natural_fractions": {s: (int(c[i].sum()) / tot if tot else 0.0) for i, s in enumerate(STRATA)},
            "sampling_fractions": {s: float(self._stratum_p[i]) for i, s in enumerate(STRATA)},
            "per_label": {
                self.data.label_names[lab]: {s: int(c[i, lab]) for i, s in enumerate(STRATA)}
                for lab in range(1, self.data.num_labels)
            },
        }

    # -- drawing -------------------------------------------------------------------------------------
    def draw(self, n: int, generator: torch.Generator | None = None) -> PairIndex:
        """Draw ``n`` pairs (indices only) with the balancing scheme of the module docstring."""
        g = self.generator if generator is None else generator
        stratum = torch.multinomial(self._stratum_p, n, replacement=True, generator=g)
        labels = torch.stack(
            [
                torch.multinomial(p, n, replacement=True, generator=g)
                if float(p.sum()) > 0
                else torch.zeros(n, dtype=torch.long)
                for p in self._label_p
            ]
        )  # 3×n
        label = labels.gather(0, stratum[None])[0]
        u = torch.rand(n, generator=g, dtype=torch.float64)
        cnt = self._cand.count[stratum, label]
        pos = self._cand.offset[stratum, label] + (u * cnt).long().clamp_max(cnt - 1)
        flat = self._cand.flat[pos]
        qi, k = flat // self.K, flat % self.K
        if self.augment:
            aug = torch.randint(0, 2, (3, n), generator=g)
        else:
            aug = torch.zeros(3, n, dtype=torch.long)
        return PairIndex(self.queries[qi], self.knn[qi, k], label, aug[0], aug[1], aug[2], stratum)

    def fixed_pairs(self, n: int, seed: int) -> PairIndex:
        """A fixed pair set (e.g. validation) drawn from its own generator: same ``seed`` → same pairs."""
        return self.draw(n, torch.Generator().manual_seed(int(seed)))

    # -- targets and batches -------------------------------------------------------------------------
    def _rows(self, idx: PairIndex) -> tuple[Tensor, Tensor, Tensor]:
        dev = self.data.device
        q, g, lab = idx.query.to(dev), idx.knn.to(dev), idx.label.to(dev)
        zi, zg, m = idx.zoom_i.to(dev), idx.zoom_g.to(dev), idx.flip.to(dev)
        lab = torch.where(m.bool(), self.data.mirror_lut[lab], lab)  # the region's label after mirroring
        return self.data.row(q, 2 * zi + m), self.data.row(g, 2 * zg + m), lab

    def targets(self, idx: PairIndex) -> tuple[Tensor, Tensor, Tensor]:
        """(c, t, has_t) of the pairs, from the (augmented) presence and boxes — no images touched.

        c = 1[l ∈ ϕ(I)];  t = box_l(g_k) − box_l(I) where has_t = l ∈ ϕ(g_k) ∩ ϕ(I), else 0.
        """
        rI, rG, lab = self._rows(idx)
        d = self.data
        c = d.present[rI, lab]
        has_t = c & d.present[rG, lab]
        t = torch.where(has_t[:, None], d.boxes[rG, lab] - d.boxes[rI, lab], torch.zeros(()).to(d.boxes))
        return c.float(), t, has_t

    def materialise(self, idx: PairIndex) -> PairBatch:
        """The pairs as network inputs and targets on the device (gathers, no per-pair loop)."""
        rI, rG, lab = self._rows(idx)
        d = self.data
        I = image_to_input(d.images[rI], d.mean)
        R = image_to_input(knn_region(d.images[rG], d.labels[rG], lab, d.mean), d.mean)
        c, t, has_t = self.targets(idx)
        return PairBatch(I, R, c, t, has_t, lab, idx)

    def iter_pairs(self, idx: PairIndex, batch_size: int | None = None) -> Iterator[PairBatch]:
        """Batches over a fixed pair set, in order."""
        bs = batch_size or self.batch_size
        for s in range(0, len(idx), bs):
            yield self.materialise(idx.slice(s, s + bs))

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

    def __iter__(self) -> Iterator[PairBatch]:
        for _ in range(self.steps_per_epoch):
            yield self.materialise(self.draw(self.batch_size))

    def state_dict(self) -> dict[str, Any]:
        """The generator state (resume continues the same pair stream)."""
        return {"generator": self.generator.get_state(), "seed": self.seed, "rank": self.rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
