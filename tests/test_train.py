"""Training: Eq. (1), metrics, exact resume, determinism, divergence, load_model (qparse_lite.train.loop)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18
from qparse_lite.profiles import get_profile
from qparse_lite.train.checkpoint import LOG_COLUMNS, load_model, read_log
from qparse_lite.train.loop import train
from qparse_lite.train.loss import disp_penalty, matching_loss, profile_loss
from qparse_lite.train.matching_metrics import roc_auc

S = 32
TINY = dict(pairs_per_epoch=256, batch_size=32, val_pairs=96, width=0.25, k_train=4)


def _people(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blocky 'people': each label a coloured rectangle at a jittered place, a random subset per image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(n, S, S, 3), dtype=np.uint8)
    labels = np.zeros((n, S, S), np.uint8)
    for i in range(n):
        for lab in (2, 4, 6, 11, 14, 15, 16):
            if lab in (2, 4, 11) or rng.random() < 0.5:
                x0, y0 = (lab * 5) % 24 + rng.integers(0, 4), (lab * 3) % 24 + rng.integers(0, 4)
                labels[i, y0 : y0 + 6, x0 : x0 + 5] = lab
                images[i, y0 : y0 + 6, x0 : x0 + 5] = ATR18.palette[lab] // 2 + 60
    return images, labels


def _corpus(n: int = 24):
    images, labels = _people(n)
    train_idx, val_idx = np.arange(16), np.arange(16, n)
    splits = {"train": train_idx, "val": val_idx, "test": np.arange(0)}
    mean = images[train_idx].astype(np.float32).mean(0)
    try:
        from qparse_lite.data.prepare import Corpus

        return Corpus.from_arrays(images, labels, ATR18, {k: list(v) for k, v in splits.items()}, mean=mean)
    except ImportError:  # stand-in until qparse_lite.data.prepare lands
        return SimpleNamespace(
            images=images, labels=labels, mean=mean, label_set=ATR18, size=S, path="",
            meta={"dataset": "test", "version": "0"}, split=lambda name: splits[name],
        )  # fmt: skip


def _knn(corpus) -> tuple[np.ndarray, np.ndarray]:
    """Nearest train images by label-map overlap (an oracle stand-in for retrieval)."""
    lab = np.asarray(corpus.labels).reshape(len(np.asarray(corpus.labels)), -1)
    tr = np.asarray(corpus.split("train"))

    def nn(q: np.ndarray) -> np.ndarray:
        d = (lab[q][:, None, :] != lab[tr][None, :, :]).sum(2).astype(float)
        d[q[:, None] == tr[None, :]] = np.inf
        return tr[np.argsort(d, 1, kind="stable")[:, :4]]

    return nn(tr), nn(np.asarray(corpus.split("val")))


@pytest.fixture(scope="module")
def tiny():
    corpus = _corpus()
    knn_tr, knn_va = _knn(corpus)
    return corpus, knn_tr, knn_va


def _train(tiny, out, **kw):
    corpus, knn_tr, knn_va = tiny
    torch.set_num_threads(1)
    kw = {**TINY, "epochs": 2, "device": "cpu", "progress": False, **kw}
    return train("quick", "mcnn", out, corpus=corpus, knn=knn_tr, val_knn=knn_va, **kw)


def _log_text(run) -> str:
    return (run / "log.csv").read_text()


def test_matching_loss_eq1():
    pred = torch.tensor([[1.0, 0, 0, 0, 0], [0.5, 1, 1, 1, 1], [0.0, 2, 0, 0, 0]])
    c = torch.tensor([0.0, 1.0, 0.0])
    t = torch.tensor([[9.0, 9, 9, 9], [0, 1, 2, 3], [0, 0, 0, 0]])
    has_t = torch.tensor([False, True, False])  # t enters only where both images hold the label
    loss, lc, lt = matching_loss(pred, c, t, has_t)
    assert lc.item() == pytest.approx((1 + 0.25 + 0) / 3)
    assert lt.item() == pytest.approx((1 + 0 + 1 + 4) / 3)  # t̂ − t = (1, 0, −1, −2)
    assert loss.item() == pytest.approx(lc.item() + lt.item())


def test_matching_loss_disp_penalties():
    """ρ = huber is Eq. (1)'s square within one std and linear (2|e| − 1) beyond; l1 is |e|; λ_t scales."""
    pred = torch.tensor([[0.0, 0.5, -3.0, 0, 0], [0.0, 9, 9, 9, 9]])
    c, t = torch.zeros(2), torch.zeros(2, 4)
    has_t = torch.tensor([True, False])
    _, _, l2 = matching_loss(pred, c, t, has_t)
    _, _, hub = matching_loss(pred, c, t, has_t, disp_loss="huber")
    _, lc, l1 = matching_loss(pred, c, t, has_t, disp_loss="l1", disp_weight=2.0)
    assert l2.item() == pytest.approx((0.25 + 9) / 2)
    assert hub.item() == pytest.approx((0.25 + 5) / 2)  # e = −3 → 2·3 − 1
    assert l1.item() == pytest.approx(2.0 * (0.5 + 3) / 2) and lc.item() == 0
    e = torch.linspace(-3, 3, 61, requires_grad=True)
    disp_penalty(e, "huber").sum().backward()
    assert torch.allclose(e.grad, torch.clamp(2 * e.detach(), -2, 2))  # continuous, bounded gradient
    with pytest.raises(QparseError, match="disp_loss"):
        profile_loss(get_profile("quick", disp_loss="l3"))
    with pytest.raises(QparseError, match="disp_weight"):
        profile_loss(get_profile("quick", disp_weight=0.0))
    assert profile_loss(get_profile("quick")) is matching_loss  # the paper's Eq. (1) by default


