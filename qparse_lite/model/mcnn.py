"""The Matching-CNN (M-CNN) of Liu et al. (CVPR 2015, Sec. 3.2, Fig. 2), its ablation variants and the
Siamese [2] baseline (Table 1/2).

An M-CNN takes a pair (I, R): the test image I and a KNN region R = g_kl (a KNN image g_k with every
pixel not of label l replaced by the corpus mean image), and regresses 5 numbers (c, t1..t4): the matching
confidence c_kl and the 4-d displacement t_kl of label l's box between g_k and I (both in the normalised
target space, docs/paper.md §1.4).

Three paths (Fig. 2):

* two **single-image paths** (I and R), conv1..conv5, each conv with stride 2 and a ReLU, no pooling;
* a **cross-image path** whose maps at layer j combine both single paths and the cross maps of layer j-1
  (Eq. 2 below), present in the layers listed in ``cross_layers``;
* **fusion**: ``|conv5(I) − conv5(R)|`` stacked with the cross conv5 maps, flattened, then fully connected
  layers → 5 outputs.

Eq. (2), the m-th cross map of layer j::

    x^C_{j,m} = max(0, b_{j,m} + Σ_{p=1..P} f^I_{j,p,m} * x^I_{j-1,p}
                               + Σ_{q=1..Q} f^R_{j,q,m} * x^R_{j-1,q}
                               + Σ_{t=1..T} f^C_{j,t,m} * x^C_{j-1,t})

with ``*`` a (stride-2) convolution. The three sums are one convolution over the channel-stacked input
``[x^I_{j-1}, x^R_{j-1}, x^C_{j-1}]`` (a convolution is linear in its input channels), which is how
:meth:`MCNN.forward` computes it; :meth:`MCNN.forward_cached` uses the split form so that the
``Σ_p f^I * x^I`` term of a test image is computed once and reused for all its K×L pairs. The first cross
layer has no ``x^C`` term (T = 0): when the cross path starts at layer j it starts from ``x^I_{j-1}``,
``x^R_{j-1}`` only; at j = 1 these are the RGB images themselves ("cross 5,4,3,2,1": 11×11×6 filters on
the stacked RGB pair).

Sizes: see the comment block ``ARCHITECTURE CHOICES`` below (what the paper states, what the kit chose,
and why). ``build_model(variant)`` builds every Table 1 variant in one call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qparse_lite.model.trunk import TrunkConfig, trunk_model

# ---------------------------------------------------------------------------------------------------
# ARCHITECTURE CHOICES (paper Sec. 3.2 / Fig. 2 / Sec. 4.2 ablation; docs/paper.md §1.6-1.7)
#
# Stated by the paper (text):
#   * input: human-centric crop rescaled to 227×227×3 (Sec. 3.1);
#   * two single-image paths of identical architecture + one cross-image path; conv1..conv5;
#     ReLU after every conv; stride 2 in every conv; NO pooling;
#   * cross filters in conv2..conv5 for "M-CNN"; Eq. (2) for the cross maps;
#   * conv2 has 30 maps in each of the three paths; removing the cross filters of a layer adds their
#     number evenly to the two single paths (45 each at conv2), so every layer keeps its total map count
#     across variants ("for fair comparison");
#   * "cross 5,4,3,2,1" adds 11×11×6 cross filters at conv1 on the stacked RGB pair ⇒ conv1 is 11×11;
#   * fusion: |conv5(I) − conv5(R)| stacked with the cross conv5 maps → fully connected layers → 5;
#   * SGD batch 128, ~50 epochs of ~5 M pairs in 11–12 days on one GTX TITAN 6 GB (Caffe).
# Not stated (the numbers of Fig. 2 are not in the text) — chosen here:
#   * channels per path in a layer WITH cross filters ("the three-way count" c_j):
#         conv1 32, conv2 30 (paper), conv3 64, conv4 64, conv5 64;
#     a layer WITHOUT cross filters gives each single path 1.5·c_j (conv1 48, conv2 45, conv3-5 96).
#     Totals per layer: 96, 90, 192, 192, 192. conv1 = 96 in total is AlexNet's conv1 [12] (48 per single
#     path = one AlexNet GPU half); conv2's 90 is the paper's; conv3..5 double conv2's width after the
#     next stride (the usual "double the channels when the map halves") and then stay flat like AlexNet's
#     conv3/conv4. The paper's conv2 (90 maps vs AlexNet's 256) shows a net much narrower than AlexNet,
#     which its pooling-free design needs: its early maps have ~4× AlexNet's area (114² vs 55² at conv1,
#     57² vs 27² at conv2), so each channel costs ~4× more there.
#   * kernels at 227: conv1 11 (paper), conv2..conv5 5×5. With stride 2 everywhere the jumps are
#     2,4,8,16,32 px and the receptive fields 11, 19, 35, 67, 131 px (5%, 8%, 15%, 30%, 58% of 227):
#     conv2's cross filters see "near-range" displacements of a few tens of pixels, conv5's see
#     displacements of half the image (a bag on the left vs the right of the body, Fig. 3). 3×3 kernels at
#     conv3..5 (AlexNet) would stop at 75 px (33%) and leave no far-range layer.
#   * padding (k−1)/2 ("same"-style, Caffe's pad): every map is ceil(S/2) of the previous one,
#     227 → 114 → 57 → 29 → 15 → 8, and unit i of layer j is centred exactly on input pixel i·2^j (start
#     offset 0), which keeps the receptive-field arithmetic (``receptive.py``) and the ERF centred.
#   * fully connected: fc6 with 1024 units (ReLU) → 5 linear outputs. The fused conv5 block is
#     (64 + 64) maps × 8 × 8 = 8192 values at 227, so fc6 has 8.4 M weights, most of the ~10 M parameters;
#     a 4096-unit fc6 (AlexNet) would quadruple that for a 5-number regression.
#   * weights: the two single paths are SEPARATE by default (``shared_paths=False``): I is a whole photo,
#     R a masked region on the mean image, so the two inputs have different statistics, and the paper
#     calls them "two instantiations" with "the same architecture" (not "the same weights"); the Siamese
#     baseline [2], described as "two identical sub-networks", shares them. ``shared_paths=True`` shares
#     them for the M-CNN too (then I and R run through one batched call).
#   * dropout: none by default (the paper does not mention it); ``dropout`` adds it after fc6 (the profile
#     field ``dropout``; measured on CCP at 64 px: 0.3 raised the val AUC, not the displacement error,
#     results/ccp/size_budget.md).
# Budget check (why these numbers are plausible for 2015): ~1.3 G multiply-adds per pair forward at 227
# (``describe(...)["macs"].sum()``), ≈ 4 GMAC forward+backward; 11.5 days for 50 × 5 M pairs is ≈ 250
# pairs/s, i.e. ≈ 1 TMAC/s ≈ 2 TFLOP/s on a 4.5 TFLOP/s GTX TITAN — the efficiency Caffe/cuDNN reached
# then. Activations of a batch of 128 pairs (≈ 7 MB/pair forward, ×2 with gradients) are ≈ 1.8 GB, which
# fits the 6 GB card. AlexNet itself is 0.72 GMAC per image.
#
# Small inputs (``input_size`` < 227, e.g. 64 in the quick profile, 145 in the ccp profile): every kernel
# is scaled with the image, k_j(S) = max(3, nearest odd number to k_j(227)·S/227) (``scaled_kernels``):
# S = 113 → 5,3,3,3,3 (RFs 5, 9, 17, 33, 65 = 4%, 8%, 15%, 29%, 58% — the same fractions as at 227);
# S = 145 → 7,3,3,3,3;
# S = 64 → 3,3,3,3,3 (RFs 3, 7, 15, 31, 63 = 5%, 11%, 23%, 48%, 98%: the floor of 3 — the smallest odd
# kernel that still covers the pixels a stride-2 conv skips — makes the deep layers relatively larger).
# Channels scale with ``width``: c_j(w) = max(2, nearest even number to c_j·w) (even, so that 1.5·c_j is
# whole), fc sizes max(8, round(h·w)).
# ---------------------------------------------------------------------------------------------------

BASE_INPUT = 227
BASE_KERNELS: tuple[int, ...] = (11, 5, 5, 5, 5)
BASE_CHANNELS: tuple[int, ...] = (32, 30, 64, 64, 64)  # per path in a layer that has cross filters
BASE_FC: tuple[int, ...] = (1024,)
N_LAYERS = 5
N_OUTPUTS = 5  # (c, t1, t2, t3, t4)


def _nearest_odd(x: float) -> int:
    return 2 * int(math.floor((x - 1) / 2 + 0.5)) + 1


def scaled_kernels(input_size: int, base: Sequence[int] = BASE_KERNELS, minimum: int = 3) -> tuple[int, ...]:
    """Kernel sizes for ``input_size``: k_j(S) = max(minimum, nearest odd to k_j(227)·S/227).

    ``scaled_kernels(227) == (11, 5, 5, 5, 5)``, ``scaled_kernels(113) == (5, 3, 3, 3, 3)``,
    ``scaled_kernels(64) == (3, 3, 3, 3, 3)``.
    """
    return tuple(max(minimum, _nearest_odd(k * input_size / BASE_INPUT)) for k in base)


def _scale_even(c: int, width: float) -> int:
    return max(2, 2 * int(math.floor(c * width / 2 + 0.5)))


@dataclass(frozen=True)
class MCNNConfig:
    """Every size of an M-CNN (or of the Siamese baseline); see ``ARCHITECTURE CHOICES`` in the source.

    Attributes:
        input_size: S, the side of the square input crops (paper: 227).
        width: channel multiplier; 1.0 = the kit's 227 sizes.
        channels: per-path maps of conv1..conv5 in a layer that has cross filters, at width 1.0
            (conv2 = 30 is the paper's). Without cross filters the single paths get 1.5× each.
        kernels: conv1..conv5 kernel sizes; None = ``scaled_kernels(input_size)`` (11,5,5,5,5 at 227).
        stride: stride of every conv (paper: 2).
        cross_layers: layers with cross-image filters, any order; () = "w/o cross", else 5, 4, ..., j0
            without gaps (every Table 1 variant): the fusion reads the cross conv5 maps, and cross maps
            below a gap would feed nothing.
        fc_sizes: hidden fully connected layers after the fusion (ReLU each), at width 1.0.
        shared_paths: the I and R single paths share weights (and run as one batched call).
        dropout: dropout after each hidden fc layer (0 = none, the default).
        arch: ``"mcnn"`` or ``"siamese"`` (the Siamese [2] baseline).
        n_outputs: 5 = (c, t1..t4).
    """

    input_size: int = BASE_INPUT
    width: float = 1.0
    channels: tuple[int, ...] = BASE_CHANNELS
    kernels: tuple[int, ...] | None = None
    stride: int = 2
    cross_layers: tuple[int, ...] = (5, 4, 3, 2)
    fc_sizes: tuple[int, ...] = BASE_FC
    shared_paths: bool = False
    dropout: float = 0.0
    arch: str = "mcnn"
    n_outputs: int = N_OUTPUTS

    def __post_init__(self) -> None:
        cl = tuple(sorted({int(j) for j in self.cross_layers}, reverse=True))
        object.__setattr__(self, "cross_layers", cl)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "fc_sizes", tuple(int(h) for h in self.fc_sizes))
        if self.kernels is not None:
            object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        if self.arch not in ("mcnn", "siamese"):
            raise ValueError(f"arch must be 'mcnn' or 'siamese', not {self.arch!r}")
        if len(self.channels) != N_LAYERS:
            raise ValueError(f"channels needs {N_LAYERS} entries (conv1..conv5), got {self.channels}")
        if self.kernels is not None and (
            len(self.kernels) != N_LAYERS or any(k < 1 or k % 2 == 0 for k in self.kernels)
        ):
            raise ValueError(f"kernels needs {N_LAYERS} odd sizes (conv1..conv5), got {self.kernels}")
        if any(j not in range(1, N_LAYERS + 1) for j in cl):
            raise ValueError(f"cross_layers must be a subset of 1..5, got {self.cross_layers}")
        if cl and cl != tuple(range(N_LAYERS, N_LAYERS - len(cl), -1)):
            raise ValueError(
                f"cross_layers {cl} must be 5, 4, ... down to some layer without gaps (e.g. (5, 4, 3)): "
                "the fusion reads the cross conv5 maps and a gap would leave cross maps that nothing reads"
            )
        if self.arch == "siamese" and cl:
            raise ValueError("the Siamese baseline has no cross filters (cross_layers=())")
        if self.input_size < 2**N_LAYERS // 2:
            raise ValueError(f"input_size {self.input_size} too small for 5 stride-2 convs")
        if self.width <= 0 or not self.fc_sizes:
            raise ValueError("width must be > 0 and fc_sizes not empty")

    # -- derived sizes ------------------------------------------------------------------------------
    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        """Resolved conv1..conv5 kernel sizes."""
        return self.kernels if self.kernels is not None else scaled_kernels(self.input_size)

    @property
    def paddings(self) -> tuple[int, ...]:
        """(k−1)/2 for every conv: output side = ceil(input side / stride) for stride 2."""
        return tuple((k - 1) // 2 for k in self.kernel_sizes)

    @property
    def map_sizes(self) -> tuple[int, ...]:
        """Side of the input and of the conv1..conv5 maps (227: 227, 114, 57, 29, 15, 8)."""
        sizes = [self.input_size]
        for k, p in zip(self.kernel_sizes, self.paddings, strict=True):
            sizes.append((sizes[-1] + 2 * p - k) // self.stride + 1)
        return tuple(sizes)

    def has_cross(self, j: int) -> bool:
        """Whether conv layer j (1..5) has cross-image filters."""
        return j in self.cross_layers

    @property
    def single_channels(self) -> tuple[int, ...]:
        """Maps of each single path at conv1..conv5 (after width and the cross split rule)."""
        out = []
        for j, c in enumerate(self.channels, start=1):
            cw = _scale_even(c, self.width)
            out.append(cw if self.has_cross(j) else cw * 3 // 2)
        return tuple(out)

    @property
    def cross_channels(self) -> tuple[int, ...]:
        """Maps of the cross path at conv1..conv5 (0 where the layer has no cross filters)."""
        return tuple(
            _scale_even(c, self.width) if self.has_cross(j) else 0
            for j, c in enumerate(self.channels, start=1)
        )

    @property
    def fc_widths(self) -> tuple[int, ...]:
        """Hidden fc sizes after width scaling."""
        return tuple(max(8, int(round(h * self.width))) for h in self.fc_sizes)

    def cross_inputs(self, j: int) -> tuple[int, int, int]:
        """(P, Q, T) of Eq. (2) for layer j: input channels from x^I_{j-1}, x^R_{j-1}, x^C_{j-1}."""
        prev = 3 if j == 1 else self.single_channels[j - 2]
        t = self.cross_channels[j - 2] if j > 1 and self.has_cross(j - 1) else 0
        return prev, prev, t

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints / run.json); ``MCNNConfig(**d)`` rebuilds it."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "wo-cross": {"cross_layers": ()},
    "cross5": {"cross_layers": (5,)},
    "cross54": {"cross_layers": (5, 4)},
    "cross543": {"cross_layers": (5, 4, 3)},
    "mcnn": {"cross_layers": (5, 4, 3, 2)},
    "cross54321": {"cross_layers": (5, 4, 3, 2, 1)},
    "siamese": {"cross_layers": (), "arch": "siamese", "shared_paths": True},
    # the trunk family (qparse_lite.model.trunk: the same rows on the frozen ImageNet trunk; issue 30)
    "trunk-wo-cross": {"family": "trunk", "cross_layers": ()},
    "trunk-cross5": {"family": "trunk", "cross_layers": (5,)},
    "trunk-cross54": {"family": "trunk", "cross_layers": (5, 4)},
    "trunk-cross543": {"family": "trunk", "cross_layers": (5, 4, 3)},
    "trunk-mcnn": {"family": "trunk", "cross_layers": (5, 4, 3, 2)},
    "trunk-siamese": {"family": "trunk", "cross_layers": (), "arch": "siamese"},
}
"""Every network variant: key → its family (``"family"``: ``"trunk"``, else the from-scratch M-CNN of the
paper) and the config fields that define it (:class:`MCNNConfig`, or
:class:`~qparse_lite.model.trunk.TrunkConfig` for the trunk family)."""

TABLE1_VARIANTS: tuple[str, ...] = tuple(k for k, v in VARIANTS.items() if v.get("family", "scratch") == "scratch")
"""The paper's Table 1 networks as published (the from-scratch family), in table order."""

TRUNK_VARIANTS: tuple[str, ...] = tuple(k for k, v in VARIANTS.items() if v.get("family") == "trunk")
"""The same rows on the frozen ImageNet trunk: w/o cross, cross at 1, 2, 3 and 4 levels, Siamese."""


def variant_family(name: str) -> str:
    """``"trunk"`` or ``"scratch"`` for a variant key or paper name."""
    return str(VARIANTS[resolve_variant(name)].get("family", "scratch"))

PAPER_NAMES: dict[str, str] = {
    "wo-cross": "M-CNN (w/o cross)",
    "cross5": "M-CNN (cross 5)",
    "cross54": "M-CNN (cross 5,4)",
    "cross543": "M-CNN (cross 5,4,3)",
    "mcnn": "M-CNN",
    "cross54321": "M-CNN (cross 5,4,3,2,1)",
    "siamese": "Siamese [2]",
}
"""Variant key → the method name in ``table1_reported.csv`` / ``table2_reported.csv``.
("M-CNN (w/o ss)" is the ``mcnn`` network without superpixel smoothing: a post-processing variant.)"""

TRUNK_PAPER_NAMES: dict[str, str] = {v: PAPER_NAMES[v.removeprefix("trunk-")] for v in TRUNK_VARIANTS}
"""Trunk variant key → the paper's row it stands for: the row of its from-scratch counterpart (the same cross
layers on the frozen ImageNet trunk: ``trunk-mcnn`` → "M-CNN", ``trunk-siamese`` → "Siamese [2]")."""

TRUNK_SUFFIX = ", ImageNet trunk"
"""What a trunk variant's row name adds to its paper row (``trunk-cross54`` → "M-CNN (cross 5,4), ImageNet trunk")."""


def paper_row(variant: str) -> str:
    """The paper's Table 1 row a variant key of either family stands for (:data:`PAPER_NAMES`,
    :data:`TRUNK_PAPER_NAMES`); "" for a key of neither."""
    return PAPER_NAMES.get(variant) or TRUNK_PAPER_NAMES.get(variant, "")


def method_name(variant: str) -> str:
    """The row name of a variant key in the kit's tables: the paper's name for the from-scratch family, the
    same name plus :data:`TRUNK_SUFFIX` for the trunk family; ``"M-CNN <key>"`` for a key of neither."""
    if variant in TRUNK_PAPER_NAMES:
        return TRUNK_PAPER_NAMES[variant] + TRUNK_SUFFIX
    return PAPER_NAMES.get(variant, f"M-CNN {variant}")


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_]+", "", name).lower()


