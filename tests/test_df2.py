"""DeepFashion2 format: loader errors, COCO conversion, AP overall/per subset, retrieval, CCP export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qparse_lite.cli import main
from qparse_lite.errors import QparseError
from qparse_lite.match_rcnn.coco import to_coco
from qparse_lite.match_rcnn.export import (
    corpus_items,
    export_ccp,
    export_corpus,
    instances_from_label_map,
    instances_to_label_map,
)
from qparse_lite.match_rcnn.figures import draw_items
from qparse_lite.match_rcnn.format import (
    CATEGORIES,
    CCP_ITEM_KINDS,
    SUBSET_FAMILIES,
    anno_from_dict,
    garment_categories,
    garment_label_set,
    load_anno,
    load_annos,
    mask_to_polygons,
    rasterize,
    scale_from_fraction,
    to_garment_labels,
)
from qparse_lite.match_rcnn.metrics import (
    detection_frame,
    evaluate_detections,
    evaluate_retrieval,
    random_retrieval,
)

W, H = 200, 160


def rect(x1, y1, x2, y2):
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def item(cat, box, poly=None, style=0, scale=2, occlusion=1, zoom_in=1, viewpoint=2):
    return {
        "category_id": cat, "category_name": CATEGORIES[cat], "style": style,
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
    images = load_annos(annos)
    assert [im.image_id for im in images] == [1, 2, 3, 4]
    assert images[0].items[2].category_id == 9 and images[0].items[2].occlusion == 3
    coco = to_coco(images)
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
    coco = to_coco(images, imdir)
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (321, 123)
    assert (coco["images"][1]["width"], coco["images"][1]["height"]) == (W, H)


@pytest.mark.parametrize("task", ["segm", "bbox"])
def test_gt_as_results_gives_ap_one(annos: Path, task: str) -> None:
    coco = to_coco(annos)
    ev = evaluate_detections(coco, gt_results(coco), task)
    assert ev["overall"]["ap"] == pytest.approx(1.0)
    assert ev["overall"]["ap50"] == pytest.approx(1.0) and ev["overall"]["ap75"] == pytest.approx(1.0)
    for fam, names in SUBSET_FAMILIES.items():
        for name in names.values():
            s = ev[fam][name]
            assert s["n_gt"] > 0, (fam, name)
            assert s["ap"] == pytest.approx(1.0), (fam, name, s)
    assert sum(ev["scale"][n]["n_gt"] for n in ("small", "moderate", "large")) == 8


def test_perturbed_results_lower_ap(annos: Path) -> None:
    coco = to_coco(annos)
    res = gt_results(coco)
    # shifted masks: IoU ~0.6 for the first item -> fails the strict thresholds
    shifted = [dict(r) for r in res]
    x, y, w, h = shifted[0]["bbox"]
    shifted[0]["segmentation"] = [rect(x + 12, y, x + w + 12, y + h)]
    shifted[0]["bbox"] = [x + 12, y, w, h]
    for task in ("segm", "bbox"):
        ev = evaluate_detections(coco, shifted, task)
        assert ev["overall"]["ap"] < 0.99 and ev["overall"]["ap50"] == pytest.approx(1.0)
        assert ev["scale"]["small"]["ap"] < 0.99  # item 1 is small
        # no large item is a short sleeve top: the shifted top is no false positive there
        assert ev["scale"]["large"]["ap"] == pytest.approx(1.0)
        # a moderate short sleeve top exists (image 3): at IoU .95 the shifted top matches nothing and
        # stays a false positive in that subset too
        assert ev["scale"]["moderate"]["ap"] < 1.0
    dropped = res[1:]
    ev = evaluate_detections(coco, dropped, "segm")
    assert ev["overall"]["ap"] < 1.0 and ev["scale"]["small"]["ap"] < 1.0
    assert ev["scale"]["large"]["ap"] == pytest.approx(1.0)
    fp = res + [{"image_id": 2, "category_id": 8, "bbox": [0, 0, 50, 50], "score": 2.0,
                 "segmentation": [rect(0, 0, 50, 50)]}]  # fmt: skip
    ev = evaluate_detections(coco, fp, "segm")
    assert ev["overall"]["ap"] < 1.0
    # an unmatched false positive counts in every subset that has ground truth of its category
    assert ev["occlusion"]["medium"]["ap"] < 1.0
    assert evaluate_detections(coco, [], "segm")["overall"]["ap"] == 0.0


def test_subset_ignores_other_items(annos: Path) -> None:
    """Detections only of the 'heavy occlusion' items: that subset scores 1, the others lose recall,
    and detections of other-subset items do not hurt a subset (they match ignored ground truth)."""
    coco = to_coco(annos)
    res = gt_results(coco)
    heavy = [r for r, a in zip(res, coco["annotations"], strict=True) if a["occlusion"] == 3]
    ev = evaluate_detections(coco, heavy, "segm")
    assert ev["occlusion"]["heavy"]["ap"] == pytest.approx(1.0)
    assert ev["occlusion"]["slight"]["ap"] == 0.0
    assert ev["overall"]["ap"] < 1.0
    ev = evaluate_detections(coco, res, "segm", subsets=False)
    assert set(ev) == {"iou_type", "overall"}


def test_evaluate_results_file_and_cli(annos: Path, tmp_path: Path, capsys) -> None:
    coco = to_coco(annos)
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
    images = load_annos(annos)
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
    ev = evaluate_retrieval(images, results)
    assert ev["n_queries"] == 3 and ev["n_missed"] == 0
    assert ev["top_k"] == {1: pytest.approx(1 / 3), 5: pytest.approx(1 / 3), 10: pytest.approx(2 / 3),
                           15: pytest.approx(2 / 3), 20: pytest.approx(1.0)}  # fmt: skip
    # wrong class -> the query is missed; a box of the right image but IoU < 0.5 is no hit
    results[3] = entry(2, [20, 20, 120, 140], [right_2] * 20, cls=1)
    results[2] = entry(1, [70, 20, 150, 150], [(3, [90, 10, 120, 60])] * 20)
    ev = evaluate_retrieval(images, results)
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
        load_annos(annos)
    assert "000001.json" in str(e.value) and field in str(e.value)


def test_not_json_and_missing_size(annos: Path) -> None:
    (annos / "000002.json").write_text("{not json")
    with pytest.raises(QparseError, match=r"000002\.json: not JSON"):
        load_annos(annos)
    (annos / "000002.json").unlink()
    doc = json.loads((annos / "000003.json").read_text())
    del doc["width"], doc["height"]
    (annos / "000003.json").write_text(json.dumps(doc))
    with pytest.raises(QparseError, match=r"000003\.json: no image"):
        to_coco(annos)


def test_scale_thresholds() -> None:
    assert [scale_from_fraction(f) for f in (0.0, 0.099, 0.1, 0.399, 0.4, 1.0)] == [1, 1, 2, 2, 3, 3]


def test_ccp_export_roundtrip(ccp_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ccp_df2"
    ids = ["0001", "0002", "0003", "0004", "0005", "0100"]
    s = export_ccp(ccp_root, out, ids=ids, progress=False)
    assert s["n_images"] == 6 and s["n_items"] >= 12
    assert sorted(p.name for p in (out / "annos").iterdir()) == [f"{i}.json" for i in ids]
    images = load_annos(out / "annos")
    from PIL import Image

    for im in images:
        with Image.open(ccp_root / "photos" / f"{im.stem}.jpg") as photo:
            assert (im.width, im.height) == photo.size
        assert im.source == "user" and im.pair_id == im.image_id
        assert [it.style for it in im.items] == list(range(1, len(im.items) + 1))  # each item its own style
        for it in im.items:
            assert it.occlusion == it.zoom_in == it.viewpoint == 0 and it.scale in (1, 2, 3)
        assert len({it.category_id for it in im.items}) == len(im.items)  # one item per category
    # one exporter: the CCP items are those of the corpus rule (corpus_items) on the full-resolution label
    # map, with exact polygons (holes kept)
    from qparse_lite.data.datasets import CCP

    ds = CCP(ccp_root, labels="ccp59")
    lab = ds[ds.ids.index("0001")].label
    want = corpus_items(lab, ds.label_set, 200)
    got = next(im for im in images if im.stem == "0001").items
    assert [c for c, _ in want] == [it.category_id for it in got]
    for (_, m), it in zip(want, got, strict=True):
        assert np.array_equal(rasterize(it.segmentation, *lab.shape), m)
    assert s["polygon_iou_min"] == pytest.approx(1.0) and s["label_set"] == "ccp59"
    assert export_ccp(ccp_root, out, ids=ids, progress=False)["reused"]  # complete: not written again
    coco = to_coco(images, ccp_root / "photos")
    ev = evaluate_detections(coco, gt_results(coco), "segm")
    assert ev["overall"]["ap"] == pytest.approx(1.0)
    assert ev["occlusion"]["heavy"]["ap"] is None  # CCP has no occlusion labels
    # masks follow the CCP labels: the exported polygons cover the garment pixels of image 0001
    import scipy.io
    from pycocotools import mask as mask_utils

    from qparse_lite.labels import CCP_COARSE_GROUPS, ccp59_to_coarse_lut

    gt = scipy.io.loadmat(ccp_root / "annotations/pixel-level/0001.mat")["groundtruth"]
    coarse = ccp59_to_coarse_lut()[gt]
    kinds = [list(CCP_COARSE_GROUPS).index(k) for k in CCP_ITEM_KINDS]
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
        export_ccp(ccp_root, ccp_root / "df2", ids=["0001"])


# ------------------------------------------------------------------------------- corpus export (any data)


def _blob_masks() -> list[np.ndarray]:
    """Masks that are hard to outline: a hole, a hole touching the border of the item diagonally, single
    pixels, diagonal-only neighbours, two components, a ring inside a ring, random noise."""
    ms = []
    m = np.zeros((24, 24), bool)
    m[4:16, 3:15] = True
    m[8:11, 7:10] = False  # a hole
    ms.append(m)
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:9, 5:9] = False
    m[6:8, 6:8] = True  # an island inside the hole
    m[15, 15] = m[16, 16] = m[17, 15] = True  # diagonal-only neighbours
    ms.append(m)
    m = np.zeros((9, 9), bool)
    m[4, 4] = True  # one pixel
    ms.append(m)
    rng = np.random.default_rng(0)
    for _ in range(4):
        ms.append(rng.random((16, 20)) < 0.55)
    return ms


def test_mask_to_polygons_is_exact() -> None:
    for i, m in enumerate(_blob_masks()):
        polys = mask_to_polygons(m)
        assert polys and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys), i
        back = rasterize(polys, *m.shape)
        assert np.array_equal(back, m), (i, int((back != m).sum()))
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_garment_tables() -> None:
    from qparse_lite.labels import ATR18, CCP_COARSE

    g = garment_categories(ATR18)
    names = {ATR18.names[i]: c for i, c in g.items()}
    assert names["left-shoe"] == names["right-shoe"] == 14 and names["upper-clothes"] == 1
    assert not {"hair", "face", "hat", "belt", "scarf", "sunglasses", "left-arm"} & set(names)
    gls = garment_label_set(ATR18)
    assert gls.names == ("background", "short sleeve top", "trousers", "skirt", "short sleeve dress", "shoes", "bag")
    lab = np.array([[ATR18.index("hair"), ATR18.index("left-shoe"), ATR18.index("right-shoe"), ATR18.index("skirt")]])
    assert to_garment_labels(lab, ATR18).tolist() == [[0, 5, 5, 3]]
    cc = {CCP_COARSE.names[i] for i in garment_categories(CCP_COARSE)}
    assert cc == {"upper-clothes", "outerwear", "skirt", "pants", "dress", "shoes", "bag"}
    with pytest.raises(QparseError, match="no garment table"):
        garment_categories(type("LS", (), {"name": "mystery", "names": ("background",)})())


def _toy_corpus():
    """Three 32×32 ATR-18 crops: a top with a bag held in front of it (a hole), two shoes, hair; a dress;
    nothing but hair (no item)."""
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.labels import ATR18

    L = ATR18.index
    labels = np.zeros((3, 32, 32), np.uint8)
    labels[0, 2:6, 10:20] = L("hair")
    labels[0, 6:20, 8:24] = L("upper-clothes")
    labels[0, 10:14, 12:16] = L("bag")
    labels[0, 26:29, 9:13] = L("left-shoe")
    labels[0, 26:29, 18:22] = L("right-shoe")
    labels[1, 4:30, 4:28] = L("dress")
    labels[2, 2:6, 10:20] = L("hair")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    return Corpus.from_arrays(images, labels, ATR18, {"train": [], "val": [], "test": [0, 1, 2]})


def test_export_corpus_roundtrip(tmp_path: Path) -> None:
    corpus = _toy_corpus()
    s = export_corpus(corpus, tmp_path / "df2", split="test", progress=False)
    assert s["n_images"] == 3 and s["n_items"] == 4  # top, bag, shoes (one item), dress
    assert s["items_per_category"] == {"short sleeve top": 1, "short sleeve dress": 1, "shoes": 1, "bag": 1}
    assert s["polygon_iou_min"] == pytest.approx(1.0) and "hair" in s["not_items"]
    assert (tmp_path / "df2/images/000001.png").is_file() and (tmp_path / "df2/export.json").is_file()
    images = load_annos(tmp_path / "df2/annos")
    assert [im.image_id for im in images] == [1, 2, 3] and images[2].items == []
    im0 = images[0]
    assert im0.source == "user" and im0.pair_id == 1 and (im0.width, im0.height) == (32, 32)
    assert [it.category_id for it in im0.items] == [1, 14, 15] and [it.style for it in im0.items] == [1, 2, 3]
    shoes = im0.items[1]
    assert shoes.bbox == (9, 26, 22, 29) and shoes.scale == 1  # both shoes, one item, 13×3 of 32×32
    assert all(it.occlusion == it.zoom_in == it.viewpoint == 0 for im in images for it in im.items)
    assert images[1].items[0].scale == 3  # 24×26 of 32×32: large
    raw = json.loads((tmp_path / "df2/annos/000001.json").read_text())
    assert raw["item1"]["category_guess"] is True and raw["item3"]["category_guess"] is False
    assert raw["corpus_index"] == 0 and raw["item2"]["labels"] == ["left-shoe", "right-shoe"]
    # the top's polygons leave the bag's pixels out
    top = rasterize(im0.items[0].segmentation, 32, 32)
    assert np.array_equal(top, corpus.labels[0] == 4)
    # the ground truth's own label maps, as parser instances, score AP 1 (sizes from the PNGs)
    coco = to_coco(images, tmp_path / "df2/images")
    res = [r for im in images for r in
           instances_from_label_map(corpus.labels[im.image_id - 1], corpus.label_set, im.image_id)]  # fmt: skip
    assert len(res) == 4
    ev = evaluate_detections(coco, res, "segm")
    assert ev["overall"]["ap"] == pytest.approx(1.0) and ev["occlusion"]["heavy"]["ap"] is None
    # a parse that swallows the bag into the top: the top's mask IoU drops to 208/224
    wrong = corpus.labels[0].copy()
    wrong[wrong == 16] = 4
    res2 = instances_from_label_map(wrong, corpus.label_set, 1) + res[3:]
    ev2 = evaluate_detections(coco, res2, "segm")
    assert ev2["overall"]["ap"] < 1.0 and ev2["overall"]["ap50"] < 1.0  # the bag is missed
    with pytest.raises(QparseError, match="split or indices"):
        export_corpus(corpus, tmp_path / "x", split=None)
    s = export_corpus(corpus, tmp_path / "idx", split=None, indices=[1], write_images=False)
    assert s["n_items"] == 1 and not (tmp_path / "idx/images").exists()


def test_instances_scores_and_label_maps() -> None:
    corpus = _toy_corpus()
    lab = np.asarray(corpus.labels[0])
    prob = np.zeros((18, 32, 32), np.float32)
    prob[4] = 0.8  # upper-clothes
    prob[9], prob[10] = 0.2, 0.6  # left, right shoe: mean over both = 0.4
    prob[16] = 1.7  # clipped to 1
    res = instances_from_label_map(lab, corpus.label_set, 7, prob_maps=prob)
    assert [r["category_id"] for r in res] == [1, 14, 15] and all(r["image_id"] == 7 for r in res)
    assert [round(r["score"], 4) for r in res] == [0.8, 0.4, 1.0]
    assert res[1]["bbox"] == [9, 26, 13, 3]
    # instances → garment label map: the inverse of to_garment_labels on a parse
    gmap = instances_to_label_map(res, (32, 32), corpus.label_set, score_thresh=0.0)
    assert np.array_equal(gmap, to_garment_labels(lab, corpus.label_set))
    assert not (instances_to_label_map(res, (32, 32), corpus.label_set, 0.5) == 5).any()  # shoes < 0.5
    # overlaps: the higher score wins; categories outside the garment set are ignored
    boxes = [{"image_id": 1, "category_id": 9, "score": 0.9, "bbox": [0, 0, 10, 10]},
             {"image_id": 1, "category_id": 1, "score": 0.7, "bbox": [5, 5, 10, 10]},
             {"image_id": 1, "category_id": 3, "score": 0.99, "bbox": [0, 0, 32, 32]}]  # fmt: skip
    m = instances_to_label_map(boxes, (32, 32), corpus.label_set)
    assert m[7, 7] == 3 and m[12, 12] == 1 and m[20, 20] == 0


def test_detection_frame_and_random_retrieval(annos: Path) -> None:
    coco = to_coco(annos)
    df = detection_frame(evaluate_detections(coco, gt_results(coco), "segm"))
    assert list(df.columns[:6]) == ["family", "subset", "n_gt", "AP", "AP50", "AP75"]
    assert len(df) == 13 and df.iloc[-1]["subset"] == "all" and df.iloc[-1]["reported AP_mask"] == 0.680
    assert df.set_index(["family", "subset"]).loc[("occlusion", "heavy"), "reported AP_mask"] == 0.389
    dfb = detection_frame(evaluate_detections(coco, gt_results(coco), "bbox"))
    assert "reported AP_mask" not in dfb.columns
    res = [{"query_image_id": 1, "query_bbox": [0, 0, 1, 1], "query_score": 1.0,
            "gallery_image_id": list(range(30)), "gallery_bbox": [[i, 0, i + 1, 1] for i in range(30)]}]  # fmt: skip
    r1, r2 = random_retrieval(res, seed=0), random_retrieval(res, seed=0)
    assert r1 == r2 and r1[0]["gallery_image_id"] != res[0]["gallery_image_id"]
    assert sorted(r1[0]["gallery_image_id"]) == res[0]["gallery_image_id"]
    assert all(b[0] == g for g, b in zip(r1[0]["gallery_image_id"], r1[0]["gallery_bbox"], strict=True))


def test_anno_from_dict_names_the_item() -> None:
    doc = {"source": "shop", "pair_id": 3, "item1": item(1, (0, 0, 5, 5))}
    im = anno_from_dict(doc, 42)
    assert im.image_id == 42 and im.stem == "000042" and im.items[0].bbox == (0, 0, 5, 5)
    doc["item1"]["scale"] = 9
    with pytest.raises(QparseError, match=r"view-42: item1\.scale"):
        anno_from_dict(doc, 42, "view-42")


def test_draw_items_ground_truth_and_results(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpus = _toy_corpus()
    export_corpus(corpus, tmp_path, split="test", write_images=False)
    im = load_annos(tmp_path / "annos")[0]
    res = instances_from_label_map(corpus.labels[0], corpus.label_set, 1)
    fig, (a, b) = plt.subplots(1, 2)
    draw_items(a, corpus.images[0], im.items, corpus.label_set, title="gt")
    draw_items(b, np.asarray(corpus.images[0]).transpose(2, 0, 1) / 255.0, res, corpus.label_set, max_items=2)
    assert len(a.patches) == 3 and len(b.patches) == 2 and a.get_title() == "gt"
    assert "short sleeve top · 1" in [t.get_text() for t in a.texts]
    shown = a.images[0].get_array()
    assert shown.shape == (32, 32, 3) and not np.array_equal(shown, corpus.images[0])  # masks tinted
    plt.close(fig)


def test_cli_export_corpus(tmp_path: Path, capsys) -> None:
    path = _toy_corpus().save(tmp_path / "corpus")
    assert main(["df2", "export-corpus", "--corpus", str(path), "--out", str(tmp_path / "df2"), "--no-images"]) == 0
    out = capsys.readouterr().out
    assert "exported 3 test images, 4 items" in out and "| shoes | 1 |" in out
    assert len(load_annos(tmp_path / "df2/annos")) == 3 and not (tmp_path / "df2/images").exists()


def test_export_corpus_reuses_a_complete_export(tmp_path: Path) -> None:
    from qparse_lite.data.prepare import Corpus

    corpus = Corpus.load(_toy_corpus().save(tmp_path / "corpus"))
    first = export_corpus(corpus, tmp_path / "df2", split="test")
    f = tmp_path / "df2/annos/000001.json"
    stamp = f.stat().st_mtime_ns
    again = export_corpus(corpus, tmp_path / "df2", split="test")
    assert again["reused"] and not first["reused"] and f.stat().st_mtime_ns == stamp
    assert again["n_items"] == first["n_items"] == 4
    other = export_corpus(corpus, tmp_path / "df2", split="test", min_area=50)  # settings changed
    assert not other["reused"] and other["n_items"] == 2  # shoes (24 px) and bag (16 px) dropped
    assert not export_corpus(corpus, tmp_path / "df2", split="test", min_area=50, reuse=False)["reused"]


def test_the_annotation_of_notebook_07_round_trips(tmp_path: Path) -> None:
    """Notebook 07 §1's hand-written annotation: what is written is read back, with its attribute names, and
    COCO gets the box as x, y, w, h."""
    example = {
        "source": "user", "pair_id": 7, "width": 160, "height": 160,
        "item1": {"category_id": 1, "category_name": "short sleeve top", "style": 1,
                  "bounding_box": [40, 30, 120, 110], "segmentation": [[40, 30, 120, 30, 120, 110, 40, 110]],
                  "landmarks": [45, 32, 2, 115, 32, 2], "scale": 2, "occlusion": 1, "zoom_in": 1, "viewpoint": 2},
    }  # fmt: skip
    f = tmp_path / "annos" / "000007.json"
    f.parent.mkdir()
    f.write_text(json.dumps(example))
    anno = load_anno(f)
    it = anno.items[0]
    assert (anno.image_id, anno.source, anno.pair_id, len(anno.items)) == (7, "user", 7, 1)
    assert (it.key, it.category_id, it.style, tuple(it.bbox)) == ("item1", 1, 1, (40, 30, 120, 110))
    assert {f: SUBSET_FAMILIES[f][getattr(it, f)] for f in SUBSET_FAMILIES} == {
        "scale": "moderate", "occlusion": "slight", "zoom_in": "no", "viewpoint": "frontal"}  # fmt: skip
    coco_item = to_coco([anno])["annotations"][0]
    assert coco_item["bbox"] == [40, 30, 80, 80] and coco_item["area"] == 80 * 80
