"""``qparse score``: PNG folders scored against an independent numpy computation, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qparse_lite.cli import main
from qparse_lite.evaluation.folders import score_dirs
from qparse_lite.io import atomic_save_png
from qparse_lite.labels import ATR18, CCP_COARSE, read_label_png


def _write_maps(tmp_path: Path, n: int = 4, num_labels: int = 18, seed: int = 0, absent=(3, 17)):
    """n random pred/gt pairs: gt as palette PNGs, pred as grayscale PNGs; labels ``absent`` never used."""
    rng = np.random.default_rng(seed)
    allowed = np.array([l for l in range(num_labels) if l not in absent])
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    maps = {}
    for i in range(n):
        h, w = 12 + i, 17 + 2 * i  # sizes differ between images (never between pred and gt)
        gt = rng.choice(allowed, (h, w)).astype(np.uint8)
        noise = rng.random((h, w)) < 0.35
        pred = np.where(noise, rng.choice(allowed, (h, w)), gt).astype(np.uint8)
        if i == 0:
            pred[0, :] = 5  # some systematic confusion
        atomic_save_png(gt_dir / f"img_{i}.png", gt, palette=ATR18.palette)
        pred_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pred).save(pred_dir / f"img_{i}.png")  # uint8 2-D → grayscale "L" PNG
        maps[f"img_{i}.png"] = (pred, gt)
    return pred_dir, gt_dir, maps


def _independent(maps: dict, num_labels: int) -> dict:
    """Per-label TP/FP/FN with plain loops; the paper's definitions (see qparse_lite.metrics)."""
    tp = [0] * num_labels
    fp = [0] * num_labels
    fn = [0] * num_labels
    correct = total = fg_correct = fg_total = 0
    for pred, gt in maps.values():
        for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist(), strict=True):
            total += 1
            correct += p == g
            if g != 0:
                fg_total += 1
                fg_correct += p == g
            if p == g:
                tp[g] += 1
            else:
                fp[p] += 1
                fn[g] += 1
    prec, rec, f1 = [], [], []
    for l in range(num_labels):
        if tp[l] + fp[l] + fn[l] == 0:
            prec.append(None), rec.append(None), f1.append(None)
            continue
        prec.append(tp[l] / (tp[l] + fp[l]) if tp[l] + fp[l] else 0.0)
        rec.append(tp[l] / (tp[l] + fn[l]) if tp[l] + fn[l] else 0.0)
        f1.append(2 * tp[l] / (2 * tp[l] + fp[l] + fn[l]))

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return 100 * sum(xs) / len(xs)

    return {
        "accuracy": 100 * correct / total,
        "fg_accuracy": 100 * fg_correct / fg_total,
        "avg_precision": mean(prec),
        "avg_recall": mean(rec),
        "avg_f1": mean(f1),
        "avg_f1_fg": mean(f1[1:]),
        "per_label_f1": [None if x is None else 100 * x for x in f1],
    }


def test_json_matches_independent_computation(tmp_path, capsys):
    pred_dir, gt_dir, maps = _write_maps(tmp_path)
    rc = main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--labels", "atr18", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    data = json.loads(out)  # the whole of stdout is one JSON object
    ref = _independent(maps, 18)
    for k in ("accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1", "avg_f1_fg"):
        assert data[k] == pytest.approx(ref[k], rel=1e-9), k
    assert list(data["per_label_f1"]) == list(ATR18.names)
    for name, want in zip(ATR18.names, ref["per_label_f1"], strict=True):
        got = data["per_label_f1"][name]
        assert (got is None) if want is None else got == pytest.approx(want), name
    assert data["per_label_f1"]["sunglasses"] is None and data["per_label_f1"]["scarf"] is None
    assert data["images"] == 4 and data["label_set"] == "atr18" and data["paper_f1"] == "avg_f1"
    assert set(data["f1_definitions"]) == {"avg_f1", "avg_f1_fg", "f1_of_averages"}
    # the library function agrees with the CLI
    assert score_dirs(pred_dir, gt_dir, ATR18, progress=False)["avg_f1"] == pytest.approx(data["avg_f1"])


def test_markdown_output_and_out_folder(tmp_path, capsys):
    pred_dir, gt_dir, maps = _write_maps(tmp_path, n=2, seed=1)
    out = tmp_path / "scores"
    rc = main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--labels", "atr18", "--out", str(out),
               "--method", "my parser"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "| method" in text and "| my parser" in text and "upper_clothes" in text and "n/a" in text
    assert "avg_f1_fg" in text and "f1_of_averages" in text
    ref = _independent(maps, 18)
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1.columns) == ["method", "accuracy", "fg_accuracy", "avg_precision", "avg_recall", "avg_f1"]
    assert t1.loc[0, "method"] == "my parser"
    assert t1.loc[0, "avg_f1"] == pytest.approx(ref["avg_f1"], abs=0.005)
    t2 = pd.read_csv(out / "table2.csv")
    assert list(t2.columns)[:3] == ["method", "hat", "hair"] and len(t2.columns) == 18
    assert np.isnan(t2.loc[0, "sunglasses"])
    for name in ("table1.md", "table2.md", "scores.json", "confusion.csv", "run.json"):
        assert (out / name).is_file(), name
    conf = pd.read_csv(out / "confusion.csv", index_col=0)
    assert conf.to_numpy().sum() == sum(g.size for _, g in maps.values())
    assert json.loads((out / "scores.json").read_text())["avg_f1"] == pytest.approx(ref["avg_f1"])


