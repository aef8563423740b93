"""Stage 2 — KNN retrieval (paper Sec. 3.1; docs/paper.md §1.2): feature extractors, exact search over the
corpus, retrieval quality against the oracle, and the ImageNet features with their learned head.
"""
