"""Label sets: ATR-18, CCP-59 and the coarse CCP set, with palettes and left/right pairs.

A :class:`LabelSet` is the single description of a label space used everywhere in the kit:
datasets emit label maps in it, the metrics name their rows with it, the mirror transform
swaps its declared left/right pairs, and figures colour it with its palette.

ATR-18 follows docs/paper.md §3 (ids 0..17, in the order of the public "humanparsing" archive).
CCP-59 names are read from the dataset's own ``label_list.mat``. The coarse CCP set merges
the 58 garment names of CCP by kind (see :data:`CCP_COARSE_GROUPS`): CCP has no left/right and
no face label, so the coarse set has none either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qparse_lite.errors import QparseError

__all__ = [
    "LabelSet",
    "ATR18",
    "ATR18_NAMES",
    "CCP59_NAMES",
    "CCP_COARSE",
    "CCP_COARSE_GROUPS",
    "ccp59",
    "ccp59_to_coarse_lut",
    "LABEL_SETS",
    "read_label_png",
    "colours_to_ids",
    "get_label_set",
    "voc_palette",
    "read_ccp_label_list",
]


def voc_palette(n: int) -> np.ndarray:
    """The PASCAL VOC bit-interleaved colour palette, ``n``×3 uint8 (0 is black)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


@dataclass(frozen=True)
class LabelSet:
    """A label space: ``names[i]`` is label ``i``; 0 is always background.

    Attributes:
        name: short identifier (``"atr18"``, ``"ccp59"``, ``"ccp-coarse"``).
        names: label names, index = label id.
        lr_pairs: pairs ``(left_id, right_id)`` that a horizontal mirror must swap.
        palette: ``len(names)``×3 uint8 colours for figures and overlays.
    """

    name: str
    names: tuple[str, ...]
    lr_pairs: tuple[tuple[int, int], ...] = ()
    palette: np.ndarray = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.palette is None:
            object.__setattr__(self, "palette", voc_palette(len(self.names)))
        if self.names[0] not in ("background", "null"):
            raise ValueError(f"label 0 of {self.name} must be background, got {self.names[0]!r}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_labels(self) -> int:
        """L, the number of labels including background."""
        return len(self.names)

    @property
    def foreground(self) -> list[int]:
        """Ids of the foreground labels (all but 0)."""
        return list(range(1, len(self.names)))

    def index(self, name: str) -> int:
        """Id of the label called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not a label of {self.name}: {', '.join(self.names)}") from None

    @property
    def mirror_lut(self) -> np.ndarray:
        """Lookup table ``lut[id] -> id after a horizontal flip`` (left/right pairs swapped)."""
        lut = np.arange(len(self.names), dtype=np.uint8)
        for a, b in self.lr_pairs:
            lut[a], lut[b] = b, a
        return lut

    def colorize(self, label_map: np.ndarray) -> np.ndarray:
        """RGB uint8 image of a label map coloured by the palette."""
        self.check(label_map)
        return self.palette[label_map]

    def colours_to_ids(self, rgb: np.ndarray, source: str = "image") -> np.ndarray:
        """The label ids (H×W uint8) of an RGB rendering in this set's palette (the inverse of :meth:`colorize`);
        a colour that is not in the palette raises :class:`QparseError` naming ``source``."""
        return colours_to_ids(rgb, self, source)

    def check(self, label_map: np.ndarray, source: str = "label map") -> None:
        """Raise :class:`QparseError` naming ``source`` if an id lies outside this set."""
        if label_map.size and int(label_map.max()) >= len(self.names):
            bad = sorted(int(v) for v in np.unique(label_map) if v >= len(self.names))
            raise QparseError(
                f"{source}: label id(s) {bad} are outside the label set {self.name} "
                f"(ids 0..{len(self.names) - 1}). Fix: score/prepare with the right --labels, "
                f"or map the labels into {self.name} first."
            )


ATR18_NAMES: tuple[str, ...] = (
    "background", "hat", "hair", "sunglasses", "upper-clothes", "skirt", "pants", "dress",
    "belt", "left-shoe", "right-shoe", "face", "left-leg", "right-leg", "left-arm",
    "right-arm", "bag", "scarf",
)  # fmt: skip

#: ATR-18 (docs/paper.md §3); left/right: shoes (9,10), legs (12,13), arms (14,15).
ATR18 = LabelSet("atr18", ATR18_NAMES, lr_pairs=((9, 10), (12, 13), (14, 15)))

#: CCP's 59 names as shipped in ``label_list.mat`` at upstream commit fe34fb7 (used to validate
#: the file and when the dataset is not at hand; :func:`ccp59` reads the file itself).
CCP59_NAMES: tuple[str, ...] = (
    "null", "accessories", "bag", "belt", "blazer", "blouse", "bodysuit", "boots", "bra",
    "bracelet", "cape", "cardigan", "clogs", "coat", "dress", "earrings", "flats", "glasses",
    "gloves", "hair", "hat", "heels", "hoodie", "intimate", "jacket", "jeans", "jumper",
    "leggings", "loafers", "necklace", "panties", "pants", "pumps", "purse", "ring", "romper",
    "sandals", "scarf", "shirt", "shoes", "shorts", "skin", "skirt", "sneakers", "socks",
    "stockings", "suit", "sunglasses", "sweater", "sweatshirt", "swimwear", "t-shirt", "tie",
    "tights", "top", "vest", "wallet", "watch", "wedges",
)  # fmt: skip

#: The coarse CCP set: 15 garment/body kinds plus background. Each coarse label lists the CCP-59
#: names merged into it. Chosen to line up with ATR-18 where CCP allows (hat, hair, sunglasses,
#: upper-clothes, skirt, pants, dress, belt, bag, scarf), adding the kinds ATR lacks
#: (outerwear, legwear, accessories) and CCP's single ``skin`` for face/arms/legs.
CCP_COARSE_GROUPS: dict[str, tuple[str, ...]] = {
    "background": ("null",),
    "hat": ("hat",),
    "hair": ("hair",),
    "sunglasses": ("sunglasses", "glasses"),
    "upper-clothes": ("blouse", "bodysuit", "bra", "hoodie", "jumper", "shirt", "sweater",
                      "sweatshirt", "t-shirt", "top", "vest", "intimate"),
    "outerwear": ("blazer", "cape", "cardigan", "coat", "jacket", "suit"),
    "skirt": ("skirt",),
    "pants": ("pants", "jeans", "leggings", "shorts", "panties"),
    "dress": ("dress", "romper", "swimwear"),
    "belt": ("belt",),
    "shoes": ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes",
              "sneakers", "wedges"),
    "legwear": ("socks", "stockings", "tights"),
    "skin": ("skin",),
    "bag": ("bag", "purse", "wallet"),
    "scarf": ("scarf", "tie"),
    "accessories": ("accessories", "bracelet", "earrings", "gloves", "necklace", "ring", "watch"),
}  # fmt: skip

CCP_COARSE = LabelSet("ccp-coarse", tuple(CCP_COARSE_GROUPS))


def ccp59_to_coarse_lut(names: tuple[str, ...] = CCP59_NAMES) -> np.ndarray:
    """Lookup table mapping CCP-59 ids to :data:`CCP_COARSE` ids (every name mapped once)."""
    where = {n: i for i, (_, members) in enumerate(CCP_COARSE_GROUPS.items()) for n in members}
    missing = [n for n in names if n not in where]
    if missing:
        raise ValueError(f"CCP names without a coarse label: {missing}")
    return np.array([where[n] for n in names], dtype=np.uint8)


def read_ccp_label_list(path: str | Path) -> tuple[str, ...]:
    """Read the 59 label names from CCP's ``label_list.mat`` (variable ``label_list``)."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise QparseError(
            f"{path}: CCP label list not found. Fix: qparse data download --dataset ccp --data-root {path.parent}"
        )
    try:
        cell = scipy.io.loadmat(path)["label_list"]
    except Exception as e:  # scipy raises several types for a bad file
        raise QparseError(f"{path}: not a readable label_list.mat ({e}). Fix: download it again.") from e
    names = tuple(str(x[0]) if len(x) else "" for x in cell.ravel())
    if len(names) != 59 or names[0] != "null":
        raise QparseError(f"{path}: expected 59 names starting with 'null', got {len(names)}")
    return names


