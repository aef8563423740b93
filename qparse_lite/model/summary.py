"""The M-CNN at a glance: parameter counts, a per-layer table (shapes, MACs), the multiply-adds per pair and
per test image of either family (:func:`macs_split`, :func:`summary_table`) and receptive fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from qparse_lite.model.mcnn import MCNN, N_LAYERS, MCNNConfig
from qparse_lite.model.trunk import trunk_macs

# ---------------------------------------------------------------------------------------------------
# inspection
# ---------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared weights are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(model: nn.Module, input_size: int | None = None):
    """Per layer and path: output shape, channels, kernel, stride, params, multiply-adds per pair.

    Returns a pandas DataFrame with columns ``layer, path, in_channels, out_channels, kernel, stride,
    padding, output_shape, params, macs, shared_with``. Paths: ``I``, ``R``, ``C`` (cross), ``fusion``,
    ``fc``. Shared weights (``shared_paths``, Siamese) are counted on the ``I`` row only.
    """
    import pandas as pd

    cfg: MCNNConfig = model.cfg  # type: ignore[assignment]
    if _is_trunk(model):
        raise ValueError("describe() covers the from-scratch family; for a trunk model use macs_split(model) or "
                         "summary_table({name: model}) (the frozen trunk's maps are cached, not part of the model)")  # fmt: skip
    if input_size is not None and input_size != cfg.input_size:
        raise ValueError(
            f"model was built for input_size {cfg.input_size}, not {input_size} (its fc layers depend "
            "on it); build another with build_model(..., input_size=...)"
        )
    sizes = cfg.map_sizes
    rows: list[dict[str, Any]] = []

    def conv_row(layer: str, path: str, conv: nn.Conv2d, s: int, in_desc: Any, shared: str = "") -> None:
        n_params = 0 if shared else sum(p.numel() for p in conv.parameters())
        k = conv.kernel_size[0]
        rows.append(dict(
            layer=layer, path=path, in_channels=in_desc, out_channels=conv.out_channels, kernel=k,
            stride=conv.stride[0], padding=conv.padding[0], output_shape=(conv.out_channels, s, s),
            params=n_params, macs=s * s * conv.out_channels * conv.in_channels * k * k, shared_with=shared,
        ))  # fmt: skip

    shared = "I" if (cfg.shared_paths or cfg.arch == "siamese") else ""
    for j in range(1, N_LAYERS + 1):
        s = sizes[j]
        conv_row(f"conv{j}", "I", model.conv_I[j - 1], s, model.conv_I[j - 1].in_channels)
        conv_row(f"conv{j}", "R", model.conv_R[j - 1], s, model.conv_R[j - 1].in_channels, shared)
        if isinstance(model, MCNN) and cfg.has_cross(j):
            p, q, t = cfg.cross_inputs(j)
            conv_row(f"conv{j}", "C", model.conv_C[str(j)], s, f"{p}+{q}+{t}")

    def linear_rows(seq: nn.Module, path: str, start: int) -> int:
        i = start
        for m in seq.modules():
            if isinstance(m, nn.Linear):
                rows.append(dict(
                    layer=f"fc{i}", path=path, in_channels=m.in_features, out_channels=m.out_features,
                    kernel=None, stride=None, padding=None, output_shape=(m.out_features,),
                    params=sum(p.numel() for p in m.parameters()), macs=m.in_features * m.out_features,
                    shared_with="",
                ))  # fmt: skip
                i += 1
        return i

    s5 = sizes[-1]
    if isinstance(model, MCNN):
        c5 = cfg.single_channels[-1]
        desc = f"|I5−R5| {c5}" + (f" + C5 {cfg.cross_channels[-1]}" if cfg.cross_channels[-1] else "")
        rows.append(dict(layer="fusion", path="fusion", in_channels=desc, out_channels=model.fusion_channels,
                         kernel=None, stride=None, padding=None, output_shape=(model.fusion_channels, s5, s5),
                         params=0, macs=0, shared_with=""))  # fmt: skip
        nxt = linear_rows(model.fc, "fc", 6)
    else:
        nxt = linear_rows(model.branch_fc, "I", 6)
        for r in [r for r in rows if r["layer"].startswith("fc") and r["path"] == "I"]:
            rows.append({**r, "path": "R", "params": 0, "shared_with": "I"})
        d = model.branch_fc[-1].out_features if len(model.branch_fc) else model.fusion_dim
        rows.append(dict(layer="fusion", path="fusion", in_channels=f"|fc(I)−fc(R)| {d}", out_channels=d,
                         kernel=None, stride=None, padding=None, output_shape=(d,), params=0, macs=0,
                         shared_with=""))  # fmt: skip
    linear_rows(nn.Sequential(model.out), "out", nxt)
    df = pd.DataFrame(rows)
    for col in ("kernel", "stride", "padding"):
        df[col] = df[col].astype("Int64")
    return df


def _is_trunk(model: nn.Module) -> bool:
    return getattr(model.cfg, "family", "scratch") == "trunk"


def macs_split(model: nn.Module) -> dict[str, float]:
    """Forward multiply-adds of either family: ``per_pair`` and ``per_image`` (the work that depends on the
    test image I alone, computed once per image and shared by its K×L pairs), so B_I images × B_R regions
    cost B_I·B_R·per_pair + B_I·per_image and an unshared pair costs their sum.

    Trunk family: :func:`~qparse_lite.model.trunk.trunk_macs` (the frozen trunk's maps are cached: not counted).
    From-scratch family: the rows of :func:`describe`; per image = the ``I`` rows (the single path; the
    Siamese's branch fc too, which ``encode_test`` caches) plus, in every cross layer, the share P/(P+Q+T) of
    the cross convolution that reads x^I (Eq. (2)'s I-term, :meth:`~qparse_lite.model.mcnn.MCNN.encode_test`).
    """
    if _is_trunk(model):
        return trunk_macs(model)
    rows = describe(model)
    per_image = float(rows[rows.path == "I"].macs.sum())
    for j in getattr(model.cfg, "cross_layers", ()) if isinstance(model, MCNN) else ():
        p, q, t = model.cfg.cross_inputs(j)
        per_image += float(rows[(rows.layer == f"conv{j}") & (rows.path == "C")].macs.sum()) * p / (p + q + t)
    return {"per_pair": float(rows.macs.sum()) - per_image, "per_image": per_image}


def summary_table(models: Mapping[str, nn.Module]):
    """One row per named model of either family → pandas DataFrame with columns ``variant, family,
    input_size, cross_layers, params`` (:func:`count_parameters`), ``macs_per_pair, macs_per_image``
    (:func:`macs_split`) and ``macs_unshared`` (one pair with nothing shared: their sum)."""
    import pandas as pd

    rows = []
    for name, model in models.items():
        macs = macs_split(model)
        rows.append(dict(
            variant=name, family="trunk" if _is_trunk(model) else "scratch", input_size=model.cfg.input_size,
            cross_layers=",".join(map(str, model.cfg.cross_layers)) or "-", params=count_parameters(model),
            macs_per_pair=macs["per_pair"], macs_per_image=macs["per_image"],
            macs_unshared=macs["per_pair"] + macs["per_image"],
        ))  # fmt: skip
    return pd.DataFrame(rows)


def receptive_fields(model_or_cfg: nn.Module | MCNNConfig, input_size: int | None = None):
    """Theoretical receptive field per layer and path (see :func:`qparse_lite.model.receptive.receptive_fields`)."""
    from qparse_lite.model.receptive import receptive_fields as _rf

    return _rf(model_or_cfg, input_size=input_size)
