"""``qparse parse`` with a user's files (issue 33): outputs unique per input and never an input photo, parse.json
maps inputs to outputs, bad photos reported and skipped (the batch goes on, the exit status says so), the EXIF
orientation applied, a full disk stops with a message and leaves no truncated file, large photos are parsed."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from qparse_lite.cli import main


def _person(seed: int = 5) -> np.ndarray:
    from qparse_lite.data.datasets import get_dataset

    return get_dataset("synthetic", n=1, size=96, seed=seed)[0].image


def _args(tiny_run, out) -> list[str]:
    corpus, run = tiny_run
    return ["--model", str(run), "--corpus", str(corpus.path), "--out", str(out), "--k", "3", "--device", "cpu",
            "--detector", "hog"]  # fmt: skip


def test_outputs_are_unique_per_input_bad_photos_are_skipped_and_parse_json_maps_them(tiny_run, tmp_path, capsys):
    src = tmp_path / "in"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
    photo = _person()
    Image.fromarray(photo).save(src / "a/x.jpg")
    Image.fromarray(photo[:, ::-1]).save(src / "b/x.jpg")
    Image.fromarray(photo).save(src / "b/x.png")
    os.mkfifo(src / "pipe.jpg")  # must not hang
    Image.new("RGB", (400, 300)).save(src / "huge.png")  # over --max-megapixels 0.1
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    portrait = np.zeros((60, 100, 3), np.uint8)  # stored sideways, orientation 6: displayed 60 wide, 100 tall
    portrait[:, 50:] = 200
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(portrait).save(src / "phone.jpg", exif=exif)
    photos = [src / p for p in ("a/x.jpg", "b/x.jpg", "pipe.jpg", "huge.png", "broken.jpg", "b/x.png", "phone.jpg")]
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc = main(["parse", *map(str, photos), *_args(tiny_run, out), "--max-megapixels", "0.1"])
    assert time.perf_counter() - t0 < 300
    err = capsys.readouterr().err
    assert rc == 1  # some photos were skipped
    rec = json.loads((out / "parse.json").read_text())
    outputs = rec["outputs"]
    assert set(outputs) == {str(src / p) for p in ("a/x.jpg", "b/x.jpg", "b/x.png", "phone.jpg")}
    labels = [o["labels"] for o in outputs.values()]
    assert len(set(labels)) == 4 and outputs[str(src / "phone.jpg")]["labels"] == "phone.png"
    assert sorted(labels[:3]) == ["a__x_jpg.png", "b__x_jpg.png", "b__x_png.png"]
    for o in outputs.values():
        assert (out / o["labels"]).is_file() and (out / o["overlay"]).is_file()
    assert rec["failed"] == [str(src / p) for p in ("pipe.jpg", "huge.png", "broken.jpg")]
    assert "FIFO" in rec["errors"][str(src / "pipe.jpg")]
    assert "400×300 pixels" in rec["errors"][str(src / "huge.png")] and "--max-megapixels" in err
    assert "download the dataset" not in err  # the user's photo, not the dataset's
    # the portrait photo is parsed as displayed: parse.json and the label map are 100 tall, 60 wide
    phone = next(p for p in rec["parsed"] if p["image"].endswith("phone.jpg"))
    assert phone["size"] == [100, 60]
    assert np.asarray(Image.open(out / "phone.png")).shape == (100, 60)
    assert np.asarray(Image.open(out / "phone_overlay.jpg")).shape == (100, 60, 3)


def test_an_output_that_would_overwrite_an_input_photo_is_refused_before_any_work(tiny_run, tmp_path, capsys):
    folder = tmp_path / "dir"
    folder.mkdir()
    Image.fromarray(_person()).save(folder / "p.png")
    before = (folder / "p.png").read_bytes()
    rc = main(["parse", str(folder / "p.png"), *_args(tiny_run, folder)])
    assert rc == 2
    assert "p.png would overwrite the input photo" in capsys.readouterr().err
    assert (folder / "p.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["p.png"]  # nothing written (no feature cache either)
    # a photo named like another photo's overlay is refused too
    Image.fromarray(_person()).save(folder / "q.jpg")
    Image.fromarray(_person()).save(folder / "q_overlay.jpg")
    assert main(["parse", str(folder / "q.jpg"), str(folder / "q_overlay.jpg"), *_args(tiny_run, folder)]) == 2


def test_output_names_helper():
    from qparse_lite.commands.parse import output_names

    names = output_names(["a/x.jpg", "b/x.jpg", "b/x.png", "c/y.jpg", "a/x.jpg"])
    assert names == {"a/x.jpg": "a__x_jpg", "b/x.jpg": "b__x_jpg", "b/x.png": "b__x_png", "c/y.jpg": "y"}


def test_a_full_disk_stops_the_batch_with_a_message_and_no_truncated_overlay(tiny_run, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    real = Image.Image.save

    def short_write(self, fp, *a, **kw):  # the JPEG encoder loses its tail, without an error
        real(self, fp, *a, **kw)
        if kw.get("format") == "JPEG":
            os.truncate(fp, os.path.getsize(fp) // 2)

    monkeypatch.setattr(Image.Image, "save", short_write)
    Image.fromarray(_person()).save(tmp_path / "0004.png")
    out = tmp_path / "out"
    rc = main(["parse", str(tmp_path / "0004.png"), *_args(tiny_run, out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "0004_overlay.jpg: the JPEG written is incomplete" in err and "Fix: free space" in err
    assert not (out / "0004_overlay.jpg").exists()
    rec = json.loads((out / "parse.json").read_text())  # written: the disk here is not really full
    assert rec["failed"] == [str(tmp_path / "0004.png")] and rec["outputs"] == {}


def test_a_large_photo_is_parsed_at_full_size(tiny_run, tmp_path):
    """A photo over WORK_SIDE is downscaled for the crop and pasted back at its own size."""
    import cv2

    from qparse_lite.parse.parser import WORK_SIDE

    side = WORK_SIDE + 500
    big = np.full((side, side // 2, 3), 90, np.uint8)
    big[200:-200, 100:-100] = cv2.resize(_person(), (side // 2 - 200, side - 400))
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=80)
    out = tmp_path / "out"
    assert main(["parse", str(tmp_path / "big.jpg"), *_args(tiny_run, out)]) == 0
    lab = np.asarray(Image.open(out / "big.png"))
    assert lab.shape == (side, side // 2)
    rec = json.loads((out / "parse.json").read_text())["parsed"][0]
    x0, y0, x1, y1 = rec["box"]
    assert x1 - x0 > WORK_SIDE // 4  # the box is in the photo's pixels, not the work image's
    assert (lab > 0).any() and not lab[: max(0, y0)].any()  # labels only inside the crop box


@pytest.mark.parametrize("bad", [["--xi1", "-0.5"], ["--xi2", "1.5"], ["--k", "0"], ["--n-segments", "-1"],
                                 ["--displacement-scale", "-1"], ["--threads", "-2"], ["--max-megapixels", "0"]])  # fmt: skip
def test_parse_arguments_are_checked_before_any_work(tmp_path, capsys, bad):
    (tmp_path / "p.jpg").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["parse", str(tmp_path / "p.jpg"), "--model", "nowhere", "--corpus", "nowhere", "--out",
              str(tmp_path / "o"), *bad])  # fmt: skip
    assert e.value.code == 2
    assert f"argument {bad[0]}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
