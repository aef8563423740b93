"""A short probe of a trunk variant on CCP (issue 30): N training steps, then the validation metrics.

    python data_scripts/ccp_trunk_probe.py CORPUS KNN_TRAIN KNN_VAL VARIANT STEPS LR

Trains ``VARIANT`` (a ``trunk-*`` key) for ``STEPS`` batches of 128 pairs (8 images × 16 regions, labels ∝
√count, AdamW at ``LR``, Huber displacement penalty, 1 thread) on the corpus's cached trunk maps and prints the
running c and t losses and the validation numbers of ``qparse_lite.train.engine.evaluate`` on 4,096 scored
validation pairs (K = 9). Used to choose the region representation (ARCHITECTURE CHOICES of
``qparse_lite/model/trunk.py``; results/ccp/trunk/README.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from qparse_lite.data.prepare import Corpus
from qparse_lite.model.mcnn import build_model
from qparse_lite.train.engine import evaluate, val_set
from qparse_lite.train.inputs import ensure_knn
from qparse_lite.train.loss import matching_loss
from qparse_lite.train.pairs import DeviceCorpus
from qparse_lite.train.sampler import PairSampler
from qparse_lite.train.trunk_cache import trunk_maps
from qparse_lite.train.trunk_pairs import LabelShares, TrunkPairSampler


def main() -> None:
    corpus_dir, knn_train, knn_val, variant, steps, lr = sys.argv[1:7]
    steps, lr = int(steps), float(lr)
    torch.set_num_threads(1)
    c = Corpus.load(corpus_dir)
    maps = trunk_maps(c)
    tr = ensure_knn(c, "train", 30, "efficientnet-lite0-learned", knn_train, Path("."))
    va = ensure_knn(c, "val", 9, "efficientnet-lite0-learned", knn_val, Path("."))
    d = DeviceCorpus.from_corpus(c)
    s = PairSampler(d, c.split("train"), tr, batch_size=128, pairs_per_epoch=128 * steps, group_size=16,
                    label_power=0.5, seed=0)  # fmt: skip
    vs = PairSampler(d, c.split("val"), va, batch_size=128, seed=0, augment=False)
    torch.manual_seed(0)
    m = build_model(variant, input_size=maps.input_size)
    sh = LabelShares(d)
    ts, tvs = TrunkPairSampler(s, maps, m.cfg, sh), TrunkPairSampler(vs, maps, m.cfg, sh)
    tn = s.fit_target_norm(50_000)
    val = val_set(vs, 9, 4096, 7, 0.8)
    opt = torch.optim.AdamW(m.parameters(), lr=lr)
    t0, acc = time.time(), []
    for i, b in enumerate(ts):
        cn, tt = tn.normalise(b.c, b.t)
        loss, lc, lt = matching_loss(m(b.I, b.R, b.group), cn, tt, b.has_t, disp_loss="huber")
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc.append([lc.item(), lt.item()])
        if (i + 1) % 100 == 0:
            a = np.mean(acc[-100:], 0)
            print(i + 1, f"loss_c {a[0]:.3f} loss_t {a[1]:.3f}", f"{time.time() - t0:.0f} s", flush=True)
    ev = evaluate(m, tvs, val, tn, 256, False, False)
    print(f"{variant}: val auc {ev['auc']:.3f} auc_macro {ev['auc_macro']:.3f} disp_err {ev['disp_err']:.5f} "
          f"(trivial {ev['disp_err_trivial']:.5f}, vote auc_macro {ev['auc_vote_macro']:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
