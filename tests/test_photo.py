"""The one image reader (qparse_lite.data.photo) and the one image writer (qparse_lite.io.atomic_save_image):
EXIF orientation, non-regular files refused before they are opened, too-large photos refused before they are
decoded, and a written image verified before it gets its name (a full disk: monkeypatched and on a tmpfs)."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from qparse_lite.errors import QparseError


def _photo(h: int = 30, w: int = 50) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3)).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_exif_transpose(tmp_path, orientation):
    from qparse_lite.data.photo import read_photo

    img = Image.fromarray(_photo())
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"  # lossless, so the pixels can be compared exactly
    img.save(path, exif=exif)
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = read_photo(path)
    np.testing.assert_array_equal(got, want)
    assert got.shape == ((50, 30, 3) if orientation >= 5 else (30, 50, 3))
    assert got.flags.writeable and got.flags.c_contiguous
    # a dataset's image keeps its stored pixel order (its label map is aligned to it)
    from qparse_lite.data.datasets import read_image

    np.testing.assert_array_equal(read_image(path), _photo())


def test_non_regular_files_are_refused_before_they_are_opened(tmp_path):
    from qparse_lite.data.photo import read_photo

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(QparseError, match=r"photo\.jpg: is a FIFO.*not opened.*Fix:"):
        read_photo(fifo)  # opening it would block until a writer comes: the test would hang
    assert time.perf_counter() - t0 < 5
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(QparseError, match=r"dir\.jpg: is a directory"):
        read_photo(tmp_path / "dir.jpg")
    if Path("/dev/null").exists():
        with pytest.raises(QparseError, match=r"/dev/null: is a character device"):
            read_photo("/dev/null")
    with pytest.raises(QparseError, match=r"missing\.jpg: image file not found\. Fix: check the path"):
        read_photo(tmp_path / "missing.jpg")


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that declares w×h pixels but holds one tiny IDAT (a decompression-bomb header, a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))  # fmt: skip


def test_too_large_photos_are_refused_before_decoding_with_the_file_and_the_fix(tmp_path):
    from qparse_lite.data.photo import MAX_PHOTO_PIXELS, read_photo

    big = tmp_path / "bomb.png"
    _png_header_only(big, 15000, 15000)
    with pytest.raises(QparseError, match=r"bomb\.png: 15000×15000 pixels \(225 megapixels\).*Fix: downscale"):
        read_photo(big)
    assert 15000 * 15000 > MAX_PHOTO_PIXELS >= 10000 * 10000  # a 10000×10000 photo is still read
    small = tmp_path / "small.png"
    Image.fromarray(_photo()).save(small)
    with pytest.raises(QparseError, match=r"small\.png: 50×30 pixels.*--max-megapixels"):
        read_photo(small, max_pixels=1000)
    assert read_photo(small, max_pixels=1500).shape == (30, 50, 3)
    # PIL's own limit (2 × MAX_IMAGE_PIXELS) is not left changed
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)


def test_a_users_unreadable_photo_is_not_told_to_download_the_dataset(tmp_path):
    from qparse_lite.data.datasets import read_image
    from qparse_lite.data.photo import read_photo

    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(QparseError) as e:
        read_photo(bad)
    assert "holiday.jpg: not a readable image" in str(e.value) and "dataset" not in str(e.value)
    assert "Fix: check that the file opens in an image viewer" in str(e.value)
    with pytest.raises(QparseError, match="Fix: download the dataset again"):
        read_image(bad)  # a dataset's file: the dataset's fix


# -- the writer ----------------------------------------------------------------------------------------------


def test_atomic_save_image_round_trips_png_and_jpeg(tmp_path):
    from qparse_lite.io import atomic_save_image, atomic_save_png
    from qparse_lite.labels import ATR18

    lab = (np.arange(35 * 20).reshape(35, 20) % 18).astype(np.uint8)
    atomic_save_png(tmp_path / "l.png", lab, ATR18.palette)
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), lab)
    atomic_save_image(tmp_path / "o.jpg", _photo())
    with Image.open(tmp_path / "o.jpg") as im:
        assert im.format == "JPEG" and im.size == (50, 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.png", "o.jpg"]  # no temporary files left


def test_the_writer_verifies_an_image_larger_than_pils_bomb_limit(tmp_path, monkeypatch):
    """Its own file is verified whatever PIL's decompression-bomb limit (a photo is checked when it is read)."""
    from qparse_lite.io import atomic_save_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1500 px is "a bomb" to PIL now
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atomic_save_image(tmp_path / "big.png", _photo())
        atomic_save_image(tmp_path / "big.jpg", _photo())
    assert Image.MAX_IMAGE_PIXELS == 100


def _truncating_save(monkeypatch, keep: int = 0) -> None:
    """Image.save that loses the tail of its file without an error (a short write(2) on a full disk)."""
    real = Image.Image.save

    def save(self, fp, *a, **kw):
        real(self, fp, *a, **kw)
        size = os.path.getsize(fp)
        os.truncate(fp, keep or size // 2)

    monkeypatch.setattr(Image.Image, "save", save)


@pytest.mark.parametrize("name", ["0004_overlay.jpg", "0004.png"])
def test_a_truncated_image_never_gets_its_name(tmp_path, monkeypatch, name):
    from qparse_lite.io import atomic_save_image

    target = tmp_path / name
    target.write_bytes(b"the previous version")
    _truncating_save(monkeypatch)
    with pytest.raises(QparseError, match=rf"{name}: the (JPEG|PNG) written is incomplete.*disk.*Fix: free space"):
        atomic_save_image(target, _photo(200, 200))
    assert target.read_bytes() == b"the previous version"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == [name]  # and no temporary file is left


def test_enospc_while_writing_is_a_message_naming_the_file(tmp_path, monkeypatch):
    from qparse_lite.io import atomic_save_image, atomic_write_json

    def full(self, fp, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(QparseError, match=r"x\.png: not written, the disk is full.*Fix: free space"):
        atomic_save_image(tmp_path / "x.png", _photo())
    assert list(tmp_path.iterdir()) == []
    real_open = open

    def full_open(file, mode="r", *a, **kw):
        f = real_open(file, mode, *a, **kw)
        if "w" in mode and ".tmp" in str(file):
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(QparseError, match=r"parse\.json: not written, the disk is full"):
        atomic_write_json(tmp_path / "parse.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 200 KiB tmpfs (root only); skipped with the reason when it cannot be mounted."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the monkeypatched full-disk tests cover the logic")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_tmpfs_leaves_no_truncated_image_under_its_name(tiny_tmpfs):
    from qparse_lite.io import atomic_save_image

    noise = np.random.default_rng(1).integers(0, 255, (600, 400, 3)).astype(np.uint8)  # ~500 KB as JPEG
    for name in ("0004_overlay.jpg", "0004.png"):
        with pytest.raises(QparseError, match=rf"{name}: .*(incomplete|disk is full).*Fix: free space"):
            atomic_save_image(tiny_tmpfs / name, noise)
    assert list(tiny_tmpfs.iterdir()) == []  # neither a truncated file nor a temporary one
    small = atomic_save_image(tiny_tmpfs / "ok.jpg", noise[:40, :40])  # what fits is written
    assert Image.open(small).size == (40, 40)
