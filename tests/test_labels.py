"""Label sets: ATR-18 as in docs/paper.md §3, CCP-59 as shipped, the coarse CCP mapping, palettes and checks."""

from __future__ import annotations

import numpy as np
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.labels import (
    ATR18,
    ATR18_NAMES,
    CCP59_NAMES,
    CCP_COARSE,
    CCP_COARSE_GROUPS,
    LabelSet,
    ccp59,
    ccp59_to_coarse_lut,
    get_label_set,
    read_ccp_label_list,
)

# docs/paper.md §3, in order (ids 0..17), spelled as the humanparsing archive's README lists them
ATR_ARCHIVE = (
    "background hat hair sunglass upper-clothes skirt pants dress belt left-shoe right-shoe face "
    "left-leg right-leg left-arm right-arm bag scarf"
).split()


def test_atr18_ids_and_names_follow_the_archive():
    assert len(ATR18) == ATR18.num_labels == 18
    assert ATR18.names == ATR18_NAMES
    for i, name in enumerate(ATR_ARCHIVE):
        # the archive writes "sunglass"; the kit (and docs/paper.md) spell it "sunglasses"
        assert ATR18.names[i] == ("sunglasses" if name == "sunglass" else name), i
    assert (
        ATR18.index("left-arm") == 14 and ATR18.index("bag") == 16 and ATR18.foreground == list(range(1, 18))
    )
    with pytest.raises(KeyError, match="not a label"):
        ATR18.index("coat")


def test_atr18_left_right_pairs_and_mirror_lut():
    assert set(ATR18.lr_pairs) == {(9, 10), (12, 13), (14, 15)}
    for a, b in ATR18.lr_pairs:
        assert ATR18.names[a].startswith("left-") and ATR18.names[b] == "right-" + ATR18.names[a][5:]
    lut = ATR18.mirror_lut
    assert lut.dtype == np.uint8 and lut.shape == (18,)
    assert np.array_equal(lut[lut], np.arange(18))  # an involution
    swapped = {i for p in ATR18.lr_pairs for i in p}
    for i in range(18):
        if i not in swapped:
            assert lut[i] == i
    assert lut[9] == 10 and lut[10] == 9 and lut[14] == 15 and lut[13] == 12
    # CCP sets have no left/right: identity
    assert np.array_equal(CCP_COARSE.mirror_lut, np.arange(len(CCP_COARSE)))


def test_ccp59_names_from_label_list_equal_builtin(ccp_root):
    names = read_ccp_label_list(ccp_root / "label_list.mat")
    assert names == CCP59_NAMES
    assert len(names) == 59 and names[0] == "null"
    assert ccp59(ccp_root).names == CCP59_NAMES
    assert get_label_set("ccp59").names == CCP59_NAMES


def test_coarse_mapping_covers_all_59_names_once():
    lut = ccp59_to_coarse_lut()
    assert lut.shape == (59,) and lut.dtype == np.uint8
    assert lut[0] == 0  # null -> background
    assert set(lut.tolist()) == set(range(len(CCP_COARSE)))  # every coarse label is used
    members = [n for group in CCP_COARSE_GROUPS.values() for n in group]
    assert sorted(members) == sorted(CCP59_NAMES)  # each name in exactly one group
    for name, cid in zip(CCP59_NAMES, lut, strict=True):
        assert name in CCP_COARSE_GROUPS[CCP_COARSE.names[cid]]
    assert CCP_COARSE.names[lut[CCP59_NAMES.index("jeans")]] == "pants"
    assert CCP_COARSE.names[lut[CCP59_NAMES.index("sneakers")]] == "shoes"
    with pytest.raises(ValueError, match="without a coarse label"):
        ccp59_to_coarse_lut((*CCP59_NAMES, "cape-coat"))


@pytest.mark.parametrize("ls", [ATR18, CCP_COARSE, ccp59()], ids=lambda s: s.name)
def test_palette_one_distinct_colour_per_label(ls):
    assert ls.palette.shape == (len(ls), 3) and ls.palette.dtype == np.uint8
    assert len({tuple(c) for c in ls.palette}) == len(ls)
    assert tuple(ls.palette[0]) == (0, 0, 0)
    lab = np.array([[0, 1], [2, len(ls) - 1]], np.uint8)
    rgb = ls.colorize(lab)
    assert rgb.shape == (2, 2, 3) and np.array_equal(rgb[1, 1], ls.palette[-1])


def test_check_raises_naming_the_source_and_ids():
    ok = np.zeros((4, 4), np.uint8)
    ok[1, 1] = 17
    ATR18.check(ok, "fine.png")
    bad = ok.copy()
    bad[2, 2], bad[3, 3] = 18, 40
    with pytest.raises(QparseError, match=r"mask_0007\.png.*\[18, 40\].*atr18"):
        ATR18.check(bad, "mask_0007.png")
    with pytest.raises(QparseError):
        ATR18.colorize(bad)
    CCP_COARSE.check(np.full((2, 2), 15, np.uint8))
    with pytest.raises(QparseError, match="ccp-coarse"):
        CCP_COARSE.check(np.full((2, 2), 16, np.uint8))


def test_label_set_errors():
    with pytest.raises(ValueError, match="background"):
        LabelSet("bad", ("shirt", "pants"))
    with pytest.raises(QparseError, match="atr18, ccp59, ccp-coarse"):
        get_label_set("lip20")
    assert get_label_set("atr18") is ATR18 and get_label_set("ccp-coarse") is CCP_COARSE


def test_read_label_list_missing_or_broken(tmp_path):
    with pytest.raises(QparseError, match="qparse data download ccp --root"):
        read_ccp_label_list(tmp_path / "label_list.mat")
    (tmp_path / "label_list.mat").write_bytes(b"not a mat file")
    with pytest.raises(QparseError, match="label_list.mat"):
        read_ccp_label_list(tmp_path / "label_list.mat")
