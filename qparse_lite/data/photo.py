"""The one reader of image files: a user's photo (``qparse parse``) and a dataset's images.

:func:`read_photo` decodes a JPEG/PNG/... to RGB uint8 H×W×3 and is careful with what it is given:

- a path that is not a regular file (a FIFO named ``.jpg``, a directory, a device) is refused *before*
  it is opened (opening a FIFO for reading blocks until a writer comes: the parser would hang);
- the size is read from the header before anything is decoded, and a photo of more than ``max_pixels``
  pixels is refused with its size and the fix (a decompression bomb, or a photo the parser has no
  memory for; :data:`MAX_PHOTO_PIXELS` by default, ``qparse parse --max-megapixels``);
- the EXIF orientation is applied (``orient=True``), so a portrait phone photo stored sideways with
  orientation 6 is parsed the way it is displayed (``PIL.ImageOps.exif_transpose``'s convention);
- it is decoded in strips into one array, so the peak is the decoder's image plus the result, not the
  two or three full copies of ``np.asarray(image).copy()``.

The dataset loaders (:func:`qparse_lite.data.datasets.read_image`) read through it too, with
``orient=False`` (a dataset's label maps are aligned to the stored pixels, not the EXIF view) and their own
fix ("download the dataset again"); a user's photo gets :data:`PHOTO_FIX`.
"""

from __future__ import annotations

import io as _io
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from qparse_lite.errors import QparseError

__all__ = ["MAX_PHOTO_PIXELS", "PHOTO_FIX", "check_regular_file", "read_photo"]

MAX_PHOTO_PIXELS = 150_000_000
"""The largest photo :func:`read_photo` decodes by default: 150 megapixels (e.g. 12 000 × 12 500), about
450 MB as RGB. Larger ones are refused (PIL's own decompression-bomb limit is 179 megapixels)."""

PHOTO_FIX = "Fix: check that the file opens in an image viewer, or convert it to JPEG or PNG."
"""The fix named for a user's photo that cannot be decoded (never "download the dataset again")."""

_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)  # fmt: skip

# EXIF orientation -> the array operation that shows the photo as displayed (PIL.ImageOps.exif_transpose's
# table: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90)
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}  # fmt: skip


def check_regular_file(
    path: str | Path, what: str = "image", fix: str = PHOTO_FIX, missing: str = "Fix: check the path."
) -> None:
    """Raise :class:`QparseError` unless ``path`` is an existing regular file (checked with ``stat``, without
    opening it: a FIFO would block). ``fix`` ends the message of an unreadable file, ``missing`` a missing one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise QparseError(f"{path}: {what} file not found. {missing}") from None
    except OSError as e:
        raise QparseError(f"{path}: cannot read the {what} file ({e.strerror}). {fix}") from None
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise QparseError(f"{path}: is {kind}, not an {what} file; it is not opened. Fix: pass an {what} file.")
    if not stat.S_ISREG(st.st_mode):
        raise QparseError(f"{path}: not a regular file; it is not opened. Fix: pass an {what} file.")


def _too_large(src: str, w: int, h: int, max_pixels: int) -> QparseError:
    return QparseError(
        f"{src}: {w}×{h} pixels ({w * h / 1e6:.0f} megapixels) is more than the {max_pixels / 1e6:.0f} megapixels "
        f"the parser decodes (a decompression bomb, or about {4 * w * h / 2**30:.1f} GiB to decode). Fix: downscale "
        "it first (e.g. `convert IN -resize 50% OUT`, or PIL's Image.thumbnail), or raise --max-megapixels."
    )


def read_photo(
    path: str | Path | None, *, data: bytes | None = None, source: str | None = None, orient: bool = True,
    max_pixels: int | None = MAX_PHOTO_PIXELS, fix: str = PHOTO_FIX,
) -> np.ndarray:  # fmt: skip
    """Decode an image file (or its ``data`` bytes) to RGB uint8 H×W×3 (see the module docstring).

    Grayscale, palette, CMYK and 16-bit images are converted to RGB; an alpha channel is dropped (the RGB
    values are kept as they are). ``orient`` applies the EXIF orientation; ``max_pixels`` (None: PIL's own
    decompression-bomb limit) refuses larger images before decoding them; ``fix`` ends the message of an
    unreadable file; ``source`` names the file in messages (default ``path``).

    Raises:
        QparseError: missing, not a regular file, not a decodable image, or too large; the message names
            the file and the fix.
    """
    from PIL import Image, UnidentifiedImageError

    src = source or str(path)
    if data is None:
        check_regular_file(path, fix=fix, missing="Fix: check the path." if fix == PHOTO_FIX else fix)  # type: ignore[arg-type]
    old = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if max_pixels is not None:
                Image.MAX_IMAGE_PIXELS = max_pixels  # PIL refuses at twice this while opening; we check 1×
            with Image.open(_io.BytesIO(data) if data is not None else path) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise _too_large(src, w, h, max_pixels)
                orientation = int(im.getexif().get(0x0112, 1) or 1) if orient else 1
                arr = _decode_rgb(im)
    except Image.DecompressionBombError as e:
        raise QparseError(f"{src}: refused as a decompression bomb ({e}). Fix: downscale it first.") from None
    except FileNotFoundError:
        raise QparseError(f"{src}: image file not found. {fix}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise QparseError(f"{src}: not a readable image ({e}). {fix}") from e
    finally:
        Image.MAX_IMAGE_PIXELS = old
    if orientation in _ORIENT:
        arr = np.ascontiguousarray(_ORIENT[orientation](arr))
    return arr


def _decode_rgb(im) -> np.ndarray:
    """The decoded RGB pixels of an open PIL image, copied strip by strip into one array."""
    im.load()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a / max(1.0, a.max()) * 255.0, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    if im.mode != "RGB":
        im = im.convert("RGBA").convert("RGB") if im.mode in ("P", "PA", "LA") else im.convert("RGB")
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, (16 << 20) // max(1, 3 * w))  # ~16 MB strips
    for y in range(0, h, step):
        out[y : y + step] = np.asarray(im.crop((0, y, w, min(h, y + step))))
    return out
