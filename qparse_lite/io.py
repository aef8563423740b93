"""Atomic writes: a file is either absent, the old version, or the complete new one.

Every result, checkpoint and cache file of the kit goes through these helpers: the data is written
to a temporary file in the same folder, flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows). A full disk (``ENOSPC``/``EDQUOT``) is reported as a
:class:`~qparse_lite.errors.QparseError` naming the file and the fix, and leaves no temporary file.

Images go through :func:`atomic_save_image`, the one image writer: it re-opens what the encoder wrote and
checks it (format, size, the whole stream decodes, the end marker is there) *before* the rename, because an
encoder writing with ``write(2)`` may lose its tail on a short write to a full disk without an error.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_save_png",
    "atomic_save_image",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_path(target: str | Path, suffix: str = ""):
    """Yield a temporary path next to ``target``; on success rename it onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(target, str(e)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _disk_full(target: Path, detail: str):
    from qparse_lite.errors import QparseError

    return QparseError(
        f"{target}: not written, the disk is full ({detail}); nothing was left under its name. "
        f"Fix: free space on {target.parent} (or write elsewhere) and run again."
    )


def _atomic_write(target: str | Path, mode: str, writer: Callable[[IO[Any]], None]) -> Path:
    with atomic_path(target) as tmp, open(tmp, mode) as f:
        writer(f)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return _atomic_write(target, "w", lambda f: f.write(text))


def atomic_write_json(target: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_save_npy(target: str | Path, array: np.ndarray) -> Path:
    """Save ``array`` as ``.npy`` atomically (loadable with ``np.load(..., mmap_mode='r')``)."""
    return _atomic_write(target, "wb", lambda f: np.save(f, array, allow_pickle=False))


def atomic_torch_save(target: str | Path, obj: Any) -> Path:
    """``torch.save`` to ``target`` atomically (checkpoints)."""
    import torch

    return _atomic_write(target, "wb", lambda f: torch.save(obj, f))


def atomic_save_png(target: str | Path, array: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Save a uint8 image (H×W label map, optionally palettised, or H×W×3 RGB) as PNG atomically
    (:func:`atomic_save_image`)."""
    return atomic_save_image(target, array, palette, format="PNG")


_END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def atomic_save_image(
    target: str | Path, array: np.ndarray, palette: np.ndarray | None = None, *, format: str | None = None,
    quality: int = 92,
) -> Path:  # fmt: skip
    """Save a uint8 image (H×W, optionally palettised, or H×W×3 RGB) as PNG or JPEG (``format``, default from
    the suffix: .png, .jpg, .jpeg) atomically, verified before the rename.

    The temporary file is re-opened and must be the format asked for, at the array's size, decode to its
    end (a JPEG is decoded at 1/8 scale: every block is still read) and end with the format's end marker
    (PNG ``IEND``, JPEG ``FFD9``); otherwise it is deleted and :class:`~qparse_lite.errors.QparseError`
    names the file and the fix (a full disk, usually): an incomplete image never gets its final name.
    """
    from PIL import Image

    target = Path(target)
    fmt = format or _FORMATS.get(target.suffix.lower())
    if fmt not in _END_MARKERS:
        raise ValueError(f"{target}: cannot tell PNG or JPEG from the suffix; pass format='PNG' or 'JPEG'")
    array = np.ascontiguousarray(array)
    img = Image.fromarray(array)
    if palette is not None and array.ndim == 2:
        img = img.convert("P")
        img.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    size = img.size
    kw = {"quality": quality} if fmt == "JPEG" else {}
    with atomic_path(target, suffix=target.suffix) as tmp:
        img.save(tmp, format=fmt, **kw)
        del img
        _verify_image(tmp, target, fmt, size)
    return target


def _verify_image(tmp: Path, target: Path, fmt: str, size: tuple[int, int]) -> None:
    """Raise QparseError (naming ``target``) unless ``tmp`` is a complete ``fmt`` image of ``size``."""
    from PIL import Image, ImageFile

    nbytes = tmp.stat().st_size
    problem = ""
    with open(tmp, "rb") as f:
        f.seek(max(0, nbytes - 16))
        if not f.read().endswith(_END_MARKERS[fmt]):
            problem = f"no {fmt} end marker"
    if not problem:  # our own file: no decompression-bomb limit (a photo's size was checked when it was read)
        truncated, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(tmp) as im:
                if im.format != fmt or im.size != size:
                    problem = f"reads back as {im.format} {im.size[0]}×{im.size[1]}"
                else:
                    if fmt == "JPEG":
                        im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                    im.load()
        except (OSError, ValueError, SyntaxError) as e:
            problem = f"does not decode: {e}"
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated
            Image.MAX_IMAGE_PIXELS = limit
    if problem:
        from qparse_lite.errors import QparseError

        raise QparseError(
            f"{target}: the {fmt} written is incomplete ({nbytes} bytes, {problem}), so it was not saved under its "
            f"name; the disk is probably full. Fix: free space on {target.parent} (or write elsewhere) and run again."
        )
