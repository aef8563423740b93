"""The ceiling of a frozen trunk for label presence (issue 30): a linear probe per label on pooled trunk features.

    python data_scripts/ccp_trunk_presence_probe.py CORPUS KNN_VAL [--l2 0.03 0.1 0.3]

For every corpus image, the frozen ImageNet EfficientNet-Lite0 (:func:`qparse_lite.model.trunk.trunk_pyramid` on
the corpus's 224-px feature crops) gives the 320-channel last block and the 1,280-channel head features at
stride 32; each is pooled over positions (mean and max) and standardised on the train split. A logistic
regression per foreground label (L-BFGS, L2 penalty ``--l2``·‖w‖²) is fit on the train split's presence
1[l ∈ ϕ(I)] and scored on the validation split: the per-label ROC AUC averaged over labels, on all validation
images and on the (I, l) that the M-CNN's ĉ_l is scored on (one of the first 9 neighbours in ``KNN_VAL``, a
``knn_val.npz`` of ``qparse train``, has l), beside the neighbour vote on the same (I, l).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from qparse_lite.backbones import efficientnet_lite0
from qparse_lite.data.prepare import Corpus
from qparse_lite.model.trunk import trunk_input
from qparse_lite.train.matching_metrics import roc_auc


def pooled_features(corpus: Corpus, batch: int = 16) -> dict[str, np.ndarray]:
    """``{"block": N×640, "head": N×2560}``: mean and max over positions of the two stride-32 maps."""
    net = efficientnet_lite0()
    out: dict[str, list[np.ndarray]] = {"block": [], "head": []}
    src = corpus.feature_images
    for s in range(0, len(src), batch):
        x = torch.from_numpy(np.array(src[s : s + batch])).permute(0, 3, 1, 2)
        with torch.no_grad():  # one trunk pass: the last block's output, then the head on it
            h = net._swish(net._bn0(net._conv_stem(trunk_input(x, 224))))
            for block in net._blocks:
                h = block(h)
            head = net._swish(net._bn1(net._conv_head(h)))  # what trunk_pyramid returns at level 5
        for name, m in (("block", h), ("head", head)):
            out[name].append(torch.cat([m.mean((2, 3)), m.amax((2, 3))], 1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe(x: np.ndarray, present: np.ndarray, train: np.ndarray, val: np.ndarray, l2: float) -> np.ndarray:
    """Validation logits (len(val) × L−1) of per-label logistic regressions fit on ``train``."""
    X = torch.tensor(x, dtype=torch.float32)
    X = (X - X[train].mean(0)) / (X[train].std(0) + 1e-6)
    Y = torch.tensor(present[:, 1:], dtype=torch.float32)
    W = torch.zeros(X.shape[1], Y.shape[1], requires_grad=True)
    b = torch.zeros(Y.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(X[train] @ W + b, Y[train]) + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (X[val] @ W + b).detach().numpy()


class PresenceTask:
    """Label presence 1[l ∈ ϕ(I)] on a corpus, scored as the M-CNN's ĉ_l is: per-label ROC AUC on the validation
    split, over all images or over the (I, l) where one of the first 9 neighbours in ``knn_val`` has l.

    Shared by this probe and ``ccp_trunk_finetune_probe.py``.
    """

    def __init__(self, corpus: Corpus, knn_val: str) -> None:
        L = corpus.label_set.num_labels
        labels = corpus.labels
        self.present = np.stack([np.bincount(np.asarray(labels[i]).ravel(), minlength=L)[:L] > 0
                                 for i in range(len(labels))])  # fmt: skip
        self.train, self.val = np.asarray(corpus.split("train")), np.asarray(corpus.split("val"))
        knn = np.load(knn_val)
        if not np.array_equal(knn["queries"], self.val):
            raise SystemExit(f"{knn_val}: its queries are not this corpus's validation split")
        nb = self.present[knn["neighbours"][:, :9]]
        self.supported = nb.any(1)[:, 1:]  # (I, l): a neighbour has l
        self.vote = nb.mean(1)[:, 1:]  # the neighbour vote
        self.y = self.present[self.val][:, 1:]

    def macro(self, score: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Per-label ROC AUC of ``score`` (len(val) × L−1) averaged over labels; ``mask``: only those (I, l)."""
        y = self.y
        aucs = [roc_auc(score[m, j], y[m, j]) for j in range(y.shape[1])
                for m in [np.ones(len(y), bool) if mask is None else mask[:, j]]]  # fmt: skip
        return float(np.nanmean([v for v in aucs if np.isfinite(v)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus")
    p.add_argument("knn_val")
    p.add_argument("--l2", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    a = p.parse_args()
    torch.set_num_threads(1)
    corpus = Corpus.load(a.corpus)
    task = PresenceTask(corpus, a.knn_val)
    print(f"neighbour vote, scored (I, l): {task.macro(task.vote, task.supported):.3f}")
    feats = pooled_features(corpus)
    for name, x in feats.items():
        for l2 in a.l2:
            z = probe(x, task.present, task.train, task.val, l2)
            print(f"{name} mean+max, L2 {l2}: all val images {task.macro(z):.3f}, "
                  f"scored (I, l) {task.macro(z, task.supported):.3f}")

if __name__ == "__main__":
    main()