_ALIASES: dict[str, str] = {_norm_name(k): k for k in VARIANTS}
for _k, _v in PAPER_NAMES.items():
    _ALIASES[_norm_name(_k)] = _k
    _ALIASES[_norm_name(_v)] = _k
_ALIASES.update({_norm_name(a): k for a, k in [
    ("M-CNN (w/o ss)", "mcnn"), ("M-CNN (cross 5,4,3,2)", "mcnn"), ("cross5432", "mcnn"),
    ("w/o cross", "wo-cross"), ("wocross", "wo-cross"), ("Siamese", "siamese"),
]})  # fmt: skip


def resolve_variant(name: str) -> str:
    """Variant key for a key or a paper name (``"M-CNN (cross 5,4)"`` → ``"cross54"``; spacing-blind)."""
    key = _ALIASES.get(_norm_name(name))
    if key is None:
        raise ValueError(f"unknown M-CNN variant {name!r}; choose one of {', '.join(VARIANTS)} "
                         f"or a paper name ({', '.join(PAPER_NAMES.values())})")  # fmt: skip
    return key


def build_model(
    variant: str = "mcnn", input_size: int = BASE_INPUT, width: float = 1.0, **cfg: Any
) -> nn.Module:
    """One variant of either family: ``build_model("cross54", input_size=64, width=0.25)``;
    ``build_model("trunk-cross54", input_size=224)`` (``input_size``: the trunk's input side F there).

    ``variant`` is a key of :data:`VARIANTS` or a paper name from :data:`PAPER_NAMES`; any other
    :class:`MCNNConfig` field can be overridden by keyword (``shared_paths=True``, ``kernels=...``).
    """
    key = resolve_variant(variant)
    fields = {**VARIANTS[key], "input_size": input_size, "width": width, **cfg}
    model = model_from_config(fields)
    model.variant = key  # type: ignore[assignment]
    return model


