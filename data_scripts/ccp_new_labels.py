"""CCP held-out label: the M-CNN's zero-retraining route against the parametric net's fine-tuning.

Usage: ``python data_scripts/ccp_new_labels.py CORPUS MCNN_WITHOUT MCNN_WITH PARAM_WITHOUT FT_PREFIX WORK OUT.csv``
where MCNN_WITHOUT is ``qparse train --holdout-label outerwear ...``, MCNN_WITH the same budget with the label,
PARAM_WITHOUT ``qparse baseline train --holdout-label outerwear ...`` and ``FT_PREFIX<f>`` the runs of
``qparse baseline finetune --fraction <f>`` for f in 0.1, 0.25, 0.5, 1.0. Writes OUT.csv with one row per
(method, fraction): annotated_images, label_f1, other_avg_f1, retrain_s, note.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from qparse_lite.data.prepare import Corpus
from qparse_lite.evaluation.evaluate import evaluate
from qparse_lite.evaluation.newlabels import fraction_sweep, label_f1_summary
from qparse_lite.profiles import Profile
from qparse_lite.retrieval.search import split_neighbours
from qparse_lite.train.checkpoint import load_model

LABEL = "outerwear"
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)


def main(corpus_dir: str, a_dir: str, b_dir: str, p_base: str, ft: str, work: str, out: str) -> pd.DataFrame:
    torch.set_num_threads(1)
    c = Corpus.load(corpus_dir)
    net, tn, meta = load_model(a_dir)
    prof = Profile(**meta["profile"])
    nb = split_neighbours(c, "test", 9, prof.features, f"{work}/knn")
    kw = {"xi1": prof.xi1, "xi2": prof.xi2, "erosion": prof.erosion_px, "device": "cpu"}
    sw = fraction_sweep(c, LABEL, FRACTIONS, nb, 9, model=net, target_norm=tn, model_name="M-CNN (no retraining)",
                        trained_on_label=False, parser_kw=kw, label_transfer=True, seed=0)  # fmt: skip
    rows = [{"method": r["model"], "fraction": r["annotated_fraction"], "annotated_images": r["annotated_images"],
             "label_f1": r["label_f1"], "other_avg_f1": r["other_avg_f1"], "retrain_s": 0.0,
             "note": f"trained without {LABEL}" if "M-CNN" in r["model"] else "no training"}
            for _, r in sw.iterrows()]  # fmt: skip
    netb, tnb, _ = load_model(b_dir)
    r = fraction_sweep(c, LABEL, [1.0], nb, 9, model=netb, target_norm=tnb, model_name="M-CNN trained with the label",
                       trained_on_label=True, parser_kw=kw, seed=0).iloc[0]  # fmt: skip
    rows.append({"method": r["model"], "fraction": 1.0, "annotated_images": r["annotated_images"],
                 "label_f1": r["label_f1"], "other_avg_f1": r["other_avg_f1"],
                 "retrain_s": json.loads(Path(b_dir, "run.json").read_text()).get("train_s"),
                 "note": f"same budget, {LABEL} in training"})  # fmt: skip
    for frac, d in [(0.0, p_base)] + [(f, f"{ft}{f}") for f in FRACTIONS[1:]]:
        rec = json.loads(Path(d, "run.json").read_text())
        s = label_f1_summary(evaluate(c, f"{work}/eval_{frac}", method="parametric", model=d), LABEL)
        rows.append({"method": "parametric LR-ASPP (fine-tuned)" if frac else "parametric LR-ASPP (trained without it)",
                     "fraction": frac, "annotated_images": rec.get("images_annotated", 0), "label_f1": s["label_f1"],
                     "other_avg_f1": s["other_avg_f1"], "retrain_s": rec["train_s"] if frac else 0.0,
                     "note": "1 epoch of fine-tuning from the held-out base" if frac else f"{LABEL} as background"})  # fmt: skip
    df = pd.DataFrame(rows)
    df.to_csv(out, index=False, float_format="%.2f")
    return df


if __name__ == "__main__":
    print(main(*sys.argv[1:8]).to_string())
