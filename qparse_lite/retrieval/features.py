"""K-nearest-neighbour retrieval of corpus images (paper Sec. 3.1, docs/paper.md §1.2).

The paper rescales the human-centric crop I to 227×227×3, takes the 4,096-d output of the penultimate
fully connected layer (fc7) of an ImageNet-trained Krizhevsky network, and retrieves the KNN images

    G = {g_1, g_2, ..., g_K}

of I from the annotated corpus by (Euclidean) distance between these global features: K = 9 at test
time, 50 per training image (where a training image is never its own neighbour).

This module has three parts:

* **Feature extractors** behind one interface (:class:`FeatureExtractor`), made by :func:`get_extractor`:
  ``alexnet-imagenet`` (the paper's fc7 features), ``hog-color`` (HOG + spatial colour histograms, no
  download, the CPU stand-in) and ``oracle`` (ground-truth label-map layout: the upper bound of any
  appearance feature, for teaching).
* **Exact search** (:func:`knn`, faiss ``IndexFlatL2``, candidates re-ranked with exact float64 distances
  and ties broken by index, so results are deterministic) and the corpus-level :func:`corpus_knn`, whose
  :class:`KNNResult` is saved/loaded as ``.npz`` so training and parsing reuse it.
* **Retrieval quality** without any parser: :func:`label_precision_at_k`, :func:`label_recall_at_k`,
  :func:`label_iou_at_k` (do the neighbours wear the same garments as the query?).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qparse_lite.data.crops import corpus_fingerprint
from qparse_lite.errors import QparseError
from qparse_lite.retrieval.batches import check_images, progress_bar
from qparse_lite.retrieval.imagenet import (
    EfficientNetExtractor,
    LearnedRetrievalExtractor,
    image_source,
)

#: The file torchvision's ``AlexNet_Weights.IMAGENET1K_V1`` downloads (into ``torch.hub.get_dir()/checkpoints``).
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------
# feature extractors
# ---------------------------------------------------------------------------------------------------


@runtime_checkable
class FeatureExtractor(Protocol):
    """A global image descriptor: ``extractor(images, labels=None) -> float32 N×D``.

    Attributes:
        name: registry name (``"alexnet-imagenet"``, ``"hog-color"``, ``"oracle"``).
        dim: D, the feature length.
        needs_labels: True when ``__call__`` needs the label maps (only the oracle).
        config: JSON-able parameters that determine the features (keys the feature cache).
    """

    name: str
    dim: int
    needs_labels: bool
    config: dict[str, Any]

    def __call__(
        self, images: np.ndarray, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray: ...


def default_alexnet_weights() -> Path:
    """Where torchvision caches AlexNet's ImageNet weights: ``torch.hub.get_dir()/checkpoints/`` + file."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


