"""The trunk M-CNN family: its models, the trunk-map cache and its pairs (qparse_lite.model.trunk,
qparse_lite.train.trunk_cache, qparse_lite.train.trunk_pairs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qparse_lite.data.prepare import Corpus
from qparse_lite.errors import QparseError
from qparse_lite.model.mcnn import (
    TABLE1_VARIANTS,
    TRUNK_VARIANTS,
    VARIANTS,
    build_model,
    model_from_config,
    variant_family,
)
from qparse_lite.model.trunk import RegionMaps, TrunkConfig, TrunkMCNN, TrunkSiamese, trunk_macs
from qparse_lite.train.loss import matching_loss
from qparse_lite.train.pairs import DeviceCorpus
from qparse_lite.train.sampler import PairSampler
from qparse_lite.train.trunk_cache import trunk_maps
from qparse_lite.train.trunk_pairs import LabelShares, TrunkPairSampler

F = 64  # trunk input side in these tests: maps 16, 8, 4, 2


def _maps(cfg: TrunkConfig, n: int, seed: int) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {j: torch.randn(n, cfg.in_channel(j), cfg.map_size(j), cfg.map_size(j), generator=g) for j in cfg.levels}


def _regions(cfg: TrunkConfig, b: int, u: int, seed: int) -> RegionMaps:
    g = torch.Generator().manual_seed(seed)
    masks = {j: torch.rand(b, 1, cfg.map_size(j), cfg.map_size(j), generator=g) for j in cfg.levels}
    return RegionMaps(_maps(cfg, u, seed + 1), _maps(cfg, 4, seed + 2), masks,
                      torch.randint(0, u, (b,), generator=g), torch.randint(0, 4, (b,), generator=g))  # fmt: skip


def test_registry_one_constructor_for_both_families():
    assert set(TABLE1_VARIANTS) | set(TRUNK_VARIANTS) == set(VARIANTS) and len(TABLE1_VARIANTS) == 7
    assert TRUNK_VARIANTS == ("trunk-wo-cross", "trunk-cross5", "trunk-cross54", "trunk-cross543", "trunk-mcnn",
                              "trunk-siamese")  # fmt: skip
    assert variant_family("trunk-cross54") == "trunk" and variant_family("M-CNN (cross 5,4)") == "scratch"
    m = build_model("trunk-cross543", input_size=F)
    assert isinstance(m, TrunkMCNN) and m.variant == "trunk-cross543" and m.cfg.cross_layers == (5, 4, 3)
    assert isinstance(build_model("trunk-siamese", input_size=F), TrunkSiamese)
    again = model_from_config(m.cfg.to_dict())  # how a checkpoint is loaded
    assert isinstance(again, TrunkMCNN) and again.cfg == m.cfg
    assert type(model_from_config(build_model("mcnn", input_size=64, width=0.25).cfg.to_dict())).__name__ == "MCNN"


@pytest.mark.parametrize("variant", TRUNK_VARIANTS)
def test_shapes_and_parameter_counts(variant):
    torch.manual_seed(0)
    m = build_model(variant, input_size=F)
    cfg = m.cfg
    assert [cfg.map_size(j) for j in (2, 3, 4, 5)] == [16, 8, 4, 2]
    out = m(_maps(cfg, 3, 0), _regions(cfg, 3, 2, 1))
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    # parameters, counted by hand from the ARCHITECTURE CHOICES
    k = {j: cfg.in_channel(j) for j in (2, 3, 4, 5)}
    c = {j: cfg.channel(j) for j in (2, 3, 4, 5)}
    h = cfg.fc_widths[0]
    s5 = cfg.map_size(5) ** 2
    n = 0
    cross = sorted(cfg.cross_layers)
    for i, j in enumerate(cross):
        n += 9 * (2 * k[j] + 1) * c[j] + c[j] + (9 * c[cross[i - 1]] * c[j] if i else 0)  # +1: the region's mask
    if cfg.arch == "siamese":  # each side: mean and max over positions (2·k5) and the mask's 5 moments
        fusion = 2 * k[5] + 5
    else:  # I's mean and max, mean |x5(I) − r5|, r5, the mask's moments, x^C_5's mean, max and centroid (x, y)
        fusion = 4 * k[5] + 5 + (4 * c[5] if cross else 0)
    assert s5 == 4 and m.fusion_dim == fusion
    n += fusion * h + h + h * 5 + 5
    assert sum(p.numel() for p in m.parameters()) == n
    macs = trunk_macs(m)
    assert macs["per_pair"] > 0 and (macs["per_image"] > 0) == (variant != "trunk-wo-cross")


def test_more_cross_levels_cost_more():
    n = [sum(p.numel() for p in build_model(v, input_size=224).parameters()) for v in TRUNK_VARIANTS[:5]]
    assert n == sorted(n) and len(set(n)) == 5
    macs = [trunk_macs(build_model(v, input_size=224))["per_pair"] for v in TRUNK_VARIANTS[:5]]
    assert macs == sorted(macs)


@pytest.mark.parametrize("num_labels", [0, 18])
@pytest.mark.parametrize("variant", TRUNK_VARIANTS)
def test_grouped_equals_ungrouped_loss_and_gradients(variant, num_labels):
    """B_I images × B_R regions: the I-terms once per image, broadcast with gradients — the same loss (Eq. 1)
    and gradients as every pair run on its own; region maps gathered once per neighbour equal explicit ones.
    With ``num_labels`` (the label input and readout) the regions carry their labels."""
    torch.manual_seed(0)
    m = build_model(variant, input_size=F, num_labels=num_labels)
    for p in m.parameters():  # the readout and the output layer start at zero: give them gradients to compare
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    m.double()  # float64: the two summation orders agree to rounding, whatever the thread count
    cfg = m.cfg
    I = {j: x.double() for j, x in _maps(cfg, 3, 3).items()}
    R = _regions(cfg, 12, 5, 4)
    R.maps = {j: x.double() for j, x in R.maps.items()}
    R.mean = {j: x.double() for j, x in R.mean.items()}
    R.masks = {j: x.double() for j, x in R.masks.items()}
    if num_labels:
        R.label = torch.randint(1, num_labels, (12,), generator=torch.Generator().manual_seed(5))
        explicit = RegionMaps({j: x[R.row] for j, x in R.maps.items()}, R.mean, R.masks, torch.arange(12), R.mean_row, R.label)
    else:
        explicit = {j: R.at(j) for j in cfg.levels}
    group = torch.arange(3).repeat_interleave(4)
    c, t, has_t = torch.randn(12).double(), torch.randn(12, 4).double(), torch.rand(12) < 0.6

    def step(grouped: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m.zero_grad(set_to_none=True)
        if grouped:
            pred = m(I, R, group)
        else:
            pred = m({j: x[group] for j, x in I.items()}, explicit)
        loss, _, _ = matching_loss(pred, c, t, has_t)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}

    loss_u, grad_u = step(False)
    loss_g, grad_g = step(True)
    torch.testing.assert_close(loss_g, loss_u, atol=1e-10, rtol=1e-10)
    assert grad_u.keys() == grad_g.keys() and len(grad_u) >= 4
    for name in grad_u:
        torch.testing.assert_close(grad_g[name], grad_u[name], atol=1e-10, rtol=1e-8, msg=name)


def test_region_is_the_neighbours_masked_average_and_its_mask():
    cfg = TrunkConfig(input_size=F)
    R = _regions(cfg, 4, 3, 0)
    R.masks[5][:] = 0.0
    R.masks[5][0, 0, 0, 1] = 1.0  # pair 0: one cell
    R.masks[5][1, 0] = 0.5  # pair 1: half of every cell; pairs 2, 3: no pixel of l
    at = R.at(5)
    k = cfg.in_channel(5)
    assert at.shape == (4, k + 1, 2, 2) and torch.equal(at[:, k:], R.masks[5])
    g = R.maps[5][R.row]
    torch.testing.assert_close(at[0, :k], g[0, :, 0, 1][:, None, None].expand(k, 2, 2))
    torch.testing.assert_close(at[1, :k], g[1].mean((1, 2))[:, None, None].expand(k, 2, 2))
    mu = R.mean[5][R.mean_row[2:]].mean((2, 3))  # no l: the mean image's
    torch.testing.assert_close(at[2:, :k], mu[:, :, None, None].expand(2, k, 2, 2))


# -- the cache ----------------------------------------------------------------------------------------


def _people(n: int = 20, s: int = 32, seed: int = 0) -> Corpus:
    from qparse_lite.labels import ATR18

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, s, s, 3), dtype=np.uint8)
    labels = np.zeros((n, s, s), np.uint8)
    for i in range(n):
        for lab in (2, 4, 11, 14):
            if lab != 14 or rng.random() < 0.5:
                x0, y0 = (lab * 5) % 20 + rng.integers(0, 4), (lab * 3) % 20 + rng.integers(0, 4)
                labels[i, y0 : y0 + 8, x0 : x0 + 6] = lab
                images[i, y0 : y0 + 8, x0 : x0 + 6] = ATR18.palette[lab] // 2 + 60
    splits = {"train": list(range(14)), "val": list(range(14, n)), "test": []}
    return Corpus.from_arrays(images, labels, ATR18, splits)


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    corpus = _people()
    folder = tmp_path_factory.mktemp("trunk") / "cache"
    return corpus, folder, trunk_maps(corpus, F, folder=folder, progress=False)


def test_cache_layout_and_reload(people, monkeypatch):
    corpus, folder, maps = people
    n = len(corpus.images)
    assert {j: tuple(t.shape) for j, t in maps.levels.items()} == {
        2: (4 * n + 4, 8, 16, 16), 3: (4 * n + 4, 16, 8, 8), 4: (4 * n + 4, 32, 4, 4), 5: (4 * n + 4, 64, 2, 2)}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["key"]["corpus_fingerprint"] and len(meta["key"]["weights_sha256"]) == 64
    assert set(meta["sha256"]) == {f"level{j}.npy" for j in (2, 3, 4, 5)} | {
        f"pca{j}_{part}.npy" for j in (2, 3, 4, 5) for part in ("mean", "proj")}
    assert {j: tuple(P.shape) for j, (_, P) in maps.pca.items()} == {2: (24, 8), 3: (40, 16), 4: (112, 32), 5: (1280, 64)}
    # four variants per image (original, mirror, zoom, zoomed mirror), each its own trunk pass; the PCA is
    # whitened on the train split's originals
    v = [maps.levels[3][i * n : (i + 1) * n] for i in range(4)]
    assert all(not torch.equal(v[a], v[b]) for a in range(4) for b in range(a + 1, 4))
    assert maps.levels[2][: len(corpus.split("train"))].float().var((0, 2, 3)).mean().item() == pytest.approx(1, rel=0.05)
    import qparse_lite.train.trunk_cache as tc

    monkeypatch.setattr(tc, "_build", lambda *a, **k: pytest.fail("a valid cache was rebuilt"))
    again = trunk_maps(corpus, F, folder=folder)
    for j in maps.levels:
        assert torch.equal(again.levels[j], maps.levels[j])


def test_cache_refused_when_the_corpus_changes(people):
    corpus, folder, _ = people
    images = np.array(corpus.images)
    images[3, 5:9, 5:9] = 255
    changed = Corpus.from_arrays(images, corpus.labels, corpus.label_set, corpus.splits, mean=corpus.mean)
    with pytest.raises(QparseError, match="corpus_fingerprint.*Fix: delete"):
        trunk_maps(changed, F, folder=folder)


def test_cache_refused_when_the_weights_or_a_file_change(people, tmp_path):
    corpus, folder, _ = people
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["key"]["weights_sha256"] = "0" * 64  # built with other weights
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(QparseError, match="weights_sha256"):
        trunk_maps(corpus, F, folder=copy)
    shutil.copytree(folder, tmp_path / "c2")
    arr = np.load(tmp_path / "c2" / "level4.npy")
    arr[0, 0, 0, 0] += 1
    np.save(tmp_path / "c2" / "level4.npy", arr)
    with pytest.raises(QparseError, match="level4.npy differs from its checksum"):
        trunk_maps(corpus, F, folder=tmp_path / "c2")
    rebuilt = trunk_maps(corpus, F, folder=tmp_path / "c2", rebuild=True)  # the fix the message names
    assert rebuilt.path == tmp_path / "c2"


def test_trunk_pairs_are_the_samplers_pairs(people):
    corpus, _, maps = people
    data = DeviceCorpus.from_corpus(corpus)
    tr = np.asarray(corpus.split("train"))
    knn = np.stack([np.roll(tr, -i - 1)[:5] for i in range(len(tr))])
    mk = lambda: PairSampler(data, tr, knn, batch_size=16, pairs_per_epoch=64, group_size=4, seed=3)  # noqa: E731
    plain, inner = mk(), mk()
    cfg = build_model("trunk-mcnn", input_size=F).cfg
    ts = TrunkPairSampler(inner, maps, cfg)
    for a, b in zip(plain, ts, strict=True):  # same generator, same pairs and targets
        assert torch.equal(a.c, b.c) and torch.equal(a.t, b.t) and torch.equal(a.has_t, b.has_t)
        assert torch.equal(a.group, b.group) and torch.equal(a.label, b.label)
        assert b.I[2].shape == (4, 8, 16, 16) and len(b.R) == 16
        # the region mask is the share of the (mirrored) label in each cell of the augmented neighbour
        rows = data.row(b.index.knn, 2 * b.index.zoom_g + b.index.flip)
        share = (data.labels[rows].long() == b.label[:, None, None]).float().mean((1, 2))
        torch.testing.assert_close(b.R.masks[5].mean((1, 2, 3)), share, atol=0.05, rtol=0)
        for lvl in (2, 3, 4, 5):  # the precomputed tables (stride ≥ 8) hold exactly the per-batch numbers
            side = cfg.map_size(lvl)
            assert torch.equal(b.R.masks[lvl], LabelShares.pool(data.labels[rows], b.label, side)), lvl
    assert torch.equal(plain.generator.get_state(), ts.state_dict()["generator"])


# -- parsing with a trunk model -------------------------------------------------------------------------


def test_model_keeps_the_projection_and_encodes_like_the_cache(people):
    """A trained model carries the cache's projection (buffers in its state dict), so its test path on an image
    outside the cache gives the cache's maps: the same trunk, the same (x − μ) @ P, up to float16."""
    corpus, _, maps = people
    m = build_model("trunk-cross54", input_size=F, num_labels=corpus.label_set.num_labels)
    with pytest.raises(ValueError, match="no projection"):
        m.encode_images(torch.zeros(1, 3, 32, 32))
    m.set_projection(maps.pca)
    again = model_from_config(m.cfg.to_dict())
    again.load_state_dict(m.state_dict())  # how a checkpoint is loaded: the projection comes with it
    enc = again.encode_images(torch.from_numpy(np.asarray(corpus.images[:3])).permute(0, 3, 1, 2))
    assert set(enc) == set(m.cfg.levels)
    for lvl in m.cfg.levels:
        k = m.cfg.in_channel(lvl)
        diff = (enc[lvl] - maps.levels[lvl][:3, :k].float()).abs()  # the cache rounds the raw maps to float16
        assert diff.mean() < 0.01 and diff.max() < 0.2, (lvl, diff.mean(), diff.max())  # (whitened: unit variance)


