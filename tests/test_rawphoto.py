"""The raw-photo path: the fg-head person crop (off-centre person, no person), parse --json, presence scores,
and the claims' bootstrap."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from qparse_lite.cli import main
from qparse_lite.errors import QparseError


def _photo_and_label(seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic person pasted into the right part of a wider grey photo, with its label map."""
    from qparse_lite.data.datasets import get_dataset

    s = get_dataset("synthetic", n=1, size=160, seed=seed)[0]
    photo = np.full((200, 320, 3), 90, np.uint8)
    label = np.zeros((200, 320), np.uint8)
    photo[20:180, 150:310] = s.image
    label[20:180, 150:310] = s.label
    return photo, label


@pytest.fixture(scope="module")
def person_head(tiny_run, tmp_path_factory):
    from qparse_lite.data.person import fit_person_head

    corpus, _ = tiny_run
    return fit_person_head(corpus, tmp_path_factory.mktemp("head") / "fg-head.pt", progress=False)


def test_fg_head_crops_an_off_centre_person(tiny_run, person_head):
    from qparse_lite.data.crops import human_crop_box
    from qparse_lite.data.person import box_iou, get_detector
    from qparse_lite.data.prepare import human_centric_crop

    photo, label = _photo_and_label()
    det = get_detector("auto", head=person_head)
    assert det.name == "fg-head"
    box = det(photo)
    assert box is not None
    x0, y0, x1, y1 = box
    assert (x0 + x1) / 2 > 160  # found on the right, where the person is, not the photo's centre
    rows, cols = np.flatnonzero((label > 0).any(1)), np.flatnonzero((label > 0).any(0))
    assert box_iou(box, (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)) > 0.2
    crop, _, cbox, method = human_centric_crop(photo, 48, detector=det)
    assert method == "fg-head" and crop.shape == (48, 48, 3)
    assert cbox[2] - cbox[0] == cbox[3] - cbox[1]  # squared like the corpus crops
    assert box_iou(cbox, human_crop_box(label)) > 0.3  # near the crop a labelled copy gets
    # the head file is reused, not retrained, when the corpus and settings match
    from qparse_lite.data.person import fit_person_head

    before = person_head.stat().st_mtime_ns
    assert fit_person_head(tiny_run[0], person_head, progress=False) == person_head
    assert person_head.stat().st_mtime_ns == before


def test_fg_head_finds_nobody_in_an_empty_photo(person_head):
    from qparse_lite.data.person import get_detector
    from qparse_lite.data.prepare import human_centric_crop

    det = get_detector("fg-head", head=person_head)
    blank = np.full((120, 200, 3), 90, np.uint8)
    assert det(blank) is None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _, _, box, method = human_centric_crop(blank, 32, detector=det)
    assert method == "whole-image" and any("no person" in str(x.message) for x in w)
    assert box == (0, -40, 200, 160)  # the whole photo, made square around its centre


def test_fg_head_errors_name_the_file(tmp_path):
    from qparse_lite.data.person import get_detector

    bad = tmp_path / "person_head.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(QparseError, match="person_head.pt"):
        get_detector("fg-head", head=bad)
    with pytest.raises(QparseError, match="person head file"):
        get_detector("fg-head")


def test_parse_json_reports_crop_labels_confidences_and_timings(tiny_run, person_head, tmp_path, capsys):
    import shutil

    corpus, run = tiny_run
    model = tmp_path / "model"
    shutil.copytree(run, model)
    shutil.copy(person_head, model / "person_head.pt")  # shipped with the model: auto uses it
    photo, _ = _photo_and_label()
    path = tmp_path / "street.jpg"
    Image.fromarray(photo).save(path)
    out = tmp_path / "out"
    rc = main(["parse", str(path), "--model", str(model), "--corpus", str(corpus.path), "--out", str(out),
               "--k", "5", "--device", "cpu", "--json"])  # fmt: skip
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    rec, summary = lines[0], lines[-1]
    assert rec["detector"] == "fg-head" and len(rec["box"]) == 4 and rec["size"] == [200, 320]
    assert set(rec["confidence"]) == set(corpus.label_set.names[1:])
    assert set(rec["visible"]) <= set(rec["confidence"]) and len(rec["neighbours"]) == 5
    assert {"read", "crop", "features", "knn", "match", "postprocess", "paste"} <= set(rec["timings_s"])
    assert all(v >= 0 for v in rec["timings_s"].values())
    assert summary["summary"] and summary["photos"] == 1 and summary["photos_per_s"] > 0
    assert np.asarray(Image.open(out / "street.png")).shape == (200, 320)