class AlexNetExtractor:
    """The paper's retrieval feature: fc7 of an ImageNet AlexNet (4,096-d), Sec. 3.1.

    fc7 is the output of the second fully connected layer *after its ReLU* (torchvision's
    ``classifier[:6]``; dropout is the identity in eval mode). Images are resized to 227×227 (bilinear,
    antialiased), scaled to [0, 1] and normalised with the ImageNet mean/std.

    About 227 vs 224: torchvision's AlexNet is documented for 224×224 inputs; the paper (Caffe) uses
    227×227. We feed 227×227, which needs no change to the network: conv1 (11×11, stride 4, padding 2)
    gives 56×56 at 227 (55×55 at 224), and after the first 3×3/2 max-pool both are 27×27, so every later
    map is the same size (6×6 at conv5) and the ``AdaptiveAvgPool2d((6, 6))`` before the classifier is
    the identity in both cases. The only difference is a slightly finer sampling of the input.

    Note also that torchvision's AlexNet is the "one weird trick" variant (64-192-384-256-256 conv
    channels, no LRN, no grouping), not the exact Caffe/BVLC network the paper used: the features are of
    the same kind and size, not bit-identical to the paper's.

    Weights come from ``weights`` (a state_dict file) or torchvision's cache file
    (:func:`default_alexnet_weights`). Nothing is downloaded here, and there is no silent fall-back to
    random weights: a missing file raises :class:`QparseError` that says how to get it.
    """

    name = "alexnet-imagenet"
    dim = 4096
    needs_labels = False

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 64,
        input_size: int = 227,
    ) -> None:
        import torch
        import torchvision

        from qparse_lite.runinfo import get_device

        path = Path(weights) if weights is not None else default_alexnet_weights()
        if not path.is_file():
            where = f"--weights {path}" if weights is not None else f"the torch hub cache ({path})"
            raise QparseError(
                f"{path}: AlexNet ImageNet weights not found in {where}. Fix: download {ALEXNET_URL} "
                f"(torchvision's AlexNet_Weights.IMAGENET1K_V1) and put it at {default_alexnet_weights()} "
                "(or set TORCH_HOME), or pass --weights PATH / weights=PATH; or use --features hog-color, "
                "which needs no download."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            model = torchvision.models.alexnet(weights=None)
            model.load_state_dict(state)
        except Exception as e:  # corrupt file, wrong architecture
            raise QparseError(
                f"{path}: not a torchvision AlexNet state_dict ({type(e).__name__}: {e}). "
                f"Fix: download {ALEXNET_URL} again."
            ) from e
        self.device = get_device(device)
        self.batch_size = int(batch_size)
        self.input_size = int(input_size)
        self.weights = path
        model.eval().to(self.device)
        self._features = model.features
        self._avgpool = model.avgpool
        self._fc7 = model.classifier[:6]  # Dropout, Linear(9216,4096), ReLU, Dropout, Linear(4096,4096), ReLU
        self.config = {
            "name": self.name,
            "weights": path.name,
            "weights_bytes": path.stat().st_size,
            "input_size": self.input_size,
        }

    def __call__(
        self, images: np.ndarray, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """fc7 features, float32 N×4096 (``labels`` is ignored)."""
        import torch
        import torch.nn.functional as F

        images = check_images(images, self.name)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        starts = range(0, len(images), self.batch_size)
        with torch.no_grad():
            for s in progress_bar(starts, len(starts), self.name, progress):
                x = torch.from_numpy(np.ascontiguousarray(images[s : s + self.batch_size])).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                if x.shape[-2:] != (self.input_size, self.input_size):
                    x = F.interpolate(
                        x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False, antialias=True
                    )
                x = (x - mean) / std
                f = self._fc7(torch.flatten(self._avgpool(self._features(x)), 1))
                out[s : s + len(f)] = f.float().cpu().numpy()
        return out


class HogColorExtractor:
    """HOG + spatial colour histograms: a download-free global descriptor for CPU runs.

    Two blocks, each L2-normalised, concatenated, the colour block then scaled by ``color_weight``
    (default 0.5: the shape block counts more in the L2 distance):

    * **shape**: ``skimage.feature.hog`` of the grayscale image resized to ``size``×``size`` (area
      interpolation), ``orientations`` bins, ``cell``×``cell`` pixel cells, ``block``×``block`` cell blocks
      (L2-Hys): (size/cell − block + 1)² · block² · orientations values (1,764 with the defaults).
    * **colour**: joint HSV histograms (``hue_bins``×``sat_bins``×``val_bins`` = 72 bins by default) in
      ``stripes`` horizontal stripes (3: roughly head/upper body, lower body, legs/feet, since clothes
      are layered vertically), each stripe's histogram L1-normalised then square-rooted (Hellinger map,
      so L2 distance ~ Hellinger distance); 216 values with the defaults.

    Default dim: 1,764 + 216 = 1,980. Speed: about 1 s for 1,004 images at 227 px on one CPU thread.

    On CCP (1,004 human crops at 227 px, coarse labels, leave-one-out, K = 9) the label-overlap
    precision@9 (:func:`label_overlap_at_k`) is 0.716 with these defaults (0.706 with ``color_weight=1``,
    0.720 HOG alone, 0.697 colour alone), against 0.695 for random neighbours and 0.838 for the oracle:
    a weak but download-free stand-in for the paper's fc7 features.
    """

    name = "hog-color"
    needs_labels = False

    def __init__(
        self,
        size: int = 64,
        orientations: int = 9,
        cell: int = 8,
        block: int = 2,
        hue_bins: int = 8,
        sat_bins: int = 3,
        val_bins: int = 3,
        stripes: int = 3,
        color_weight: float = 0.5,
        batch_size: int = 256,
        device: str | None = None,
    ) -> None:
        if size % cell or size // cell < block:
            raise QparseError(f"hog-color: size {size} must be a multiple of cell {cell} and ≥ block·cell")
        self.size, self.orientations, self.cell, self.block = size, orientations, cell, block
        self.hue_bins, self.sat_bins, self.val_bins, self.stripes = hue_bins, sat_bins, val_bins, stripes
        self.color_weight = float(color_weight)
        self.batch_size = int(batch_size)
        n_cells = size // cell - block + 1
        self.hog_dim = n_cells * n_cells * block * block * orientations
        self.color_dim = stripes * hue_bins * sat_bins * val_bins
        self.dim = self.hog_dim + self.color_dim
        self.config = {
            "name": self.name, "size": size, "orientations": orientations, "cell": cell, "block": block,
            "hue_bins": hue_bins, "sat_bins": sat_bins, "val_bins": val_bins, "stripes": stripes,
            "color_weight": self.color_weight,
        }  # fmt: skip

    def _batch(self, images: np.ndarray) -> np.ndarray:
        import cv2
        from skimage.feature import hog

        n, s = len(images), self.size
        small = np.stack([cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA) for im in images])
        out = np.empty((n, self.dim), dtype=np.float32)
        for i, im in enumerate(small):
            gray = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
            out[i, : self.hog_dim] = hog(
                gray, orientations=self.orientations, pixels_per_cell=(self.cell, self.cell),
                cells_per_block=(self.block, self.block), block_norm="L2-Hys", feature_vector=True,
            )  # fmt: skip
        # colour: one bincount over the whole batch (image, stripe, h, s, v) -> counts
        hsv = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2HSV) for im in small]).astype(np.int64)  # H in 0..179
        hb = hsv[..., 0] * self.hue_bins // 180
        sb = hsv[..., 1] * self.sat_bins // 256
        vb = hsv[..., 2] * self.val_bins // 256
        stripe = (np.arange(s) * self.stripes // s)[None, :, None]
        per_stripe = self.hue_bins * self.sat_bins * self.val_bins
        code = ((stripe * self.hue_bins + hb) * self.sat_bins + sb) * self.val_bins + vb
        code = code + (np.arange(n) * self.color_dim)[:, None, None]
        hist = np.bincount(code.ravel(), minlength=n * self.color_dim).reshape(n, self.stripes, per_stripe)
        hist = np.sqrt(hist / np.maximum(hist.sum(-1, keepdims=True), 1)).reshape(n, self.color_dim)
        out[:, self.hog_dim :] = hist
        for a, b, w in ((0, self.hog_dim, 1.0), (self.hog_dim, self.dim, self.color_weight)):
            blk = out[:, a:b]
            blk *= w / np.maximum(np.linalg.norm(blk, axis=1, keepdims=True), 1e-12)
        return out

    def __call__(
        self, images: np.ndarray, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """HOG + colour features, float32 N×:attr:`dim` (``labels`` is ignored)."""
        images = check_images(images, self.name)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), self.batch_size)
        for s in progress_bar(starts, len(starts), self.name, progress):
            out[s : s + self.batch_size] = self._batch(images[s : s + self.batch_size])
        return out



