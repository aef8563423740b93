"""Training pairs (I, g_kl) for the M-CNN and their targets (paper Sec. 3.2 and 4.1; docs/paper.md §1.3-1.5, §1.9).

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
Not in the paper, and off unless ``shift`` > 0 (the profile field): each training batch's I and g_k are also
translated by random whole-pixel offsets (:func:`translate`), their targets taken from the moved label maps
(:func:`label_box`); the :class:`TargetNorm` statistics stay those of the unmoved pairs.

**Sampling** ("after unevenly sampling of the training pairs to balance different labels", Sec. 4.1).
The candidate pairs are the triples (i, k, l): a query image i of the split, one of its K KNN images
g_k = knn[i, k] (never i itself), and a foreground label l ∈ {1..L−1}. They fall into three strata:

* ``pos``: l ∈ ϕ(I) ∩ ϕ(g_k)  (c = 1, t defined) — a real match;
* ``neg``: l ∉ ϕ(I), l ∈ ϕ(g_k)  (c = 0) — a real region of g_k that I lacks;
* ``empty``: l ∉ ϕ(g_k) (g_kl = μ; c = 1[l ∈ ϕ(I)], no t) — Eq. (1) sums over these too, but they carry
  no information about l and the parsing stage ignores them (it averages ĉ over the g_k that contain l).

Every candidate gets a draw weight w_c (the weights sum to 1); a pair is candidate c with probability w_c.
Two weightings, chosen by name (``sampler=``):

* ``natural`` (the default): P(l) ∝ n_l^label_power over the foreground labels, n_l = pos_l + neg_l the
  candidates whose region is real (``label_power = 0``: every label equally often — the paper's "balance
  different labels"); within l, (i, k) uniform among its n_l candidates. So the drawn rate
  P(c = 1 | l, l ∈ ϕ(g_k)) = pos_l / n_l is l's **natural** rate: what the neighbours that contain l say
  about I is kept, and c carries it. An ``empty_fraction`` of pairs (default 0: dropped) comes from the
  ``empty`` stratum, balanced over labels the same way; its target is c = 0 (``empty_target="zero"``:
  c = 1[l ∈ ϕ(I) ∩ ϕ(g_k)], which the network can learn, as the region is blank) or, with
  ``empty_target="label"``, Eq. (1)'s c = 1[l ∈ ϕ(I)], which it cannot see (the label is not an input).
* ``stratified`` (the kit's first scheme, kept for comparison): P(stratum) = ``(1 − neg_fraction −
  empty_fraction, neg_fraction, empty_fraction)``, then P(l | stratum) ∝ count_l^label_power, then (i, k)
  uniform. This forces P(c = 1 | l ∈ ϕ(g_k)) to the same value for every label (≈ 0.58 with the defaults),
  oversampling the negatives of common labels by up to ~900× (CCP skin), so c stops carrying information.

Then independent zoom variants for I and g_k and one mirror flag for the pair (when the pair is mirrored,
both images are and the region's label becomes mirror_lut[l], so the stratum and the balance are kept
exactly). Candidates use the unaugmented label maps; the targets always come from the augmented ones.
:meth:`PairSampler.stats` gives the natural and sampled stratum fractions and, per label, the natural and
sampled P(c = 1 | l ∈ ϕ(g_k)) (:meth:`PairSampler.expected_rates`).

**Grouped batches.** :meth:`PairSampler.draw_grouped` draws B_I query images, image i with probability
W_i = Σ_{c ∈ i} w_c, then B_R of its candidates with probability w_c / W_i each: every pair keeps the marginal
w_c, and the B_R pairs of a group share I (and its zoom/mirror variant), so the network runs I's path once
per image (:meth:`qparse_lite.model.mcnn.MCNN.forward` with ``group``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qparse_lite.errors import QparseError

#: Network inputs are (x − μ) / INPUT_SCALE for pixel values x, μ in 0..255 (masked pixels of g_kl → 0).
INPUT_SCALE = 64.0
#: The enlarged crop of Sec. 4.1.
ZOOM = 1.2
#: The sampling strata (see the module docstring).
STRATA = ("pos", "neg", "empty")
#: Pair samplers by name: the default first (see the module docstring).
SAMPLERS = ("natural", "stratified")
#: The ``stratified`` sampler's default share of empty pairs (the kit's first scheme).
EMPTY_FRACTION_STRATIFIED = 0.05


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
            present[s : s + chunk, lab], boxes[s : s + chunk, lab] = mask_boxes(y == lab)
    return present, boxes


def mask_boxes(m: Tensor, normalise: bool = True) -> tuple[Tensor, Tensor]:
    """Presence (n bool) and bounding box (n×4 float32, 0 where absent) of n boolean H×W masks: the kit's
    one box routine (training targets here, the parser's KNN boxes in :func:`qparse_lite.parse.parser.label_boxes`).

    A box is ``(x0, y0, x1, y1)`` with x1, y1 one past the last column/row; in pixels, or divided by W and H
    into [0, 1] when ``normalise``.
    """
    _, h, w = m.shape
    rows = m.any(2).to(torch.uint8)  # n×H: row r holds the mask
    cols = m.any(1).to(torch.uint8)  # n×W
    has = rows.any(1).bool()
    y0, y1 = rows.argmax(1), h - rows.flip(1).argmax(1)  # argmax returns the first maximal index
    x0, x1 = cols.argmax(1), w - cols.flip(1).argmax(1)
    b = (torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], 1) if normalise else torch.stack([x0, y0, x1, y1], 1)).float()
    return has, torch.where(has[:, None], b, torch.zeros_like(b))


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


def translate(images: Tensor, labels: Tensor, shift: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Images and label maps moved by whole pixels: ``out(y, x) = in(y − dy, x − dx)``; the pixels that come
    from outside the frame are the corpus mean image μ (label 0, background), as in :func:`zoom_out`.

    Args:
        images: B×3×S×S (uint8 or float). labels: B×S×S. shift: B×2 integer (dx, dy) in pixels.
        mean: 3×S×S μ (same device; cast to the images' dtype).

    Returns:
        (images, labels) of the same shapes and dtypes. A box moves by (dx, dy)/S where it stays inside.
    """
    b, _, S, _ = images.shape
    sh = shift.long().cpu()
    m = int(sh.abs().max()) if len(sh) else 0
    if m == 0:
        return images.clone(), labels.clone()
    pi = F.pad(images, (m, m, m, m))  # zeros outside; replaced by μ below
    pl = F.pad(labels, (m, m, m, m))
    y0, x0 = (m - sh[:, 1]).tolist(), (m - sh[:, 0]).tolist()
    img = torch.stack([pi[j, :, y0[j] : y0[j] + S, x0[j] : x0[j] + S] for j in range(b)])
    lab = torch.stack([pl[j, y0[j] : y0[j] + S, x0[j] : x0[j] + S] for j in range(b)])
    ar = torch.arange(S, device=images.device)
    ys, xs = ar[None, :] - shift[:, 1:2].to(ar), ar[None, :] - shift[:, 0:1].to(ar)
    inside = ((ys >= 0) & (ys < S))[:, :, None] & ((xs >= 0) & (xs < S))[:, None, :]  # B×S×S
    fill = mean if images.is_floating_point() else mean.round().clamp(0, 255)
    img = torch.where(inside[:, None], img, fill.to(images.dtype)[None])
    return img, lab


def label_box(labels: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Presence and box of one label per map: ``labels`` B×H×W, ``label`` B → (B bool, B×4 normalised box,
    0 where absent), the same convention as :func:`label_presence_boxes`."""
    return mask_boxes(labels.long() == label.to(labels.device).long()[:, None, None])


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
        """From a prepared :class:`qparse_lite.data.prepare.Corpus` (``.images``, ``.labels``, ``.mean``,
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
    (after mirroring); ``index``: the :class:`PairIndex` it came from; ``group``: None for independent
    pairs, else B long — pair b's row in ``I``, which then holds each distinct test image once (U×3×S×S).
    """

    I: Tensor
    R: Tensor
    c: Tensor
    t: Tensor
    has_t: Tensor
    label: Tensor
    index: PairIndex
    group: Tensor | None = None


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
