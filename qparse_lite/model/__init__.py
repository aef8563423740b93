"""Stage 3 — the Matching-CNN (paper Sec. 3.2, Fig. 2; docs/paper.md §1.3-1.4): the network, its ablation
variants, their receptive fields and a per-layer summary.
"""