class StyleExtractor:
    """A PaperDoll-like style descriptor over a fixed grid of body cells (no ImageNet, no download).

    PaperDoll (Yamaguchi et al. 2013) describes a person by colour, texture and shape features pooled
    around pose-estimated body joints. The kit's crops are human-centric and upright, so a fixed grid of
    ``rows``×``cols`` cells over the crop stands in for the body parts (with the defaults 6×3: roughly
    head, shoulders, torso, hips, thighs, lower legs/feet, each in left/centre/right). Per cell:

    * **colour**: the mean and standard deviation of L*, a*, b* (CIELAB, so distances follow perceived
      colour; 6 values);
    * **texture**: a uniform LBP histogram (8 neighbours, radius 1: 10 bins, L1-normalised);
    * **shape**: a 9-bin gradient-orientation histogram weighted by magnitude (HOG of the whole cell,
      L1-normalised).

    Each of the three blocks is L2-normalised over all cells and weighted (``weights``: colour 1.0,
    texture 0.5, shape 0.5), then concatenated: rows·cols·(6 + 10 + 9) values (450 by default).
    Computed at ``size``×``size`` (96 by default).
    """

    name = "style"
    needs_labels = False

    def __init__(
        self,
        rows: int = 6,
        cols: int = 3,
        size: int = 96,
        weights: tuple[float, float, float] = (1.0, 0.5, 0.5),
        batch_size: int = 256,
        device: str | None = None,
    ) -> None:
        self.rows, self.cols, self.size, self.batch_size = int(rows), int(cols), int(size), int(batch_size)
        self.weights = tuple(float(w) for w in weights)
        self.cells = self.rows * self.cols
        self.dim = self.cells * (6 + 10 + 9)
        self.config = {
            "name": self.name, "rows": self.rows, "cols": self.cols, "size": self.size,
            "weights": list(self.weights),
        }  # fmt: skip

    def _cell_ids(self) -> np.ndarray:
        s = self.size
        return (np.arange(s) * self.rows // s)[:, None] * self.cols + (np.arange(s) * self.cols // s)[None, :]

    def _one(self, im: np.ndarray, cell: np.ndarray) -> np.ndarray:
        import cv2
        from skimage.feature import local_binary_pattern

        C, flat = self.cells, cell.ravel()
        cnt = np.bincount(flat, minlength=C).astype(np.float64)
        lab = cv2.cvtColor(im.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
        mean = np.stack([np.bincount(flat, lab[:, c], C) for c in range(3)], 1) / cnt[:, None]
        sq = np.stack([np.bincount(flat, lab[:, c] ** 2, C) for c in range(3)], 1) / cnt[:, None]
        colour = np.concatenate([mean / 100.0, np.sqrt(np.maximum(sq - mean**2, 0)) / 100.0], 1)
        gray = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        lbp = local_binary_pattern(gray, 8, 1, method="uniform").astype(np.int64).ravel()  # 0..9
        tex = np.bincount(flat * 10 + lbp, minlength=C * 10).reshape(C, 10) / cnt[:, None]
        g = gray.astype(np.float32)
        gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        mag, ang = cv2.cartToPolar(gx, gy)
        ob = (np.mod(ang, np.pi) / np.pi * 9).astype(np.int64).clip(0, 8).ravel()
        shp = np.bincount(flat * 9 + ob, mag.ravel().astype(np.float64), C * 9).reshape(C, 9)
        shp /= np.maximum(shp.sum(1, keepdims=True), 1e-12)
        blocks = []
        for blk, w in zip((colour, tex, shp), self.weights, strict=True):
            v = blk.ravel()
            blocks.append(w * v / max(float(np.linalg.norm(v)), 1e-12))
        return np.concatenate(blocks).astype(np.float32)

    def __call__(
        self, images: np.ndarray, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Style descriptors, float32 N×:attr:`dim` (``labels`` is ignored)."""
        import cv2

        images = check_images(images, self.name)
        cell = self._cell_ids()
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i in progress_bar(range(len(images)), len(images), self.name, progress):
            im = images[i]
            if im.shape[:2] != (self.size, self.size):
                im = cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA)
            out[i] = self._one(im, cell)
        return out


class OracleExtractor:
    """Neighbours by ground-truth label-map similarity: the upper bound of retrieval (teaching only).

    The feature of a label map y (H×W, L labels) is its per-label spatial histogram on a ``grid``×``grid``
    partition: for cell c and label l, h[c, l] = (fraction of c's pixels labelled l) / ``grid``. Then
    ||h(y) − h(y')||² = (1/G²) Σ_c ||p_c(y) − p_c(y')||², the mean over cells of the squared difference of
    the cells' label distributions: 0 for identical maps, at most 2 for maps that disagree everywhere.
    Dim: grid² · L (background included). It needs the label maps, which a test image does not have.
    """

    name = "oracle"
    needs_labels = True
    needs_images = False

    def __init__(
        self, num_labels: int | None = None, grid: int = 8, batch_size: int = 256, device: str | None = None
    ) -> None:
        if num_labels is None or int(num_labels) < 2:
            raise QparseError(
                "oracle features need the number of labels L (num_labels=corpus.num_labels); "
                f"got {num_labels!r}."
            )
        self.num_labels, self.grid, self.batch_size = int(num_labels), int(grid), int(batch_size)
        self.dim = self.grid * self.grid * self.num_labels
        self.config = {"name": self.name, "num_labels": self.num_labels, "grid": self.grid}

    def _batch(self, labels: np.ndarray) -> np.ndarray:
        n, h, w = labels.shape
        G, L = self.grid, self.num_labels
        cell = (np.arange(h) * G // h)[:, None] * G + (np.arange(w) * G // w)[None, :]  # H×W cell id
        code = (cell[None] * L + labels.astype(np.int64)) + (np.arange(n) * G * G * L)[:, None, None]
        hist = np.bincount(code.ravel(), minlength=n * G * G * L).reshape(n, G * G, L).astype(np.float32)
        hist /= np.maximum(hist.sum(-1, keepdims=True), 1) * G
        return hist.reshape(n, self.dim)

    def __call__(
        self, images: np.ndarray | None, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Label-layout features, float32 N×:attr:`dim`, from ``labels`` (N×H×W; ``images`` is ignored)."""
        if labels is None:
            raise QparseError(
                "oracle features are computed from ground-truth label maps, and none were given. "
                "Fix: pass labels=... (corpus.labels); a test image without labels cannot use the oracle."
            )
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise QparseError(f"oracle: expected label maps N×H×W, got shape {labels.shape}")
        if labels.size and int(labels.max()) >= self.num_labels:
            raise QparseError(
                f"oracle: label id {int(labels.max())} ≥ num_labels {self.num_labels}. "
                "Fix: pass the label set's size (corpus.num_labels)."
            )
        out = np.empty((len(labels), self.dim), dtype=np.float32)
        starts = range(0, len(labels), self.batch_size)
        for s in progress_bar(starts, len(starts), self.name, progress):
            out[s : s + self.batch_size] = self._batch(labels[s : s + self.batch_size])
        return out


#: name -> extractor class, for :func:`get_extractor`.
EXTRACTORS: dict[str, type] = {
    "alexnet-imagenet": AlexNetExtractor,
    "efficientnet-lite0-imagenet": EfficientNetExtractor,
    "style": StyleExtractor,
    "efficientnet-lite0-learned": LearnedRetrievalExtractor,
    "hog-color": HogColorExtractor,
    "oracle": OracleExtractor,
}


def get_extractor(name: str, **kw: Any) -> FeatureExtractor:
    """The feature extractor called ``name`` (one of :data:`EXTRACTORS`).

    Keyword arguments go to its constructor: ``alexnet-imagenet``: ``weights``, ``device``,
    ``batch_size``, ``input_size``; ``efficientnet-lite0-imagenet``: ``pooling`` (global | person |
    grid), ``grid``, ``input_size``, ``device``, ``batch_size``; ``efficientnet-lite0-learned``:
    ``corpus`` or ``head``, ``input_size``, ``presence_weight``, ``layout_weight``, ``epochs``, ``lr``,
    ``seed``; ``style``: ``rows``, ``cols``, ``size``, ``weights``; ``hog-color``: ``size``,
    ``orientations``, ``cell``, ``block``, ``hue_bins``, ``sat_bins``, ``val_bins``, ``stripes``,
    ``color_weight``; ``oracle``: ``num_labels`` (required), ``grid``. ``corpus=`` may be passed to any of
    them: the extractors that need it take it (the learned head trains on its train split, the oracle
    takes its number of labels), the others ignore it. Keywords that are ``None`` are dropped (so CLI
    defaults can be passed through).
    """
    if name not in EXTRACTORS:
        raise QparseError(f"unknown retrieval features {name!r}. Fix: use one of {', '.join(EXTRACTORS)}.")
    cls = EXTRACTORS[name]
    kw = {k: v for k, v in kw.items() if v is not None}
    corpus = kw.pop("corpus", None)
    if corpus is not None:  # what an extractor takes from the corpus it describes
        if getattr(cls, "needs_corpus", False):
            kw.setdefault("corpus", corpus)
        if name == "oracle":
            kw.setdefault("num_labels", corpus.num_labels)
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise QparseError(f"features {name!r} take no option(s) {unknown}; they take {sorted(accepted)}.")
    return cls(**kw)


# ---------------------------------------------------------------------------------------------------
# corpus-level retrieval
# ---------------------------------------------------------------------------------------------------


def _split_indices(corpus: Any, split: str | Sequence[int] | np.ndarray) -> tuple[str, np.ndarray]:
    if isinstance(split, str):
        try:
            idx = np.asarray(corpus.split(split), dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise QparseError(f"corpus has no split {split!r} ({e}). Fix: use train, val or test.") from e
        return split, idx
    return "custom", np.asarray(split, dtype=np.int64)


def corpus_features(
    corpus: Any,
    indices: np.ndarray,
    extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """Features of ``corpus`` images ``indices`` (float32 len×D), read in chunks (the corpus arrays may
    be memory-mapped); cached as ``cache_dir/features_<name>_<key>.npy`` when ``cache_dir`` is given,
    where the key hashes the corpus fingerprint, the extractor's config and the indices."""
    from qparse_lite.io import atomic_save_npy

    indices = np.asarray(indices, dtype=np.int64)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(
            json.dumps([corpus_fingerprint(corpus), extractor.config], sort_keys=True).encode()
            + indices.tobytes()
        ).hexdigest()[:16]
        path = Path(cache_dir) / f"features_{extractor.name}_{key}.npy"
        if path.is_file():
            feats = np.load(path)
            if feats.shape == (len(indices), extractor.dim):
                return feats
    source = image_source(corpus, extractor)
    out = np.empty((len(indices), extractor.dim), dtype=np.float32)
    starts = range(0, len(indices), chunk)
    for s in progress_bar(starts, len(starts), f"features {extractor.name}", progress):
        idx = indices[s : s + chunk]
        labels = np.asarray(corpus.labels[idx]) if extractor.needs_labels else None
        images = np.asarray(source[idx]) if getattr(extractor, "needs_images", True) else None
        out[s : s + len(idx)] = extractor(images, labels=labels, progress=False)
    if path is not None:
        atomic_save_npy(path, out)
    return out
