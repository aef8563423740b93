"""Stage 5 — quasi-parametric parsing of a test image (paper Sec. 3.3, Fig. 1; docs/paper.md §1.6-1.8): the
parser that runs retrieval and the M-CNN, and the post-processing into a label map.
"""
