"""Crop modes (issue 29): the ``warp`` crop beside ``square``, its exact inverse, the corpus/model crop check,
and full-resolution scoring (maps pasted back into the photos) agreeing with ``qparse score``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qparse_lite.cli import main
from qparse_lite.data.crops import (
    CROPS,
    check_crop,
    corpus_crop,
    crop_resize,
    human_crop_box,
    person_crop_box,
)
from qparse_lite.data.prepare import Corpus, human_centric_crop, prepare_corpus, source_dataset
from qparse_lite.errors import QparseError
from qparse_lite.parse.parser import paste_back


def _off_centre_person(H: int = 240, W: int = 320) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A label map with a 50 × 100 px person (several labels) right of centre; returns it and its tight box."""
    lab = np.zeros((H, W), np.uint8)
    x0, y0, x1, y1 = 200, 40, 250, 140
    lab[y0:y1, x0:x1] = 3
    lab[y0 : y0 + 20, x0 + 10 : x1 - 10] = 1  # a "head"
    lab[y0 + 60 : y1, x0 : x0 + 20] = 5  # a "leg"
    lab[y0 + 60 : y1, x1 - 20 : x1] = 6
    lab[y0 + 30 : y0 + 50, x0 + 5 : x0 + 9] = 7  # a thin part: 4 px wide
    return lab, (x0, y0, x1, y1)


def test_warp_box_is_the_person_box_plus_margin_exactly():
    lab, (x0, y0, x1, y1) = _off_centre_person()
    # 10 % of 50 = 5 px left and right, 10 % of 100 = 10 px above and below; aspect not squared
    assert human_crop_box(lab, 0.1, "warp") == (x0 - 5, y0 - 10, x1 + 5, y1 + 10) == (195, 30, 255, 150)
    # the square box: side 120 (the longer side), centred on the person, inside the 320 × 240 photo
    assert human_crop_box(lab, 0.1, "square") == (165, 30, 285, 150) == human_crop_box(lab, 0.1)
    # near the border the warp box is clipped to the photo (no padding), the square one is shifted inside
    edge = np.zeros((240, 320), np.uint8)
    edge[5:105, 290:320] = 2
    assert human_crop_box(edge, 0.1, "warp") == (287, 0, 320, 115)
    sq = human_crop_box(edge, 0.1, "square")
    assert sq[2] - sq[0] == sq[3] - sq[1] == 120 and sq[2] == 320
    # a map without foreground: the whole photo
    assert human_crop_box(np.zeros((40, 60), np.uint8), 0.1, "warp") == (0, 0, 60, 40)
    with pytest.raises(QparseError, match="unknown crop 'stretch'"):
        human_crop_box(lab, 0.1, "stretch")


@pytest.mark.parametrize("crop", CROPS)
def test_detector_box_gets_the_crop_of_the_labelled_copy(crop):
    lab, tight = _off_centre_person()
    image = np.repeat(lab[..., None] * 30, 3, axis=2).astype(np.uint8)

    def detector(img):
        return tight

    detector.name = "exact"
    im, lb, box, method = human_centric_crop(image, 64, detector=detector, crop=crop)
    assert method == "exact" and lb is None and im.shape == (64, 64, 3)
    assert box == human_crop_box(lab, 0.1, crop) == person_crop_box(*tight, 320, 240, 0.1, crop)
    assert human_centric_crop(image, 64, label=lab, crop=crop)[2] == box


def _edge_person() -> np.ndarray:
    """A person touching the photo's right and top borders: the square box leaves the photo (padding), the
    warp box is clipped."""
    lab = np.zeros((100, 320), np.uint8)
    lab[5:95, 290:320] = 4  # 30 × 90: the box + margin is 36 × 108, taller than the photo
    lab[5:25, 295:315] = 1
    return lab