def ccp59(root: str | Path | None = None) -> LabelSet:
    """CCP-59 with names read from ``ROOT/label_list.mat`` (the built-in copy if ``root`` is None)."""
    names = CCP59_NAMES if root is None else read_ccp_label_list(Path(root) / "label_list.mat")
    return LabelSet("ccp59", names)


_BY_NAME = {"atr18": ATR18, "ccp-coarse": CCP_COARSE}

#: The names :func:`get_label_set` knows (the registry the CLI's ``--labels`` choices come from).
LABEL_SETS: tuple[str, ...] = ("atr18", "ccp59", "ccp-coarse")


def get_label_set(name: str) -> LabelSet:
    """Label set by name: one of :data:`LABEL_SETS` (``atr18``, ``ccp59``, ``ccp-coarse``)."""
    if name == "ccp59":
        return ccp59()
    try:
        return _BY_NAME[name]
    except KeyError:
        raise QparseError(f"unknown label set {name!r}; choose one of {', '.join(LABEL_SETS)}") from None


# -- label map PNGs -------------------------------------------------------------------------------------

#: PNG modes whose pixel values are label ids as they are (palette indices or gray values).
_ID_MODES = frozenset({"P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N"})
#: Modes whose first channel holds the ids beside an alpha channel (dropped).
_ID_ALPHA_MODES = frozenset({"PA", "LA"})
#: Colour modes accepted only when every channel is equal (a grayscale map saved as colour).
_GRAY_AS_COLOUR_MODES = frozenset({"RGB", "RGBA"})


