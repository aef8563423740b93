"""The trunk M-CNN family: the paper's cross-image matching on a frozen ImageNet trunk (issue 30).

The from-scratch M-CNN (:mod:`qparse_lite.model.mcnn`, docs/paper.md §1.6) learns both single-image paths
(I and g_kl) from the corpus's training images. Here the two single-image paths are the **frozen** ImageNet
EfficientNet-Lite0 (:mod:`qparse_lite.backbones`, the weights the kit verifies by SHA-256), whose maps of
every corpus image are computed once and cached (:mod:`qparse_lite.train.trunk_cache`, with a fixed
per-level PCA); what trains is what the paper adds on top of two single-image paths: the **cross-image
matching filters** of Eq. (2), the **fusion** ``|x5(I) − x5(R)|`` stacked with the cross maps, and the fully
connected layers that output (c, t1..t4), with Eq. (1) on the label-balanced pairs (§1.4-1.5, §1.9).

Per trunk level ℓ (the paper's conv index, stride 2^ℓ), with x^I_ℓ, x^R_ℓ the cached maps of I and of the
region, and x^C the cross maps of the previous, finer cross level::

    x^C_ℓ = max(0, b_ℓ + Σ_p f^I_{ℓ,p} ∗ x^I_{ℓ,p} + Σ_q f^R_{ℓ,q} ∗ x^R_{ℓ,q} + Σ_t f^C_{ℓ,t} ∗_2 x^C_{ℓ−1,t})

(∗_2: stride 2, from stride 2^{ℓ−1} to 2^ℓ). The fusion summarises the level-5 maps over positions
(``fusion="pool"``, the default; ``"flatten"`` is the paper's fc on the flattened maps)::

    z = [mean_p x^I_5, max_p x^I_5, mean_p |x^I_5 − x^R_5|, r_5, moments(m_5), onehot(l),
         mean_p x^C_5, max_p x^C_5, centroid(x^C_5)]
    (c, t1..t4) = W_o·relu(W_h z + b_h) + b_o,   c += w_l·[mean_p x^I_5, max_p x^I_5] + b_l   (the label readout)

The region g_kl enters through the neighbour's maps masked by the label's mask m_ℓ (the share of label l in
each cell of g_k's augmented label map): as its descriptor r_ℓ = Σ_p m_ℓ(p)·x_ℓ(g_k)(p) / Σ_p m_ℓ(p) — the
neighbour's map averaged over l's pixels, what the region looks like to the trunk — at every cell, with m_ℓ
itself as one more channel, where the region lies in g_k (:class:`RegionMaps`). The cached maps are an affine
function of the trunk's (a PCA), so r_ℓ is the PCA of the masked-average trunk map exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qparse_lite.backbones import IMAGENET_MEAN, IMAGENET_STD

# ---------------------------------------------------------------------------------------------------
# ARCHITECTURE CHOICES (issue 30; docs/paper.md §1.6-1.7 for what the paper states)
#
# From the paper, kept: two single-image paths of the same architecture, a cross-image path whose maps
# combine both single paths and the previous cross layer (Eq. 2, ReLU, a stride-2 step between layers),
# cross filters at conv2..conv5 for "M-CNN" and fewer for the ablations, the fusion
# |conv5(I) − conv5(g_kl)| stacked with the cross conv5 maps, fully connected layers → (c, t1..t4), Eq. (1),
# label-balanced pairs, the ×1.2 zoom and the mirror (the cache holds the maps of all 4 variants).
#
# Chosen here:
#   * the single-image paths are the FROZEN ImageNet EfficientNet-Lite0, read at four levels: the last block
#     output at stride 4 (24 channels), 8 (40) and 16 (112), and the head features at stride 32 (1,280). The paper's conv1..conv5 all have stride 2, so
#     its conv2..conv5 maps are at strides 4, 8, 16, 32: trunk levels ℓ = 2..5 ARE the paper's conv2..conv5
#     by stride, i.e. by the displacement range their cross filters see (near range at stride 4, far range at
#     stride 32, Fig. 3). The cross filters of level ℓ read the two paths' maps of level ℓ (Eq. (2) reads
#     layer ℓ − 1): a frozen trunk has no useful level below stride 4 (stride 2 is 16 channels at 112², four
#     times the area), and the previous cross level still enters through a stride-2 convolution, as in Eq. (2);
#   * the frozen maps are cached through a fixed per-level PCA (fit on the train split's unaugmented maps,
#     whitened, :mod:`qparse_lite.train.trunk_cache`) to 8, 16, 32, 64 channels, of which the model reads the
#     leading k_ℓ = 8, 16, 16, 64 (explained variance in the cache's meta.json; the checkpoint keeps the
#     projection, so the model parses images outside the cache: :meth:`_Projected.encode_images`): training then runs only
#     the cross filters, the fusion and the fc layers (the "cheap enough to converge"); a trainable
#     1×1 adapter on the raw 320-channel map would cost more per pair than everything else together
#     (measured: 924 pairs/s for "w/o cross" with adapters vs the target of 3,000). The PCA is affine, so the
#     region's masking commutes with it. More head components do not help the pooled read (a presence probe:
#     0.73 at 32 or 64 components, 0.72 at 128);
#   * cross maps c_ℓ = 8, 16, 16, 32 at width 1 (small enough for the speed target: 3×3 convolutions at
#     28² and 14² cost most of a pair), 3×3 kernels, padding 1 (the trunk maps already have receptive fields
#     of 19, 67, 339 and 851 px at levels 2..5, :func:`qparse_lite.model.receptive.trunk_receptive_fields`;
#     a 3×3 at stride 32 adds 64 px of centre offsets, 29 % of a 224 crop: the far range); the stride-2 step
#     from level ℓ − 1 has no bias (b_ℓ sits on the same-level term);
#   * level 5 is the trunk's 1,280-channel head features (the 1×1 head convolution on the last block: what
#     the ImageNet classifier and the retrieval's presence head read) rather than the 320-channel block output.
#     A linear presence probe reads the two alike — per-label AUC 0.754 and 0.744 on the CCP validation images
#     (warp crop, mean and max pooled, L2 chosen on validation; 0.738 and 0.741 on the (I, l) a neighbour
#     supports, the set ĉ_l is scored on: results/ccp/trunk/README.md) — so the head is kept for being what
#     the retrieval already reads, not for a measured gain. That probe is also the ceiling of any read of
#     frozen pooled features: about 0.74 on the scored set;
#   * the fusion is POOLED over positions (mean, max and the activation-weighted centroid of every map; the
#     region's mask by its area, centroid and spread): the paper's fc on the flattened 7×7 maps ties every
#     weight to a cell, and on 804 training images it did not learn whether I holds l (per-label validation
#     AUC 0.54 with the flattened fusion on the square crop); pooled, 0.59. The paper's |x5(I) − x5(g_kl)|
#     enters as its mean over positions. ``fusion="flatten"`` keeps the paper's form;
#   * the region's label l enters the fusion one-hot, and c gets a **label readout**, a linear read of I's
#     pooled level-5 maps selected by l: c += w_l·[mean_p x^I_5, max_p x^I_5] + b_l. The paper's network
#     infers l from g_kl's shape and position; here the region is a 7×7 descriptor, and a ReLU fc cannot
#     form a per-label read of I from an additive one-hot (per-label AUC 0.56 with the one-hot alone, 0.68
#     with the readout; ``qparse train --set trunk_label=none`` drops both, as the paper). The label is
#     known when parsing: it is the neighbour's annotation of the region;
#   * fc 128 (width 1, ReLU) → 5 linear outputs, Eq. (1) unchanged;
#   * Siamese [2]: each side's pooled level-5 summary (mean, max, the mask's moments, l one-hot) → fc (linear
#     responses, shared), |e(I) − e(g_kl)| → 5, plus the same label readout: it differs from "w/o cross"
#     only in where the difference is taken, as in the from-scratch family;
#   * the region g_kl, measured on the CCP validation split at 400 steps of "w/o cross" (results/ccp/trunk/):
#     (b1) the neighbour's maps blended by l's share of every cell with the mean image's maps,
#     m ⊙ x(g_k) + (1 − m) ⊙ x(μ), the literal analogue of g_kl — the training loss of c did not move from the
#     constant predictor's (l covers 1.5 % of the stride-32 cells on average: the region drowns in μ); (b2) the
#     region's descriptor r (the neighbour's map averaged over l's pixels, broadcast) with the mask as a channel
#     — it learns (validation label-level AUC 0.655 vs 0.551 for b1, 0.527 for b1 with the mask channel),
#     so it is the one kept. (a), the trunk run on the
#     region image g_kl itself, costs a trunk pass per (image, variant, label) — ~64 k passes on CCP, ~7 h on
#     this machine's share of a core — and was not measured;
# Sizes scale with ``width``: c_ℓ(w) = max(2, nearest even to c_ℓ·w), fc max(8, round(h·w)).
# ---------------------------------------------------------------------------------------------------

TRUNK_NAME = "efficientnet-lite0"
LEVELS: tuple[int, ...] = (2, 3, 4, 5)  # the paper's conv index; stride 2**level
TRUNK_CHANNELS: tuple[int, ...] = (24, 40, 112, 1280)  # EfficientNet-Lite0 at strides 4, 8, 16, 32 (head features)
PCA_CHANNELS: tuple[int, ...] = (8, 16, 32, 64)  # cached channels per level (the leading PCA components)
IN_CHANNELS: tuple[int, ...] = (8, 16, 16, 64)  # k_ℓ: the leading components a model reads
BASE_CHANNELS: tuple[int, ...] = (8, 16, 16, 32)  # c_ℓ: cross maps at width 1
BASE_FC: tuple[int, ...] = (128,)
N_OUTPUTS = 5
FUSIONS: tuple[str, ...] = ("pool", "flatten")
N_MASK_MOMENTS = 5  # area, centroid (x, y), spread (x, y) of the region's mask

Maps = dict[int, Tensor]


def _scale_even(c: int, width: float) -> int:
    return max(2, 2 * int(math.floor(c * width / 2 + 0.5)))


@dataclass(frozen=True)
class TrunkConfig:
    """Every size of a trunk M-CNN (see ``ARCHITECTURE CHOICES`` in the source).

    Attributes:
        family: always ``"trunk"`` (how a saved config finds its constructor).
        trunk: the frozen trunk's name.
        input_size: F, the side of the trunk's input crops (224: maps 56, 28, 14, 7).
        in_channels: k_ℓ, channels of the cached maps of levels 2..5 (the PCA's).
        width: multiplier of ``channels`` and ``fc_sizes``.
        channels: c_ℓ, cross maps of levels 2..5 at width 1.
        cross_layers: levels with cross filters: () or 5, 4, ... without gaps.
        fc_sizes: hidden fully connected layers; dropout: after each of them.
        arch: ``"mcnn"`` or ``"siamese"``; n_outputs: 5 = (c, t1..t4).
        fusion: ``"pool"`` (default: the fused maps summarised over positions — mean, max and centroid — so
            the fc layers see what is in I and where, not which cell: see ARCHITECTURE CHOICES) or
            ``"flatten"`` (the paper's fc on the flattened conv5 maps).
        num_labels: L > 0 adds the region's label l to the fusion as a one-hot vector (the region's label is
            known when parsing: it is the neighbour's annotation); 0: the network sees l only through g_kl.
            With L > 0 the output c also gets the **label readout** w_l·[mean_p x^I_5, max_p x^I_5] + b_l, a
            linear read of the test image's pooled level-5 maps selected by l (see ARCHITECTURE CHOICES).
    """

    family: str = "trunk"
    trunk: str = TRUNK_NAME
    input_size: int = 224
    in_channels: tuple[int, ...] = IN_CHANNELS
    width: float = 1.0
    channels: tuple[int, ...] = BASE_CHANNELS
    cross_layers: tuple[int, ...] = (5, 4, 3)
    fc_sizes: tuple[int, ...] = BASE_FC
    dropout: float = 0.0
    arch: str = "mcnn"
    fusion: str = "pool"
    num_labels: int = 0
    n_outputs: int = N_OUTPUTS

    def __post_init__(self) -> None:
        cl = tuple(sorted({int(j) for j in self.cross_layers}, reverse=True))
        object.__setattr__(self, "cross_layers", cl)
        for name in ("in_channels", "channels", "fc_sizes"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        if self.family != "trunk":
            raise ValueError(f"TrunkConfig.family must be 'trunk', not {self.family!r}")
        if self.arch not in ("mcnn", "siamese"):
            raise ValueError(f"arch must be 'mcnn' or 'siamese', not {self.arch!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {self.fusion!r}")
        if len(self.channels) != len(LEVELS) or len(self.in_channels) != len(LEVELS):
            raise ValueError(f"channels and in_channels need {len(LEVELS)} entries (levels 2..5)")
        if any(j not in LEVELS for j in cl):
            raise ValueError(f"cross_layers must be a subset of {LEVELS}, got {self.cross_layers}")
        if cl and cl != tuple(range(5, 5 - len(cl), -1)):
            raise ValueError(f"cross_layers {cl} must be 5, 4, ... down to some level ≥ 2 without gaps")
        if self.arch == "siamese" and cl:
            raise ValueError("the Siamese baseline has no cross filters (cross_layers=())")
        if self.num_labels < 0 or (self.num_labels and self.fusion != "pool"):
            raise ValueError("num_labels must be ≥ 0, and the label input needs fusion='pool'")
        if self.input_size < 32 or self.width <= 0 or not self.fc_sizes:
            raise ValueError("input_size must be ≥ 32, width > 0 and fc_sizes not empty")

    def map_size(self, level: int) -> int:
        """Side of the map at ``level`` (stride 2^level, "same" padding: ceil(F / 2^level))."""
        return -(-self.input_size // 2**level)

    def in_channel(self, level: int) -> int:
        """k_ℓ, channels of the cached map at ``level``."""
        return self.in_channels[LEVELS.index(level)]

    def channel(self, level: int) -> int:
        """c_ℓ after width: cross maps at ``level``."""
        return _scale_even(self.channels[LEVELS.index(level)], self.width)

    @property
    def levels(self) -> tuple[int, ...]:
        """The levels the model reads (its cross levels and level 5), ascending."""
        return tuple(sorted({*self.cross_layers, 5}))

    @property
    def fc_widths(self) -> tuple[int, ...]:
        """Hidden fc sizes after width scaling."""
        return tuple(max(8, int(round(h * self.width))) for h in self.fc_sizes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (checkpoints, run.json); ``TrunkConfig(**d)`` rebuilds it."""
        return asdict(self)


@dataclass
class RegionMaps:
    """The regions g_kl of a batch: the maps of their neighbours, gathered once per distinct neighbour, and l's masks.

    Attributes:
        maps: level → U×k×s×s maps of the batch's distinct neighbour rows (image, variant).
        mean: level → V×k×s×s maps of the mean image μ (one row per augmentation variant).
        masks: level → B×1×s×s share of the region's label in every cell of its neighbour.
        row: B, pair b's row in ``maps``; mean_row: B, its row in ``mean``.
        label: B, the region's label l (after mirroring), read by a model with ``num_labels``.
    """

    maps: Maps
    mean: Maps
    masks: Maps
    row: Tensor
    mean_row: Tensor
    label: Tensor | None = None

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def at(self, level: int) -> Tensor:
        """B×(k+1)×s×s, the region at ``level`` as the model reads it: its descriptor r = Σ_p m(p)·x(g_k)(p) /
        Σ_p m(p), the mean of the neighbour's map over l's pixels (the mean image's map where g_k lacks l), at
        every cell, and the mask m itself as the last channel (where the region lies in g_k)."""
        m = self.masks[level]
        g = self.maps[level].index_select(0, self.row)
        area = m.sum((2, 3), keepdim=True)
        r = (m * g).sum((2, 3), keepdim=True) / area.clamp_min(1e-6)
        r = torch.where(area > 0, r, self.mean[level].index_select(0, self.mean_row).mean((2, 3), keepdim=True))
        return torch.cat([r.expand_as(g), m], dim=1)


def trunk_input(images: Tensor, size: int) -> Tensor:
    """N×3×H×W crops (0..255, any dtype) → the trunk's input: resized to ``size`` (bilinear, antialiased) when
    they are not already, scaled to 0..1 and normalised by the ImageNet mean and std."""
    x = images.float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def trunk_pyramid(net: Any, x: Tensor) -> Maps:
    """EfficientNet-Lite0's maps of a normalised N×3×F×F batch (no gradients): the last block output at
    strides 4, 8 and 16 (levels 2..4) and, at stride 32 (level 5), the 1,280-channel head features (the 1×1
    head convolution on the last block, before the classifier's pooling: what the ImageNet classifier and the
    retrieval's presence head read)."""
    out: Maps = {}
    with torch.no_grad():
        h = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            h = block(h)
            level = round(math.log2(x.shape[-1] / h.shape[-1]))
            if level in LEVELS:
                out[level] = h  # later blocks of a stride overwrite earlier ones
        out[5] = net._swish(net._bn1(net._conv_head(out[5])))
    return out


def project(maps: Maps, pca: dict[int, tuple[Tensor, Tensor]], channels: dict[int, int]) -> Maps:
    """The fixed per-level projection of raw trunk maps (:func:`trunk_pyramid`), as the cache stores them:
    level → N×k×s×s float32, the first ``channels[level]`` components of (x − μ_ℓ) @ P_ℓ at every cell."""
    out = {}
    for lvl, k in channels.items():
        mu, proj = pca[lvl]
        x = maps[lvl].float().permute(0, 2, 3, 1) - mu.float()
        out[lvl] = (x @ proj[:, :k].float()).permute(0, 3, 1, 2).contiguous()
    return out


_TRUNK: dict[str, Any] = {}  # the frozen trunk, loaded once per process (not a submodule: not in checkpoints)


class _Projected(nn.Module):
    """What both trunk models share: the cache's fixed projection (μ_ℓ, P_ℓ of the levels the model reads) as
    buffers, so a checkpoint carries it, and :meth:`encode_images`, the test path on images outside the cache."""

    cfg: TrunkConfig

    def _projection_buffers(self, levels: Sequence[int]) -> None:
        for lvl in levels:
            c, k = TRUNK_CHANNELS[LEVELS.index(lvl)], self.cfg.in_channel(lvl)
            self.register_buffer(f"pca_mean_{lvl}", torch.zeros(c))
            self.register_buffer(f"pca_proj_{lvl}", torch.zeros(c, k))
        self.register_buffer("has_projection", torch.zeros((), dtype=torch.bool))
        self._proj_levels = tuple(levels)

    def set_projection(self, pca: dict[int, tuple[Tensor, Tensor]]) -> None:
        """Keep the cache's projection (:attr:`qparse_lite.train.trunk_cache.TrunkMaps.pca`), the first k_ℓ
        components of every level the model reads."""
        with torch.no_grad():
            for lvl in self._proj_levels:
                mu, P = pca[lvl]
                getattr(self, f"pca_mean_{lvl}").copy_(mu.float())
                getattr(self, f"pca_proj_{lvl}").copy_(P[:, : self.cfg.in_channel(lvl)].float())
            self.has_projection.fill_(True)

    def _readout(self, out: Tensor, I: Maps, group: Tensor | None, R: RegionMaps | Maps) -> Tensor:
        """``out`` with the label readout added to c: w_l·[mean_p x^I_5, max_p x^I_5] + b_l (``num_labels`` > 0)."""
        readout = getattr(self, "readout", None)
        if readout is None:
            return out
        label = getattr(R, "label", None)
        if label is None:
            raise ValueError("this trunk model reads the region's label: pass RegionMaps with label set")
        z = readout(_pool(I[5]))  # once per test image
        z = z if group is None else z.index_select(0, group)
        c = z.gather(1, label.long()[:, None])
        return out + F.pad(c, (0, out.shape[1] - 1))

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Maps:
        """N×3×H×W crops (0..255) → the maps the model reads (level → N×k×s×s): the frozen trunk at the
        model's input side F, then the stored projection. Raises ValueError before a projection is set."""
        if not bool(self.has_projection):
            raise ValueError("this trunk model has no projection (set_projection was never called): train it "
                             "with qparse train, which stores the corpus cache's projection in the checkpoint")  # fmt: skip
        if "net" not in _TRUNK:
            from qparse_lite.backbones import efficientnet_lite0

            _TRUNK["net"] = efficientnet_lite0()
        net = _TRUNK["net"].to(self.has_projection.device)
        raw = trunk_pyramid(net, trunk_input(images.to(self.has_projection.device), self.cfg.input_size))
        pca = {lvl: (getattr(self, f"pca_mean_{lvl}"), getattr(self, f"pca_proj_{lvl}")) for lvl in self._proj_levels}
        return project(raw, pca, {lvl: self.cfg.in_channel(lvl) for lvl in self._proj_levels})


def _one_hot(R: RegionMaps | Maps, num_labels: int, like: Tensor) -> Tensor:
    """B×L one-hot of the regions' labels (:attr:`RegionMaps.label`)."""
    label = getattr(R, "label", None)
    if label is None:
        raise ValueError("this trunk model reads the region's label: pass RegionMaps with label set")
    return F.one_hot(label.long(), num_labels).to(like.dtype)


def _regions(R: RegionMaps | Maps, level: int) -> Tensor:
    return R.at(level) if isinstance(R, RegionMaps) else R[level]


def _centroid(x: Tensor) -> Tensor:
    """B×C×s×s non-negative maps → B×2C: each map's centroid (x then y, in [−1, 1]) weighted by its values (0 for
    an all-zero map): where in the image a map responds, without tying the fc to a cell."""
    s = x.shape[-1]
    g = torch.linspace(-1.0, 1.0, s, device=x.device, dtype=x.dtype)
    w = x / x.sum((2, 3), keepdim=True).clamp_min(1e-6)
    return torch.cat([(w.sum(2) * g).sum(-1), (w.sum(3) * g).sum(-1)], dim=1)


def _mask_moments(m: Tensor) -> Tensor:
    """B×1×s×s mask → B×5: its area (mean share), centroid (x, y) and spread (x, y) in [−1, 1] units."""
    s = m.shape[-1]
    g = torch.linspace(-1.0, 1.0, s, device=m.device, dtype=m.dtype)
    w = m[:, 0] / m[:, 0].sum((1, 2), keepdim=True).clamp_min(1e-6)
    wx, wy = w.sum(1), w.sum(2)  # B×s marginals over x and y
    cx, cy = (wx * g).sum(-1, keepdim=True), (wy * g).sum(-1, keepdim=True)
    sx = ((wx * (g - cx) ** 2).sum(-1, keepdim=True)).clamp_min(0).sqrt()
    sy = ((wy * (g - cy) ** 2).sum(-1, keepdim=True)).clamp_min(0).sqrt()
    return torch.cat([m.mean((1, 2, 3))[:, None], cx, cy, sx, sy], dim=1)


def _pool(x: Tensor) -> Tensor:
    """B×C×s×s → B×2C: the mean and the max over positions."""
    return torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)


def _init(module: nn.Module, out: nn.Linear) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(out.weight, std=0.01)
    nn.init.zeros_(out.bias)


def _fc(sizes: Sequence[int], dropout: float, last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_relu or i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _readout_layer(cfg: TrunkConfig) -> nn.Linear | None:
    if not cfg.num_labels:
        return None
    layer = nn.Linear(2 * cfg.in_channel(5), cfg.num_labels)
    nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)  # starts at the fc's prediction
    return layer


class TrunkMCNN(_Projected):
    """The trunk M-CNN: ``model(I, R, group=None) -> (B, 5)`` = (c, t1..t4).

    ``I``: level → N×k×s×s cached maps of the test images (N = B without ``group``; with ``group`` (B long),
    pair b reads row ``group[b]`` and the I-term of every cross filter runs once per image, with gradients).
    ``R``: the regions, a :class:`RegionMaps` or level → B×(k+1)×s×s explicit maps (:meth:`RegionMaps.at`). Modules: ``cross`` (the two
    same-level terms of Eq. 2 as one convolution over ``[x^I, x^R]``, with the bias), ``down`` (the stride-2
    term from the previous cross level), ``fc`` and ``out``.
    """

    def __init__(self, cfg: TrunkConfig) -> None:
        super().__init__()
        if cfg.arch != "mcnn":
            raise ValueError("TrunkMCNN needs arch='mcnn'; use TrunkSiamese for the baseline")
        self.cfg = cfg
        self.cross = nn.ModuleDict()
        self.down = nn.ModuleDict()
        prev = None
        for j in sorted(cfg.cross_layers):
            self.cross[str(j)] = nn.Conv2d(2 * cfg.in_channel(j) + 1, cfg.channel(j), 3, padding=1)
            if prev is not None:
                self.down[str(j)] = nn.Conv2d(cfg.channel(prev), cfg.channel(j), 3, stride=2, padding=1, bias=False)
            prev = j
        s5, k5, c5 = cfg.map_size(5), cfg.in_channel(5), (cfg.channel(5) if cfg.cross_layers else 0)
        self.fusion_channels = k5 + 1 + c5
        if cfg.fusion == "flatten":
            self.fusion_dim = self.fusion_channels * s5 * s5
        else:  # pool: I's mean and max, the mean |x5(I) − r5|, r5, the mask's moments, x^C_5's mean, max and centroid
            self.fusion_dim = 4 * k5 + N_MASK_MOMENTS + 4 * c5 + cfg.num_labels
        self.fc = _fc((self.fusion_dim, *cfg.fc_widths), cfg.dropout, last_relu=True)
        self.out = nn.Linear(cfg.fc_widths[-1], cfg.n_outputs)
        _init(self, self.out)
        self.readout = _readout_layer(cfg)
        self._projection_buffers(cfg.levels)

    def cross_path(self, I: Maps, R: RegionMaps | Maps, group: Tensor | None = None) -> dict[int, Tensor]:
        """Eq. (2) on the trunk for every cross level (ascending): {level: x^C_level}."""
        xC: dict[int, Tensor] = {}
        prev = None
        for j in sorted(self.cfg.cross_layers):
            conv = self.cross[str(j)]
            k = self.cfg.in_channel(j)
            zI = F.conv2d(I[j], conv.weight[:, :k], conv.bias, padding=1)  # the I-term, once per image
            if group is not None:
                zI = zI.index_select(0, group)
            z = zI + F.conv2d(_regions(R, j), conv.weight[:, k:], None, padding=1)
            if prev is not None:
                z = z + self.down[str(j)](xC[prev])
            xC[j] = F.relu(z)
            prev = j
        return xC

    def forward(self, I: Maps, R: RegionMaps | Maps, group: Tensor | None = None) -> Tensor:
        """(B, 5) for the pairs (I[b] or I[group[b]], R[b]); see the class docstring."""
        xC = self.cross_path(I, R, group)
        x5 = I[5] if group is None else I[5].index_select(0, group)
        r5 = _regions(R, 5)
        k = x5.shape[1]
        d5 = (x5 - r5[:, :k]).abs()  # |x5(I) − x5(g_kl)|: the paper's fusion term
        if self.cfg.fusion == "flatten":
            fused = torch.cat([d5, r5[:, k:]], dim=1)  # and the region's mask
            if 5 in xC:
                fused = torch.cat([fused, xC[5]], dim=1)
            return self.out(self.fc(torch.flatten(fused, 1)))
        pI = _pool(I[5]) if group is None else _pool(I[5]).index_select(0, group)  # once per test image
        r = r5[:, :k].mean((2, 3))
        lab = [_one_hot(R, self.cfg.num_labels, x5)] if self.cfg.num_labels else []
        parts = [pI, d5.mean((2, 3)), r, _mask_moments(r5[:, k:]), *lab]
        if 5 in xC:
            parts += [_pool(xC[5]), _centroid(xC[5])]
        return self._readout(self.out(self.fc(torch.cat(parts, dim=1))), I, group, R)


class TrunkSiamese(_Projected):
    """The Siamese [2] baseline on the trunk: each image's level-5 map → flatten → fc (linear, shared),
    ``|e(I) − e(g_kl)|`` → 5 outputs (called as :class:`TrunkMCNN`)."""

    def __init__(self, cfg: TrunkConfig) -> None:
        super().__init__()
        if cfg.arch != "siamese":
            raise ValueError("TrunkSiamese needs arch='siamese'")
        self.cfg = cfg
        s5, k5 = cfg.map_size(5), cfg.in_channel(5)
        self.fusion_dim = (k5 + 1) * s5 * s5 if cfg.fusion == "flatten" else 2 * k5 + N_MASK_MOMENTS + cfg.num_labels
        self.branch_fc = _fc((self.fusion_dim, *cfg.fc_widths), cfg.dropout, last_relu=False)
        self.out = nn.Linear(cfg.fc_widths[-1], cfg.n_outputs)
        _init(self, self.out)
        self.readout = _readout_layer(cfg)
        self._projection_buffers((5,))

    def forward(self, I: Maps, R: RegionMaps | Maps, group: Tensor | None = None) -> Tensor:
        """(B, 5) = (c, t1..t4); each test image embedded once with ``group``."""
        x5, r5, group0 = I[5], _regions(R, 5), group
        k = x5.shape[1]
        lab = [_one_hot(R, self.cfg.num_labels, x5)] if self.cfg.num_labels else []  # l enters both sides
        if lab and group is not None:  # I's embedding then depends on l: one per pair
            x5, group = x5.index_select(0, group), None
        ones = torch.ones_like(x5[:, :1])  # I's "mask": all of the image
        if self.cfg.fusion == "flatten":
            eI = self.branch_fc(torch.flatten(torch.cat([x5, ones], 1), 1))
            eR = self.branch_fc(torch.flatten(r5, 1))
        else:  # the same summaries on both sides: mean and max over positions, the mask's moments
            eI = self.branch_fc(torch.cat([_pool(x5), _mask_moments(ones), *lab], 1))
            eR = self.branch_fc(torch.cat([_pool(r5[:, :k]), _mask_moments(r5[:, k:]), *lab], 1))
        if group is not None:
            eI = eI.index_select(0, group)
        return self._readout(self.out((eI - eR).abs()), I, group0, R)


def trunk_model(config: TrunkConfig | dict[str, Any]) -> nn.Module:
    """The model of a :class:`TrunkConfig` (or its ``to_dict()``)."""
    if isinstance(config, dict):
        config = TrunkConfig(**config)
    return TrunkSiamese(config) if config.arch == "siamese" else TrunkMCNN(config)


def trunk_macs(model: nn.Module) -> dict[str, float]:
    """Forward multiply-adds: ``per_pair`` (the region terms of the cross filters, the stride-2 steps, the
    fc layers; the Siamese's region embedding) and ``per_image`` (the I-terms; the Siamese's I embedding),
    so a grouped batch of B_I images × B_R regions costs B_I·B_R·per_pair + B_I·per_image."""
    cfg: TrunkConfig = model.cfg  # type: ignore[assignment]
    per_image = per_pair = 0.0
    for j in cfg.cross_layers:
        s2, c, k = cfg.map_size(j) ** 2, cfg.channel(j), cfg.in_channel(j)
        per_image += s2 * 9 * k * c
        per_pair += s2 * 9 * (k + 1) * c  # the region and its mask
        if str(j) in model.down:  # type: ignore[operator]
            per_pair += s2 * 9 * model.down[str(j)].in_channels * c  # type: ignore[index]
    readout = getattr(model, "readout", None)
    if readout is not None:  # the label readout: one read of I's pooled maps per test image
        per_image += float(readout.in_features * readout.out_features)
    lin = [m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear) and m is not readout]
    per_pair += float(sum(lin))
    if cfg.arch == "siamese":
        per_image += float(sum(lin[:-1]))
    return {"per_pair": per_pair, "per_image": per_image}
