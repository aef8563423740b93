"""Datasets behind one interface: synthetic paper-doll people, Clothing Co-Parsing (CCP) and ATR.

Every dataset yields :class:`Sample` ``(image, label, id)``: ``image`` an RGB uint8 H×W×3 array, ``label`` a
uint8 H×W map in the dataset's :class:`~qparse_lite.labels.LabelSet`, ``id`` a string. Each dataset has a
deterministic train/val/test split (``splits()``) that ``write_splits(out_dir)`` writes as one id per line
in ``train.txt``, ``val.txt`` and ``test.txt``.

- ``synthetic`` (:class:`~qparse_lite.data.synthetic.SyntheticPeople`): the embedded default, generated on the fly
  (ATR-18 labels); split 80/10/10 by index order.
- ``ccp`` (:class:`CCP`): the 1,004 pixel-annotated photos of Clothing Co-Parsing (upstream layout
  ``photos/*.jpg``, ``annotations/pixel-level/*.mat`` with variable ``groundtruth``, ``label_list.mat``);
  labels ``ccp59`` (as shipped) or ``ccp-coarse`` (merged, :data:`~qparse_lite.labels.CCP_COARSE`);
  split 804/100/100 by a seeded permutation of the sorted ids.
- ``atr`` (:class:`ATR`): the "humanparsing" archive (``JPEGImages/*.jpg`` + ``SegmentationClassAug/*.png``)
  or the Hugging Face Parquet export (``mattmdjaga/human_parsing_dataset``); the paper's split 6,000/700/1,000
  (docs/paper.md §1.9) drawn by a seeded permutation from the non-Chictopia images, scaled down proportionally
  when fewer images exist.

Bad input raises :class:`~qparse_lite.errors.QparseError` naming the file(s) and the fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.data.base import Dataset, Sample
from qparse_lite.data.synthetic import SyntheticPeople
from qparse_lite.errors import QparseError
from qparse_lite.labels import (
    ATR18,
    CCP59_NAMES,
    CCP_COARSE,
    LabelSet,
    ccp59_to_coarse_lut,
    read_ccp_label_list,
    read_label_png,
)

__all__ = ["CCP", "ATR", "get_dataset", "DATASETS", "CCP_COMMIT", "split_counts", "seeded_split", "read_image"]  # fmt: skip

#: Upstream commit of bearpaw/clothing-co-parsing that the kit reads (and downloads).
CCP_COMMIT = "fe34fb77721a9973fbae92c05f7f12b664d10110"
#: Names accepted by :func:`get_dataset`.
DATASETS = ("synthetic", "ccp", "atr")


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------


def split_counts(n: int, sizes: Sequence[int]) -> tuple[int, int, int]:
    """Train/val/test counts for ``n`` images given the full-size split ``sizes`` (train, val, test).

    With ``n >= sum(sizes)`` the sizes are returned unchanged (the rest of the images are unused); with fewer
    images val and test are scaled proportionally (at least one each once ``n >= 3``) and train takes the rest.
    """
    tr, va, te = (int(s) for s in sizes)
    total = tr + va + te
    if n >= total:
        return tr, va, te
    va_n = round(n * va / total)
    te_n = round(n * te / total)
    if n >= 3:
        va_n, te_n = max(1, va_n), max(1, te_n)
    va_n, te_n = min(va_n, n), min(te_n, max(0, n - va_n))
    return n - va_n - te_n, va_n, te_n


def seeded_split(ids: Sequence[str], sizes: Sequence[int], seed: int) -> dict[str, list[str]]:
    """Deterministic split: a permutation (``numpy.random.default_rng(seed)``) of the *sorted* ids; the first
    ``test`` ids of it are the test split, the next ``val`` the val split, the next ``train`` the train split.
    Each split's ids are returned sorted. Sizes follow :func:`split_counts`."""
    order = sorted(ids)
    tr, va, te = split_counts(len(order), sizes)
    perm = np.random.default_rng(seed).permutation(len(order))
    picked = [order[i] for i in perm]
    return {
        "train": sorted(picked[te + va : te + va + tr]),
        "val": sorted(picked[te : te + va]),
        "test": sorted(picked[:te]),
    }


