"""The M-CNN at a glance: parameter counts, a per-layer table (shapes, MACs) and receptive fields."""

from __future__ import annotations

from typing import Any

from torch import nn

from qparse_lite.model.mcnn import MCNN, N_LAYERS, MCNNConfig

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


def receptive_fields(model_or_cfg: nn.Module | MCNNConfig, input_size: int | None = None):
    """Theoretical receptive field per layer and path (see :func:`qparse_lite.model.receptive.receptive_fields`)."""
    from qparse_lite.model.receptive import receptive_fields as _rf

    return _rf(model_or_cfg, input_size=input_size)