def test_label_input_and_readout():
    """With ``num_labels`` the fusion reads l one-hot and c gets the label readout w_l·z(I) + b_l: a function of
    I and l alone, the same for every region of label l (the fc's part is zero when its output layer is)."""
    cfg = TrunkConfig(input_size=F, num_labels=18)
    m = TrunkMCNN(cfg)
    R = _regions(cfg, 4, 2, 1)
    I = _maps(cfg, 2, 0)
    group = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="label"):
        m(I, R, group)
    R.label = torch.tensor([1, 5, 5, 17])
    assert m(I, R, group).shape == (4, 5)
    torch.nn.init.zeros_(m.out.weight), torch.nn.init.zeros_(m.out.bias)
    torch.nn.init.normal_(m.readout.weight)
    out = m(I, R, group)
    z = torch.cat([I[5].mean((2, 3)), I[5].amax((2, 3))], 1)  # I's level-5 maps pooled: mean, max
    expect = (z @ m.readout.weight.T + m.readout.bias)[group, R.label]
    torch.testing.assert_close(out[:, 0], expect) and torch.testing.assert_close(out[:, 1:], torch.zeros(4, 4))
    assert sum(p.numel() for p in m.readout.parameters()) == 18 * (2 * cfg.in_channel(5) + 1)
    with pytest.raises(ValueError, match="needs fusion='pool'"):
        TrunkConfig(input_size=F, num_labels=18, fusion="flatten")


