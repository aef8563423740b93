"""Synthetic paper-doll people: determinism, speed, label semantics (left/right), variety, splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from qparse_lite.data.datasets import get_dataset
from qparse_lite.data.synthetic import GENERATOR_VERSION, SyntheticPeople, render_person
from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18


def _digest(ds, idx) -> str:
    h = hashlib.sha256()
    for i in idx:
        s = ds[i]
        h.update(s.image.tobytes())
        h.update(s.label.tobytes())
        h.update(s.id.encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def people():
    ds = SyntheticPeople(n=200, size=96, seed=3)
    samples = [ds[i] for i in range(len(ds))]
    return ds, np.stack([s.image for s in samples]), np.stack([s.label for s in samples])


def test_same_seed_same_bytes_other_seed_differs():
    a = _digest(SyntheticPeople(n=12, size=64, seed=7), range(12))
    b = _digest(SyntheticPeople(n=12, size=64, seed=7), range(12))
    c = _digest(SyntheticPeople(n=12, size=64, seed=8), range(12))
    assert a == b and a != c


def test_image_depends_only_on_seed_and_index():
    big = SyntheticPeople(n=50, size=64, seed=1)
    small = SyntheticPeople(n=10, size=64, seed=1)
    for i in (0, 3, 9):
        assert np.array_equal(big[i].image, small[i].image) and np.array_equal(big[i].label, small[i].label)
    # produced alone, out of order, equals the sequential result
    alone = SyntheticPeople(n=50, size=64, seed=1)[37]
    seq = list(big)[37]
    assert np.array_equal(alone.image, seq.image) and alone.id == seq.id == "00037"
    assert np.array_equal(big[-1].label, big[49].label)
    with pytest.raises(IndexError):
        big[50]


def test_shapes_dtypes_and_label_range(people):
    ds, imgs, labs = people
    assert imgs.shape == (200, 96, 96, 3) and imgs.dtype == np.uint8
    assert labs.shape == (200, 96, 96) and labs.dtype == np.uint8
    assert ds.label_set is ATR18 and labs.max() <= 17
    # every ATR-18 label is drawn somewhere
    assert set(np.unique(labs).tolist()) == set(range(18))
    assert GENERATOR_VERSION in ds.version and "seed=3" in ds.version


def _mean_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def test_left_is_image_right_for_arms_legs_shoes(people):
    """The person faces the viewer: the person's left limbs lie at larger x than the right ones."""
    _, _, labs = people
    for left, right in ATR18.lr_pairs:
        checked = 0
        for lab in labs:
            if (lab == left).sum() > 3 and (lab == right).sum() > 3:
                assert _mean_x(lab == left) > _mean_x(lab == right), ATR18.names[left]
                checked += 1
        assert checked > 50


def test_outfits_accessories_and_bag_sides_vary():
    ds = SyntheticPeople(n=120, size=64, seed=0)
    attrs = [ds.attributes(i) for i in range(len(ds))]
    assert {a["outfit"] for a in attrs} == {"dress", "skirt", "pants"}
    assert {a["bag"] for a in attrs} == {"none", "left", "right", "front"}
    assert {a["sleeves"] for a in attrs} == {"none", "short", "long"}
    for key in ("hat", "sunglasses", "belt", "scarf"):
        share = np.mean([a.get(key, False) for a in attrs])
        assert 0.05 < share < 0.6, key
    # a bag carried in the person's left hand lies right of the body's centre
    for i, a in enumerate(attrs):
        if a["bag"] in ("left", "right"):
            img, lab, _ = render_person(0, i, 64)
            body = np.isin(lab, [4, 7, 11])
            if (lab == 16).sum() > 5 and body.any():
                assert (_mean_x(lab == 16) > _mean_x(body)) == (a["bag"] == "left")


def test_position_scale_vary_so_the_mean_map_is_blurry(people):
    """Predicting the train majority label map must fail on most test foreground pixels."""
    ds, _, labs = people
    fg = labs > 0
    ys = [np.nonzero(m)[0] for m in fg]
    xs = [np.nonzero(m)[1] for m in fg]
    heights = np.array([y.max() - y.min() for y in ys])
    centres = np.array([x.mean() for x in xs])
    assert heights.std() > 0.08 * 96 and centres.std() > 0.08 * 96
    sp = ds.splits()
    train = np.array([int(x) for x in sp["train"]])
    test = np.array([int(x) for x in sp["test"]])
    counts = np.stack([(labs[train] == k).sum(0) for k in range(18)])
    majority = counts.argmax(0)
    gt = labs[test]
    acc_fg = (majority[None] == gt)[gt > 0].mean()
    assert acc_fg < 0.3


def test_backgrounds_are_cluttered(people):
    _, imgs, labs = people
    bg_std = [imgs[i][labs[i] == 0].std() for i in range(20)]
    assert np.median(bg_std) > 15


def test_splits_80_10_10_in_order_and_written(tmp_path):
    ds = SyntheticPeople(n=50, size=32, seed=0)
    sp = ds.splits()
    assert [len(sp[k]) for k in ("train", "val", "test")] == [40, 5, 5]
    assert sp["train"] + sp["val"] + sp["test"] == ds.ids
    paths = ds.write_splits(tmp_path / "splits")
    assert paths["val"].read_text().split() == sp["val"]
    assert SyntheticPeople(n=1, size=32).splits() == {"train": ["00000"], "val": [], "test": []}


def test_get_dataset_and_bad_arguments():
    ds = get_dataset("synthetic", n=5, size=32, seed=2)
    assert isinstance(ds, SyntheticPeople) and len(ds) == 5 and ds.seed == 2
    with pytest.raises(QparseError, match="n >= 1"):
        SyntheticPeople(n=0)
    with pytest.raises(QparseError, match="ATR-18"):
        get_dataset("synthetic", labels="ccp59")