def test_other_label_sets(tmp_path, capsys):
    pred_dir, gt_dir, maps = _write_maps(tmp_path, n=2, num_labels=16, absent=())
    assert (
        main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--labels", "ccp-coarse", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert list(data["per_label_f1"]) == list(CCP_COARSE.names)
    assert data["avg_f1"] == pytest.approx(_independent(maps, 16)["avg_f1"])
    # the same maps are valid CCP-59 ids too
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--labels", "ccp59", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["per_label_f1"]) == 59


def test_palette_png_read_as_indices_not_colours(tmp_path):
    lab = np.array([[0, 1, 2], [17, 4, 5]], np.uint8)
    atomic_save_png(tmp_path / "a.png", lab, palette=ATR18.palette)
    assert Image.open(tmp_path / "a.png").mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "a.png", ATR18), lab)


# -- bad inputs ----------------------------------------------------------------------------------------


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["score", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_unmatched_names_listed_both_directions(tmp_path, capsys):
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=3)
    (pred_dir / "img_1.png").rename(pred_dir / "extra.png")
    rc, out, err = _run(capsys, "--pred", pred_dir, "--gt", gt_dir, "--labels", "atr18", "--json")
    assert rc == 2 and out == ""
    assert "img_1.png" in err and "extra.png" in err
    assert str(gt_dir) in err and str(pred_dir) in err


def test_size_mismatch_names_both_files(tmp_path, capsys):
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=2)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pred_dir / "img_1.png")
    rc, _, err = _run(capsys, "--pred", pred_dir, "--gt", gt_dir, "--labels", "atr18")
    assert rc == 2
    assert str(pred_dir / "img_1.png") in err and str(gt_dir / "img_1.png") in err


def test_ids_outside_label_set_name_the_file(tmp_path, capsys):
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=2)
    bad = np.zeros((12, 17), np.uint8)
    bad[0, 0] = 40
    Image.fromarray(bad).save(pred_dir / "img_0.png")
    rc, _, err = _run(capsys, "--pred", pred_dir, "--gt", gt_dir, "--labels", "atr18")
    assert rc == 2 and str(pred_dir / "img_0.png") in err and "[40]" in err and "atr18" in err
    # 17 is fine for atr18 but not for ccp-coarse (16 labels): the gt file is named
    pred_dir2, gt_dir2, _ = _write_maps(tmp_path / "b", n=1, absent=())
    rc, _, err = _run(capsys, "--pred", pred_dir2, "--gt", gt_dir2, "--labels", "ccp-coarse")
    assert rc == 2 and "ccp-coarse" in err and "img_0.png" in err


def test_rgb_png_is_refused(tmp_path, capsys):
    """A colour rendering of the labels (RGB, unequal channels) is refused; the loaders refuse it too."""
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=1)
    colours = ATR18.palette[np.arange(12 * 17).reshape(12, 17) % 18]
    Image.fromarray(colours.astype(np.uint8)).save(pred_dir / "img_0.png")
    rc, _, err = _run(capsys, "--pred", pred_dir, "--gt", gt_dir, "--labels", "atr18")
    assert rc == 2 and "RGB" in err and str(pred_dir / "img_0.png") in err


@pytest.mark.parametrize("form", ["rgb-equal", "16-bit", "gray-alpha"])
def test_score_accepts_what_the_loaders_accept(tmp_path, capsys, form):
    """``qparse score`` reads predictions with the loaders' reader (qparse_lite.labels.read_label_png)."""
    pred_dir, gt_dir, maps = _write_maps(tmp_path, n=1)
    pred = maps["img_0.png"][0]
    if form == "rgb-equal":
        Image.fromarray(np.repeat(pred[..., None], 3, axis=2)).save(pred_dir / "img_0.png")
    elif form == "16-bit":
        Image.fromarray(pred.astype(np.uint16)).save(pred_dir / "img_0.png")
    else:
        Image.fromarray(np.stack([pred, np.full_like(pred, 255)], 2), mode="LA").save(pred_dir / "img_0.png")
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--labels", "atr18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["avg_f1"] == pytest.approx(_independent(maps, 18)["avg_f1"])


def test_unreadable_png(tmp_path, capsys):
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=1)
    (pred_dir / "img_0.png").write_bytes(b"not a png")
    rc, _, err = _run(capsys, "--pred", pred_dir, "--gt", gt_dir, "--labels", "atr18")
    assert rc == 2 and "img_0.png" in err


def test_missing_or_empty_folders(tmp_path, capsys):
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=1)
    rc, _, err = _run(capsys, "--pred", tmp_path / "nope", "--gt", gt_dir, "--labels", "atr18")
    assert rc == 2 and "nope" in err and "not found" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "--pred", pred_dir, "--gt", tmp_path / "empty", "--labels", "atr18")
    assert rc == 2 and "empty" in err and "no .png" in err


def test_unknown_label_set_is_an_argparse_error(tmp_path, capsys):
    pred_dir, gt_dir, _ = _write_maps(tmp_path, n=1)
    with pytest.raises(SystemExit) as e:
        main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--labels", "lip20"])
    assert e.value.code == 2
    assert "lip20" in capsys.readouterr().err
