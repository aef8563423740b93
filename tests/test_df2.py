"""DeepFashion2 format: loader errors, COCO conversion, AP overall/per subset, retrieval, CCP export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qparse_lite import df2
from qparse_lite.cli import main
from qparse_lite.errors import QparseError

W, H = 200, 160


def rect(x1, y1, x2, y2):
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def item(cat, box, poly=None, style=0, scale=2, occlusion=1, zoom_in=1, viewpoint=2):
    return {
        "category_id": cat, "category_name": df2.CATEGORIES[cat], "style": style,
        "bounding_box": list(box), "landmarks": [box[0], box[1], 2],
        "segmentation": [poly or rect(*box)], "scale": scale, "occlusion": occlusion,
        "zoom_in": zoom_in, "viewpoint": viewpoint,
    }  # fmt: skip


def write_set(d: Path) -> Path:
    """Four images (2 user, 2 shop) with items spread over every subset value."""
    annos = d / "annos"
    annos.mkdir(parents=True)
    docs = {
        1: {"source": "user", "pair_id": 1,
            "item1": item(1, (10, 10, 60, 80), style=1, scale=1, occlusion=1, zoom_in=1, viewpoint=1),
            "item2": item(8, (70, 20, 150, 150), style=2, scale=2, occlusion=2, zoom_in=2, viewpoint=2),
            "item3": item(9, (160, 10, 190, 60), [160, 10, 190, 10, 175, 60], style=0, scale=3,
                          occlusion=3, zoom_in=3, viewpoint=3)},
        2: {"source": "user", "pair_id": 2,
            "item1": item(10, (20, 20, 120, 140), style=1, scale=3, occlusion=1, zoom_in=2, viewpoint=3),
            "item2": item(1, (130, 30, 190, 90), [130, 30, 190, 30, 160, 90], style=0, scale=1,
                          occlusion=2, zoom_in=1, viewpoint=2)},
        3: {"source": "shop", "pair_id": 1,
            "item1": item(1, (5, 5, 80, 100), style=1, scale=2, occlusion=1, zoom_in=1, viewpoint=1),
            "item2": item(8, (90, 10, 190, 150), style=2, scale=2, occlusion=3, zoom_in=3, viewpoint=2)},
        4: {"source": "shop", "pair_id": 2,
            "item1": item(10, (30, 10, 170, 150), style=1, scale=3, occlusion=2, zoom_in=2, viewpoint=3)},
    }  # fmt: skip
    for iid, doc in docs.items():
        doc.update(width=W, height=H)
        (annos / f"{iid:06d}.json").write_text(json.dumps(doc))
    return annos


@pytest.fixture()
def annos(tmp_path: Path) -> Path:
    return write_set(tmp_path)


def gt_results(coco: dict) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
         "segmentation": a["segmentation"]}
        for a in coco["annotations"]
    ]  # fmt: skip


def test_load_and_to_coco(annos: Path, tmp_path: Path) -> None:
    images = df2.load_annos(annos)
    assert [im.image_id for im in images] == [1, 2, 3, 4]
    assert images[0].items[2].category_id == 9 and images[0].items[2].occlusion == 3
    coco = df2.to_coco(images)
    assert len(coco["annotations"]) == 8 and len(coco["categories"]) == 13
    a = coco["annotations"][0]
    assert a["bbox"] == [10, 10, 50, 70] and a["iscrowd"] == 0 and a["scale"] == 1 and a["style"] == 1
    assert a["area"] == pytest.approx(50 * 70, rel=0.05)
    tri = coco["annotations"][2]
    assert tri["area"] == pytest.approx(0.5 * 30 * 50, rel=0.15)
    # sizes from image files when present
    from PIL import Image

    imdir = tmp_path / "img"
    imdir.mkdir()
    Image.new("RGB", (321, 123)).save(imdir / "000001.jpg")
    coco = df2.to_coco(images, imdir)
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (321, 123)
    assert (coco["images"][1]["width"], coco["images"][1]["height"]) == (W, H)


@pytest.mark.parametrize("task", ["segm", "bbox"])
def test_gt_as_results_gives_ap_one(annos: Path, task: str) -> None:
    coco = df2.to_coco(annos)
    ev = df2.evaluate_detections(coco, gt_results(coco), task)
    assert ev["overall"]["ap"] == pytest.approx(1.0)
    assert ev["overall"]["ap50"] == pytest.approx(1.0) and ev["overall"]["ap75"] == pytest.approx(1.0)
    for fam, names in df2.SUBSET_FAMILIES.items():
        for name in names.values():
            s = ev[fam][name]
            assert s["n_gt"] > 0, (fam, name)
            assert s["ap"] == pytest.approx(1.0), (fam, name, s)
    assert sum(ev["scale"][n]["n_gt"] for n in ("small", "moderate", "large")) == 8


def test_perturbed_results_lower_ap(annos: Path) -> None:
    coco = df2.to_coco(annos)
    res = gt_results(coco)
    # shifted masks: IoU ~0.6 for the first item -> fails the strict thresholds
    shifted = [dict(r) for r in res]
    x, y, w, h = shifted[0]["bbox"]
    shifted[0]["segmentation"] = [rect(x + 12, y, x + w + 12, y + h)]
    shifted[0]["bbox"] = [x + 12, y, w, h]
    for task in ("segm", "bbox"):
        ev = df2.evaluate_detections(coco, shifted, task)
        assert ev["overall"]["ap"] < 0.99 and ev["overall"]["ap50"] == pytest.approx(1.0)
        assert ev["scale"]["small"]["ap"] < 0.99  # item 1 is small
        # no large item is a short sleeve top: the shifted top is no false positive there
        assert ev["scale"]["large"]["ap"] == pytest.approx(1.0)
        # a moderate short sleeve top exists (image 3): at IoU .95 the shifted top matches nothing and
        # stays a false positive in that subset too
        assert ev["scale"]["moderate"]["ap"] < 1.0
    dropped = res[1:]
    ev = df2.evaluate_detections(coco, dropped, "segm")
    assert ev["overall"]["ap"] < 1.0 and ev["scale"]["small"]["ap"] < 1.0
    assert ev["scale"]["large"]["ap"] == pytest.approx(1.0)
    fp = res + [{"image_id": 2, "category_id": 8, "bbox": [0, 0, 50, 50], "score": 2.0,
                 "segmentation": [rect(0, 0, 50, 50)]}]  # fmt: skip
    ev = df2.evaluate_detections(coco, fp, "segm")
    assert ev["overall"]["ap"] < 1.0
    # an unmatched false positive counts in every subset that has ground truth of its category
    assert ev["occlusion"]["medium"]["ap"] < 1.0
    assert df2.evaluate_detections(coco, [], "segm")["overall"]["ap"] == 0.0


def test_subset_ignores_other_items(annos: Path) -> None:
    """Detections only of the 'heavy occlusion' items: that subset scores 1, the others lose recall,
    and detections of other-subset items do not hurt a subset (they match ignored ground truth)."""
    coco = df2.to_coco(annos)
    res = gt_results(coco)
    heavy = [r for r, a in zip(res, coco["annotations"], strict=True) if a["occlusion"] == 3]
    ev = df2.evaluate_detections(coco, heavy, "segm")
    assert ev["occlusion"]["heavy"]["ap"] == pytest.approx(1.0)
    assert ev["occlusion"]["slight"]["ap"] == 0.0
    assert ev["overall"]["ap"] < 1.0
    ev = df2.evaluate_detections(coco, res, "segm", subsets=False)
    assert set(ev) == {"iou_type", "overall"}


def test_evaluate_results_file_and_cli(annos: Path, tmp_path: Path, capsys) -> None:
    coco = df2.to_coco(annos)
    rfile = tmp_path / "res.json"
    rfile.write_text(json.dumps(gt_results(coco)))
    assert (
        main(["df2", "eval", "--annos", str(annos), "--results", str(rfile), "--task", "segm", "--json"]) == 0
    )
    ev = json.loads(capsys.readouterr().out)
    assert ev["overall"]["ap"] == pytest.approx(1.0) and ev["viewpoint"]["frontal"]["ap"] == pytest.approx(
        1.0
    )
    assert main(["df2", "eval", "--annos", str(annos), "--results", str(rfile), "--task", "bbox"]) == 0
    table = capsys.readouterr().out
    assert "| overall | all | 8 | 1.000 |" in table and "AP_box" in table
    out = tmp_path / "coco.json"
    assert main(["df2", "to-coco", "--annos", str(annos), "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["annotations"]) == 8
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 99, "category_id": 1, "score": 1.0, "bbox": [0, 0, 1, 1]}]))
    assert main(["df2", "eval", "--annos", str(annos), "--results", str(bad), "--task", "bbox"]) == 2
    assert "image_id 99" in capsys.readouterr().err


def test_retrieval_topk(annos: Path, tmp_path: Path, capsys) -> None:
    images = df2.load_annos(annos)
    # queries (style > 0 in user images): image 1 item1 (pair 1, style 1), item2 (pair 1, style 2),
    # image 2 item1 (pair 2, style 1) -> 3 queries. Their matches: image 3 item1/item2, image 4 item1.
    right_1a, right_1b, right_2 = (3, [5, 5, 80, 100]), (3, [90, 10, 190, 150]), (4, [30, 10, 170, 150])
    wrong = (4, [0, 0, 10, 10])

    def entry(iid, box, ranked, score=0.9, cls=None):
        e = {"query_image_id": iid, "query_bbox": box, "query_score": score,
             "gallery_image_id": [g[0] for g in ranked], "gallery_bbox": [g[1] for g in ranked]}  # fmt: skip
        if cls is not None:
            e["query_cls"] = cls
        return e

    results = [
        entry(1, [11, 11, 60, 79], [right_1a] + [wrong] * 19),  # hit at rank 1
        entry(1, [10, 10, 60, 80], [wrong] * 20, score=0.5),  # lower score: not the representative
        entry(1, [70, 20, 150, 150], [wrong] * 7 + [right_1b] + [wrong] * 12),  # hit at rank 8
        # image 2: the right match only at rank 16, but pointing at the wrong item of the right image
        entry(2, [20, 20, 120, 140], [wrong] * 15 + [(4, [0, 0, 20, 20])] + [right_2] + [wrong] * 3),
    ]  # fmt: skip
    ev = df2.evaluate_retrieval(images, results)
    assert ev["n_queries"] == 3 and ev["n_missed"] == 0
    assert ev["top_k"] == {1: pytest.approx(1 / 3), 5: pytest.approx(1 / 3), 10: pytest.approx(2 / 3),
                           15: pytest.approx(2 / 3), 20: pytest.approx(1.0)}  # fmt: skip
    # wrong class -> the query is missed; a box of the right image but IoU < 0.5 is no hit
    results[3] = entry(2, [20, 20, 120, 140], [right_2] * 20, cls=1)
    results[2] = entry(1, [70, 20, 150, 150], [(3, [90, 10, 120, 60])] * 20)
    ev = df2.evaluate_retrieval(images, results)
    assert ev["n_missed"] == 1 and ev["top_k"][20] == pytest.approx(1 / 3)
    rfile = tmp_path / "ret.json"
    rfile.write_text(json.dumps(results))
    assert main(["df2", "eval", "--annos", str(annos), "--results", str(rfile), "--task", "retrieval"]) == 0
    assert "top-20" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["item1"].pop("bounding_box"), "bounding_box"),
        (lambda d: d["item1"].__setitem__("bounding_box", [50, 10, 40, 20]), "item1.bounding_box"),
        (lambda d: d["item1"].__setitem__("category_id", 99), "item1.category_id"),
        (lambda d: d["item1"].__setitem__("category_id", 0), "item1.category_id"),
        (lambda d: d["item2"].__setitem__("segmentation", [[1, 2, 3, 4, 5, 6, 7]]), "item2.segmentation[0]"),
        (lambda d: d["item1"].__setitem__("occlusion", 4), "item1.occlusion"),
        (lambda d: d.pop("pair_id"), "pair_id"),
        (lambda d: d.__setitem__("source", "street"), "source"),
    ],
)
def test_malformed_files_name_file_and_field(annos: Path, mutate, field: str) -> None:
    f = annos / "000001.json"
    doc = json.loads(f.read_text())
    mutate(doc)
    f.write_text(json.dumps(doc))
    with pytest.raises(QparseError) as e:
        df2.load_annos(annos)
    assert "000001.json" in str(e.value) and field in str(e.value)


def test_not_json_and_missing_size(annos: Path) -> None:
    (annos / "000002.json").write_text("{not json")
    with pytest.raises(QparseError, match=r"000002\.json: not JSON"):
        df2.load_annos(annos)
    (annos / "000002.json").unlink()
    doc = json.loads((annos / "000003.json").read_text())
    del doc["width"], doc["height"]
    (annos / "000003.json").write_text(json.dumps(doc))
    with pytest.raises(QparseError, match=r"000003\.json: no image"):
        df2.to_coco(annos)


def test_scale_thresholds() -> None:
    assert [df2.scale_from_fraction(f) for f in (0.0, 0.099, 0.1, 0.399, 0.4, 1.0)] == [1, 1, 2, 2, 3, 3]


def test_ccp_export_roundtrip(ccp_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ccp_df2"
    ids = ["0001", "0002", "0003", "0004", "0005", "0100"]
    s = df2.export_ccp(ccp_root, out, ids=ids, progress=False)
    assert s["n_images"] == 6 and s["n_items"] >= 12
    assert sorted(p.name for p in (out / "annos").iterdir()) == [f"{i}.json" for i in ids]
    images = df2.load_annos(out / "annos")
    from PIL import Image

    for im in images:
        with Image.open(ccp_root / "photos" / f"{im.stem}.jpg") as photo:
            assert (im.width, im.height) == photo.size
        assert im.source == "user" and im.pair_id == im.image_id
        for it in im.items:
            assert it.style == 0 and it.occlusion == it.zoom_in == it.viewpoint == 0 and it.scale in (1, 2, 3)
    coco = df2.to_coco(images, ccp_root / "photos")
    ev = df2.evaluate_detections(coco, gt_results(coco), "segm")
    assert ev["overall"]["ap"] == pytest.approx(1.0)
    assert ev["occlusion"]["heavy"]["ap"] is None  # CCP has no occlusion labels
    # masks follow the CCP labels: the exported polygons cover the garment pixels of image 0001
    import scipy.io
    from pycocotools import mask as mask_utils

    from qparse_lite.labels import CCP_COARSE_GROUPS, ccp59_to_coarse_lut

    gt = scipy.io.loadmat(ccp_root / "annotations/pixel-level/0001.mat")["groundtruth"]
    coarse = ccp59_to_coarse_lut()[gt]
    kinds = [list(CCP_COARSE_GROUPS).index(k) for k in df2.CCP_ITEM_KINDS]
    garment = np.isin(coarse, kinds)
    union = np.zeros_like(garment)
    for a in coco["annotations"]:
        if a["image_id"] == 1:
            union |= (
                mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], *gt.shape))) > 0
            )
    inter = (union & garment).sum() / garment.sum()
    assert inter > 0.9 and (union & ~garment).sum() < 0.1 * union.sum()
    # CLI export of two images; refuses to write into the mirror
    assert main(["df2", "export-ccp", "--root", str(ccp_root), "--out", str(tmp_path / "two"),
                 "--ids", "7", "8", "--no-progress"]) == 0  # fmt: skip
    assert "exported 2 images" in capsys.readouterr().out
    assert (tmp_path / "two/annos/0007.json").is_file()
    with pytest.raises(QparseError, match="read-only"):
        df2.export_ccp(ccp_root, ccp_root / "df2", ids=["0001"])
