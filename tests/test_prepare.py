"""Corpus preparation: crops, resize, mirror, the cache (atomic, verified), Corpus, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qparse_lite.cli import main
from qparse_lite.data.base import Sample
from qparse_lite.data.crops import crop_resize, human_crop_box
from qparse_lite.data.datasets import CCP
from qparse_lite.data.person import detect_person, hog_available
from qparse_lite.data.prepare import Corpus, human_centric_crop, mirror, prepare_corpus
from qparse_lite.data.synthetic import SyntheticPeople
from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18, CCP_COARSE

# ---------------------------------------------------------------------------------------------------------
# crops
# ---------------------------------------------------------------------------------------------------------


def test_human_crop_box_margin_square_and_inside():
    lab = np.zeros((200, 100), np.uint8)
    lab[50:150, 40:60] = 4  # person 20 wide, 100 tall
    x0, y0, x1, y1 = human_crop_box(lab, margin=0.1)
    assert x1 - x0 == y1 - y0 == 120  # 100 + 2×10 margin, squared
    assert y0 == 40 and y1 == 160  # margin of 10 px above and below
    assert (x0 + x1) / 2 == 50  # centred horizontally (fits inside the 100 px width? no: 120 > 100)
    # fits: a small person near the left border is shifted inside, not padded
    lab2 = np.zeros((200, 200), np.uint8)
    lab2[80:120, 0:10] = 1
    b = human_crop_box(lab2, margin=0.0)
    assert b == (0, 80, 40, 120)
    # no foreground: the whole image, squared
    assert human_crop_box(np.zeros((30, 50), np.uint8)) == (0, -10, 50, 40)


def test_crop_resize_pads_labels_with_background_and_keeps_ids():
    img = np.full((40, 20, 3), 90, np.uint8)
    lab = np.zeros((40, 20), np.uint8)
    lab[10:30, 5:15] = 7
    lab[10:30, 5:8] = 14
    box = (-10, 0, 30, 40)  # 10 px past each side
    im, lb = crop_resize(img, lab, box, 20)
    assert im.shape == (20, 20, 3) and lb.shape == (20, 20) and lb.dtype == np.uint8
    assert (im == 90).all()  # replicated border, constant image stays constant under bilinear
    assert set(np.unique(lb)) <= {0, 7, 14}  # nearest: no new ids
    assert (lb[:, :5] == 0).all() and (lb[:, -5:] == 0).all()  # padding is background
    assert lb[10, 10] == 7 and lb[10, 8] == 14
    im2, lb2 = crop_resize(img, None, (0, 0, 20, 40), 10)
    assert lb2 is None and im2.shape == (10, 10, 3)
    with pytest.raises(ValueError):
        crop_resize(img, lab, (5, 5, 5, 9), 8)


def test_mirror_flips_and_swaps_left_right():
    lab = np.zeros((4, 6), np.uint8)
    lab[:, 0], lab[:, 1], lab[:, 5] = 14, 9, 4  # left-arm, left-shoe at image left; upper-clothes right
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    im, lb = mirror(img, lab, ATR18)
    assert np.array_equal(im, img[:, ::-1]) and (lb[:, 5] == 15).all() and (lb[:, 4] == 10).all()
    assert (lb[:, 0] == 4).all()
    im2, lb2 = mirror(im, lb, ATR18)
    assert np.array_equal(im2, img) and np.array_equal(lb2, lab)
    # batches
    _, lbs = mirror(np.stack([img, img]), np.stack([lab, lab]), ATR18)
    assert np.array_equal(lbs[1], lb)
    assert np.array_equal(mirror(None, lab, CCP_COARSE)[1], lab[:, ::-1])


def test_synthetic_mirror_keeps_left_on_image_right():
    s = SyntheticPeople(n=3, size=96, seed=5)[1]
    _, lb = mirror(s.image, s.label, ATR18)
    xs = np.arange(96)
    assert xs[(lb == 14).any(0)].mean() > xs[(lb == 15).any(0)].mean()


def test_detect_person_blank_and_fallback():
    blank = np.full((300, 200, 3), 127, np.uint8)
    with pytest.warns(UserWarning):
        assert detect_person(blank) is None
        im, lb, box, method = human_centric_crop(blank, 32)
    assert method == "whole-image" and lb is None and im.shape == (32, 32, 3) and box == (-50, 0, 250, 300)


def test_detect_person_finds_the_ccp_person(ccp_root):
    if not hog_available():
        pytest.skip("this OpenCV has no HOG people detector (OpenCV 5); see detect_person")
    ds = CCP(ccp_root)
    hits = 0
    for i in (0, 100, 200, 300, 400):
        s = ds[i]
        box = detect_person(s.image)
        assert box is not None
        ys, xs = np.nonzero(s.label)
        inside = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
        hits += inside.mean() > 0.6
    assert hits >= 4
    im, lb, box, method = human_centric_crop(ds[0].image, 64)
    assert method == "hog" and im.shape == (64, 64, 3)


# ---------------------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def syn_cache(tmp_path_factory):
    ds = SyntheticPeople(n=30, size=64, seed=1)
    out = prepare_corpus(ds, 32, tmp_path_factory.mktemp("c") / "corpus", progress=False)
    return ds, out


def test_prepare_writes_the_documented_cache(syn_cache):
    ds, out = syn_cache
    assert {p.name for p in out.iterdir()} == {
        "images.npy",
        "labels.npy",
        "mean.npy",
        "boxes.npy",
        "meta.json",
    }
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["version"] == ds.version and meta["size"] == 32
    assert meta["label_set"] == {
        "name": "atr18",
        "names": list(ATR18.names),
        "lr_pairs": [[9, 10], [12, 13], [14, 15]],
    }
    assert meta["ids"] == ds.ids and meta["splits"] == {
        "train": list(range(24)),
        "val": [24, 25, 26],
        "test": [27, 28, 29],
    }
    assert set(meta["checksums"]) == {"images", "labels", "mean", "boxes"}
    assert meta["created"] and meta["git_commit"] and meta["run"]["dataset_version"] == ds.version
    assert meta["command"].startswith(
        "qparse prepare --dataset synthetic --n 30 --gen-size 64 --seed 1 --size 32"
    )
    c = Corpus.load(out)
    assert (
        isinstance(c.images, np.memmap)
        and c.images.shape == (30, 32, 32, 3)
        and c.labels.shape == (30, 32, 32)
    )
    assert c.label_set is ATR18 and c.num_labels == 18 and c.size == 32 and len(c) == 30
    assert np.array_equal(c.split("test"), [27, 28, 29]) and c.split("train").dtype == np.int64
    with pytest.raises(QparseError, match="no split 'dev'"):
        c.split("dev")
    # the mean is the train split's mean image
    assert c.mean.dtype == np.float32 and c.mean.shape == (32, 32, 3)
    assert np.allclose(c.mean, np.asarray(c.images[:24], np.float64).mean(0), atol=1e-3)
    # each crop equals crop_resize of the labelled box
    s = ds[5]
    box = human_crop_box(s.label, 0.1)
    assert tuple(c.boxes[5]) == box
    im, lb = crop_resize(s.image, s.label, box, 32)
    assert np.array_equal(c.images[5], im) and np.array_equal(c.labels[5], lb)
    # the person fills the crop
    assert (c.labels[:, 3:-3, 3:-3] > 0).mean() > 0.15


def test_load_names_the_fix_when_broken(syn_cache, tmp_path):
    _, src = syn_cache
    with pytest.raises(QparseError, match=r"meta\.json missing.*qparse prepare"):
        Corpus.load(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    imgs = np.load(bad / "images.npy")
    imgs[0, 0, 0, 0] ^= 1
    np.save(bad / "images.npy", imgs)
    with pytest.raises(
        QparseError, match=rf"images\.npy: checksum differs.*qparse prepare --dataset synthetic.*--out {bad}$"
    ):
        Corpus.load(bad)
    Corpus.load(bad, verify=False)  # shapes still fine
    np.save(bad / "labels.npy", np.zeros((29, 32, 32), np.uint8))
    with pytest.raises(QparseError, match=r"labels\.npy: shape \(29, 32, 32\).*\(30, 32, 32\)"):
        Corpus.load(bad, verify=False)
    shutil.copy(src / "labels.npy", bad / "labels.npy")
    (bad / "mean.npy").unlink()
    with pytest.raises(QparseError, match=r"mean\.npy: missing.*qparse prepare"):
        Corpus.load(bad, verify=False)
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(QparseError, match="not a valid corpus meta.json"):
        Corpus.load(bad)


class _Failing:
    """A dataset that raises at item ``fail_at`` (a crash in the middle of preparing)."""

    def __init__(self, base, fail_at):
        self.base, self.fail_at = base, fail_at
        self.name, self.label_set, self.version, self.ids = base.name, base.label_set, base.version, base.ids

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i) -> Sample:
        if i == self.fail_at:
            raise RuntimeError("disk on fire")
        return self.base[i]

    def splits(self):
        return self.base.splits()


def test_prepare_is_atomic(syn_cache, tmp_path):
    ds, src = syn_cache
    # a fresh folder: nothing that looks like a cache is left
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare_corpus(_Failing(ds, 7), 32, fresh, progress=False)
    assert sorted(p.name for p in fresh.iterdir()) == []
    # an existing cache stays intact and valid
    old = tmp_path / "old"
    shutil.copytree(src, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    with pytest.raises(RuntimeError):
        prepare_corpus(_Failing(ds, 20), 32, old, progress=False)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    Corpus.load(old)


def test_from_arrays_and_save_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 18, (6, 8, 8), dtype=np.uint8)
    c = Corpus.from_arrays(images, labels, ATR18, {"train": [0, 1, 2, 3], "val": [4], "test": [5]})
    assert c.path is None and c.size == 8 and c.ids[0] == "00000" and c.num_labels == 18
    assert np.allclose(c.mean, images[:4].mean(0))
    assert np.array_equal(c.split("val"), [4])
    out = c.save(tmp_path / "c")
    d = Corpus.load(out)
    assert (
        np.array_equal(d.images, images) and np.array_equal(d.labels, labels) and np.allclose(d.mean, c.mean)
    )
    assert d.ids == c.ids and np.array_equal(d.split("train"), [0, 1, 2, 3]) and d.label_set is ATR18
    m = np.full((8, 8, 3), 5, np.float32)
    e = Corpus.from_arrays(images, labels, ATR18, {"train": []}, mean=m, ids=list("abcdef"))
    assert e.ids[2] == "c" and (e.mean == 5).all() and len(e.split("test")) == 0
    with pytest.raises(QparseError, match="outside"):
        Corpus.from_arrays(images, np.full((6, 8, 8), 18, np.uint8), ATR18, {"train": [0]})
    with pytest.raises(QparseError, match="N×S×S×3"):
        Corpus.from_arrays(images[..., :2], labels, ATR18, {})
    with pytest.raises(QparseError, match="indices outside"):
        Corpus.from_arrays(images, labels, ATR18, {"train": [6]})


def test_prepare_real_ccp_subset(ccp_root, tmp_path):
    root = tmp_path / "ccp"
    for sub in ("photos", "annotations/pixel-level"):
        (root / sub).mkdir(parents=True)
    shutil.copy(ccp_root / "label_list.mat", root)
    for i in range(1, 6):
        shutil.copy(ccp_root / "photos" / f"{i:04d}.jpg", root / "photos")
        shutil.copy(ccp_root / "annotations/pixel-level" / f"{i:04d}.mat", root / "annotations/pixel-level")
    ds = CCP(root)
    out = prepare_corpus(ds, 48, tmp_path / "cache", progress=False)
    c = Corpus.load(out)
    assert c.label_set is CCP_COARSE and c.images.shape == (5, 48, 48, 3)
    for i in range(5):
        s = ds[i]
        x0, y0, x1, y1 = c.boxes[i]
        assert x1 - x0 == y1 - y0 >= max(np.ptp(np.nonzero(s.label)[0]), np.ptp(np.nonzero(s.label)[1]))
        # the same labels survive the crop (small ones may vanish at 48 px)
        assert set(np.unique(c.labels[i])) <= set(np.unique(s.label))
        assert (c.labels[i] == CCP_COARSE.index("skin")).any()


def test_cli_prepare(tmp_path, capsys):
    out = tmp_path / "q"
    rc = main(
        ["prepare", "--dataset", "synthetic", "--n", "12", "--size", "24", "--out", str(out), "--no-progress"]
    )
    assert rc == 0 and "prepared 12 synthetic images at 24×24" in capsys.readouterr().out
    c = Corpus.load(out)
    assert c.meta["source"]["size"] == 128 and len(c.split("train")) == 10
    rc = main(
        ["prepare", "--dataset", "ccp", "--data-root", str(tmp_path / "none"), "--size", "24", "--out", str(out)]
    )
    assert rc == 2 and "qparse data download --dataset ccp --data-root" in capsys.readouterr().err


def test_feature_images_kept_at_feature_size_and_checked(tmp_path):
    """``feature_size`` F: the same crop box, resized from the photo to F×F, beside the S×S crops."""
    from qparse_lite.data.datasets import get_dataset
    from qparse_lite.data.prepare import Corpus, prepare_corpus
    from qparse_lite.retrieval.features import get_extractor
    from qparse_lite.retrieval.imagenet import image_source

    ds = get_dataset("synthetic", n=12, size=128, seed=1)
    out = prepare_corpus(ds, 32, tmp_path / "c", feature_size=64, progress=False)
    c = Corpus.load(out)
    assert c.feature_size == 64 and c.feature_images.shape == (12, 64, 64, 3)
    assert c.meta["feature_size"] == 64 and "--feature-size" in c.meta["prepare_args"]
    assert "feature_images" in c.meta["checksums"]
    # the F-px crop shows the same picture as the S-px crop, with more detail
    import cv2

    small = cv2.resize(np.asarray(c.feature_images[0]), (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - np.asarray(c.images[0]).astype(int)).mean() < 12
    ext = get_extractor("efficientnet-lite0-imagenet", input_size=64, pooling="global")
    assert image_source(c, ext) is c.feature_images
    assert image_source(c, get_extractor("hog-color")) is c.images  # non-ImageNet features see S×S
    # a changed feature_images file is caught
    arr = np.load(out / "feature_images.npy")
    arr[0, 0, 0, 0] ^= 1
    np.save(out / "feature_images.npy", arr)
    with pytest.raises(QparseError, match="feature_images.npy: checksum"):
        Corpus.load(out)
    # preparing again without F removes the stale file
    prepare_corpus(ds, 32, out, progress=False)
    assert not (out / "feature_images.npy").exists() and Corpus.load(out).feature_size is None
