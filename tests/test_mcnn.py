"""The M-CNN, its Table 1 variants and the Siamese baseline (qparse_lite.model.mcnn)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qparse_lite.model.mcnn import (
    MCNN,
    PAPER_NAMES,
    TABLE1_VARIANTS,
    VARIANTS,
    MCNNConfig,
    Siamese,
    build_model,
    model_from_config,
    resolve_variant,
    scaled_kernels,
)
from qparse_lite.model.summary import count_parameters, describe
from qparse_lite.profiles import get_profile

QUICK = get_profile("quick")
TABLE1 = Path(__file__).resolve().parent.parent / "qparse_lite" / "evaluation" / "reported" / "table1_reported.csv"


def _pair(b: int, s: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, s, s, generator=g), torch.randn(b, 3, s, s, generator=g)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("variant", TABLE1_VARIANTS)
def test_forward_shapes_quick(variant):
    model = build_model(variant, input_size=QUICK.image_size, width=QUICK.width)
    I, R = _pair(2, QUICK.image_size)
    out = model(I, R)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    feats = model.features(I, R)
    sizes = model.cfg.map_sizes
    assert sizes == (64, 32, 16, 8, 4, 2)
    for j in range(1, 6):
        assert feats[("I", j)].shape == (2, model.cfg.single_channels[j - 1], sizes[j], sizes[j])
        assert feats[("R", j)].shape == feats[("I", j)].shape
        if j in model.cfg.cross_layers:
            assert feats[("C", j)].shape == (2, model.cfg.cross_channels[j - 1], sizes[j], sizes[j])
        else:
            assert ("C", j) not in feats


@pytest.mark.parametrize("variant", ["mcnn", "cross54321", "siamese"])
def test_forward_shapes_227(variant):
    model = build_model(variant)  # 227, width 1.0
    assert model.cfg.kernel_sizes == (11, 5, 5, 5, 5)
    assert model.cfg.map_sizes == (227, 114, 57, 29, 15, 8)
    with torch.no_grad():
        out = model(*_pair(2, 227))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_variant_cross_layers():
    expect = {"wo-cross": (), "cross5": (5,), "cross54": (5, 4), "cross543": (5, 4, 3),
              "mcnn": (5, 4, 3, 2), "cross54321": (5, 4, 3, 2, 1), "siamese": ()}  # fmt: skip
    for key, cl in expect.items():
        model = build_model(key, input_size=64, width=0.25)
        assert model.cfg.cross_layers == cl
        assert sorted(int(k) for k in getattr(model, "conv_C", {})) == sorted(cl)
    assert isinstance(build_model("siamese", 64, 0.25), Siamese)
    assert isinstance(build_model("mcnn", 64, 0.25), MCNN)
    assert build_model(input_size=64, width=0.25).cfg.cross_layers == (5, 4, 3, 2)  # default = M-CNN


def test_paper_channel_counts():
    """conv2: 30 maps in each of the three paths (M-CNN); 45 per single path when conv2 has no cross."""
    mcnn = build_model("mcnn")
    assert mcnn.conv_I[1].out_channels == mcnn.conv_R[1].out_channels == mcnn.conv_C["2"].out_channels == 30
    for key in ("wo-cross", "cross5", "cross54", "cross543"):
        m = build_model(key)
        assert m.conv_I[1].out_channels == m.conv_R[1].out_channels == 45
        assert "2" not in m.conv_C
    # cross 5,4,3,2,1: 11×11×6 cross filters on the stacked RGB pair
    c1 = build_model("cross54321").conv_C["1"]
    assert tuple(c1.weight.shape[1:]) == (6, 11, 11)
    # fair comparison: every layer keeps its total number of maps across the variants
    totals = {
        key: tuple(s + s + c for s, c in zip(m.cfg.single_channels, m.cfg.cross_channels, strict=True))
        for key in TABLE1_VARIANTS if key != "siamese" for m in [build_model(key)]
    }  # fmt: skip
    assert len(set(totals.values())) == 1, totals
    assert totals["mcnn"] == (96, 90, 192, 192, 192)


def test_eq2_inputs_of_cross_filters():
    """Eq. (2): the first cross layer reads x^I, x^R only; later ones also x^C of the layer below."""
    m = build_model("mcnn")
    assert m.conv_C["2"].in_channels == 48 + 48  # x^I_1, x^R_1 (conv1 has no cross maps)
    assert m.conv_C["3"].in_channels == 30 + 30 + 30
    assert m.conv_C["5"].in_channels == 64 + 64 + 64
    assert build_model("cross5").conv_C["5"].in_channels == 96 + 96


def test_eq2_numerically():
    """x^C_j = ReLU(b + f^I * x^I_{j-1} + f^R * x^R_{j-1} + f^C * x^C_{j-1}), written out by hand."""
    m = build_model("mcnn", input_size=64, width=0.25).eval()
    I, R = _pair(2, 64)
    with torch.no_grad():
        f = m.features(I, R)
        conv = m.conv_C["3"]
        p, q, t = m.cfg.cross_inputs(3)
        w, kw = conv.weight, dict(stride=2, padding=conv.padding)
        hand = F.relu(
            conv.bias[None, :, None, None]
            + F.conv2d(f[("I", 2)], w[:, :p], **kw)
            + F.conv2d(f[("R", 2)], w[:, p : p + q], **kw)
            + F.conv2d(f[("C", 2)], w[:, p + q :], **kw)
        )
    torch.testing.assert_close(hand, f[("C", 3)], atol=1e-5, rtol=1e-5)


def test_parameter_counts_differ_as_expected():
    counts = {key: count_parameters(build_model(key)) for key in TABLE1_VARIANTS}
    assert len(set(counts.values())) == len(counts), counts
    # the fusion of "w/o cross" has 96 |difference| maps, the others 64 + 64: fewer fc6 weights
    assert counts["wo-cross"] < min(counts[k] for k in ("cross5", "cross54", "cross543", "mcnn"))
    # the Siamese shares its sub-network between I and R
    assert counts["siamese"] < counts["wo-cross"]
    # counts follow from the layer sizes (describe sums the same numbers)
    for key in TABLE1_VARIANTS:
        m = build_model(key, input_size=64, width=0.25)
        assert describe(m)["params"].sum() == count_parameters(m)


def test_shared_paths():
    sep = build_model("mcnn", input_size=64, width=0.25)
    sh = build_model("mcnn", input_size=64, width=0.25, shared_paths=True)
    assert sh.conv_R is sh.conv_I and sep.conv_R is not sep.conv_I
    assert count_parameters(sep) - count_parameters(sh) == sum(p.numel() for p in sep.conv_R.parameters())
    I, R = _pair(3, 64)
    with torch.no_grad():
        f = sh.features(I, R)
        alone = sh.conv_I[0](R).relu()  # the batched call gives what a separate R call gives
    torch.testing.assert_close(f[("R", 1)], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant,kw", [
    ("mcnn", {}), ("cross54321", {}), ("wo-cross", {}), ("cross5", {}), ("mcnn", {"shared_paths": True}),
    ("siamese", {}),
])  # fmt: skip
def test_forward_cached_equals_forward(variant, kw):
    model = build_model(variant, input_size=64, width=0.25, **kw).eval()
    tests, _ = _pair(2, 64, seed=1)
    _, R = _pair(5, 64, seed=2)
    index = torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        cache = model.encode_test(tests)
        assert len(cache) == 2
        cached = model.forward_cached(cache, R, index)
        direct = model(tests[index], R)
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant,kw", [
    ("mcnn", {}), ("cross54321", {}), ("wo-cross", {}), ("mcnn", {"shared_paths": True}), ("siamese", {}),
])  # fmt: skip
def test_grouped_training_step_equals_ungrouped(variant, kw):
    """B_I images × B_R regions: the I path once per image, broadcast with gradients — the same loss (Eq. 1)
    and the same gradients as the ungrouped forward/backward on the same pairs."""
    from qparse_lite.train.loss import matching_loss

    torch.manual_seed(0)
    model = build_model(variant, input_size=48, width=0.25, **kw)
    tests, _ = _pair(3, 48, seed=3)
    _, R = _pair(12, 48, seed=4)
    group = torch.arange(3).repeat_interleave(4)  # 3 images × 4 regions
    c = torch.randn(12)
    t = torch.randn(12, 4)
    has_t = torch.rand(12) < 0.6

    def step(grouped: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        pred = model(tests, R, group) if grouped else model(tests[group], R)
        loss, _, _ = matching_loss(pred, c, t, has_t)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_u, grad_u = step(False)
    loss_g, grad_g = step(True)
    torch.testing.assert_close(loss_g, loss_u, atol=1e-6, rtol=1e-5)
    assert grad_u.keys() == grad_g.keys() and len(grad_u) > 4
    for name in grad_u:
        torch.testing.assert_close(grad_g[name], grad_u[name], atol=1e-6, rtol=1e-4, msg=name)
    assert any(grad_g[n].abs().sum() > 0 for n in grad_g if n.startswith("conv_I"))  # I path learns


def test_siamese_is_symmetric():
    m = build_model("siamese", input_size=64, width=0.25).eval()
    assert m.conv_R is m.conv_I and m.cfg.shared_paths
    I, R = _pair(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(I, R), m(R, I))
        a, b = m.embed(I), m.embed(R)
        torch.testing.assert_close(m(I, R), m.out((a - b).abs()))
    # conv sizes are those of the M-CNN without cross filters: the two differ only in where |I − R| is taken
    assert m.cfg.single_channels == build_model("wo-cross", 64, 0.25).cfg.single_channels


@pytest.mark.parametrize("variant", TABLE1_VARIANTS)
def test_backward_finite(variant):
    model = build_model(variant, input_size=64, width=0.25)
    I, R = _pair(4, 64)
    loss = (model(I, R) - torch.ones(4, 5)).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_channels_last_and_bf16_autocast():
    model = build_model("mcnn", input_size=64, width=0.25).eval()
    I, R = _pair(4, 64)
    with torch.no_grad():
        ref = model(I, R)
        model_cl = model.to(memory_format=torch.channels_last)
        Icl, Rcl = I.to(memory_format=torch.channels_last), R.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model_cl(Icl, Rcl), ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model_cl(Icl, Rcl)
            cached = model_cl.forward_cached(model_cl.encode_test(Icl), Rcl, torch.arange(4))
    assert torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.02
    torch.testing.assert_close(cached.float(), out.float(), atol=0.05, rtol=0.05)


def test_compile_fullgraph():
    """No data-dependent Python control flow: dynamo traces forward and forward_cached in one graph."""
    model = build_model("mcnn", input_size=64, width=0.25).eval()
    I, R = _pair(2, 64)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(I, R), model(I, R))
        cache = model.encode_test(I)
        cached = torch.compile(model.forward_cached, backend="eager", fullgraph=True)
        torch.testing.assert_close(cached(cache, R, torch.tensor([1, 0])), model(I[[1, 0]], R))


def test_paper_names_join_table1():
    with TABLE1.open() as f:
        methods = {row["method"] for row in csv.DictReader(f)}
    assert set(PAPER_NAMES) == set(TABLE1_VARIANTS)
    assert set(PAPER_NAMES.values()) <= methods
    for key, name in PAPER_NAMES.items():
        assert resolve_variant(name) == key
        assert resolve_variant(key) == key
        assert build_model(name, input_size=64, width=0.25).cfg.cross_layers == VARIANTS[key]["cross_layers"]
    assert resolve_variant("M-CNN (cross 5,4 )") == "cross54"  # spacing as in the PDF text
    assert resolve_variant("M-CNN(w/o cross)") == "wo-cross"
    with pytest.raises(ValueError, match="unknown M-CNN variant"):
        resolve_variant("cross 4,3")


def test_trunk_variants_stand_for_the_paper_row_of_their_counterpart():
    """Each trunk variant maps onto the paper row of the from-scratch variant with the same cross layers (and
    arch); its row name is that row's plus the trunk suffix, so the two families' names never collide."""
    from qparse_lite.model.mcnn import TRUNK_PAPER_NAMES, TRUNK_VARIANTS, method_name, paper_row

    assert set(TRUNK_PAPER_NAMES) == set(TRUNK_VARIANTS)
    assert paper_row("trunk-mcnn") == paper_row("mcnn") == "M-CNN"
    assert paper_row("trunk-wo-cross") == "M-CNN (w/o cross)" and paper_row("trunk-siamese") == "Siamese [2]"
    for v, name in TRUNK_PAPER_NAMES.items():
        twin = resolve_variant(name)
        assert VARIANTS[v]["cross_layers"] == VARIANTS[twin]["cross_layers"]
        assert VARIANTS[v].get("arch") == VARIANTS[twin].get("arch")
        assert method_name(v) == name + ", ImageNet trunk" and method_name(twin) == name
    names = [method_name(v) for v in (*TABLE1_VARIANTS, *TRUNK_VARIANTS)]
    assert len(set(names)) == len(names)
    assert paper_row("no-such") == "" and method_name("no-such") == "M-CNN no-such"


def test_config_validation_and_kernels():
    assert scaled_kernels(227) == (11, 5, 5, 5, 5)
    assert scaled_kernels(113) == (5, 3, 3, 3, 3)
    assert scaled_kernels(64) == (3, 3, 3, 3, 3)
    for bad in [dict(cross_layers=(5, 3)), dict(cross_layers=(4, 3)), dict(cross_layers=(6,)),
                dict(kernels=(4, 3, 3, 3, 3)), dict(channels=(1, 2)), dict(arch="siamese")]:  # fmt: skip
        with pytest.raises(ValueError):
            MCNNConfig(**bad)
    cfg = MCNNConfig(input_size=96, width=0.5, cross_layers=[3, 5, 4], kernels=(5, 3, 3, 3, 3))
    assert cfg.cross_layers == (5, 4, 3)
    m = model_from_config(cfg.to_dict())
    assert m.cfg == cfg and m(*_pair(1, 96)).shape == (1, 5)


def test_width_rule():
    cfg = MCNNConfig(input_size=64, width=QUICK.width)
    assert cfg.single_channels == (12, 8, 16, 16, 16)
    assert cfg.cross_channels == (0, 8, 16, 16, 16)
    assert cfg.fc_widths == (256,)


def test_describe_matches_features():
    m = build_model("cross54321", input_size=64, width=0.25)
    df = describe(m, 64)
    f = m.features(*_pair(1, 64))
    for _, r in df[df.layer.str.startswith("conv")].iterrows():
        j = int(r.layer[4:])
        assert tuple(f[(r.path, j)].shape[1:]) == r.output_shape
    assert set(df.path) == {"I", "R", "C", "fusion", "fc", "out"}
    assert df.iloc[-1].out_channels == 5
    with pytest.raises(ValueError, match="input_size"):
        describe(m, 227)
    s = describe(build_model("siamese", 64, 0.25))
    assert (s[s.path == "R"].params == 0).all() and (s[s.path == "R"].shared_with == "I").all()


def test_cost_at_227_as_notebook_02_tabulates():
    """Notebook 02 §3's table at the paper's 227 px: ~10 M parameters for the M-CNN (most in fc6), the
    Siamese the smallest, 0.5-2 GMAC per pair, and multiply-adds growing with every cross layer added."""
    models = {v: build_model(v, input_size=227) for v in TABLE1_VARIANTS}
    params = {v: count_parameters(m) for v, m in models.items()}
    gmac = {v: describe(m).macs.sum() / 1e9 for v, m in models.items()}
    assert 5e6 < params["mcnn"] < 15e6
    assert params["siamese"] == min(params.values())
    assert all(0.5 < g < 2 for g in gmac.values()), gmac
    order = ["wo-cross", "cross5", "cross54", "cross543", "mcnn", "cross54321"]
    assert [gmac[v] for v in order] == sorted(gmac[v] for v in order)
    conv2 = {v: describe(m).query("layer == 'conv2'").set_index("path").out_channels for v, m in models.items()}
    for v in order:  # 30/30/30 with cross filters at conv2, 45/45/0 without
        expect = (30, 30, 30) if 2 in models[v].cfg.cross_layers else (45, 45, 0)
        assert tuple(int(conv2[v].get(p, 0)) for p in "IRC") == expect, v
