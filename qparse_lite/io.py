"""Atomic writes: a file is either absent, the old version, or the complete new one.

Every result, checkpoint and cache file of the kit goes through these helpers: the data is written
to a temporary file in the same folder, flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

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
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_save_png",
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(target: str | Path, mode: str, writer: Callable[[IO[Any]], None]) -> Path:
    with atomic_path(target) as tmp, open(tmp, mode) as f:
        writer(f)
    return Path(target)


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically."""
    return _atomic_write(target, "wb", lambda f: f.write(data))


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
    """Save a uint8 image (H×W label map, optionally palettised, or H×W×3 RGB) as PNG atomically."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None and array.ndim == 2:
        img = img.convert("P")
        img.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    return _atomic_write(target, "wb", lambda f: img.save(f, format="PNG"))