def read_image(path: str | Path | None, data: bytes | None = None, source: str | None = None) -> np.ndarray:
    """Decode a dataset's image file (or its ``data`` bytes) to RGB uint8 H×W×3.

    :func:`qparse_lite.data.photo.read_photo` with the stored pixel order (no EXIF orientation: the label
    maps are aligned to it), PIL's decompression-bomb limit, and the dataset's fix in its messages.
    """
    from qparse_lite.data.photo import read_photo

    return read_photo(path, data=data, source=source, orient=False, max_pixels=None, fix=_DATASET_FIX)


_DATASET_FIX = "Fix: download the dataset again."


def _check_pair(
    image: np.ndarray, label: np.ndarray, label_set: LabelSet, image_src: str, label_src: str
) -> None:
    """Raise :class:`QparseError` naming both files when sizes differ or an id is outside ``label_set``."""
    if label.ndim != 2:
        raise QparseError(
            f"{label_src}: label map must be H×W, got shape {label.shape} (image {image_src}). "
            "Fix: download the dataset again."
        )
    if image.shape[:2] != label.shape:
        raise QparseError(
            f"{label_src}: label map is {label.shape[1]}×{label.shape[0]} (W×H) but its image {image_src} is "
            f"{image.shape[1]}×{image.shape[0]}. Fix: download the dataset again (or remove this pair)."
        )
    if label.size and int(label.max()) >= label_set.num_labels:
        bad = sorted(int(v) for v in np.unique(label) if v >= label_set.num_labels)
        raise QparseError(
            f"{label_src} (image {image_src}): label id(s) {bad} are outside the label set {label_set.name} "
            f"(ids 0..{label_set.num_labels - 1}). Fix: download the dataset again, or choose the right "
            "label set (--labels)."
        )


# ---------------------------------------------------------------------------------------------------------
# Clothing Co-Parsing
# ---------------------------------------------------------------------------------------------------------


class CCP(Dataset):
    """Clothing Co-Parsing, the 1,004 pixel-annotated photos (upstream layout, commit :data:`CCP_COMMIT`).

    Args:
        root: the dataset folder (``photos/``, ``annotations/pixel-level/``, ``label_list.mat``), e.g. the
            result of ``qparse data download --dataset ccp --data-root DIR``. Read only; nothing is written into it.
        labels: ``"ccp-coarse"`` (default; the 59 names merged into 16 kinds) or ``"ccp59"`` (as shipped).
        split_seed: seed of the permutation that draws the 804/100/100 split.
    """

    name = "ccp"
    #: Split sizes for the full 1,004 images (train, val, test).
    SPLIT_SIZES = (804, 100, 100)

    def __init__(self, root: str | Path, labels: str = "ccp-coarse", split_seed: int = 0) -> None:
        root = Path(root)
        fix = f"Fix: qparse data download --dataset ccp --data-root {root}"
        if not root.is_dir():
            raise QparseError(f"{root}: no CCP dataset folder here. {fix}")
        for need in ("label_list.mat", "photos", "annotations/pixel-level"):
            if not (root / need).exists():
                raise QparseError(f"{root / need}: missing; {root} is not a CCP dataset folder. {fix}")
        names = read_ccp_label_list(root / "label_list.mat")
        if labels == "ccp59":
            self.label_set = LabelSet("ccp59", names)
            self._lut = None
        elif labels == "ccp-coarse":
            self.label_set = CCP_COARSE
            try:
                self._lut = ccp59_to_coarse_lut(names)
            except ValueError as e:
                raise QparseError(f"{root / 'label_list.mat'}: {e}. {fix}") from e
        else:
            raise QparseError(f"CCP labels {labels!r}: choose ccp-coarse or ccp59 (--labels)")
        if names != CCP59_NAMES:
            warnings.warn(
                f"{root / 'label_list.mat'}: names differ from commit {CCP_COMMIT[:7]}; using the file's names",
                stacklevel=2,
            )
        self.root = root
        self.names59 = names
        self.split_seed = int(split_seed)
        ann = sorted(p.stem for p in (root / "annotations/pixel-level").glob("*.mat"))
        if not ann:
            raise QparseError(f"{root / 'annotations/pixel-level'}: no .mat label files. {fix}")
        missing = [a for a in ann if not (root / "photos" / f"{a}.jpg").is_file()]
        if missing:
            raise QparseError(
                f"{root / 'photos' / (missing[0] + '.jpg')}: photo missing for annotation "
                f"{root / 'annotations/pixel-level' / (missing[0] + '.mat')} ({len(missing)} missing). {fix}"
            )
        self.ids = ann
        self.version = f"bearpaw/clothing-co-parsing@{CCP_COMMIT}"
        if len(ann) != 1004:
            self.version += f" ({len(ann)} of 1004 labelled photos)"

    def paths(self, i: int) -> tuple[Path, Path]:
        """(photo, annotation) paths of item ``i``."""
        x = self.ids[i]
        return self.root / "photos" / f"{x}.jpg", self.root / "annotations/pixel-level" / f"{x}.mat"

    def load(self, i: int) -> Sample:
        import scipy.io

        img_path, mat_path = self.paths(i)
        image = read_image(img_path)
        try:
            mat = scipy.io.loadmat(mat_path, variable_names=["groundtruth"])
        except FileNotFoundError:
            raise QparseError(
                f"{mat_path}: label file not found. Fix: qparse data download --dataset ccp --data-root {self.root}"
            ) from None
        except Exception as e:  # scipy raises several types for a bad file
            raise QparseError(
                f"{mat_path}: not a readable MATLAB label file ({e}). "
                f"Fix: qparse data download --dataset ccp --data-root {self.root}"
            ) from e
        if "groundtruth" not in mat:
            raise QparseError(
                f"{mat_path}: no variable 'groundtruth'. Fix: qparse data download --dataset ccp --data-root {self.root}"
            )
        raw = np.asarray(mat["groundtruth"])
        if raw.dtype != np.uint8:
            if raw.size and (raw.min() < 0 or raw.max() > 255):
                raise QparseError(f"{mat_path} (image {img_path}): label ids outside 0..255")
            raw = raw.astype(np.uint8)
        _check_pair(image, raw, LabelSet("ccp59", self.names59), str(img_path), str(mat_path))
        label = raw if self._lut is None else self._lut[raw]
        return Sample(image, np.ascontiguousarray(label), self.ids[i])

    def splits(self) -> dict[str, list[str]]:
        """804/100/100 (scaled for fewer images): seeded permutation of the sorted ids (``split_seed``)."""
        return seeded_split(self.ids, self.SPLIT_SIZES, self.split_seed)

    def prepare_args(self) -> list[str]:
        return super().prepare_args() + (
            [] if self.split_seed == 0 else ["--split-seed", str(self.split_seed)]
        )


