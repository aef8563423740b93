"""Match R-CNN: CPU smoke test (tiny images), pair loss, augmented views, train loop, predict → evaluators."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qparse_lite import df2
from qparse_lite.errors import QparseError
from qparse_lite.match_rcnn import (
    Df2Detection,
    MatchHead,
    MatchRCNN,
    augmented_view,
    pair_loss,
    predict,
    train,
    train_step,
)

torch.set_num_threads(2)


def _target(h: int, w: int) -> dict[str, torch.Tensor]:
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 10:60, 10:50] = 1
    masks[1, 70:110, 20:80] = 1
    return {"boxes": torch.tensor([[10.0, 10, 50, 60], [20, 70, 80, 110]]), "labels": torch.tensor([1, 8]),
            "masks": masks}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> MatchRCNN:
    torch.manual_seed(0)
    return MatchRCNN(17, weights="none", min_size=128, max_size=128)


def test_smoke_step_and_predict(model: MatchRCNN) -> None:
    assert model.weights_source.startswith("scratch")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 96, generator=g), torch.rand(3, 120, 128, generator=g)]
    targets = [_target(128, 96), _target(120, 128)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    before = model.match_head.sim.weight.detach().clone()
    t0 = time.perf_counter()
    losses = train_step(model, opt, images, targets, generator=g)
    step_s = time.perf_counter() - t0
    for k in (
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_pair",
    ):
        assert np.isfinite(losses[k]) and losses[k] >= 0, k
    assert losses["loss_pair"] > 0 and losses["n_pos"] == 4  # 2 items × 2 images, each with its view
    parts = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert losses["loss"] == pytest.approx(parts, rel=1e-5)
    assert not torch.equal(before, model.match_head.sim.weight)  # the matching network was trained
    out = predict(model, images, [1, 2], sources=["user", "shop"], score_thresh=0.0, top_k=5)
    assert out["weights_source"] == model.weights_source
    assert out["results"] and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(
        out["results"][0]
    )
    assert out["retrieval"] and all(r["query_image_id"] == 1 for r in out["retrieval"])
    r0 = out["retrieval"][0]
    assert len(r0["gallery_image_id"]) == 5 and set(r0["gallery_image_id"]) == {2}
    assert r0["gallery_score"] == sorted(r0["gallery_score"], reverse=True)
    # consumable by the DeepFashion2 evaluators
    images_df2 = [
        df2.Df2Image(1, "1", Path("1.json"), "user", 7, [
            df2.Df2Item("item1", 1, "t", 1, (10, 10, 50, 60), [[10, 10, 50, 10, 50, 60, 10, 60]], scale=1)],
            96, 128),
        df2.Df2Image(2, "2", Path("2.json"), "shop", 7, [
            df2.Df2Item("item1", 1, "t", 1, (10, 10, 50, 60), [[10, 10, 50, 10, 50, 60, 10, 60]], scale=1)],
            128, 120),
    ]  # fmt: skip
    ev = df2.evaluate_detections(df2.to_coco(images_df2), out["results"], "segm")
    assert 0.0 <= ev["overall"]["ap"] <= 1.0
    rv = df2.evaluate_retrieval(images_df2, out["retrieval"])
    assert rv["n_queries"] == 1
    assert step_s < 40, f"smoke step took {step_s:.1f} s"


def test_pair_loss_counts_and_sign() -> None:
    head = MatchHead(in_channels=8, dim=4)
    with torch.no_grad():
        head.sim.weight.fill_(-5.0)  # far apart -> "different"
        head.sim.bias.fill_(2.0)  # identical -> "same"
    v = torch.tensor([[0.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    ids = torch.tensor([10, 11, 10, 11])
    img = torch.tensor([0, 0, 1, 1])
    loss, npos, nneg = pair_loss(v, ids, img, head, neg_per_pos=3)
    assert (npos, nneg) == (2, 2)  # same-image pairs are never used
    assert loss.item() < 0.2  # the head separates these pairs well
    loss_wrong, *_ = pair_loss(v, torch.tensor([10, 11, 11, 10]), img, head)
    assert loss_wrong.item() > 1.0


def test_augmented_view_moves_boxes_with_masks() -> None:
    g = torch.Generator().manual_seed(3)
    img = torch.rand(3, 128, 96)
    t = _target(128, 96)
    for _ in range(4):
        im2, t2 = augmented_view(img, t, g)
        assert im2.shape[0] == 3 and float(im2.min()) >= 0 and float(im2.max()) <= 1
        assert t2["masks"].shape[-2:] == im2.shape[-2:]
        for b, m in zip(t2["boxes"], t2["masks"], strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            got = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert torch.allclose(got, b, atol=2.0), (got, b)


def test_weights_file_missing() -> None:
    with pytest.raises(QparseError, match="not found"):
        MatchRCNN(14, weights="/nonexistent/maskrcnn.pth")


def test_train_loop_writes_checkpoint_and_log(model: MatchRCNN, tmp_path: Path) -> None:
    from PIL import Image

    annos, imgs = tmp_path / "annos", tmp_path / "images"
    annos.mkdir()
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(imgs / f"{i:04d}.jpg")
        doc = {"source": "user", "pair_id": i, "item1": {
            "category_id": 8, "style": 0, "bounding_box": [10, 20, 50, 90],
            "segmentation": [[10, 20, 50, 20, 50, 90, 10, 90]], "scale": 2, "occlusion": 0, "zoom_in": 0,
            "viewpoint": 0}}  # fmt: skip
        (annos / f"{i:04d}.json").write_text(json.dumps(doc))
    ds = Df2Detection(annos, imgs, max_side=64)
    im, t = ds[0]
    assert im.shape == (3, 64, 53) and t["masks"].shape == (1, 64, 53) and t["labels"].tolist() == [8]
    out = train(
        model, ds, tmp_path / "run", steps=1, batch_size=2, device="cpu", num_workers=0, progress=False
    )
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 1 and state["weights_source"] == model.weights_source
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss_pair"]))
    assert json.loads((out / "run.json").read_text())["weights_source"] == model.weights_source