def model_from_config(config: MCNNConfig | dict[str, Any]) -> nn.Module:
    """Rebuild a model from its config (or ``config.to_dict()``), e.g. when loading a checkpoint; a config of
    the trunk family (``family="trunk"``) gives its :mod:`~qparse_lite.model.trunk` model."""
    if isinstance(config, TrunkConfig) or (isinstance(config, dict) and config.get("family") == "trunk"):
        return trunk_model(config)
    if isinstance(config, dict):
        config = MCNNConfig(**{k: v for k, v in config.items() if k != "family"})
    return Siamese(config) if config.arch == "siamese" else MCNN(config)


# ---------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------


@dataclass
class TestCache:
    """What :meth:`MCNN.encode_test` keeps of N test images for :meth:`MCNN.forward_cached`.

    Attributes:
        x5: conv5 maps of the test images' single path, N×C×h×w (Siamese: branch fc outputs, N×D).
        cross: layer j → ``b_j + Σ_p f^I_{j,p} * x^I_{j-1,p}`` (the I-term of Eq. 2, bias included), N×C×h×w.
    """

    x5: Tensor
    cross: dict[int, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x5.shape[0]


def _init_weights(module: nn.Module, out_layer: nn.Linear) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    nn.init.normal_(out_layer.weight, std=0.01)
    nn.init.zeros_(out_layer.bias)


def _conv_stack(cfg: MCNNConfig, channels: Sequence[int]) -> nn.ModuleList:
    convs, prev = nn.ModuleList(), 3
    for c, k, p in zip(channels, cfg.kernel_sizes, cfg.paddings, strict=True):
        convs.append(nn.Conv2d(prev, c, k, stride=cfg.stride, padding=p))
        prev = c
    return convs


def _run_stack(convs: nn.ModuleList, x: Tensor) -> list[Tensor]:
    """[x_0 = x, x_1, ..., x_5]: the input and every conv+ReLU map of one single path."""
    xs = [x]
    for conv in convs:
        x = F.relu(conv(x))
        xs.append(x)
    return xs


def _mlp(sizes: Sequence[int], dropout: float, last_relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_relu or i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=False))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MCNN(nn.Module):
    """The M-CNN (and its cross-layer ablations): ``model(I, R) -> (B, 5)`` = (c, t1..t4).

    ``I``, ``R``: B×3×S×S float tensors (mean-subtracted images; any memory format). Modules:
    ``conv_I`` / ``conv_R`` (conv1..conv5 of the single paths; ``conv_R is conv_I`` when
    ``shared_paths``), ``conv_C`` (the cross filters of Eq. 2, keyed ``"1"``..``"5"``), ``fc`` (hidden
    fully connected layers) and ``out`` (the 5 linear outputs). Works in channels_last and under bf16
    autocast; every branch of ``forward`` is decided by the config, so ``torch.compile(fullgraph=True)``
    traces it as one graph.
    """

    def __init__(self, cfg: MCNNConfig) -> None:
        super().__init__()
        if cfg.arch != "mcnn":
            raise ValueError("MCNN needs arch='mcnn'; use Siamese for the baseline")
        self.cfg = cfg
        self.conv_I = _conv_stack(cfg, cfg.single_channels)
        self.conv_R = self.conv_I if cfg.shared_paths else _conv_stack(cfg, cfg.single_channels)
        self.conv_C = nn.ModuleDict()
        for j in cfg.cross_layers:
            p, q, t = cfg.cross_inputs(j)
            k, pad = cfg.kernel_sizes[j - 1], cfg.paddings[j - 1]
            self.conv_C[str(j)] = nn.Conv2d(p + q + t, cfg.cross_channels[j - 1], k, cfg.stride, pad)
        s5 = cfg.map_sizes[-1]
        self.fusion_channels = cfg.single_channels[-1] + cfg.cross_channels[-1]
        self.fusion_dim = self.fusion_channels * s5 * s5
        widths = cfg.fc_widths
        self.fc = _mlp((self.fusion_dim, *widths), cfg.dropout)
        self.out = nn.Linear(widths[-1], cfg.n_outputs)
        _init_weights(self, self.out)

    # -- the three paths ---------------------------------------------------------------------------
    def single_paths(self, I: Tensor, R: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """x^I_0..x^I_5 and x^R_0..x^R_5 (index 0 = the image). Shared weights: one batched call."""
        if self.cfg.shared_paths:
            b = I.shape[0]
            xs = _run_stack(self.conv_I, torch.cat([I, R], dim=0))
            return [x[:b] for x in xs], [x[b:] for x in xs]
        return _run_stack(self.conv_I, I), _run_stack(self.conv_R, R)

    def cross_path(self, xI: Sequence[Tensor], xR: Sequence[Tensor]) -> dict[int, Tensor]:
        """Eq. (2) for every cross layer j (ascending): {j: x^C_j}."""
        xC: dict[int, Tensor] = {}
        for j in sorted(self.cfg.cross_layers):
            inputs = [xI[j - 1], xR[j - 1]]
            if j - 1 in xC:  # static: decided by the config, not by data
                inputs.append(xC[j - 1])
            xC[j] = F.relu(self.conv_C[str(j)](torch.cat(inputs, dim=1)))
        return xC

    def features(self, I: Tensor, R: Tensor) -> dict[tuple[str, int], Tensor]:
        """Every map, keyed (path, layer): ("I", j), ("R", j) for j = 0..5 and ("C", j) for cross layers."""
        xI, xR = self.single_paths(I, R)
        xC = self.cross_path(xI, xR)
        feats = {("I", j): x for j, x in enumerate(xI)}
        feats.update({("R", j): x for j, x in enumerate(xR)})
        feats.update({("C", j): x for j, x in xC.items()})
        return feats

    def head(self, x5_I: Tensor, x5_R: Tensor, x5_C: Tensor | None) -> Tensor:
        """Fusion: [|conv5(I) − conv5(R)|, cross conv5] → flatten → fc → 5 outputs."""
        fused = (x5_I - x5_R).abs()
        if x5_C is not None:
            fused = torch.cat([fused, x5_C], dim=1)
        return self.out(self.fc(torch.flatten(fused, 1)))

    def forward(self, I: Tensor, R: Tensor, group: Tensor | None = None) -> Tensor:
        """(B, 5) = (c, t1..t4) for the pairs (I[b], R[b]); with ``group`` (B long), for the pairs
        (I[group[b]], R[b]): the test path and the I-term of Eq. (2) run once per row of I (gradients flow
        through them to every pair of the group) — :meth:`encode_test` + :meth:`forward_cached`."""
        if group is not None:
            return self.forward_cached(self.encode_test(I), R, group)
        xI, xR = self.single_paths(I, R)
        xC = self.cross_path(xI, xR)
        return self.head(xI[-1], xR[-1], xC.get(N_LAYERS))

    # -- test-time sharing -------------------------------------------------------------------------
    def encode_test(self, I: Tensor) -> TestCache:
        """Run N test images' single path once: conv5(I) and, for each cross layer j, the I-term of Eq. 2
        ``b_j + Σ_p f^I_{j,p} * x^I_{j-1,p}``. Reuse with :meth:`forward_cached` for all K×L pairs."""
        xI = _run_stack(self.conv_I, I)
        cross = {}
        for j in self.cfg.cross_layers:
            conv = self.conv_C[str(j)]
            p = self.cfg.cross_inputs(j)[0]
            cross[j] = F.conv2d(xI[j - 1], conv.weight[:, :p], conv.bias, conv.stride, conv.padding)
        return TestCache(x5=xI[-1], cross=cross)

    def forward_cached(self, cache: TestCache, R: Tensor, index: Tensor) -> Tensor:
        """(B, 5) for the pairs (test image ``index[b]`` of ``cache``, ``R[b]``); equals ``forward``."""
        xR = _run_stack(self.conv_R, R)
        xC: dict[int, Tensor] = {}
        for j in sorted(self.cfg.cross_layers):
            conv = self.conv_C[str(j)]
            p, q, t = self.cfg.cross_inputs(j)
            z = cache.cross[j].index_select(0, index)
            # the R- and C-terms of Eq. (2) as one convolution over [x^R_{j-1}, x^C_{j-1}]
            x = torch.cat([xR[j - 1], xC[j - 1]], dim=1) if t else xR[j - 1]
            xC[j] = F.relu(z + F.conv2d(x, conv.weight[:, p:], None, conv.stride, conv.padding))
        return self.head(cache.x5.index_select(0, index), xR[-1], xC.get(N_LAYERS))


class Siamese(nn.Module):
    """The Siamese [2] baseline: two identical sub-networks (shared weights) conv1..conv5 → fc
    (the last fc linear), ``|f(I) − f(R)|`` of their fully connected responses → 5 outputs.

    Conv sizes are the M-CNN's without cross filters (48, 45, 96, 96, 96 at width 1.0), the branch fc
    the M-CNN's ``fc_sizes``, so it differs from "M-CNN (w/o cross)" only in where the difference is
    taken (fc responses vs conv5 maps) — the comparison the paper draws in Sec. 4.2.
    """

    def __init__(self, cfg: MCNNConfig) -> None:
        super().__init__()
        if cfg.arch != "siamese":
            raise ValueError("Siamese needs arch='siamese'")
        self.cfg = cfg
        self.conv_I = _conv_stack(cfg, cfg.single_channels)
        self.conv_R = self.conv_I
        s5 = cfg.map_sizes[-1]
        widths = cfg.fc_widths
        self.fusion_dim = cfg.single_channels[-1] * s5 * s5
        self.branch_fc = _mlp((self.fusion_dim, *widths), cfg.dropout, last_relu=False)
        self.out = nn.Linear(widths[-1], cfg.n_outputs)
        _init_weights(self, self.out)

    def embed(self, x: Tensor) -> Tensor:
        """One sub-network: conv1..conv5 → flatten → fc (linear responses)."""
        return self.branch_fc(torch.flatten(_run_stack(self.conv_I, x)[-1], 1))

    def features(self, I: Tensor, R: Tensor) -> dict[tuple[str, int], Tensor]:
        """Every conv map, keyed ("I", j) / ("R", j), j = 0..5 (no cross path)."""
        b = I.shape[0]
        xs = _run_stack(self.conv_I, torch.cat([I, R], dim=0))
        feats = {("I", j): x[:b] for j, x in enumerate(xs)}
        feats.update({("R", j): x[b:] for j, x in enumerate(xs)})
        return feats

    def forward(self, I: Tensor, R: Tensor, group: Tensor | None = None) -> Tensor:
        """(B, 5) = (c, t1..t4); I and R go through the shared sub-network as one batch. With ``group``: the
        pairs (I[group[b]], R[b]), each row of I embedded once."""
        if group is not None:
            return self.forward_cached(self.encode_test(I), R, group)
        b = I.shape[0]
        e = self.embed(torch.cat([I, R], dim=0))
        return self.out((e[:b] - e[b:]).abs())

    def encode_test(self, I: Tensor) -> TestCache:
        """The test images' fc responses, computed once."""
        return TestCache(x5=self.embed(I))

    def forward_cached(self, cache: TestCache, R: Tensor, index: Tensor) -> Tensor:
        """(B, 5) for (test image ``index[b]``, ``R[b]``); equals ``forward``."""
        return self.out((cache.x5.index_select(0, index) - self.embed(R)).abs())
