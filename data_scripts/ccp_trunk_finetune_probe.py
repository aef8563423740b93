"""What unfreezing the trunk's last stage buys for label presence (issue 30, the "unfreeze" option), measured.

    python data_scripts/ccp_trunk_finetune_probe.py CORPUS KNN_VAL [--from-block 15] [--epochs 20] [--seed 0]

The per-label AUC of the trunk M-CNN's ĉ_l is bounded by what its frozen pooled features say about label
presence (``ccp_trunk_presence_probe.py``: a linear probe reaches about 0.74 on the (I, l) that ĉ_l is scored
on). This script measures whether training the last trunk blocks raises that bound. The frozen part of
EfficientNet-Lite0 (stem and blocks ``0 .. from_block − 1``) runs once per corpus image and mirror; the blocks
``from_block ..`` 15, the head convolution and a linear presence layer on the mean- and max-pooled head
features are trained with per-label binary cross-entropy on the train split's presence 1[l ∈ ϕ(I)] (AdamW,
cosine, a fixed schedule: nothing is chosen on validation), BatchNorm kept at its ImageNet statistics. Beside
it, the same linear layer on the frozen features, trained the same way. Every epoch prints the validation
per-label AUC on all validation images and on the scored (I, l) (a neighbour among the first 9 of ``KNN_VAL``
has l); the last epoch is the result. One torch thread. The presence targets and their scoring are
``ccp_trunk_presence_probe.PresenceTask`` (this script imports it from its own folder).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from ccp_trunk_presence_probe import PresenceTask
from torch import nn

from qparse_lite.backbones import efficientnet_lite0
from qparse_lite.data.prepare import Corpus
from qparse_lite.model.trunk import trunk_input


class Top(nn.Module):
    """Blocks ``from_block ..`` of the trunk, its head convolution and a linear presence layer."""

    def __init__(self, net: nn.Module, from_block: int, n_out: int, train_trunk: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(copy.deepcopy(list(net._blocks)[from_block:]))
        self.conv_head, self.bn1, self.act = copy.deepcopy(net._conv_head), copy.deepcopy(net._bn1), net._swish
        for p in [*self.blocks.parameters(), *self.conv_head.parameters(), *self.bn1.parameters()]:
            p.requires_grad_(train_trunk)
        self.fc = nn.Linear(2 * 1280, n_out)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            h = b(h)
        m = self.act(self.bn1(self.conv_head(h)))
        return torch.cat([m.mean((2, 3)), m.amax((2, 3))], 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(h))

    def train(self, mode: bool = True) -> Top:  # BatchNorm stays at the ImageNet statistics
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


def frozen_inputs(net: nn.Module, images: np.ndarray, from_block: int, batch: int = 16) -> torch.Tensor:
    """The input of block ``from_block`` for every image (N×C×h×w), no gradients."""
    out = []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[s : s + batch])).permute(0, 3, 1, 2)
        with torch.no_grad():
            h = net._swish(net._bn0(net._conv_stem(trunk_input(x, 224))))
            for b in list(net._blocks)[:from_block]:
                h = b(h)
        out.append(h)
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus")
    p.add_argument("knn_val")
    p.add_argument("--from-block", type=int, default=15, help="first trained block (15: the last stage)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr-trunk", type=float, default=1e-4)
    p.add_argument("--lr-head", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    corpus = Corpus.load(a.corpus)
    L = corpus.label_set.num_labels
    task = PresenceTask(corpus, a.knn_val)  # presence targets, splits and the scored (I, l)
    present, train, val = task.present, task.train, task.val

    net = efficientnet_lite0()
    imgs = corpus.feature_images
    h_train = frozen_inputs(net, np.asarray(imgs[train]), a.from_block)
    h_train_m = frozen_inputs(net, np.asarray(imgs[train])[:, :, ::-1], a.from_block)  # the mirror
    h_val = frozen_inputs(net, np.asarray(imgs[val]), a.from_block)
    X = torch.cat([h_train, h_train_m])
    Y = torch.tensor(np.concatenate([present[train], present[train]])[:, 1:], dtype=torch.float32)
    print(f"frozen inputs of block {a.from_block}: {tuple(X.shape)} in {time.perf_counter() - t0:.0f} s", flush=True)

    for name, train_trunk in (("linear on frozen features", False), (f"blocks {a.from_block}-15 + head trained", True)):
        torch.manual_seed(a.seed)
        top = Top(net, a.from_block, L - 1, train_trunk)
        groups = [{"params": top.fc.parameters(), "lr": a.lr_head}]
        if train_trunk:
            groups.append({"params": [q for n, q in top.named_parameters() if not n.startswith("fc.")], "lr": a.lr_trunk})
        opt = torch.optim.AdamW(groups, weight_decay=a.weight_decay)
        steps = a.epochs * ((len(X) + a.batch - 1) // a.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                    pct_start=0.1, anneal_strategy="cos")  # fmt: skip
        g = torch.Generator().manual_seed(a.seed)
        if not train_trunk:  # the frozen features once: the same model, computed faster
            with torch.no_grad():
                top.eval()
                F_tr, F_va = top.features(X), top.features(h_val)
        t1 = time.perf_counter()
        for ep in range(a.epochs):
            top.train()
            perm = torch.randperm(len(X), generator=g)
            tot = 0.0
            for s in range(0, len(X), a.batch):
                idx = perm[s : s + a.batch]
                logits = top.fc(F_tr[idx]) if not train_trunk else top(X[idx])
                loss = F.binary_cross_entropy_with_logits(logits, Y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss) * len(idx)
            top.eval()
            with torch.no_grad():
                z = (top.fc(F_va) if not train_trunk else top(h_val)).numpy()
            print(f"{name} | epoch {ep + 1}/{a.epochs} | train BCE {tot / len(X):.4f} | val AUC per label: "
                  f"all images {task.macro(z):.3f}, scored (I, l) {task.macro(z, task.supported):.3f} | "
                  f"{time.perf_counter() - t1:.0f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