# ---------------------------------------------------------------------------------------------------------
# ATR
# ---------------------------------------------------------------------------------------------------------

CHICTOPIA_PREFIX = "dataset10k_"
FASHIONISTA_PREFIX = "fash_"


class ATR(Dataset):
    """ATR (Liang et al. 2015) with ATR-18 labels, from either public layout.

    Layouts (detected in this order):

    1. the "humanparsing" archive: ``ROOT/humanparsing/JPEGImages/*.jpg`` and
       ``ROOT/humanparsing/SegmentationClassAug/*.png`` (or those two folders directly in ROOT); ids are the
       file stems. Chictopia10k images (prefix ``dataset10k_``) are not ATR and are left out unless
       ``include_chictopia`` (then they join the train split only); Fashionista (``fash_``) is included.
    2. the Hugging Face Parquet export ``mattmdjaga/human_parsing_dataset``: ``*.parquet`` files anywhere
       under ROOT (read in sorted path order) with struct columns ``image`` and ``mask`` (``bytes``, ``path``).
       Ids are global row indices, zero-padded to 5 digits. File names are usually not kept, so Chictopia
       rows can only be recognised (and left out) when ``image.path`` holds the original name.

    The split is the paper's 6,000/700/1,000 (docs/paper.md §1.9), drawn by a seeded permutation of the sorted
    candidate ids; only ids in a split are in ``ids`` (leftovers are counted in ``unused``). With fewer than
    7,700 candidates the split is scaled proportionally.
    """

    name = "atr"
    SPLIT_SIZES = (6000, 700, 1000)

    def __init__(self, root: str | Path, include_chictopia: bool = False, split_seed: int = 0) -> None:
        root = Path(root)
        fix = f"Fix: qparse data download --dataset atr --data-root {root}"
        if not root.is_dir():
            raise QparseError(f"{root}: no ATR dataset folder here. {fix}")
        self.root = root
        self.label_set = ATR18
        self.split_seed = int(split_seed)
        self.include_chictopia = bool(include_chictopia)
        self._rg_cache: tuple[tuple[int, int], Any] | None = None
        base = next(
            (
                d
                for d in (root / "humanparsing", root)
                if (d / "JPEGImages").is_dir() and (d / "SegmentationClassAug").is_dir()
            ),
            None,
        )
        if base is not None:
            self.layout = "archive"
            self._base = base
            stems = sorted(p.stem for p in (base / "JPEGImages").glob("*.jpg"))
            have = {p.stem for p in (base / "SegmentationClassAug").glob("*.png")}
            no_mask = [s for s in stems if s not in have]
            if no_mask:
                warnings.warn(
                    f"{base / 'SegmentationClassAug'}: {len(no_mask)} image(s) without a label PNG are skipped "
                    f"(first: {no_mask[0]})",
                    stacklevel=2,
                )
            names = [s for s in stems if s in have]
            self._names = names
            all_ids = names
            self.version = "humanparsing-archive"
        else:
            files = sorted(p for p in root.rglob("*.parquet") if p.is_file())
            if not files:
                raise QparseError(
                    f"{root}: neither humanparsing/JPEGImages + SegmentationClassAug nor *.parquet files found. {fix}"
                )
            self.layout = "parquet"
            self._init_parquet(files)
            all_ids = [f"{i:05d}" for i in range(self._nrows)]
            self._names = self._row_names
            self.version = self._parquet_version(files)
        chic = {
            x
            for x, nm in zip(all_ids, self._names, strict=True)
            if nm and Path(nm).stem.startswith(CHICTOPIA_PREFIX)
        }
        pool = [x for x in all_ids if x not in chic]
        self.num_chictopia = len(chic)
        sp = seeded_split(pool, self.SPLIT_SIZES, self.split_seed)
        if self.include_chictopia:
            sp["train"] = sorted(sp["train"] + sorted(chic))
        self._splits = sp
        keep = set().union(*sp.values())
        self.unused = len(all_ids) - len(keep)
        self._pos = {x: k for k, x in enumerate(all_ids)}
        self.ids = [x for x in all_ids if x in keep]
        if not self.ids:
            raise QparseError(f"{root}: no usable ATR images (only Chictopia10k?). {fix}")

    # -- parquet ------------------------------------------------------------------------------------------
    def _init_parquet(self, files: list[Path]) -> None:
        import pyarrow.parquet as pq

        self._files = files
        self._file_rows: list[int] = []
        self._rg_rows: list[list[int]] = []
        names: list[str | None] = []
        for f in files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:
                raise QparseError(
                    f"{f}: not a readable Parquet file ({e}). Fix: qparse data download --dataset atr --data-root {self.root}"
                ) from e
            cols = set(pf.schema_arrow.names)
            if not {"image", "mask"} <= cols:
                raise QparseError(
                    f"{f}: expected columns 'image' and 'mask' (mattmdjaga/human_parsing_dataset), got "
                    f"{sorted(cols)}. Fix: qparse data download --dataset atr --data-root {self.root}"
                )
            md = pf.metadata
            self._file_rows.append(md.num_rows)
            self._rg_rows.append([md.row_group(g).num_rows for g in range(md.num_row_groups)])
            names.extend(self._parquet_paths(pf, md.num_rows))
        self._nrows = int(sum(self._file_rows))
        self._row_names = names
        self._file_starts = np.concatenate([[0], np.cumsum(self._file_rows)]).astype(np.int64)

    @staticmethod
    def _parquet_paths(pf: Any, n: int) -> list[str | None]:
        """``image.path`` of every row (``None`` where absent), reading only that field when possible."""
        try:
            col = pf.read(columns=["image.path"]).column(0).to_pylist()  # a struct<path> column
        except Exception:
            try:
                col = pf.read(columns=["image"]).column(0).to_pylist()
            except Exception:
                col = [None] * n
        col = [c.get("path") if isinstance(c, dict) else c for c in col]
        return [c if isinstance(c, str) and c else None for c in col]

    def _parquet_version(self, files: list[Path]) -> str:
        import hashlib
        import json

        src = self.root / "SOURCE.json"
        if src.is_file():
            try:
                info = json.loads(src.read_text())
                return f"hf:{info['repo']}@{info['revision']}"
            except (ValueError, KeyError, OSError):
                pass
        h = hashlib.sha256("".join(f"{f.name}:{f.stat().st_size};" for f in files).encode()).hexdigest()[:12]
        return f"hf-parquet:{len(files)} files:{h}"

    def _parquet_row(self, pos: int) -> tuple[bytes, bytes, str]:
        import pyarrow.parquet as pq

        fi = int(np.searchsorted(self._file_starts, pos, side="right") - 1)
        r = pos - int(self._file_starts[fi])
        g, start = 0, 0
        for g, cnt in enumerate(self._rg_rows[fi]):  # noqa: B007 - g used after the loop
            if r < start + cnt:
                break
            start += cnt
        key = (fi, g)
        if self._rg_cache is None or self._rg_cache[0] != key:
            tab = pq.ParquetFile(self._files[fi]).read_row_group(g, columns=["image", "mask"])
            self._rg_cache = (key, (tab.column("image"), tab.column("mask")))
        img_col, mask_col = self._rg_cache[1]
        src = f"{self._files[fi]}#row{r}"
        img, mask = img_col[r - start].as_py(), mask_col[r - start].as_py()
        try:
            return img["bytes"], mask["bytes"], src
        except (TypeError, KeyError):
            raise QparseError(
                f"{src}: 'image'/'mask' must be structs with 'bytes'. Fix: qparse data download --dataset atr --data-root {self.root}"
            ) from None

    # -- interface ----------------------------------------------------------------------------------------
    def load(self, i: int) -> Sample:
        x = self.ids[i]
        if self.layout == "archive":
            img_src = self._base / "JPEGImages" / f"{x}.jpg"
            lab_src = self._base / "SegmentationClassAug" / f"{x}.png"
            image, label = read_image(img_src), read_label_png(lab_src)
            img_s, lab_s = str(img_src), str(lab_src)
        else:
            ib, mb, src = self._parquet_row(self._pos[x])
            img_s, lab_s = f"{src} image", f"{src} mask"
            image = read_image(None, ib, source=img_s)
            label = read_label_png(None, data=mb, source=lab_s)
        _check_pair(image, label, ATR18, img_s, lab_s)
        return Sample(image, label, x)

    def original_name(self, i: int) -> str | None:
        """The original file name of item ``i`` when known (archive stem or Parquet ``image.path``)."""
        return self._names[self._pos[self.ids[i]]]

    def splits(self) -> dict[str, list[str]]:
        """Paper split 6,000/700/1,000 (scaled for fewer images) from the non-Chictopia images."""
        return {k: list(v) for k, v in self._splits.items()}

    def prepare_args(self) -> list[str]:
        extra = ["--include-chictopia"] if self.include_chictopia else []
        return (
            super().prepare_args()[:-2]
            + extra
            + ([] if self.split_seed == 0 else ["--split-seed", str(self.split_seed)])
        )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            layout=self.layout,
            chictopia_excluded=0 if self.include_chictopia else self.num_chictopia,
            unused=self.unused,
        )
        return d


