"""Image batches shared by the feature extractors: input validation and a progress bar over batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from qparse_lite.errors import QparseError

__all__ = ["progress_bar", "check_images"]


def progress_bar(iterable: Any, total: int, desc: str, progress: bool | None) -> Any:
    """A tqdm bar over ``iterable`` (``total`` batches); ``progress`` None: auto, False: off."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable, total=total, desc=desc, mininterval=1.0, disable=None if progress is None else not progress
    )


def check_images(images: np.ndarray, who: str) -> np.ndarray:
    """``images`` as an array, refused with a message naming ``who`` unless uint8 N×H×W×3."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise QparseError(
            f"{who}: expected uint8 images of shape N×H×W×3, got {images.dtype} {images.shape}. "
            "Fix: pass RGB uint8 arrays (e.g. corpus.images)."
        )
    return images
