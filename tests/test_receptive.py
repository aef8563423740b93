"""Receptive fields: the arithmetic, the per-path table and the gradient-based ERF (qparse_lite.model.receptive)."""

from __future__ import annotations

import time

import matplotlib
import numpy as np
import pytest

from qparse_lite.model.mcnn import MCNNConfig, build_model
from qparse_lite.model.receptive import (
    draw_receptive_fields,
    effective_receptive_field,
    rf_arithmetic,
    unit_box,
)
from qparse_lite.model.summary import receptive_fields

matplotlib.use("Agg")


def test_rf_arithmetic_hand_computed():
    # 7 px input; conv 3×3 s1 p0 → 5 px; conv 3×3 s2 p0 → 2 px.
    # layer 1: unit i sees pixels i..i+2        → rf 3, jump 1, centre of unit 0 at pixel 1
    # layer 2: unit 0 sees layer-1 units 0..2   → pixels 0..4: rf 5, jump 2, centre at pixel 2
    rows = rf_arithmetic([3, 3], [1, 2], [0, 0], input_size=7)
    assert [(r["rf"], r["jump"], r["start"], r["size"]) for r in rows] == [(3, 1, 1.0, 5), (5, 2, 2.0, 2)]
    # unit 1 of layer 2 sees layer-1 units 2..4 = pixels 2..6
    assert unit_box(rows[1]["start"], rows[1]["jump"], rows[1]["rf"], 1)[:2] == (2.0, 6.0)
    # "same" padding keeps unit 0 centred on pixel 0: rf 3, 3 + 2·2 = 7, 7 + 2·4 = 15
    rows = rf_arithmetic([3, 3, 3], [2, 2, 2], [1, 1, 1], input_size=64)
    assert [(r["rf"], r["jump"], r["start"], r["size"]) for r in rows] == [
        (3, 2, 0.0, 32), (7, 4, 0.0, 16), (15, 8, 0.0, 8)]  # fmt: skip


def test_table_227_mcnn():
    t = receptive_fields(build_model("mcnn"))
    single = t[(t.path == "I") & (t.j > 0)]
    assert single.rf.tolist() == [11, 19, 35, 67, 131]
    assert single.jump.tolist() == [2, 4, 8, 16, 32]
    assert single["size"].tolist() == [114, 57, 29, 15, 8]
    assert (single.start == 0).all()
    cross = t[t.path == "C"]
    assert cross.j.tolist() == [2, 3, 4, 5] and (cross.sees == "I+R").all()
    # the cross path at layer j sees both images through the receptive field of layer j
    assert cross.rf.tolist() == single[single.j >= 2].rf.tolist()
    assert (t[t.path == "R"].rf.values == t[t.path == "I"].rf.values).all()
    # conv1's cross filters (the "cross 5,4,3,2,1" variant) see only 11 px: ~5% of the image
    t1 = receptive_fields(MCNNConfig(cross_layers=(5, 4, 3, 2, 1)))
    assert t1[(t1.path == "C") & (t1.j == 1)].rf_frac.item() == pytest.approx(11 / 227)


def test_table_follows_input_size():
    t = receptive_fields(build_model("mcnn", input_size=64, width=0.25))
    assert t[(t.path == "I") & (t.j > 0)].rf.tolist() == [3, 7, 15, 31, 63]
    assert (t[t.j > 0].centre_px == 32).all()  # centre units sit on the image centre
    t113 = receptive_fields(MCNNConfig(), input_size=113)
    assert t113[(t113.path == "I") & (t113.j > 0)].rf.tolist() == [5, 9, 17, 33, 65]


@pytest.mark.parametrize("layer,path", [(1, "I"), (2, "R"), (3, "I"), (4, "C"), (5, "C")])
def test_erf_inside_theoretical_rf(layer, path):
    model = build_model("cross54321", input_size=64, width=0.25)
    table = receptive_fields(model)
    row = table[(table.j == layer) & (table.path == path)].iloc[0]
    y0, y1, x0, x1 = unit_box(row.start, row.jump, row.rf, int(row.centre_unit))
    wrt = "both" if path == "C" else path
    erf = effective_receptive_field(model, 64, layer=layer, path=path, n=4, wrt=wrt)
    maps = erf if erf.ndim == 3 else erf[None]
    yy, xx = np.mgrid[0:64, 0:64]
    inside = (yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)
    for m in maps:  # for the cross path: both I and R
        assert m.shape == (64, 64)
        assert (m[~inside] == 0).all()
        assert m[inside].sum() > 0


def test_erf_single_path_ignores_other_image_and_is_fast():
    model = build_model("mcnn", input_size=64, width=0.25)
    t0 = time.perf_counter()
    both = effective_receptive_field(model, 64, layer=5, path="I", n=8, wrt="both")
    assert time.perf_counter() - t0 < 2.0
    assert both[0].sum() > 0 and (both[1] == 0).all()  # x^I never sees R
    with pytest.raises(ValueError, match="no cross filters"):
        effective_receptive_field(model, 64, layer=1, path="C")
    # the model's parameters are untouched
    assert all(p.grad is None for p in model.parameters())


def test_erf_non_centre_unit_is_clipped_to_its_box():
    model = build_model("wo-cross", input_size=64, width=0.25)
    erf = effective_receptive_field(model, 64, layer=3, path="I", n=2, unit=(0, 0))
    ys, xs = np.nonzero(erf)
    assert ys.max() <= 7 and xs.max() <= 7  # unit (0, 0) of conv3: rf 15 centred on pixel 0


def test_draw_receptive_fields():
    import matplotlib.pyplot as plt

    model = build_model("mcnn", input_size=64, width=0.25)
    img = np.zeros((64, 64, 3), np.uint8)
    fig, ax = plt.subplots()
    out = draw_receptive_fields(img, receptive_fields(model), ax=ax)
    assert out is ax and len(ax.patches) == 5
    ax2 = draw_receptive_fields(img, receptive_fields(model), path="C")
    assert len(ax2.patches) == 4
    plt.close("all")
