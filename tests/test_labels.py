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
    read_label_png,
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
    with pytest.raises(QparseError, match="qparse data download --dataset ccp --data-root"):
        read_ccp_label_list(tmp_path / "label_list.mat")
    (tmp_path / "label_list.mat").write_bytes(b"not a mat file")
    with pytest.raises(QparseError, match="label_list.mat"):
        read_ccp_label_list(tmp_path / "label_list.mat")


# -- read_label_png: the one reader of label map PNGs (loaders and `qparse score`) ----------------------


def _save(tmp_path, arr, name, **kw):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(arr, **kw).save(path)
    return path


def test_read_label_png_accepts_every_id_form(tmp_path):
    from PIL import Image

    lab = np.array([[0, 1, 2, 17], [4, 5, 16, 3]], np.uint8)
    pal = Image.fromarray(lab).convert("P")
    pal.putpalette(ATR18.palette.ravel().tolist())
    pal.save(tmp_path / "p.png")
    forms = {
        "p.png": tmp_path / "p.png",
        "l.png": _save(tmp_path, lab, "l.png"),
        "i16.png": _save(tmp_path, lab.astype(np.uint16), "i16.png"),
        "rgb.png": _save(tmp_path, np.repeat(lab[..., None], 3, 2), "rgb.png"),
        "rgba.png": _save(tmp_path, np.dstack([lab, lab, lab, np.full_like(lab, 255)]), "rgba.png"),
        "la.png": _save(tmp_path, np.dstack([lab, np.full_like(lab, 9)]), "la.png", mode="LA"),
    }
    for name, path in forms.items():
        got = read_label_png(path, ATR18)
        assert got.dtype == np.uint8 and got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, lab, err_msg=name)
    assert Image.open(forms["i16.png"]).mode.startswith("I")
    # bytes (a Parquet cell) name their source in errors
    data = forms["p.png"].read_bytes()
    np.testing.assert_array_equal(read_label_png(None, data=data, source="x.parquet#row0"), lab)
    binary = _save(tmp_path, lab > 2, "b.png")
    np.testing.assert_array_equal(read_label_png(binary), (lab > 2).astype(np.uint8))


def test_read_label_png_refuses_with_the_file_and_the_fix(tmp_path):
    lab = np.array([[0, 1], [2, 3]], np.uint8)
    colour = _save(tmp_path, ATR18.palette[lab].astype(np.uint8), "colour.png")
    with pytest.raises(QparseError, match=r"colour\.png: label PNG in mode RGB holds colours.*Fix:"):
        read_label_png(colour)
    big = _save(tmp_path, np.array([[0, 300]], np.uint16), "big.png")
    with pytest.raises(QparseError, match=r"big\.png: label ids 0\.\.300 are outside 0\.\.255.*Fix:"):
        read_label_png(big)
    floats = tmp_path / "f.tif"
    from PIL import Image

    Image.fromarray(np.zeros((2, 2), np.float32)).save(floats)
    with pytest.raises(QparseError, match=r"f\.tif: a F image is not a label map.*Fix:"):
        read_label_png(floats)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(QparseError, match=r"junk\.png: not a readable label PNG.*Fix:"):
        read_label_png(junk)
    with pytest.raises(QparseError, match=r"nowhere\.png: label file not found.*Fix:"):
        read_label_png(tmp_path / "nowhere.png")
    out_of_set = _save(tmp_path, np.array([[0, 18]], np.uint8), "o.png")
    with pytest.raises(QparseError, match=r"o\.png: label id\(s\) \[18\].*atr18"):
        read_label_png(out_of_set, ATR18)
    assert read_label_png(out_of_set).max() == 18  # no set: only 0..255 is checked


def test_one_label_png_reader():
    """``labels.read_label_png`` is the one reader of label-map PNGs: no other module defines one."""
    import ast
    from pathlib import Path

    import qparse_lite

    owners = [p.relative_to(Path(qparse_lite.__file__).parent).as_posix()
              for p in Path(qparse_lite.__file__).parent.rglob("*.py")
              for n in ast.parse(p.read_text()).body
              if isinstance(n, ast.FunctionDef) and n.name == "read_label_png"]  # fmt: skip
    assert owners == ["labels.py"]


def test_label_sets_registry():
    from qparse_lite.labels import LABEL_SETS

    assert [get_label_set(n).name for n in LABEL_SETS] == list(LABEL_SETS)
    with pytest.raises(QparseError, match="atr18, ccp59, ccp-coarse"):
        get_label_set("nope")
