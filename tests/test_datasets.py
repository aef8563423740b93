"""Datasets: CCP (the mirror and tiny hand-made trees), ATR (archive layout and Parquet export), splits."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from qparse_lite.data.datasets import ATR, CCP, CCP_COMMIT, get_dataset, seeded_split, split_counts
from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18, CCP59_NAMES, CCP_COARSE, ccp59_to_coarse_lut

# ---------------------------------------------------------------------------------------------------------
# helpers: tiny datasets on disk
# ---------------------------------------------------------------------------------------------------------


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _label(h: int, w: int, ids: list[int]) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    for k, v in enumerate(ids):
        lab[2 + k : 4 + k, 1 : w - 1] = v
    return lab


def _write_label_list(path: Path, names=CCP59_NAMES) -> None:
    cell = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        cell[0, i] = n
    scipy.io.savemat(path, {"label_list": cell})


def make_ccp(root: Path, n: int = 10, h: int = 12, w: int = 8) -> Path:
    (root / "photos").mkdir(parents=True)
    (root / "annotations/pixel-level").mkdir(parents=True)
    _write_label_list(root / "label_list.mat")
    for i in range(1, n + 1):
        Image.fromarray(_rgb(h, w, i)).save(root / "photos" / f"{i:04d}.jpg", quality=95)
        scipy.io.savemat(
            root / "annotations/pixel-level" / f"{i:04d}.mat", {"groundtruth": _label(h, w, [41, 14, 31])}
        )
    return root


def _png_bytes(arr: np.ndarray, palette: bool = False) -> bytes:
    im = Image.fromarray(arr)
    if palette:
        im = im.convert("P")
        im.putpalette(ATR18.palette.ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


ATR_STEMS = [f"{k}_{k * 7}" for k in range(1, 9)] + [
    "fash_0001",
    "fash_0002",
    "dataset10k_0001",
    "dataset10k_0002",
]


def make_atr_archive(root: Path, stems=ATR_STEMS, h: int = 10, w: int = 6) -> Path:
    base = root / "humanparsing"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "SegmentationClassAug").mkdir(parents=True)
    for k, s in enumerate(stems):
        (base / "JPEGImages" / f"{s}.jpg").write_bytes(_jpg_bytes(_rgb(h, w, k)))
        (base / "SegmentationClassAug" / f"{s}.png").write_bytes(
            _png_bytes(_label(h, w, [k % 18, 14, 9]), palette=True)
        )
    return root


def make_atr_parquet(root: Path, n: int = 10, h: int = 10, w: int = 6, paths: list[str | None] | None = None,
                     mask_override: dict[int, np.ndarray] | None = None) -> Path:  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows_img, rows_mask = [], []
    for i in range(n):
        mask = (mask_override or {}).get(i, _label(h, w, [i % 18, 15, 10]))
        p = None if paths is None else paths[i]
        rows_img.append({"bytes": _jpg_bytes(_rgb(h, w, 100 + i)), "path": p})
        rows_mask.append({"bytes": _png_bytes(mask, palette=True), "path": None})
    half = n // 2
    for part, (a, b) in enumerate(((0, half), (half, n))):
        tab = pa.table(
            {"image": pa.array(rows_img[a:b], type=struct), "mask": pa.array(rows_mask[a:b], type=struct)}
        )
        pq.write_table(tab, root / "data" / f"train-0000{part}-of-00002.parquet", row_group_size=2)
    return root


# ---------------------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------------------


def test_split_counts_full_and_scaled():
    assert split_counts(7700, (6000, 700, 1000)) == (6000, 700, 1000)
    assert split_counts(7703, (6000, 700, 1000)) == (6000, 700, 1000)
    assert split_counts(1004, (804, 100, 100)) == (804, 100, 100)
    assert split_counts(77, (6000, 700, 1000)) == (60, 7, 10)
    assert split_counts(10, (804, 100, 100)) == (8, 1, 1)
    assert sum(split_counts(5, (6000, 700, 1000))) == 5


def test_seeded_split_is_deterministic_disjoint_and_order_free():
    ids = [f"{i:04d}" for i in range(100)]
    a = seeded_split(ids, (80, 10, 10), seed=0)
    assert a == seeded_split(list(reversed(ids)), (80, 10, 10), seed=0)  # input order does not matter
    assert a != seeded_split(ids, (80, 10, 10), seed=1)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert all(v == sorted(v) for v in a.values())


# ---------------------------------------------------------------------------------------------------------
# CCP
# ---------------------------------------------------------------------------------------------------------


def test_ccp_mirror_reads_1004_with_fixed_split(ccp_root, tmp_path):
    ds = CCP(ccp_root)
    assert len(ds) == 1004 and ds.ids[0] == "0001" and ds.ids[-1] == "1004"
    assert ds.version == f"bearpaw/clothing-co-parsing@{CCP_COMMIT}"
    sp = ds.splits()
    assert {k: len(v) for k, v in sp.items()} == {"train": 804, "val": 100, "test": 100}
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == ds.ids
    assert sp == CCP(ccp_root).splits()
    paths = ds.write_splits(tmp_path / "s")
    assert paths["test"].read_text().split() == sp["test"]
    s = ds[0]
    assert s.image.shape == (832, 550, 3) and s.image.dtype == np.uint8
    assert s.label.shape == (832, 550) and s.label.dtype == np.uint8 and s.id == "0001"
    assert s.label.max() < len(CCP_COARSE)
    raw = CCP(ccp_root, labels="ccp59")[0].label
    assert raw.max() < 59 and np.array_equal(s.label, ccp59_to_coarse_lut()[raw])
    assert CCP_COARSE.names[s.label[raw == CCP59_NAMES.index("hair")][0]] == "hair"


def test_ccp_tiny_tree_and_scaled_split(tmp_path):
    ds = get_dataset("ccp", root=make_ccp(tmp_path / "ccp"), labels="ccp59")
    assert len(ds) == 10 and ds.label_set.name == "ccp59" and "10 of 1004" in ds.version
    assert {k: len(v) for k, v in ds.splits().items()} == {"train": 8, "val": 1, "test": 1}
    s = ds.get("0003")
    assert s.id == "0003" and set(np.unique(s.label)) == {0, 14, 31, 41}
    coarse = CCP(tmp_path / "ccp")[2].label
    assert set(np.unique(coarse)) == {
        0,
        CCP_COARSE.index("skin"),
        CCP_COARSE.index("dress"),
        CCP_COARSE.index("pants"),
    }


def test_ccp_missing_root_names_the_download_command(tmp_path):
    with pytest.raises(QparseError, match=r"qparse data download --dataset ccp --data-root .*nowhere"):
        CCP(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(QparseError, match=r"label_list\.mat.*qparse data download --dataset ccp"):
        CCP(tmp_path / "half")
    with pytest.raises(QparseError, match="qparse data download --dataset ccp --data-root DIR"):
        get_dataset("ccp")
    with pytest.raises(QparseError, match="unknown dataset"):
        get_dataset("lip", root=tmp_path)


def test_ccp_missing_photo_names_both(tmp_path):
    root = make_ccp(tmp_path / "ccp", n=3)
    (root / "photos/0002.jpg").unlink()
    with pytest.raises(QparseError, match=r"photos/0002\.jpg.*pixel-level/0002\.mat"):
        CCP(root)


def test_ccp_size_mismatch_names_both_files(tmp_path):
    root = make_ccp(tmp_path / "ccp", n=3)
    scipy.io.savemat(root / "annotations/pixel-level/0002.mat", {"groundtruth": _label(11, 8, [41])})
    ds = CCP(root)
    ds[0]
    with pytest.raises(QparseError, match=r"0002\.mat.*8×11.*0002\.jpg.*8×12"):
        ds[1]


def test_ccp_id_outside_label_set_names_both_files(tmp_path):
    root = make_ccp(tmp_path / "ccp", n=3)
    scipy.io.savemat(root / "annotations/pixel-level/0003.mat", {"groundtruth": _label(12, 8, [41, 60])})
    with pytest.raises(QparseError, match=r"0003\.mat.*0003\.jpg.*\[60\].*ccp59"):
        CCP(root)[2]
    scipy.io.savemat(root / "annotations/pixel-level/0001.mat", {"labels": _label(12, 8, [1])})
    with pytest.raises(QparseError, match=r"0001\.mat: no variable 'groundtruth'"):
        CCP(root)[0]


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    root = make_ccp(tmp_path / "ccp", n=3)
    gray = np.tile(np.arange(0, 240, 30, dtype=np.uint8), (12, 1))
    Image.fromarray(gray, mode="L").save(root / "photos/0001.jpg", quality=100)
    rgba = np.zeros((12, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 77
    Image.fromarray(rgba, mode="RGBA").save(root / "photos/0002.jpg", format="PNG")  # RGBA content, .jpg name
    ds = CCP(root)
    g = ds[0].image
    assert g.shape == (12, 8, 3) and g.dtype == np.uint8
    assert np.array_equal(g[..., 0], g[..., 1]) and np.abs(g[..., 0].astype(int) - gray).max() <= 3
    a = ds[1].image
    assert a.shape == (12, 8, 3) and (a == [200, 100, 50]).all()
    (root / "photos/0003.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(QparseError, match=r"0003\.jpg: not a readable image"):
        ds[2]


# ---------------------------------------------------------------------------------------------------------
# ATR
# ---------------------------------------------------------------------------------------------------------


def test_atr_archive_layout_excludes_chictopia(tmp_path):
    ds = ATR(make_atr_archive(tmp_path / "atr"))
    assert ds.layout == "archive" and ds.label_set is ATR18
    assert not any(x.startswith("dataset10k_") for x in ds.ids)
    assert "fash_0001" in ds.ids and len(ds) == 10 and ds.num_chictopia == 2
    sp = ds.splits()
    assert {k: len(v) for k, v in sp.items()} == {"train": 8, "val": 1, "test": 1}
    assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(ds.ids)
    s = ds.get("3_21")
    assert s.image.shape == (10, 6, 3) and np.array_equal(s.label, _label(10, 6, [2, 14, 9]))
    assert ATR(tmp_path / "atr").splits() == sp
    with_chic = ATR(tmp_path / "atr", include_chictopia=True)
    assert set(with_chic.splits()["train"]) == set(sp["train"]) | {"dataset10k_0001", "dataset10k_0002"}
    assert with_chic.splits()["test"] == sp["test"]
    # the two folders directly in ROOT work too
    assert len(ATR(tmp_path / "atr" / "humanparsing")) == 10


def test_atr_archive_bad_labels_name_both_files(tmp_path):
    root = make_atr_archive(tmp_path / "atr", stems=["a", "b", "c"])
    seg = root / "humanparsing/SegmentationClassAug"
    (seg / "a.png").write_bytes(_png_bytes(_label(10, 6, [18])))
    (seg / "b.png").write_bytes(_png_bytes(_label(9, 6, [1])))
    colour = ATR18.palette[_label(10, 6, [5])]
    (seg / "c.png").write_bytes(_png_bytes(colour))
    ds = ATR(root)
    with pytest.raises(QparseError, match=r"a\.png \(image .*a\.jpg\).*\[18\].*atr18"):
        ds.get("a")
    with pytest.raises(QparseError, match=r"b\.png.*6×9.*b\.jpg.*6×10"):
        ds.get("b")
    with pytest.raises(QparseError, match=r"c\.png.*colours, not label ids"):
        ds.get("c")


def test_atr_parquet_export(tmp_path):
    root = make_atr_parquet(tmp_path / "hf", n=10)
    ds = get_dataset("atr", root=root)
    assert ds.layout == "parquet" and ds.ids == [f"{i:05d}" for i in range(10)]
    assert {k: len(v) for k, v in ds.splits().items()} == {"train": 8, "val": 1, "test": 1}
    for i in (7, 0, 5, 9, 4):  # out of order: crosses files and row groups
        s = ds[i]
        assert s.id == f"{i:05d}" and s.image.shape == (10, 6, 3)
        assert np.array_equal(s.label, _label(10, 6, [i % 18, 15, 10]))
        ref = np.asarray(Image.open(io.BytesIO(_jpg_bytes(_rgb(10, 6, 100 + i)))))
        assert np.array_equal(s.image, ref)
    assert ds.version.startswith("hf-parquet:2 files")


def test_atr_parquet_paths_exclude_chictopia(tmp_path):
    names = ["1_1.jpg", "dataset10k_9.jpg", "fash_3.jpg", "2_2.jpg", "dataset10k_10.jpg", "3_3.jpg"]
    ds = ATR(make_atr_parquet(tmp_path / "hf", n=6, paths=names))
    assert ds.ids == ["00000", "00002", "00003", "00005"]
    assert ds.original_name(1) == "fash_3.jpg"
    assert np.array_equal(ds[1].label, _label(10, 6, [2, 15, 10]))  # row 2 of the files


def test_atr_parquet_bad_rows_name_file_and_row(tmp_path):
    root = make_atr_parquet(
        tmp_path / "hf", n=4, mask_override={1: _label(7, 6, [1]), 3: _label(10, 6, [19])}
    )
    ds = ATR(root)
    ds[0]
    with pytest.raises(QparseError, match=r"train-00000-of-00002\.parquet#row1 mask.*6×7.*#row1 image"):
        ds[1]
    with pytest.raises(QparseError, match=r"train-00001-of-00002\.parquet#row1 mask.*\[19\]"):
        ds[3]


def test_atr_missing_or_wrong_root(tmp_path):
    with pytest.raises(QparseError, match="qparse data download --dataset atr --data-root"):
        ATR(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QparseError, match="qparse data download --dataset atr --data-root"):
        ATR(tmp_path / "empty")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"pixels": [1, 2]}), tmp_path / "other" / "x.parquet")
    with pytest.raises(QparseError, match=r"x\.parquet: expected columns 'image' and 'mask'"):
        ATR(tmp_path / "other")
    with pytest.raises(QparseError, match="ATR-18"):
        get_dataset("atr", root=tmp_path, labels="ccp59")


def test_iteration_yields_samples(tmp_path):
    root = make_ccp(tmp_path / "ccp", n=3)
    items = list(CCP(root))
    assert [s.id for s in items] == ["0001", "0002", "0003"]
    shutil.rmtree(root / "photos")
    with pytest.raises(QparseError, match="photos"):
        CCP(root)
