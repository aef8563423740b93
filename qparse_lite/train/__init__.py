"""Stage 4 — training the M-CNN (paper Sec. 3.2 Eq. (1), Sec. 4.1; docs/paper.md §1.5, §1.9): training pairs
and their sampler, the loss, one epoch and the validation pass, optimiser, checkpoints, the entry point.
"""
