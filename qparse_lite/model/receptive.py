"""Receptive fields of the M-CNN: theoretical (per layer and path) and effective (gradient-based).

Why it matters (paper Sec. 4.2): the cross-image filters of layer j can only match a region of I with a
region of R that both fall inside the receptive field of a layer-j unit, so layer j handles displacements
up to about its receptive field: "near-range" at conv2, "far-range" at conv5 (Fig. 3). Adding cross filters
at conv1 hurts (Table 1, 62.81 → 61.53 F1) because conv1's receptive field (11 px of 227) covers only a
part of a semantic region.

Theoretical receptive field of a chain of convolutions (kernel k_j, stride s_j, padding p_j)::

    jump_j  = jump_{j-1} · s_j                                  (input pixels between neighbouring units)
    r_j     = r_{j-1} + (k_j − 1) · jump_{j-1}                  (side of the receptive field)
    start_j = start_{j-1} + ((k_j − 1)/2 − p_j) · jump_{j-1}    (centre of unit 0, in input pixels)

with jump_0 = 1, r_0 = 1, start_0 = 0 (pixel i has its centre at coordinate i). Unit i of layer j is centred
on input pixel start_j + i·jump_j and sees the r_j × r_j square around it (zero padding beyond the border).
The kit's M-CNN uses p_j = (k_j − 1)/2, so start_j = 0 at every layer.

The single paths I and R have the same receptive fields (on their own image); a cross map x^C_j of Eq. (2)
at layer j sees **both** images through a square of side r_j each (its filters read x^I_{j-1}, x^R_{j-1}
and x^C_{j-1}, whose receptive fields are all r_{j-1}).

The trunk family (:mod:`qparse_lite.model.trunk`) reads the frozen EfficientNet-Lite0 at strides 4, 8, 16, 32
(levels 2..5): the receptive field of level ℓ is that of the trunk's last block at that stride, by the same
arithmetic over its chain of convolutions (:func:`trunk_conv_chain`: stem, every block's expand, depthwise
and project convolutions, the head; the identity skips add nothing wider). Its "same" padding is static and
asymmetric (TensorFlow's: the extra pixel after), so ``start`` is > 0: p_j above is the padding *before*. A
cross map of level ℓ adds one 3×3 at the level's stride, r_ℓ + 2·2^ℓ (its stride-2 input from level ℓ − 1
sees r_{ℓ−1} + 2·2^ℓ ≤ that). On the region's side the model reads the neighbour's maps averaged over l's
pixels (:class:`~qparse_lite.model.trunk.RegionMaps`): the R rows give the field of the maps it averages.

The effective receptive field (Luo et al., NIPS 2016, "Understanding the effective receptive field in deep
convolutional neural networks") is the input-gradient magnitude of one unit: it is non-zero only inside the
theoretical field and concentrates near its centre.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "rf_arithmetic",
    "trunk_conv_chain",
    "trunk_receptive_fields",
    "receptive_fields",
    "centre_unit",
    "unit_box",
    "effective_receptive_field",
    "draw_receptive_fields",
]


def rf_arithmetic(
    kernels: Sequence[int],
    strides: Sequence[int],
    paddings: Sequence[int | tuple[int, int]],
    input_size: int | None = None,
) -> list[dict[str, Any]]:
    """Receptive field of every layer of a plain chain of convolutions (module docstring formulas).

    ``paddings``: per layer, p on both sides, or ``(before, after)`` for asymmetric ("same", TensorFlow-style)
    padding. Returns one dict per layer 1..n with ``kernel, stride, padding`` (the padding before), ``jump, rf,
    start`` and, when ``input_size`` is given, ``size`` (the map side, floor((S + before + after − k)/s) + 1).
    """
    if not (len(kernels) == len(strides) == len(paddings)):
        raise ValueError("kernels, strides and paddings need the same length")
    jump, rf, start, size = 1, 1, 0.0, input_size
    out = []
    for k, s, p in zip(kernels, strides, paddings, strict=True):
        before, after = (p, p) if isinstance(p, int) else p
        rf = rf + (k - 1) * jump
        start = start + ((k - 1) / 2 - before) * jump
        jump = jump * s
        row: dict[str, Any] = dict(kernel=k, stride=s, padding=before, jump=jump, rf=rf, start=start)
        if size is not None:
            size = (size + before + after - k) // s + 1
            row["size"] = size
        out.append(row)
    return out


def _conv_geometry(conv: torch.nn.Conv2d) -> tuple[int, int, tuple[int, int]]:
    """(kernel, stride, (padding before, after)) of a square convolution, its static "same" padding included."""
    pad = getattr(conv, "static_padding", None)
    extra = tuple(pad.padding[:2]) if isinstance(pad, torch.nn.ZeroPad2d) else (0, 0)  # (left, right)
    own = int(conv.padding[0]) if isinstance(conv.padding, tuple) else 0
    return int(conv.kernel_size[0]), int(conv.stride[0]), (own + int(extra[0]), own + int(extra[1]))


def trunk_conv_chain(net: Any = None) -> list[dict[str, Any]]:
    """The frozen trunk's convolutions in forward order → one dict per convolution: ``name``, ``kernel``,
    ``stride``, ``padding`` ((before, after), the static "same" padding) and ``level``: ℓ on the last
    convolution of the last block at stride 2^ℓ for ℓ = 2..4 and on the head convolution for ℓ = 5 (the maps
    :func:`~qparse_lite.model.trunk.trunk_pyramid` reads), else None.

    ``net``: an ``efficientnet_lite_pytorch.EfficientNet``; default :func:`qparse_lite.backbones.efficientnet_lite0`
    (loaded once per process). Every block is expand (1×1, absent at expansion 1) → depthwise → project (1×1),
    with an identity skip that adds no wider field, so this chain gives each level's receptive field exactly.
    """
    if net is None:
        return [dict(row) for row in _default_trunk_chain()]
    from qparse_lite.model.trunk import LEVELS

    def rows(prefix: str, module: torch.nn.Module) -> list[dict[str, Any]]:
        convs = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]
        return [dict(zip(("kernel", "stride", "padding"), _conv_geometry(m), strict=True),
                     name=f"{prefix}{'.' + n if n else ''}", level=None) for n, m in convs]  # fmt: skip

    chain = rows("_conv_stem", net._conv_stem)
    last: dict[int, int] = {}  # level → index of the last convolution of its last block
    for b, block in enumerate(net._blocks):
        chain += rows(f"_blocks.{b}", block)
        jump = math.prod(int(r["stride"]) for r in chain)
        last[round(math.log2(jump))] = len(chain) - 1  # later blocks of a stride overwrite earlier ones
    chain += rows("_conv_head", net._conv_head)
    for lvl in LEVELS[:-1]:
        chain[last[lvl]]["level"] = lvl
    chain[-1]["level"] = LEVELS[-1]
    return chain


@functools.lru_cache(maxsize=1)
def _default_trunk_chain() -> tuple[dict[str, Any], ...]:
    from qparse_lite.backbones import efficientnet_lite0

    return tuple(trunk_conv_chain(efficientnet_lite0()))


def trunk_receptive_fields(input_size: int = 224, net: Any = None) -> dict[int, dict[str, Any]]:
    """Level ℓ = 2..5 → the :func:`rf_arithmetic` row (``jump, rf, start, size``, ...) of the trunk's map at
    stride 2^ℓ, over :func:`trunk_conv_chain` for an ``input_size`` × ``input_size`` input."""
    chain = trunk_conv_chain(net)
    rf = rf_arithmetic([c["kernel"] for c in chain], [c["stride"] for c in chain], [c["padding"] for c in chain],
                       input_size=input_size)  # fmt: skip
    return {c["level"]: r for c, r in zip(chain, rf, strict=True) if c["level"] is not None}


def _cfg_of(model_or_cfg: Any):
    return getattr(model_or_cfg, "cfg", model_or_cfg)


def centre_unit(start: float, jump: int, size: int, input_size: int) -> int:
    """Index of the unit whose centre is nearest the image centre ((S − 1)/2), within 0..size−1."""
    i = math.floor(((input_size - 1) / 2 - start) / jump + 0.5)
    return min(max(i, 0), size - 1)


def unit_box(
    start: float, jump: int, rf: int, i: int, k: int | None = None
) -> tuple[float, float, float, float]:
    """Input-pixel box (y0, y1, x0, x1), inclusive and unclipped, seen by unit (i, k) (k defaults to i)."""
    k = i if k is None else k
    h = (rf - 1) / 2
    cy, cx = start + i * jump, start + k * jump
    return cy - h, cy + h, cx - h, cx + h


def receptive_fields(model_or_cfg: Any, input_size: int | None = None):
    """Theoretical receptive field per layer and path of an M-CNN (or Siamese) → pandas DataFrame.

    Rows: ``input`` then conv1..conv5 for paths ``I`` and ``R``, plus ``C`` (cross) in cross layers.
    Columns: ``layer, j, path, sees, kernel, stride, padding, jump, rf, start, size, rf_frac`` (rf / S),
    ``centre_unit`` (the unit nearest the image centre) and ``centre_px`` (its centre in input pixels).
    ``model_or_cfg``: a model with ``.cfg`` or an :class:`~qparse_lite.model.mcnn.MCNNConfig`; a trunk model
    or :class:`~qparse_lite.model.trunk.TrunkConfig` gives rows ``level2..level5`` (``j`` = ℓ): the frozen trunk's
    field for ``I`` and ``R`` (:func:`trunk_receptive_fields`, no kernel of their own) and, at its cross levels,
    ``C`` = one more 3×3 at the level's stride.
    """
    cfg = _cfg_of(model_or_cfg)
    S = cfg.input_size if input_size is None else input_size
    if getattr(cfg, "family", "scratch") == "trunk":
        rows = []
        for j, r in trunk_receptive_fields(S).items():
            trunk_row = {**r, "kernel": None, "stride": None, "padding": None}  # no kernel of its own
            rows += [dict(layer=f"level{j}", j=j, path=p, sees=p, **trunk_row) for p in ("I", "R")]
            if j in cfg.cross_layers:  # one 3×3 (padding 1) at the level's stride on top
                cross = {**r, "kernel": 3, "stride": 1, "padding": 1, "rf": r["rf"] + 2 * r["jump"]}
                rows.append(dict(layer=f"level{j}", j=j, path="C", sees="I+R", **cross))
        return _rf_table(rows, S)
    if input_size is not None and input_size != cfg.input_size and cfg.kernels is None:
        # the config's own kernel rule at the other size (no import of .mcnn: mcnn imports this module)
        kernels = dataclasses.replace(cfg, input_size=input_size).kernel_sizes
    else:
        kernels = cfg.kernel_sizes
    paddings = tuple((k - 1) // 2 for k in kernels)
    chain = rf_arithmetic(kernels, [cfg.stride] * len(kernels), paddings, input_size=S)
    cross = set(cfg.cross_layers)
    rows = []
    for j, r in enumerate(chain, start=1):
        for path in ("I", "R", "C"):
            if path == "C" and j not in cross:
                continue
            rows.append(dict(layer=f"conv{j}", j=j, path=path, sees="I+R" if path == "C" else path, **r))
    return _rf_table(rows, S)


def _rf_table(rows: list[dict[str, Any]], S: int):
    """The rows of :func:`receptive_fields` (``input`` rows first) → its DataFrame, with the derived columns."""
    import pandas as pd

    rows = [dict(layer="input", j=0, path=path, sees=path, kernel=None, stride=None, padding=None, jump=1, rf=1,
                 start=0.0, size=S) for path in ("I", "R")] + rows  # fmt: skip
    df = pd.DataFrame(rows)
    df["rf_frac"] = df["rf"] / S
    df["centre_unit"] = [
        centre_unit(s, jp, n, S) for s, jp, n in zip(df.start, df.jump, df["size"], strict=True)
    ]
    df["centre_px"] = df.start + df.centre_unit * df.jump
    for col in ("kernel", "stride", "padding"):
        df[col] = df[col].astype("Int64")
    return df


def effective_receptive_field(
    model: torch.nn.Module,
    input_size: int | None = None,
    layer: int = 5,
    path: str = "I",
    n: int = 8,
    wrt: str | None = None,
    seed: int = 0,
    unit: tuple[int, int] | None = None,
) -> np.ndarray:
    """Gradient-based effective receptive field (Luo et al. 2016) of one unit → H×W float array.

    Feeds ``n`` random N(0, 1) pairs (I, R), back-propagates d(Σ_channels x^{path}_{layer}[u, v]) — the
    unit ``unit`` (default: the one nearest the image centre) summed over its channels — to the input
    ``wrt`` (``"I"`` or ``"R"``; default the path's own image, ``"I"`` for the cross path ``"C"``;
    ``"both"`` returns a 2×H×W array), and averages |gradient| over the samples, summed over RGB.
    Uses the model's current weights (random at initialisation); the model's parameters are not touched.
    """
    cfg = model.cfg
    S = cfg.input_size if input_size is None else input_size
    if S != cfg.input_size:
        raise ValueError(f"model was built for input_size {cfg.input_size}, not {S}")
    if path not in ("I", "R", "C"):
        raise ValueError(f"path must be 'I', 'R' or 'C', not {path!r}")
    if path == "C" and layer not in cfg.cross_layers:
        raise ValueError(f"layer {layer} has no cross filters here (cross_layers={cfg.cross_layers})")
    wrt = wrt or ("R" if path == "R" else "I")
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    I = torch.randn(n, 3, S, S, generator=gen).to(param.device, param.dtype).requires_grad_(True)
    R = torch.randn(n, 3, S, S, generator=gen).to(param.device, param.dtype).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = model.features(I, R)[(path, layer)]
            if unit is None:
                table = receptive_fields(model)
                row = table[(table.j == layer) & (table.path == path)].iloc[0]
                unit = (int(row.centre_unit), int(row.centre_unit))
            gI, gR = torch.autograd.grad(x[:, :, unit[0], unit[1]].sum(), [I, R], allow_unused=True)
    finally:
        model.train(was_training)

    def erf(g: torch.Tensor | None) -> np.ndarray:
        if g is None:
            return np.zeros((S, S), dtype=np.float32)
        return g.abs().mean(0).sum(0).float().cpu().numpy()

    if wrt == "both":
        return np.stack([erf(gI), erf(gR)])
    if wrt not in ("I", "R"):
        raise ValueError(f"wrt must be 'I', 'R' or 'both', not {wrt!r}")
    return erf(gI if wrt == "I" else gR)


def draw_receptive_fields(
    image: Any, table: Any, ax: Any = None, path: str = "I", layers: Sequence[int] | None = None
):
    """Draw the receptive field of each layer's centre unit as a square on ``image`` → the Axes.

    ``image``: H×W×3 (uint8 or float) or H×W; ``table``: :func:`receptive_fields`; ``path``: which rows to
    draw (``"C"`` draws only the cross layers); ``layers``: subset of 1..5. Squares larger than the image
    run past its border (the axes stay on the image), each labelled with its side in pixels.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    img = np.asarray(image)
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
    h, w = img.shape[:2]
    rows = table[(table.path == path) & (table.j > 0)]
    if layers is not None:
        rows = rows[rows.j.isin(list(layers))]
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(len(rows), 1)))
    for colour, (_, r) in zip(colours, rows.iterrows(), strict=False):
        c = float(r.centre_px)
        half = (r.rf - 1) / 2 + 0.5  # pixel edges
        ax.add_patch(Rectangle((c - half, c - half), 2 * half, 2 * half, fill=False, lw=1.8, ec=colour,
                               label=f"{r.layer}: {int(r.rf)} px ({r.rf_frac:.0%})"))  # fmt: skip
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.legend(loc="lower left", fontsize="x-small", framealpha=0.8)
    ax.set_title(f"theoretical receptive fields, path {path}")
    return ax
