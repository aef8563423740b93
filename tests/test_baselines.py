"""The parametric baseline (LR-ASPP on EfficientNet-Lite0): a training step, the harness, resume, new labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qparse_lite.baselines.parametric import (
    LRASPPNet,
    ParametricParser,
    load_parametric,
    parametric_config,
    train_parametric,
)
from qparse_lite.errors import QparseError


def test_forward_backward_on_a_tiny_batch():
    torch.manual_seed(0)
    net = LRASPPNet(num_labels=5, pretrained=False, inter_channels=16)
    x = torch.rand(2, 3, 64, 64)
    y = torch.randint(0, 5, (2, 32, 32))
    logits = net(x, 32)
    assert logits.shape == (2, 5, 32, 32)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    enc = [p.grad for p in net.encoder.parameters() if p.grad is not None]
    head = [p.grad for p in net.head.parameters() if p.grad is not None]
    assert enc and head  # gradients reach the encoder (fine-tuned) and the head
    assert any(float(g.abs().sum()) > 0 for g in enc)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    opt.step()
    assert torch.nn.functional.cross_entropy(net(x, 32), y).item() != pytest.approx(loss.item())


def test_imagenet_weights_are_loaded_and_scratch_differs():
    a = LRASPPNet(3, pretrained=True, inter_channels=8)
    b = LRASPPNet(3, pretrained=False, inter_channels=8)
    wa = a.encoder.net._conv_stem.weight
    wb = b.encoder.net._conv_stem.weight
    assert wa.shape == wb.shape and not torch.allclose(wa, wb)
    from qparse_lite.backbones import efficientnet_lite0

    assert torch.equal(wa, efficientnet_lite0()._conv_stem.weight)


def _cfg(corpus, **kw):
    return parametric_config("quick", corpus.num_labels, pretrained=False, input_size=64, inter_channels=16,
                             batch_size=16, **kw)  # fmt: skip


def test_train_evaluate_and_exact_resume(tiny_run, tmp_path):
    from qparse_lite.evaluation.evaluate import evaluate
    from qparse_lite.labels import read_label_png

    corpus, _ = tiny_run
    cfg = _cfg(corpus, epochs=2)
    rec = train_parametric(corpus, tmp_path / "full", cfg, progress=False, profile="quick")
    assert rec["final_val"]["epoch"] == 2 and rec["images_seen"] == 2 * len(corpus.split("train"))
    assert rec["torch_threads"] == 1 and rec["weights"] == "scratch" and rec["git_commit"]
    part = train_parametric(corpus, tmp_path / "part", cfg, progress=False, stop_after_epoch=1)
    assert part == {"stopped_after_epoch": 1}
    train_parametric(corpus, tmp_path / "part", cfg, progress=False, resume=True)
    a, _, _ = load_parametric(tmp_path / "full")
    b, cfg_b, meta = load_parametric(tmp_path / "part")
    assert cfg_b == cfg and meta["epoch"] == 2
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k  # resuming after epoch 1 gives exactly the uninterrupted weights

    pp = ParametricParser(a, cfg.input_size, corpus.size)
    i = int(corpus.split("test")[0])
    lab = pp(np.asarray(corpus.images[i]))
    assert lab.shape == (corpus.size, corpus.size) and lab.dtype == np.uint8
    assert pp.probs(np.asarray(corpus.images[i])).sum(0) == pytest.approx(np.ones((corpus.size,) * 2), abs=1e-4)

    sc = evaluate(corpus, tmp_path / "eval", method="parametric", model=tmp_path / "full")
    assert {"avg_f1", "accuracy", "per_label"} <= set(sc) and "not in the paper" in sc["method"]
    ids = [corpus.ids[int(j)] for j in corpus.split("test")]
    got = read_label_png(tmp_path / "eval" / "pred" / f"{ids[0]}.png")
    assert got.shape == (corpus.size, corpus.size)
    assert (tmp_path / "eval" / "table1.csv").is_file()
    with pytest.raises(QparseError, match=r"cannot resume with other settings \(epochs: \d+ in the checkpoint, 3 now\)"):
        train_parametric(corpus, tmp_path / "full", _cfg(corpus, epochs=3), progress=False, resume=True)


def test_holdout_then_finetune_teaches_the_label(tiny_run, tmp_path):
    from qparse_lite.evaluation.newlabels import choose_holdout_label, finetune_new_label

    corpus, _ = tiny_run
    label = choose_holdout_label(corpus)
    train_parametric(corpus, tmp_path / "base", _cfg(corpus, epochs=1, holdout_label=label), progress=False)
    rec = finetune_new_label(tmp_path / "base", corpus, label, 0.5, tmp_path / "ft", epochs=1)
    assert rec["new_label"] == label and rec["fraction"] == 0.5
    assert 0 < rec["images_annotated"] <= rec["images_with_label"]
    assert rec["init_from"] == "base" and rec["config"]["holdout_label"] is None and rec["train_s"] > 0
    with pytest.raises(QparseError, match="holdout_label"):
        finetune_new_label(tmp_path / "ft", corpus, label, 0.5, tmp_path / "ft2", epochs=1)


def test_bad_checkpoint_names_the_file(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(QparseError, match="checkpoint.pt"):
        load_parametric(tmp_path)
