"""Stage 6 — evaluation (paper Sec. 4; docs/paper.md §2-§6): the harness behind Table 1, Table 2 and Fig. 5,
scoring of label-map folders, the raw-photo evaluation, the new-label study, the paper's reported numbers,
the claims judged with a paired bootstrap, and ``report.md``.
"""
