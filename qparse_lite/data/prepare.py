"""Corpus preparation: human-centric crops at S×S, the mean image, and a memory-mappable cache.

Paper Sec. 3 (docs/paper.md §1.1–1.3): every image is cropped around its person and rescaled to S×S (227×227 in
the paper); the KNN region g_kl replaces all pixels of g_k not labelled l by the *corpus mean image*, so the
cache stores that mean (over the train split).

The human-centric crop stands in for the paper's R-CNN person detector: for a labelled image the box is
the bounding box of its non-background pixels, enlarged by a margin and made square around the person
(:func:`human_crop_box`); for a raw photo it is OpenCV's built-in HOG people detector (:func:`detect_person`).

Cache layout (one folder, written by :func:`prepare_corpus`, read by :meth:`Corpus.load`):

- ``images.npy`` N×S×S×3 uint8, ``labels.npy`` N×S×S uint8 (memory-mapped on load),
- ``mean.npy`` S×S×3 float32 in 0..255 (mean over the train split),
- ``boxes.npy`` N×4 int64 crop boxes ``x0, y0, x1, y1`` in original pixels (may extend past the image
  where the crop was padded),
- ``meta.json`` (written last): dataset, version, label set (name, names, lr_pairs), size, ids, splits as
  index lists, SHA-256 of every array file, created, git commit, the run record and the command that
  re-creates the cache. A folder without ``meta.json`` is not a cache, so a half-written cache is never
  taken for a valid one.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
import warnings
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.data.crops import CROPS, Box, crop_resize, human_crop_box, person_crop_box
from qparse_lite.data.person import detect_person
from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_path, atomic_save_npy, atomic_write_json
from qparse_lite.labels import ATR18, CCP_COARSE, LabelSet, ccp59
from qparse_lite.runinfo import git_commit, run_record

__all__ = ["Corpus", "prepare_corpus", "human_centric_crop", "mirror", "source_dataset", "ARRAYS"]  # fmt: skip

#: Array files of a cache, in writing order.
ARRAYS = ("images", "labels", "mean", "boxes")
#: written only with ``feature_size``: the same crops at the side the ImageNet features want (F×F)
OPTIONAL_ARRAYS = ("feature_images",)


# ---------------------------------------------------------------------------------------------------------
# crops
# ---------------------------------------------------------------------------------------------------------


def human_centric_crop(
    image: np.ndarray, size: int, label: np.ndarray | None = None, margin: float = 0.1, detector: Any = None,
    crop: str = "square",
) -> tuple[np.ndarray, np.ndarray | None, Box, str]:  # fmt: skip
    """Human-centric crop of one image (docs/paper.md §1.1): returns ``(image S×S, label S×S | None, box, method)``.

    With a label map the box is :func:`human_crop_box` (method ``"labels"``). For a raw photo a person
    detector (``detector``: a callable ``image -> box | None`` with a ``name``, e.g. from
    :func:`qparse_lite.data.person.get_detector`; default OpenCV's HOG, :func:`detect_person`) gives a tight box, which is enlarged by ``margin`` and made square exactly as
    :func:`human_crop_box` does for a labelled person, so a raw photo gets the crop a labelled copy of it
    would have got; method is the detector's name. When it finds nobody the whole image is used (method
    ``"whole-image"``) with a warning. ``crop``: ``square`` or ``warp`` (:data:`qparse_lite.data.crops.CROPS`),
    the corpus's crop mode (:func:`qparse_lite.data.crops.corpus_crop`).
    """
    H, W = image.shape[:2]
    if label is not None:
        box, method = human_crop_box(label, margin, crop), "labels"
    else:
        det = (detector or detect_person)(image)
        name = getattr(detector, "name", "hog") if detector is not None else "hog"
        if det is None:
            warnings.warn(f"{name}: no person found; using the whole image", stacklevel=2)
            box, method = person_crop_box(0, 0, W, H, W, H, 0.0, crop), "whole-image"
        else:
            x0, y0, x1, y1 = det
            box, method = person_crop_box(x0, y0, x1, y1, W, H, margin, crop), name
    im, lb = crop_resize(image, label, box, size)
    return im, lb, box, method


def mirror(
    image: np.ndarray | None, label: np.ndarray | None, label_set: LabelSet
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Flip horizontally and swap the set's left/right labels (docs/paper.md §1.9: a mirror must swap left/right).

    Works on single images (H×W×3, H×W) and batches (N×H×W×3, N×H×W). Either argument may be ``None``.
    """
    im = (
        None
        if image is None
        else np.ascontiguousarray(np.flip(np.asarray(image), axis=-2 if np.ndim(image) >= 3 else -1))
    )
    lb = (
        None
        if label is None
        else np.ascontiguousarray(label_set.mirror_lut[np.flip(np.asarray(label), axis=-1)])
    )
    return im, lb