# ---------------------------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------------------------


def get_dataset(name: str, root: str | Path | None = None, **kw: Any) -> Dataset:
    """The dataset ``name`` (``synthetic``, ``ccp`` or ``atr``).

    ``synthetic`` takes ``n``, ``size``, ``seed`` (``root`` is ignored); ``ccp`` needs ``root`` and takes
    ``labels`` (``ccp-coarse`` | ``ccp59``) and ``split_seed``; ``atr`` needs ``root`` and takes
    ``include_chictopia`` and ``split_seed``. A ``labels`` argument naming the dataset's own label set is
    accepted everywhere (``atr18`` for synthetic and atr).
    """
    labels = kw.pop("labels", None)
    if name == "synthetic":
        if labels not in (None, "atr18"):
            raise QparseError(f"synthetic data has ATR-18 labels; --labels {labels} is not available")
        return SyntheticPeople(**kw)
    if name in ("ccp", "atr") and root is None:
        raise QparseError(
            f"dataset {name} needs its folder. Fix: qparse data download --dataset {name} --data-root DIR, then pass --data-root DIR"
        )
    if name == "ccp":
        return CCP(root, labels=labels or "ccp-coarse", **kw)  # type: ignore[arg-type]
    if name == "atr":
        if labels not in (None, "atr18"):
            raise QparseError(f"ATR has ATR-18 labels; --labels {labels} is not available")
        return ATR(root, **kw)  # type: ignore[arg-type]
    raise QparseError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
