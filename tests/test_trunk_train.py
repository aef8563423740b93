"""`qparse train --variant trunk-...`: the trunk family through the training loop, resumed bit-exactly."""

from __future__ import annotations

import json

import numpy as np
import torch

from qparse_lite.data.prepare import Corpus
from qparse_lite.labels import ATR18
from qparse_lite.model.trunk import TrunkMCNN
from qparse_lite.train.checkpoint import load_model
from qparse_lite.train.loop import train

TINY = dict(pairs_per_epoch=256, batch_size=32, val_pairs=96, k_train=4, feature_size=64, epochs=2)


def _corpus(n: int = 24, s: int = 32) -> Corpus:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 60, size=(n, s, s, 3), dtype=np.uint8)
    labels = np.zeros((n, s, s), np.uint8)
    for i in range(n):
        for lab in (2, 4, 11, 14, 16):
            if lab in (2, 4) or rng.random() < 0.5:
                x0, y0 = (lab * 5) % 20 + rng.integers(0, 4), (lab * 3) % 20 + rng.integers(0, 4)
                labels[i, y0 : y0 + 8, x0 : x0 + 6] = lab
                images[i, y0 : y0 + 8, x0 : x0 + 6] = ATR18.palette[lab] // 2 + 60
    return Corpus.from_arrays(images, labels, ATR18, {"train": list(range(16)), "val": list(range(16, n)), "test": []})


def _knn(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    tr = np.asarray(corpus.split("train"))
    train_knn = np.stack([np.roll(tr, -i - 1)[:4] for i in range(len(tr))])
    val_knn = np.stack([tr[:4] for _ in corpus.split("val")])
    return train_knn, val_knn


def _log(run) -> str:
    return (run / "log.csv").read_text()


def test_trunk_training_resumes_exactly(tmp_path):
    corpus = _corpus()
    knn, val_knn = _knn(corpus)
    kw = dict(device="cpu", corpus=corpus, knn=knn, val_knn=val_knn, progress=False, **TINY)
    a = train("quick", "trunk-cross54", tmp_path / "a", **kw)
    b = train("quick", "trunk-cross54", tmp_path / "b", stop_after=1, **kw)  # interrupted ...
    assert _log(b).splitlines() == _log(a).splitlines()[:2]
    train("quick", "trunk-cross54", tmp_path / "b", resume=True, **kw)  # ... and continued
    assert _log(b) == _log(a)
    ca = torch.load(a / "checkpoint.pt", weights_only=False)
    cb = torch.load(b / "checkpoint.pt", weights_only=False)
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    rec = json.loads((a / "run.json").read_text())
    assert rec["variant"] == "trunk-cross54" and rec["epochs_done"] == 2
    assert 0 <= rec["final_val"]["val_auc_macro"] <= 1
    model, tn, meta = load_model(a)
    assert isinstance(model, TrunkMCNN) and meta["config"]["family"] == "trunk" and model.cfg.input_size == 64
    assert bool(model.has_projection) and meta["config"]["num_labels"] == ATR18.num_labels  # the label readout
    ph = rec["presence_head_val"]  # the retrieval's frozen presence head on the same scored (I, l)
    assert set(ph) == {"auc_macro", "auc", "per_label"} and (np.isnan(ph["auc"]) or 0 <= ph["auc"] <= 1)
    # a trained trunk run parses through the kit's one way from a run to a parser
    from qparse_lite.parse.parser import MCNNParser, TrunkParser

    parser = MCNNParser.from_run(a, corpus, n_segments=0)
    assert isinstance(parser, TrunkParser)
    st = parser.parse(np.asarray(corpus.images[17]), val_knn[0])
    assert st.labels.shape == (32, 32) and st.c.shape == (4, ATR18.num_labels)


def test_the_trunk_family_trains_on_its_own_budget(tmp_path):
    """``trunk_pairs_per_epoch`` sets the trunk family's pairs per epoch (the ccp profile's: its compute curve's
    plateau); unset, the family shares ``pairs_per_epoch``; the from-scratch family never reads it."""
    import pytest

    from qparse_lite.errors import QparseError
    from qparse_lite.profiles import get_profile

    ccp = get_profile("ccp")
    assert ccp.trunk_variant == "trunk-cross54" and ccp.pairs_for("trunk") == ccp.trunk_pairs_per_epoch == 368_640
    assert ccp.pairs_for("scratch") == ccp.pairs_per_epoch == 40_960
    quick = get_profile("quick")
    assert quick.trunk_pairs_per_epoch is None and quick.pairs_for("trunk") == quick.pairs_per_epoch
    with pytest.raises(QparseError, match="trunk_pairs_per_epoch"):
        get_profile("quick", trunk_pairs_per_epoch=0)
    corpus = _corpus()
    knn, val_knn = _knn(corpus)
    kw = dict(device="cpu", corpus=corpus, knn=knn, val_knn=val_knn, progress=False, **TINY)
    run = train("quick", "trunk-wo-cross", tmp_path / "t", trunk_pairs_per_epoch=64, **kw)
    rec = json.loads((run / "run.json").read_text())
    assert rec["profile_fields"]["trunk_pairs_per_epoch"] == 64
    assert rec["final_val"]["pairs_seen"] == 2 * 64  # 2 epochs of 64, not of pairs_per_epoch = 256