def colours_to_ids(rgb: np.ndarray, label_set: LabelSet, source: str = "image") -> np.ndarray:
    """Label ids (H×W uint8) of an H×W×3 rendering in ``label_set``'s palette (:meth:`LabelSet.colorize`'s
    inverse). Raises :class:`QparseError` naming ``source`` when a colour is not in the palette."""
    rgb = np.asarray(rgb)[..., :3].astype(np.uint32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = np.asarray(label_set.palette, np.uint32)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_code, kind="stable")
    pos = np.clip(np.searchsorted(pal_code[order], code), 0, len(order) - 1)
    ok = pal_code[order][pos] == code
    if not ok.all():
        y, x = np.argwhere(~ok)[0]
        raise QparseError(
            f"{source}: colour {tuple(int(v) for v in rgb[y, x])} at (x={x}, y={y}) is not in the {label_set.name} "
            f"palette ({int((~ok).sum())} such pixels). Fix: render it with that palette, or write the ids directly."
        )
    return order[pos].astype(np.uint8)


def _colour_fix(src: str, mode: str, label_set: LabelSet | None, what: str = "colours") -> str:
    name = label_set.name if label_set is not None else "atr18"
    return (
        f"{src}: label PNG in mode {mode} holds {what}, not label ids (a colour image, not a label map). Fix: convert it "
        f"to ids, e.g. ids = qparse_lite.labels.get_label_set('{name}').colours_to_ids(np.asarray(Image.open(path)"
        ".convert('RGB'))) for a rendering in the set's palette, and save the ids as a palette or grayscale PNG "
        "(qparse_lite.io.atomic_save_png(path, ids, palette))."
    )


def read_label_png(
    path: str | Path | None,
    label_set: LabelSet | None = None,
    *,
    data: bytes | None = None,
    source: str | None = None,
) -> np.ndarray:
    """Read a label map PNG as label ids, H×W uint8: the one reader of the kit's loaders and ``qparse score``.

    The pixel values are the ids, never colours: a palette (``P``) PNG's indices whatever its palette, a
    grayscale (``L``, ``1``) or 16/32-bit (``I;16``, ``I``) PNG's values (each must fit in 0..255), the first
    channel of ``PA``/``LA`` (alpha dropped), and an ``RGB``/``RGBA`` PNG only when its three colour
    channels are equal (a grayscale map saved as RGB). A colour rendering of the labels is rejected: its
    colours are not ids.

    Args:
        path: the PNG file (or None with ``data``).
        label_set: when given, the ids are checked against it (:meth:`LabelSet.check`, naming the file).
        data: the PNG's bytes instead of a file (e.g. a Parquet cell); ``source`` names it in errors.
        source: the name used in error messages (default ``path``).

    Raises:
        QparseError: the file is missing or not an image, holds colours, has ids above 255, or (with
            ``label_set``) ids outside the set; the message names the file and the fix.
    """
    import io as _io

    from PIL import Image, UnidentifiedImageError

    src = source or str(path)
    fix = (
        "Fix: save label maps as palette ('P') or grayscale ('L') PNGs whose pixel values are the label ids "
        "(e.g. qparse_lite.io.atomic_save_png), or download the dataset again."
    )
    try:
        with Image.open(_io.BytesIO(data) if data is not None else path) as im:
            mode = im.mode
            if mode not in _ID_MODES | _ID_ALPHA_MODES | _GRAY_AS_COLOUR_MODES:
                raise QparseError(f"{src}: a {mode} image is not a label map (its values are not ids). {fix}")
            arr = np.array(im)
    except FileNotFoundError:
        raise QparseError(f"{src}: label file not found. Fix: check the path (or download the dataset again).") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise QparseError(f"{src}: not a readable label PNG ({e}). {fix}") from e
    if mode in _ID_ALPHA_MODES:
        arr = arr[..., 0]
    elif mode in _GRAY_AS_COLOUR_MODES:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise QparseError(
                _colour_fix(src, mode, label_set) + " (ATR: the indexed PNGs of humanparsing/SegmentationClassAug.)"
            )
        arr = arr[..., 0]
        if label_set is not None and arr.size and int(arr.max()) >= label_set.num_labels:
            raise QparseError(  # gray values beyond the set: a gray rendering, not ids (not a --labels problem)
                _colour_fix(src, mode, label_set, f"gray values {int(arr.min())}..{int(arr.max())} beyond {label_set.name}'s ids")
            )
    if arr.ndim != 2:
        raise QparseError(f"{src}: expected a single-channel label map, got shape {arr.shape}. {fix}")
    if arr.dtype != np.uint8:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise QparseError(
                f"{src}: label ids {int(arr.min())}..{int(arr.max())} are outside 0..255 (a {mode} PNG). {fix}"
            )
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    if label_set is not None:
        label_set.check(arr, source=src)
    return arr