def test_presence_table_counts_labels_per_photo(tmp_path):
    from qparse_lite.evaluation.photos import presence_summary, presence_table
    from qparse_lite.labels import get_label_set

    ls = get_label_set("ccp-coarse")
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    hat, hair = ls.index("hat"), ls.index("hair")
    for n, (gt_l, pred_l) in enumerate([({hat, hair}, {hat}), ({hair}, {hair, hat}), ({hat}, {hat}), (set(), set())]):
        for d, labs in (("gt", gt_l), ("pred", pred_l)):
            m = np.zeros((8, 8), np.uint8)
            for j, lab in enumerate(sorted(labs)):
                m[j, :] = lab
            Image.fromarray(m).save(tmp_path / d / f"{n}.png")
    t = presence_table(tmp_path / "pred", tmp_path / "gt", ls).set_index("label")
    assert t.loc["hat", "n_gt"] == 2 and t.loc["hat", "n_pred"] == 3
    assert t.loc["hat", "precision"] == pytest.approx(200 / 3) and t.loc["hat", "recall"] == 100
    assert t.loc["hat", "balanced_accuracy"] == pytest.approx(75.0)  # TPR 1, TNR 1/2
    assert t.loc["hair", "recall"] == 50 and t.loc["hair", "balanced_accuracy"] == pytest.approx(75.0)
    assert bool(t.loc["hat", "discriminative"]) and not bool(t.loc["skin", "discriminative"])
    s = presence_summary(t.reset_index())
    assert s["n_discriminative"] == 2 and s["balanced_accuracy_discriminative"] == pytest.approx(75.0)
    assert s["labels_found"] == pytest.approx(75.0)  # 3 of the 4 ground-truth (photo, label) presences


def test_bootstrap_difference_and_claim_verdicts(tmp_path):
    from qparse_lite.evaluation.bootstrap import bootstrap_difference
    from qparse_lite.evaluation.claims import judge_pair
    from qparse_lite.evaluation.folders import per_image_confusions
    from qparse_lite.labels import get_label_set

    ls = get_label_set("ccp-coarse")
    rng = np.random.default_rng(0)
    for d in ("gt", "pred/good", "pred/bad"):
        (tmp_path / d).mkdir(parents=True)
    for n in range(30):
        gt = rng.integers(0, 4, (16, 16)).astype(np.uint8)
        bad = gt.copy()
        bad[rng.random((16, 16)) < 0.5] = 0  # half the pixels wrong where not background
        Image.fromarray(gt).save(tmp_path / "gt" / f"{n}.png")
        Image.fromarray(gt).save(tmp_path / "pred" / "good" / f"{n}.png")
        Image.fromarray(bad).save(tmp_path / "pred" / "bad" / f"{n}.png")
    _, a = per_image_confusions(tmp_path / "pred" / "good", tmp_path / "gt", ls)
    _, b = per_image_confusions(tmp_path / "pred" / "bad", tmp_path / "gt", ls)
    bs = bootstrap_difference(a, b, ls, n=200)
    assert bs["diff"] > 0 and bs["lo"] > 0 and bs["p_le_0"] == 0 and bs["n_images"] == 30
    assert bootstrap_difference(a, a, ls, n=50)["diff"] == 0
    assert judge_pair(tmp_path, "good", "bad", n=200)["verdict"] == "reproduced"
    assert judge_pair(tmp_path, "bad", "good", n=200)["verdict"] == "contradicted"
    assert judge_pair(tmp_path, "good", "missing") is None