@pytest.mark.parametrize("where", ["off-centre", "edge"])
@pytest.mark.parametrize("crop", CROPS)
@pytest.mark.parametrize("size", [121, 128, 160])
def test_crop_then_paste_back_is_the_original(crop, size, where):
    """S ≥ the box's longer side (121 px): the round trip agrees with the original on ≥ 99 % of the covered
    pixels (nearest neighbour, pixel-centre aligned both ways: in fact on all of them); the square crop's
    padding past the photo border is dropped on the way back."""
    lab = _off_centre_person()[0] if where == "off-centre" else _edge_person()
    box = human_crop_box(lab, 0.1, crop)
    assert max(box[2] - box[0], box[3] - box[1]) <= size
    if where == "edge":
        assert box == ((212, -4, 320, 104) if crop == "square" else (287, 0, 320, 100))
    im, small = crop_resize(np.zeros((*lab.shape, 3), np.uint8), lab, box, size)
    assert small.shape == (size, size)
    back = paste_back(small, box, lab.shape)
    x0, y0, x1, y1 = (max(0, box[0]), max(0, box[1]), min(lab.shape[1], box[2]), min(lab.shape[0], box[3]))
    covered = np.zeros(lab.shape, bool)
    covered[y0:y1, x0:x1] = True
    agree = (back[covered] == lab[covered]).mean()
    assert agree >= 0.99
    assert agree == 1.0
    assert (back[~covered] == 0).all()
    # the warp crop stretches the 60 × 120 box to S × S: the person fills the frame
    if crop == "warp":
        assert (small > 0).mean() > 0.5


def test_warp_corpus_records_its_crop(tmp_path):
    from qparse_lite.data.datasets import get_dataset

    ds = get_dataset("synthetic", n=12, size=96, seed=5)
    sq = Corpus.load(prepare_corpus(ds, 32, tmp_path / "sq", progress=False))
    wp = Corpus.load(prepare_corpus(ds, 32, tmp_path / "wp", crop="warp", progress=False))
    assert corpus_crop(sq) == "square" and corpus_crop(wp) == "warp" and wp.meta["crop"] == "warp"
    assert wp.meta["prepare_args"][-2:] == ["--crop", "warp"] and "--crop warp" in wp.meta["command"]
    bs, bw = np.asarray(sq.boxes), np.asarray(wp.boxes)
    assert ((bs[:, 2] - bs[:, 0]) == (bs[:, 3] - bs[:, 1])).all()
    assert ((bw[:, 2] - bw[:, 0]) != (bw[:, 3] - bw[:, 1])).any()
    for i in range(len(ds)):
        assert tuple(bw[i]) == human_crop_box(ds[i].label, 0.1, "warp")
    # the person fills more of the warp crop
    assert (np.asarray(wp.labels) > 0).mean() > (np.asarray(sq.labels) > 0).mean()
    # the source dataset re-opens from the recorded arguments (full-resolution scoring needs it)
    again = source_dataset(wp)
    assert again.ids == ds.ids and np.array_equal(again[3].label, ds[3].label)
    # a corpus from before the crop mode was recorded is square
    assert corpus_crop({"crop": "labels: bbox of label>0 + margin, squared"}) == "square"
    with pytest.raises(QparseError, match="--crop"):
        prepare_corpus(ds, 32, tmp_path / "bad", crop="stretch", progress=False)


def test_cli_prepare_crop(tmp_path, capsys):
    assert main(["prepare", "--dataset", "synthetic", "--n", "9", "--gen-size", "64", "--size", "24",
                 "--crop", "warp", "--out", str(tmp_path / "c"), "--no-progress"]) == 0  # fmt: skip
    assert "crop warp" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["crop"] == "warp"


def test_check_crop_refuses_another_crop():
    c = Corpus.from_arrays(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.uint8),
                           __import__("qparse_lite.labels", fromlist=["ATR18"]).ATR18, {"train": [0, 1]},
                           meta={"crop": "warp"})  # fmt: skip
    check_crop("warp", c, "RUN", "fix")
    with pytest.raises(QparseError, match=r"RUN: made on a corpus with crop 'square'.*crop 'warp'.*Fix: fix"):
        check_crop(None, c, "RUN", "fix")  # a model from before the mode was recorded: square


@pytest.fixture(scope="module")
def warp_twin(tiny_run, tmp_path_factory):
    """The tiny_run corpus's dataset prepared with the warp crop."""
    corpus, _ = tiny_run
    ds = source_dataset(corpus)
    return Corpus.load(prepare_corpus(ds, corpus.size, tmp_path_factory.mktemp("warp") / "c", crop="warp",
                                      progress=False))  # fmt: skip


