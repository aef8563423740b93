"""The trunk M-CNN family in the summary (parameters, MACs per pair and per image) and the receptive fields
(qparse_lite.model.summary, qparse_lite.model.receptive; issue 30)."""

from __future__ import annotations

import math

import pytest
import torch

from qparse_lite.backbones import efficientnet_lite0
from qparse_lite.model.mcnn import TABLE1_VARIANTS, TRUNK_VARIANTS, build_model
from qparse_lite.model.receptive import (
    receptive_fields,
    rf_arithmetic,
    trunk_conv_chain,
    trunk_receptive_fields,
    unit_box,
)
from qparse_lite.model.summary import describe, macs_split, summary_table
from qparse_lite.model.trunk import LEVELS, trunk_macs


@pytest.fixture(scope="module")
def trunk():
    return efficientnet_lite0()


def test_rf_arithmetic_asymmetric_same_padding_by_hand():
    # 8 px; 3×3 stride 2, TensorFlow "same": pad (0, 1) → 4 px, unit 0 sees pixels 0..2 (centre 1, rf 3);
    # again → 2 px, unit 0 sees layer-1 units 0..2 = pixels 0..6 (centre 3, rf 3 + 2·2 = 7, jump 4)
    rows = rf_arithmetic([3, 3], [2, 2], [(0, 1), (0, 1)], input_size=8)
    assert [(r["rf"], r["jump"], r["start"], r["size"], r["padding"]) for r in rows] == [
        (3, 2, 1.0, 4, 0), (7, 4, 3.0, 2, 0)]  # fmt: skip
    assert rf_arithmetic([3], [2], [1], input_size=8) == rf_arithmetic([3], [2], [(1, 1)], input_size=8)


def test_trunk_chain_and_level_fields_by_hand(trunk):
    chain = trunk_conv_chain(trunk)
    assert [c["level"] for c in chain if c["level"]] == list(LEVELS)
    assert chain[-1]["name"] == "_conv_head" and chain[0]["padding"] == (0, 1)  # same padding, pixel after
    rf = trunk_receptive_fields(224, trunk)
    # stem 3×3/2 → 3; block 0 3×3 → 7; block 1 3×3/2 → 11 (jump 4); block 2 3×3 → 11 + 2·4 = 19;
    # blocks 3, 4: 5×5/2, 5×5 → 19 + 4·4 = 35 (jump 8), 35 + 4·8 = 67
    assert [(rf[j]["rf"], rf[j]["jump"], rf[j]["size"]) for j in LEVELS] == [
        (19, 4, 56), (67, 8, 28), (339, 16, 14), (851, 32, 7)]  # fmt: skip
    assert [rf[j]["start"] for j in LEVELS] == [3.0, 7.0, 15.0, 31.0]  # the padding sits after: 2^ℓ − 1
    assert trunk_receptive_fields() == rf  # the default network is the same trunk


def _pyramid_with_grad(net, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The trunk's maps at levels 2..4 with gradients (trunk_pyramid runs under no_grad)."""
    out, h = {}, net._swish(net._bn0(net._conv_stem(x)))
    for block in net._blocks:
        h = block(h)
        out[round(math.log2(x.shape[-1] / h.shape[-1]))] = h  # later blocks of a stride overwrite
    return out


@pytest.mark.parametrize("unit", ["centre", "corner"])
def test_trunk_receptive_fields_match_the_gradient(trunk, unit):
    """Brute force: the input pixels with a non-zero gradient of one level-ℓ unit are exactly its box."""
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0), requires_grad=True)
    maps = _pyramid_with_grad(trunk, x)
    table = receptive_fields(build_model("trunk-mcnn", input_size=224))
    for level in (2, 3):
        r = table[(table.j == level) & (table.path == "I")].iloc[0]
        i, k = (int(r.centre_unit),) * 2 if unit == "centre" else (0, 1)
        (g,) = torch.autograd.grad(maps[level][:, :, i, k].sum(), x, retain_graph=True)
        ys, xs = g.abs().sum((0, 1)).nonzero().T
        y0, y1, x0, x1 = unit_box(r.start, int(r.jump), int(r.rf), i, k)
        got = (ys.min().item(), ys.max().item(), xs.min().item(), xs.max().item())
        assert got == (max(y0, 0), min(y1, 223), max(x0, 0), min(x1, 223)), (level, unit)


def test_trunk_table_rows_and_cross_filter_on_top():
    t = receptive_fields(build_model("trunk-cross54", input_size=224, num_labels=18))
    single = t[(t.path == "I") & (t.j > 0)].set_index("j")
    assert single.index.tolist() == list(LEVELS) and single.rf.tolist() == [19, 67, 339, 851]
    assert (t[t.path == "R"].rf.values == t[t.path == "I"].rf.values).all()
    cross = t[t.path == "C"].set_index("j")
    assert cross.index.tolist() == [4, 5] and (cross.sees == "I+R").all()
    assert cross.rf.to_dict() == {4: 339 + 2 * 16, 5: 851 + 2 * 32}  # one 3×3 at the level's stride
    assert (t[t.j > 0].centre_px == t[t.j > 0].start + t[t.j > 0].centre_unit * t[t.j > 0].jump).all()


def test_summary_table_lists_every_trunk_variant():
    models = {v: build_model(v, input_size=224, num_labels=18) for v in TRUNK_VARIANTS}
    models |= {v: build_model(v, input_size=64, width=0.25) for v in TABLE1_VARIANTS}
    table = summary_table(models).set_index("variant")
    assert table.index.tolist() == [*TRUNK_VARIANTS, *TABLE1_VARIANTS]
    for name, model in models.items():
        row = table.loc[name]
        assert row.params == sum(p.numel() for p in model.parameters()), name
        assert row.macs_unshared == row.macs_per_pair + row.macs_per_image
        if name in TRUNK_VARIANTS:
            assert row.family == "trunk" and macs_split(model) == trunk_macs(model)
        else:
            assert row.family == "scratch" and row.macs_unshared == describe(model).macs.sum()
    k5 = models["trunk-wo-cross"].cfg.in_channel(5)
    # no cross filters: per image only the label readout, a read of I's pooled level-5 maps (2·k5 → 18 labels)
    assert table.loc["trunk-wo-cross", "macs_per_image"] == 2 * k5 * 18
    cross = ["trunk-cross5", "trunk-cross54", "trunk-cross543", "trunk-mcnn"]
    assert table.loc[cross, "macs_per_pair"].is_monotonic_increasing


def test_scratch_per_image_share_is_the_i_term_of_eq2():
    model = build_model("mcnn", input_size=64, width=0.25)
    rows, m = describe(model), macs_split(model)
    cross = rows[rows.path == "C"]
    i_term = sum(float(r.macs) * model.cfg.cross_inputs(int(r.layer[-1]))[0] / model.conv_C[r.layer[-1]].in_channels
                 for r in cross.itertuples())  # fmt: skip
    assert m["per_image"] == pytest.approx(rows[rows.path == "I"].macs.sum() + i_term)


def test_describe_points_a_trunk_model_elsewhere():
    with pytest.raises(ValueError, match="macs_split"):
        describe(build_model("trunk-cross5", input_size=224))