def test_trunk_parser_scores_every_present_pair_as_the_model_does(people):
    """TrunkParser's stage 1 on a corpus image equals the model run on the cached maps of the same pairs."""
    from qparse_lite.parse.parser import TrunkParser
    from qparse_lite.train.pairs import TargetNorm

    corpus, _, maps = people
    L = corpus.label_set.num_labels
    torch.manual_seed(0)
    m = build_model("trunk-cross54", input_size=F, num_labels=L).eval()
    m.set_projection(maps.pca)
    tn = TargetNorm()
    parser = TrunkParser(m, tn, corpus, n_segments=0, superpixel_method=None)
    nb = np.array([0, 3, 5])
    present, c, t = parser.match(np.asarray(corpus.images[15]), nb)
    assert present.shape == (3, L) and c.shape == (3, L) and t.shape == (3, L, 4)
    assert (c[~present] == 0).all() and (c[:, 1:][present[:, 1:]] != 0).all()
    k, lab = np.nonzero(present[:, 1:])
    lab = lab + 1
    y = torch.as_tensor(np.asarray(corpus.labels[nb])).long()
    kk, ll = torch.as_tensor(k), torch.as_tensor(lab)
    I = {j: maps.levels[j][15 : 16, : m.cfg.in_channel(j)].float() for j in m.cfg.levels}
    Rm = {j: maps.levels[j][torch.as_tensor(nb), : m.cfg.in_channel(j)].float() for j in m.cfg.levels}
    masks = {j: LabelShares.pool(y[kk], ll, m.cfg.map_size(j)) for j in m.cfg.levels}
    R = RegionMaps(Rm, {j: maps.mean(j, m.cfg.in_channel(j)) for j in m.cfg.levels}, masks, kk, torch.zeros_like(kk), ll)
    with torch.no_grad():
        ref = m(I, R, torch.zeros_like(kk))[:, 0]
    np.testing.assert_allclose(c[k, lab], ref.numpy(), atol=0.02, rtol=0.02)
    st = parser.parse(np.asarray(corpus.images[15]), nb)
    assert st.labels.shape == np.asarray(corpus.images[15]).shape[:2]