def test_model_of_another_crop_is_refused(tiny_run, warp_twin, tmp_path, capsys):
    from qparse_lite.train.loop import train

    corpus, run = tiny_run
    assert json.loads((run / "run.json").read_text())["crop"] == "square"
    rc = main(["evaluate", "--model", str(run), "--corpus", str(warp_twin.path), "--k", "3", "--limit", "2",
               "--out", str(tmp_path / "ev"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "crop 'square'" in err and "crop 'warp'" in err and "--crop square" in err
    # training with a profile of the other crop is refused before any work, with the fix
    with pytest.raises(QparseError, match="--set crop=warp"):
        train("quick", "mcnn", tmp_path / "run", device="cpu", corpus=warp_twin, epochs=1, progress=False)


def test_full_resolution_scores_agree_with_qparse_score(tiny_run, warp_twin, tmp_path, capsys):
    corpus, _ = tiny_run
    ds = source_dataset(corpus)
    for c in (corpus, warp_twin):
        out = tmp_path / corpus_crop(c)
        assert main(["evaluate", "--method", "label-transfer", "--corpus", str(c.path), "--split", "test",
                     "--k", "3", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert "full resolution" in printed and f"crop ({corpus_crop(c)}" in printed
        sc = json.loads((out / "scores.json").read_text())
        full = sc["full_resolution"]
        assert sc["run"]["crop"] == corpus_crop(c) and sc["run"]["full_resolution"] is True
        assert (out / "table1_full.csv").is_file() and (out / "table2_full.md").is_file()
        # the pasted maps are at the photos' resolution and the ground truth is the photos' own
        i = int(c.split("test")[0])
        from qparse_lite.labels import read_label_png

        gt = read_label_png(out / "full" / "gt" / f"{c.ids[i]}.png")
        assert np.array_equal(gt, ds[i].label)
        assert read_label_png(out / "full" / "pred" / f"{c.ids[i]}.png").shape == gt.shape
        assert main(["score", "--pred", str(out / "full" / "pred"), "--gt", str(out / "full" / "gt"),
                     "--labels", "atr18", "--json"]) == 0  # fmt: skip
        scored = json.loads(capsys.readouterr().out)
        for key in ("avg_f1", "accuracy", "fg_accuracy"):
            assert scored[key] == pytest.approx(full[key], abs=1e-6)
    # --crop-level-only keeps today's output only
    out = tmp_path / "crop-only"
    assert main(["evaluate", "--method", "mean-label-map", "--corpus", str(corpus.path), "--out", str(out),
                 "--crop-level-only", "--no-progress"]) == 0  # fmt: skip
    assert "full_resolution" not in json.loads((out / "scores.json").read_text())
    assert not (out / "table1_full.csv").exists()


def test_lraspp_run_and_person_head_of_another_crop_are_refused(tiny_run, tmp_path, capsys):
    import types
    from dataclasses import asdict

    import torch

    from qparse_lite.baselines.parametric import LRASPPNet, ParametricConfig
    from qparse_lite.parse.parser import parse_photo

    corpus, _ = tiny_run  # a square corpus
    ls = corpus.label_set
    run = tmp_path / "lraspp-warp"
    run.mkdir()
    net = LRASPPNet(ls.num_labels, pretrained=False)
    torch.save({"kind": "parametric", "config": asdict(ParametricConfig(num_labels=ls.num_labels)),
                "model": net.state_dict(), "epoch": 1, "history": [], "train_s": 0.0, "crop": "warp",
                "label_set": {"name": ls.name, "names": list(ls.names)}, "corpus_size": corpus.size},
               run / "checkpoint.pt")  # fmt: skip
    rc = main(["evaluate", "--method", "parametric", "--model", str(run), "--corpus", str(corpus.path),
               "--out", str(tmp_path / "ev"), "--device", "cpu", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "crop 'warp'" in err and "--crop warp" in err
    # a person head trained on a warp corpus, used to crop a photo for a square corpus
    head = types.SimpleNamespace(name="fg-head", crop="warp", path="person_head.pt")
    with pytest.raises(QparseError, match="person_head.pt: made on a corpus with crop 'warp'"):
        parse_photo(types.SimpleNamespace(corpus=corpus), np.zeros((64, 48, 3), np.uint8), None, None, None,
                    detector=head)  # fmt: skip
