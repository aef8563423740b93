"""Parsing (qparse_lite.parse.parser): stages, the K sweep sharing one matching pass, photos of any size, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from qparse_lite.cli import main
from qparse_lite.parse.parser import MCNNParser, label_boxes, overlay, parse_photo, paste_back
from qparse_lite.retrieval.features import corpus_features, get_extractor
from qparse_lite.train.checkpoint import load_model


@pytest.fixture(scope="module")
def parser(tiny_run):
    corpus, run = tiny_run
    model, tn, meta = load_model(run)
    return MCNNParser(model, tn, corpus, xi1=0.3, erosion=2, n_segments=60)


def test_label_boxes_on_hand_made_maps():
    lab = np.zeros((2, 6, 8), np.uint8)
    lab[0, 1:3, 2:5] = 1  # rows 1-2, cols 2-4
    lab[1, 5, 7] = 2
    present, boxes = label_boxes(lab, 3)
    assert present.tolist() == [[True, True, False], [True, False, True]]
    assert boxes[0, 1].tolist() == [2, 1, 5, 3]  # x1/y1 exclusive
    assert boxes[1, 2].tolist() == [7, 5, 8, 6]
    assert boxes[0, 2].tolist() == [0, 0, 0, 0]


def test_parse_returns_every_stage(tiny_run, parser):
    corpus, _ = tiny_run
    i, nb = int(corpus.split("test")[0]), np.asarray(corpus.split("train"))[:5]
    st = parser.parse(np.asarray(corpus.images[i]), nb)
    S, L = corpus.size, corpus.label_set.num_labels
    assert st.c.shape == (5, L) and st.t.shape == (5, L, 4)
    assert st.prob_maps.shape == (L, S, S) and st.labels.shape == (S, S) and st.labels.dtype == np.uint8
    assert not st.fg_seed[st.bg_seed].any()  # seeds are disjoint
    assert (st.prob_maps[~st.visible] == 0).all()  # invisible labels get no probability mass
    assert set(np.unique(st.labels)) <= {0, *np.flatnonzero(st.visible).tolist()}
    assert np.isfinite(st.bg_prob).all() and 0 <= st.bg_prob.min() and st.bg_prob.max() <= 1


def test_parse_k_equals_separate_parses(tiny_run, parser):
    corpus, _ = tiny_run
    i, nb = int(corpus.split("test")[1]), np.asarray(corpus.split("train"))[3:10]
    image = np.asarray(corpus.images[i])
    swept = parser.parse_k(image, nb, [1, 3, 7])
    for k in (1, 3, 7):
        alone = parser.parse(image, nb[:k])
        np.testing.assert_allclose(swept[k].c, alone.c, atol=1e-5)
        np.testing.assert_array_equal(swept[k].labels, alone.labels)
    with pytest.raises(ValueError, match="neighbours"):
        parser.parse_k(image, nb[:2], [3])


def test_paste_back_and_overlay():
    crop = np.zeros((4, 4), np.uint8)
    crop[:2, :2] = 3  # top-left quarter
    full = paste_back(crop, (-2, 1, 6, 9), (10, 5))  # an 8×8 box reaching past the left border
    assert full.shape == (10, 5)
    assert (full[1:5, 0:2] == 3).all()  # box columns -2..1 hold label 3; only 0..1 are in the photo
    assert (full[1:5, 2:] == 0).all() and (full[5:] == 0).all() and (full[0] == 0).all()
    img = np.full((10, 5, 3), 100, np.uint8)
    pal = np.zeros((4, 3), np.uint8)
    pal[3] = (255, 0, 0)
    ov = overlay(img, full, pal, alpha=0.5)
    assert (ov[full == 0] == 100).all() and tuple(ov[2, 0]) == (178, 50, 50)


def _photo(seed: int = 11) -> np.ndarray:
    """A synthetic person pasted off-centre into a wider photo (a photo that is not in the corpus)."""
    from qparse_lite.data.datasets import get_dataset

    person = get_dataset("synthetic", n=1, size=160, seed=seed)[0].image
    photo = np.full((200, 320, 3), 90, np.uint8)
    photo[20:180, 150:310] = person
    return photo


def test_parse_photo_of_any_size(tiny_run, parser):
    corpus, _ = tiny_run
    ex = get_extractor("hog-color")
    db = np.asarray(corpus.split("train"))
    feats = corpus_features(corpus, db, ex, progress=False)
    photo = _photo()
    res = parse_photo(parser, photo, ex, feats, db, k=5)
    assert res.labels.shape == photo.shape[:2]
    assert res.crop_method in ("hog", "whole-image")
    assert len(res.neighbours) == 5 and set(res.neighbours) <= set(db.tolist())
    x0, y0, x1, y1 = res.box
    outside = np.ones(photo.shape[:2], bool)
    outside[max(0, y0) : y1, max(0, x0) : x1] = False
    assert (res.labels[outside] == 0).all()  # nothing outside the person crop


def test_parse_cli_skips_unreadable_files(tiny_run, tmp_path, capsys):
    corpus, run = tiny_run
    good = tmp_path / "street.jpg"
    Image.fromarray(_photo()).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    rc = main(["parse", str(bad), str(good), "--model", str(run), "--corpus", str(corpus.path),
               "--out", str(out), "--k", "5", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.jpg" in err and "not a readable image" in err
    lab = np.asarray(Image.open(out / "street.png"))
    assert lab.shape == (200, 320)
    assert (out / "street_overlay.jpg").is_file()
    rec = json.loads((out / "parse.json").read_text())
    assert rec["failed"] == [str(bad)] and rec["parsed"][0]["size"] == [200, 320]