# ---------------------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _label_set_from_meta(d: dict[str, Any]) -> LabelSet:
    names = tuple(d["names"])
    pairs = tuple(tuple(int(v) for v in p) for p in d.get("lr_pairs", ()))
    for known in (ATR18, CCP_COARSE, ccp59()):
        if known.name == d["name"] and known.names == names and known.lr_pairs == pairs:
            return known
    return LabelSet(str(d["name"]), names, pairs)  # type: ignore[arg-type]


def _label_set_meta(ls: LabelSet) -> dict[str, Any]:
    return {"name": ls.name, "names": list(ls.names), "lr_pairs": [list(p) for p in ls.lr_pairs]}


class Corpus:
    """A prepared corpus: S×S crops, label maps, mean image and split indices.

    Make one with :meth:`load` (a cache folder from :func:`prepare_corpus`) or :meth:`from_arrays`
    (in memory, ``path`` is ``None``); :meth:`save` writes the cache layout.

    Attributes:
        images: N×S×S×3 uint8 (memory-mapped when loaded); labels: N×S×S uint8; mean: S×S×3 float32;
        boxes: N×4 int64; label_set; ids (list of str); size (S); meta (dict); path (Path | None).
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, mean: np.ndarray, boxes: np.ndarray,
        label_set: LabelSet, ids: list[str], splits: dict[str, np.ndarray], meta: dict[str, Any],
        path: Path | None = None,
    ) -> None:  # fmt: skip
        self.images, self.labels, self.mean, self.boxes = images, labels, mean, boxes
        self.label_set, self.ids, self.meta, self.path = label_set, ids, meta, path
        self.splits = splits
        self.size = int(images.shape[1])
        self.feature_images: np.ndarray | None = None  # N×F×F×3 crops for the ImageNet features (optional)

    @property
    def feature_size(self) -> int | None:
        """F, the side of :attr:`feature_images` (``None`` when the corpus has none)."""
        return None if self.feature_images is None else int(self.feature_images.shape[1])

    def images_for(self, side: int | None) -> np.ndarray:
        """The crops to describe at ``side`` px: :attr:`feature_images` when they are that size (cropped
        from the photo at that resolution), else :attr:`images` (the S×S crops, resized by the caller)."""
        if side is not None and self.feature_size == int(side):
            return self.feature_images  # type: ignore[return-value]
        return self.images

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls, images: np.ndarray, labels: np.ndarray, label_set: LabelSet, splits: dict[str, Any],
        mean: np.ndarray | None = None, ids: list[str] | None = None, boxes: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Corpus:  # fmt: skip
        """An in-memory corpus (no folder).

        Args:
            images: N×S×S×3 uint8; labels: N×S×S uint8 ids in ``label_set``.
            splits: ``{"train": indices, "val": ..., "test": ...}`` (missing splits are empty).
            mean: S×S×3 float32 (default: mean of the train images, all images if train is empty).
            ids: image ids (default ``00000``, ``00001``, ...); boxes: N×4 (default the whole S×S image).
            meta: extra metadata (dataset, version, ...).
        """
        images, labels = np.asarray(images), np.asarray(labels)
        n = len(images)
        if (
            images.ndim != 4
            or images.shape[3] != 3
            or images.shape[1] != images.shape[2]
            or images.dtype != np.uint8
        ):
            raise QparseError(
                f"Corpus.from_arrays: images must be N×S×S×3 uint8, got {images.shape} {images.dtype}"
            )
        if labels.shape != images.shape[:3]:
            raise QparseError(f"Corpus.from_arrays: labels must be {images.shape[:3]}, got {labels.shape}")
        labels = labels.astype(np.uint8, copy=False)
        label_set.check(labels, "Corpus.from_arrays labels")
        sp = {k: np.asarray(splits.get(k, []), dtype=np.int64).reshape(-1) for k in ("train", "val", "test")}
        for k in splits:
            if k not in sp:
                sp[k] = np.asarray(splits[k], dtype=np.int64).reshape(-1)
        for k, v in sp.items():
            if v.size and (v.min() < 0 or v.max() >= n):
                raise QparseError(f"Corpus.from_arrays: split {k} has indices outside 0..{n - 1}")
        S = images.shape[1]
        if mean is None:
            src = sp["train"] if sp["train"].size else np.arange(n)
            mean = _mean_image(images, src)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.shape != (S, S, 3):
            raise QparseError(f"Corpus.from_arrays: mean must be {S}×{S}×3, got {mean.shape}")
        ids = [f"{i:05d}" for i in range(n)] if ids is None else [str(x) for x in ids]
        if len(ids) != n:
            raise QparseError(f"Corpus.from_arrays: {len(ids)} ids for {n} images")
        boxes = (
            np.tile(np.array([0, 0, S, S], np.int64), (n, 1))
            if boxes is None
            else np.asarray(boxes, np.int64)
        )
        m = {"dataset": "in-memory", "version": "", "size": S}
        m.update(meta or {})
        m.update(label_set=_label_set_meta(label_set), ids=ids, splits={k: v.tolist() for k, v in sp.items()})
        return cls(images, labels, mean, boxes, label_set, ids, sp, m, None)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Corpus:
        """Open a cache folder written by :func:`prepare_corpus` (images and labels memory-mapped).

        Checks that every array file exists with the shape and dtype ``meta.json`` implies and, with
        ``verify`` (default), that its SHA-256 matches the one recorded. A broken cache raises
        :class:`QparseError` naming the file and the ``qparse prepare`` command that rebuilds it.
        """
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise QparseError(
                f"{path}: no prepared corpus (meta.json missing; a cache whose preparation did not finish has "
                f"none). Fix: qparse prepare --dataset NAME --data-root DIR --size S --out {path}"
            )
        try:
            meta = json.loads(meta_path.read_text())
            S, ids = int(meta["size"]), [str(x) for x in meta["ids"]]
            label_set = _label_set_from_meta(meta["label_set"])
            splits = {k: np.asarray(v, dtype=np.int64) for k, v in meta["splits"].items()}
        except (ValueError, KeyError, TypeError) as e:
            raise QparseError(
                f"{meta_path}: not a valid corpus meta.json ({e!r}). Fix: {_fix(meta_path.parent, None)}"
            ) from e
        fix = _fix(path, meta)
        n = len(ids)
        expect = {
            "images": ((n, S, S, 3), np.uint8),
            "labels": ((n, S, S), np.uint8),
            "mean": ((S, S, 3), np.float32),
            "boxes": ((n, 4), None),
        }
        arrays: dict[str, np.ndarray] = {}
        sums = meta.get("checksums", {})
        for name, (shape, dtype) in expect.items():
            f = path / f"{name}.npy"
            if not f.is_file():
                raise QparseError(f"{f}: missing from the prepared corpus. Fix: {fix}")
            try:
                a = np.load(f, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise QparseError(f"{f}: not a readable .npy file ({e}). Fix: {fix}") from e
            if a.shape != shape or (dtype is not None and a.dtype != dtype):
                raise QparseError(
                    f"{f}: shape {a.shape} {a.dtype}, meta.json implies {shape} {np.dtype(dtype or a.dtype)}. Fix: {fix}"
                )
            if verify and name in sums and _sha256(f) != sums[name]:
                raise QparseError(
                    f"{f}: checksum differs from meta.json (file changed or truncated). Fix: {fix}"
                )
            arrays[name] = a
        if meta.get("feature_size"):
            F = int(meta["feature_size"])
            expect["feature_images"] = ((n, F, F, 3), np.uint8)
            name, (shape, dtype) = "feature_images", expect["feature_images"]
            f = path / f"{name}.npy"
            if not f.is_file():
                raise QparseError(f"{f}: missing from the prepared corpus. Fix: {fix}")
            a = np.load(f, mmap_mode="r", allow_pickle=False)
            if a.shape != shape or a.dtype != dtype:
                raise QparseError(f"{f}: shape {a.shape} {a.dtype}, meta.json implies {shape} uint8. Fix: {fix}")
            if verify and name in sums and _sha256(f) != sums[name]:
                raise QparseError(f"{f}: checksum differs from meta.json (file changed or truncated). Fix: {fix}")
            arrays[name] = a
        for k, v in splits.items():
            if v.size and (v.min() < 0 or v.max() >= n):
                raise QparseError(f"{meta_path}: split {k} has indices outside 0..{n - 1}. Fix: {fix}")
        for k in ("train", "val", "test"):
            splits.setdefault(k, np.zeros(0, np.int64))
        corpus = cls(arrays["images"], arrays["labels"], np.asarray(arrays["mean"]), np.asarray(arrays["boxes"]),
                     label_set, ids, splits, meta, path)  # fmt: skip
        corpus.feature_images = arrays.get("feature_images")
        return corpus

    def save(self, path: str | Path) -> Path:
        """Write this corpus in the cache layout (arrays first, ``meta.json`` last); return the folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "meta.json").unlink(missing_ok=True)
        for name in ARRAYS:
            atomic_save_npy(path / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        meta = dict(self.meta)
        if self.feature_images is not None:
            atomic_save_npy(path / "feature_images.npy", np.ascontiguousarray(self.feature_images))
            meta["feature_size"] = self.feature_size
        else:
            (path / "feature_images.npy").unlink(missing_ok=True)
            meta.pop("feature_size", None)
        meta.update(
            _arrays_meta(path),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            git_commit=git_commit(),
        )
        atomic_write_json(path / "meta.json", meta)
        self.path = path
        return path

    # -- access -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_labels(self) -> int:
        """L, the number of labels (background included)."""
        return self.label_set.num_labels

    def split(self, name: str) -> np.ndarray:
        """Indices (int64, sorted) of split ``name`` (``train``, ``val`` or ``test``)."""
        try:
            return self.splits[name]
        except KeyError:
            raise QparseError(
                f"corpus {self.path or '(in memory)'} has no split {name!r}; it has {', '.join(self.splits)}"
            ) from None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"Corpus({len(self)} images at {self.size}×{self.size}, {self.label_set.name}, {sizes}; {self.path or 'in memory'})"


def source_dataset(corpus: Corpus, data_root: str | Path | None = None) -> Any:
    """The dataset a corpus was prepared from (its photos at their own resolution), re-opened from the
    arguments ``meta.json`` recorded (``prepare_args``); ``data_root`` replaces the recorded dataset folder.
    ``None`` for an in-memory corpus or one without recorded arguments.

    Raises:
        QparseError: the dataset cannot be opened (the message names the folder and the fix), or its
            images are not the corpus's (other ids).
    """
    from qparse_lite.data.datasets import get_dataset

    meta = corpus.meta or {}
    argv = [str(a) for a in meta.get("prepare_args") or []]
    if not argv:
        return None
    opts: dict[str, str] = {}
    flags = {"--include-chictopia"}
    i = 0
    while i < len(argv):
        if argv[i] in flags:
            opts[argv[i]] = "1"
            i += 1
        else:
            opts[argv[i]] = argv[i + 1] if i + 1 < len(argv) else ""
            i += 2
    name = opts.get("--dataset", meta.get("dataset", ""))
    kw: dict[str, Any] = {}
    if name == "synthetic":
        kw = {"n": int(opts["--n"]), "size": int(opts["--gen-size"]), "seed": int(opts["--seed"])}
    else:
        kw["split_seed"] = int(opts.get("--split-seed", 0))
        if name == "atr" and "--include-chictopia" in opts:
            kw["include_chictopia"] = True
        if "--labels" in opts and name == "ccp":
            kw["labels"] = opts["--labels"]
    root = data_root if data_root is not None else opts.get("--data-root", opts.get("--root"))  # --root: old caches
    ds = get_dataset(name, root=root, **kw)
    if list(ds.ids) != list(corpus.ids):
        raise QparseError(
            f"{root or name}: its images are not those of the corpus {corpus.path} ({len(ds.ids)} ids against "
            f"{len(corpus.ids)}). Fix: pass the --data-root the corpus was prepared from."
        )
    return ds


def _mean_image(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    acc = np.zeros(images.shape[1:], np.float64)
    for i in idx:
        acc += images[int(i)]
    return (acc / max(1, len(idx))).astype(np.float32)


def _arrays_meta(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"checksums": {}, "shapes": {}, "dtypes": {}}
    for name in ARRAYS + OPTIONAL_ARRAYS:
        f = path / f"{name}.npy"
        if name in OPTIONAL_ARRAYS and not f.is_file():
            continue
        a = np.load(f, mmap_mode="r")
        out["checksums"][name] = _sha256(f)
        out["shapes"][name] = list(a.shape)
        out["dtypes"][name] = str(a.dtype)
    return out


def _fix(path: Path, meta: dict[str, Any] | None) -> str:
    """The ``qparse prepare`` command that rebuilds the cache at ``path`` (from the recorded arguments)."""
    args = (meta or {}).get("prepare_args")
    if args:
        return "qparse prepare " + " ".join(shlex.quote(str(a)) for a in [*args, "--out", str(path)])
    return f"qparse prepare --dataset NAME --data-root DIR --size S --out {path}"


# ---------------------------------------------------------------------------------------------------------
# preparation
# ---------------------------------------------------------------------------------------------------------


def source_version(dataset: Any) -> tuple[str, str | None]:
    """The dataset's ``version`` as a corpus may record it, and what its files were checked against.

    A dataset with a ``root`` holding ``SHA256SUMS`` has every listed file checked
    (:func:`qparse_lite.data.download.check_tree`): all match → ``(version, "N files match ROOT/SHA256SUMS")``;
    some fail → the version gets ``" (UNVERIFIED: ...)"`` with the count and the first file, and a warning
    names the fix. Without a listing (synthetic data, a Parquet export) → ``(version, None)``.
    """
    from qparse_lite.data.download import check_tree, read_sums

    version = str(dataset.version)
    root = getattr(dataset, "root", None)
    sums_path = Path(root) / "SHA256SUMS" if root is not None else None
    if sums_path is None or not sums_path.is_file():
        return version, None
    sums = read_sums(sums_path)
    problems = check_tree(root, sums, progress=False)
    if not problems:
        return version, f"{len(sums)} files match {sums_path}"
    rel, why = problems[0]
    note = f"{len(problems)} of {len(sums)} files fail {sums_path}, e.g. {rel}: {why}"
    warnings.warn(
        f"{root}: {note}; the corpus is prepared but recorded as unverified. Fix: `qparse data verify --dataset "
        f"{dataset.name} --data-root {root}`, and download the files that fail again.",
        stacklevel=3,
    )
    return f"{version} (UNVERIFIED: {note})", None


def prepare_corpus(
    dataset: Any, size: int, out: str | Path, margin: float = 0.1, *, feature_size: int | None = None,
    crop: str = "square", progress: bool | None = None,
) -> Path:
    """Crop every image of ``dataset`` around its person, resize to ``size``² and write the cache at ``out``.

    Per image: box = :func:`human_crop_box` (label > 0, ``margin``, ``crop``: ``square`` or ``warp``,
    docs/paper.md §1.1), then :func:`crop_resize` (bilinear image, nearest labels); ``meta.json`` records the
    mode as ``crop`` (:func:`qparse_lite.data.crops.corpus_crop` reads it). The mean image is the pixel-wise mean of the train split's crops
    (the corpus mean used for the KNN regions g_kl, docs/paper.md §1.3).

    Writing is crash-safe: images and labels stream into temporary files beside their targets (bounded
    memory); only when every image is done is the old ``meta.json`` removed and the arrays renamed into
    place, and the new ``meta.json`` is written last. An exception on the way leaves an existing cache
    untouched. Returns ``out``.

    With ``feature_size`` F (≠ S), the same crop box is also resized to F×F from the original photo and
    written as ``feature_images.npy``: what the ImageNet retrieval features see (224 px for
    EfficientNet-Lite0), at the photo's own detail rather than an upsampled S-px crop.

    A dataset folder with a ``SHA256SUMS`` listing is checked against it first (:func:`source_version`): a
    mirror that fails it is prepared with a warning, and its ``version`` says so instead of claiming the
    verified commit.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    S = int(size)
    if crop not in CROPS:
        raise QparseError(f"--crop {crop}: unknown crop mode. Fix: use one of {', '.join(CROPS)}.")
    if S < 8:
        raise QparseError(f"--size {size}: crops must be at least 8 px")
    n = len(dataset)
    if n == 0:
        raise QparseError(f"{dataset!r}: no images to prepare")
    ids = list(dataset.ids)
    pos = {x: i for i, x in enumerate(ids)}
    splits = {k: sorted(pos[x] for x in v) for k, v in dataset.splits().items()}
    train = np.zeros(n, bool)
    train[splits.get("train", [])] = True
    if not train.any():
        train[:] = True
    version, verified = source_version(dataset)
    out.mkdir(parents=True, exist_ok=True)
    boxes = np.zeros((n, 4), np.int64)
    acc = np.zeros((S, S, 3), np.float64)
    with ExitStack() as stack:
        timg = stack.enter_context(atomic_path(out / "images.npy"))
        tlab = stack.enter_context(atomic_path(out / "labels.npy"))
        imgs = np.lib.format.open_memmap(timg, mode="w+", dtype=np.uint8, shape=(n, S, S, 3))
        labs = np.lib.format.open_memmap(tlab, mode="w+", dtype=np.uint8, shape=(n, S, S))
        F = int(feature_size) if feature_size and int(feature_size) != S else None
        fimgs = None
        if F is not None:
            tfeat = stack.enter_context(atomic_path(out / "feature_images.npy"))
            fimgs = np.lib.format.open_memmap(tfeat, mode="w+", dtype=np.uint8, shape=(n, F, F, 3))
        bar = tqdm(
            range(n),
            desc=f"prepare {dataset.name} {S}px",
            unit="img",
            mininterval=1.0,
            disable=None if progress is None else not progress,
        )
        for i in bar:
            s = dataset[i]
            box = human_crop_box(s.label, margin, crop)
            im, lb = crop_resize(s.image, s.label, box, S)
            imgs[i], labs[i], boxes[i] = im, lb, box
            if fimgs is not None:
                fimgs[i] = crop_resize(s.image, None, box, F)[0]
            if train[i]:
                acc += im
        imgs.flush()
        labs.flush()
        if fimgs is not None:
            fimgs.flush()
        del imgs, labs, fimgs
        # all images done: invalidate the old cache, then the arrays are renamed into place on exit
        (out / "meta.json").unlink(missing_ok=True)
    mean = (acc / train.sum()).astype(np.float32)
    atomic_save_npy(out / "mean.npy", mean)
    atomic_save_npy(out / "boxes.npy", boxes)
    wall = time.perf_counter() - t0
    ls: LabelSet = dataset.label_set
    argv = dataset.prepare_args() + ["--size", str(S)] + ([] if margin == 0.1 else ["--margin", str(margin)])
    argv += [] if F is None else ["--feature-size", str(F)]
    argv += ["--crop", crop]  # always: the CLI's default is the profile's, which may change
    if F is None:
        (out / "feature_images.npy").unlink(missing_ok=True)  # a stale one from an earlier preparation
    command = "qparse prepare " + " ".join(shlex.quote(a) for a in [*argv, "--out", str(out)])
    meta: dict[str, Any] = {
        "dataset": dataset.name,
        "version": version,
        "verified": verified,
        "source": dataset.describe(),
        "label_set": _label_set_meta(ls),
        "size": S,
        **({} if F is None else {"feature_size": F}),
        "margin": margin,
        "crop": crop,
        "crop_description": "labels: bbox of label>0 + margin, "
        + ("squared (human_crop_box)" if crop == "square" else "warped to S×S, aspect not kept (human_crop_box)")
        + "; bilinear image, nearest labels",
        "ids": ids,
        "splits": splits,
        **_arrays_meta(out),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command,
        "prepare_args": argv,
        "run": run_record(
            profile=None,
            seed=getattr(dataset, "seed", None),
            dataset=dataset.name,
            dataset_version=version,
            wall_time_s=wall,
        ),
    }
    atomic_write_json(out / "meta.json", meta)
    return out