def test_roc_auc():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.full(10, 0.3), np.arange(10) % 2) == 0.5  # constant predictor
    assert roc_auc(np.array([0.2, 0.2, 0.9]), np.array([0, 1, 1])) == pytest.approx(0.75)  # tie counts 1/2
    assert np.isnan(roc_auc(np.ones(3), np.ones(3)))
    rng = np.random.default_rng(0)
    s, y = rng.random(500), rng.random(500) < 0.3
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert roc_auc(s, y) == pytest.approx(brute)


def test_resume_is_exact_and_runs_are_deterministic(tiny, tmp_path):
    a = _train(tiny, tmp_path / "a", pairs_per_epoch=1024)
    b = _train(tiny, tmp_path / "b", pairs_per_epoch=1024, stop_after=1)  # an interrupted run ...
    rows_b1 = read_log(b)
    assert len(rows_b1) == 1
    # same seed, same numbers: the interrupted run's first epoch equals the full run's
    assert _log_text(b).splitlines() == _log_text(a).splitlines()[:2]
    with pytest.raises(QparseError, match="--resume"):
        _train(tiny, tmp_path / "b", pairs_per_epoch=1024)
    _train(tiny, tmp_path / "b", pairs_per_epoch=1024, resume=True)  # ... continued
    assert _log_text(b) == _log_text(a)
    ca = torch.load(a / "checkpoint.pt", weights_only=False)
    cb = torch.load(b / "checkpoint.pt", weights_only=False)
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    assert ca["global_step"] == cb["global_step"] == 2 * 1024 // 32
    assert torch.equal(ca["sampler"][0]["generator"], cb["sampler"][0]["generator"])

    # the log's columns and the run record
    with open(a / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == LOG_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    rec = json.loads((a / "run.json").read_text())
    assert rec["profile"] == "quick" and rec["variant"] == "mcnn" and rec["seed"] == 0
    assert rec["trivial_val"]["auc"] == 0.5 and rec["epochs_done"] == 2
    assert set(rec["trivial_val"]) >= {"loss", "acc", "disp_err"} and "git_commit" in rec
    # the model learns the confidence on this easy corpus: better than the constant predictor
    log = read_log(a)
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert log[-1]["val_loss_c"] < rec["trivial_val"]["loss_c"]
    assert log[-1]["val_auc"] > 0.65

    # load_model for the parsing stage
    model, tn, meta = load_model(a)
    assert meta["variant"] == "mcnn" and meta["epoch"] == 2 and not model.training
    for k, v in ca["model"].items():
        assert torch.equal(model.state_dict()[k], v)
    assert torch.equal(tn.t_std, ca["target_norm"]["t_std"])
    with torch.no_grad():
        assert model(torch.zeros(2, 3, S, S), torch.zeros(2, 3, S, S)).shape == (2, 5)


def test_other_seed_sgd_and_holdout(tiny, tmp_path):
    ref = _train(tiny, tmp_path / "ref", epochs=1)
    c = _train(tiny, tmp_path / "c", epochs=1, seed=1, optimizer="sgd", holdout_label="bag")
    assert _log_text(c) != _log_text(ref)
    row = read_log(c)[0]
    assert row["lr"] == pytest.approx(get_profile("quick").lr)  # SGD at the profile lr: no plateau yet
    _, _, meta = load_model(c)
    assert meta["holdout"] == "bag" and meta["optimizer_name"] == "sgd"
    rec = json.loads((c / "run.json").read_text())
    assert rec["pairs"]["per_label"]["bag"] == {"pos": 0, "neg": 0, "empty": 16 * 4}  # never a region
    assert rec["pairs"]["per_label"]["hair"]["pos"] > 0
    with pytest.raises(QparseError, match="not a label"):
        _train(tiny, tmp_path / "d", holdout_label="tail")


def test_nan_loss_stops_naming_the_step(tiny, tmp_path):
    calls = {"n": 0}

    def bad_loss(pred, c, t, has_t):
        calls["n"] += 1
        loss, lc, lt = matching_loss(pred, c, t, has_t)
        if calls["n"] == 3:
            loss = loss * float("nan")
        return loss, lc, lt

    with pytest.raises(QparseError, match="step 3 "):
        _train(tiny, tmp_path / "nan", loss_fn=bad_loss)
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()
    # a huge learning rate diverges too, and is reported the same way
    with pytest.raises(QparseError, match=r"diverged: loss is (nan|inf) at step \d+"):
        _train(tiny, tmp_path / "lr", optimizer="sgd", lr=1e12)


def test_cli_parser():
    from qparse_lite.cli import build_parser
    from qparse_lite.commands.train import _parse_set

    args = build_parser().parse_args(
        ["train", "--profile", "quick", "--variant", "cross54", "--out", "x", "--set", "pairs_per_epoch=64"]
    )
    assert args.variant == "cross54" and args.func is not None
    assert _parse_set(args.set) == {"pairs_per_epoch": 64}
    with pytest.raises(QparseError):
        _parse_set(["nothing"])


def test_knn_computed_saved_and_reused(tiny, tmp_path):
    corpus = tiny[0]
    kw = {**TINY, "epochs": 1, "device": "cpu", "progress": False}
    torch.set_num_threads(1)
    a = train("quick", "wo-cross", tmp_path / "a", corpus=corpus, **kw)  # KNN computed (profile features)
    assert (a / "knn_train.npz").is_file() and (a / "knn_val.npz").is_file()
    b = train("quick", "wo-cross", tmp_path / "b", corpus=corpus, knn=a / "knn_train.npz",
              val_knn=a / "knn_val.npz", **kw)  # fmt: skip
    assert _log_text(a) == _log_text(b)
    with pytest.raises(QparseError, match="not this split"):
        train("quick", "wo-cross", tmp_path / "c", corpus=corpus, knn=a / "knn_val.npz", **kw)


def test_label_level_metrics_by_hand():
    from qparse_lite.train.matching_metrics import label_level_metrics

    # two query images (0, 1), K = 3 each; label 5 in I0 (c = 1) not in I1; label 7 in I1 only
    # pairs: (I0, l5) × 2 neighbours, (I1, l5) × 3, (I0, l7) × 1, (I1, l7) × 1
    query = np.array([0, 0, 1, 1, 1, 0, 1])
    label = np.array([5, 5, 5, 5, 5, 7, 7])
    c = np.array([1, 1, 0, 0, 0, 0, 1])
    c_hat = np.array([0.9, 0.7, 0.2, 0.4, 0.3, 0.6, 0.85])
    has_t = c.astype(bool)
    t = np.zeros((7, 4))
    t[has_t] = 0.1
    t_hat = np.zeros((7, 4))
    t_hat[has_t] = 0.08
    m = label_level_metrics(query, label, c_hat, t_hat, c, t, has_t, np.full(7, 3), xi1=0.5, c_trivial=0.4,
                            t_trivial=np.full(4, 0.05), label_names=[str(i) for i in range(8)])  # fmt: skip
    # label confidences: (0,5) 0.8 ✓, (1,5) 0.3 ✗, (0,7) 0.6 ✗, (1,7) 0.85 ✓ → AUC 1, acc@0.5 3/4
    assert m["n_scored"] == 4 and m["n_pairs"] == 7 and m["pos_rate"] == 0.5
    assert m["auc"] == 1.0 and m["acc"] == 0.75
    # votes: 2/3, 3/3, 1/3, 1/3 for c = 1, 0, 0, 1 → pairs (pos, neg): AUC = (0 + 1 + ½ + 0 ... ) / 4
    assert m["auc_vote"] == pytest.approx((1 * 0 + 1 * 1 + 0 * 1 + 0.5) / 4)  # 2/3 beats 1/3; 1/3 ties 1/3
    assert m["acc_vote"] == 0.5 and m["acc_trivial"] == 0.5 and m["auc_trivial"] == 0.5
    assert m["disp_err"] == pytest.approx(0.02) and m["disp_err_trivial"] == pytest.approx(0.05)
    assert m["disp_err_zero"] == pytest.approx(0.1)
    assert m["per_label"]["5"]["auc"] == 1.0 and m["per_label"]["5"]["n_scored"] == 2
    assert m["per_label"]["7"]["acc"] == 0.5
    assert m["auc_macro"] == 1.0
    # Σ_k ĉ_kl / K: 1.6/3, 0.9/3, 0.6/3, 0.85/3 for c = 1, 0, 0, 1 → 3 of the 4 (pos, neg) pairs ordered
    assert m["auc_sum_k"] == pytest.approx(0.75)


def test_run_json_records_label_level_validation_threads_and_schedule(tiny, tmp_path):
    before = torch.get_num_threads()
    corpus, knn_tr, knn_va = tiny
    run = train("quick", "mcnn", tmp_path / "r", corpus=corpus, knn=knn_tr, val_knn=knn_va, device="cpu",
                progress=False, epochs=2, threads=1, schedule="constant", warmup=0.5,
                **{**TINY, "k_train": 4})  # fmt: skip
    assert torch.get_num_threads() == before  # restored
    rec = json.loads((run / "run.json").read_text())
    assert rec["torch_threads"] == 1 and rec["profile_fields"]["threads"] == 1
    f = rec["final_val"]
    for key in ("val_auc", "val_auc_vote", "val_auc_trivial", "val_acc", "val_acc_vote", "val_disp_err",
                "val_disp_err_trivial", "val_disp_err_zero", "disp_err_below_trivial", "auc_above_vote"):  # fmt: skip
        assert key in f, key
    assert f["val_auc_trivial"] == 0.5 and rec["trivial_val"]["auc"] == 0.5
    assert rec["vote_val"]["auc"] == f["val_auc_vote"]
    assert f["disp_err_below_trivial"] == pytest.approx(1 - f["val_disp_err"] / f["val_disp_err_trivial"])
    assert set(rec["val_per_label"]) <= set(ATR18.names) and rec["val_per_label"]
    # the scored pairs: every val image × its first k_test (≤ K) neighbours × the labels they contain
    assert rec["pairs"]["val_k"] == 4 and rec["pairs"]["sampler"] == "natural"
    assert rec["pairs"]["group_size"] == 16
    # constant schedule with warm-up over half the steps: lr reaches the profile lr and stays
    log = read_log(run)
    assert log[0]["lr"] == pytest.approx(get_profile("quick").lr) and log[1]["lr"] == log[0]["lr"]
    assert log[-1]["pairs_seen"] == 2 * TINY["pairs_per_epoch"]
    with pytest.raises(QparseError, match="unknown schedule"):
        train("quick", "mcnn", tmp_path / "s", corpus=corpus, knn=knn_tr, val_knn=knn_va, device="cpu",
              progress=False, schedule="linear", **TINY)  # fmt: skip


def test_grouped_and_ungrouped_training_agree_on_a_tiny_run(tiny, tmp_path):
    """group_size changes how a batch is computed, not what the model learns from: both runs learn."""
    ungrouped = _train(tiny, tmp_path / "u", group_size=1, pairs_per_epoch=1024)
    rec = json.loads((ungrouped / "run.json").read_text())
    assert rec["pairs"]["group_size"] == 1
    assert read_log(ungrouped)[-1]["val_loss_c"] < rec["trivial_val"]["loss_c"]


def test_one_override_route(tiny, tmp_path):
    """``train`` takes a Profile or a name + overrides, both through ``profiles.get_profile``: same run."""
    import dataclasses
    import inspect

    corpus, knn_tr, knn_va = tiny
    a = _train(tiny, tmp_path / "a", epochs=1)
    prof = get_profile("quick", **{**TINY, "epochs": 1})
    assert get_profile(prof) == prof and get_profile(prof, epochs=None) == prof  # None keeps the field
    torch.set_num_threads(1)
    b = train(prof, "mcnn", tmp_path / "b", corpus=corpus, knn=knn_tr, val_knn=knn_va, device="cpu",
              progress=False)  # fmt: skip
    assert _log_text(a) == _log_text(b)
    with pytest.raises(QparseError, match=r"unknown profile field\(s\) \['nonsense'\]; fields: name"):
        train("quick", "mcnn", tmp_path / "c", corpus=corpus, knn=knn_tr, val_knn=knn_va, nonsense=1)
    # no profile field is a keyword of its own (the positional variant defaults to the profile's)
    fields = {f.name for f in dataclasses.fields(prof)}
    assert set(inspect.signature(train).parameters) & fields == {"variant"}
