"""Stage 1 — the data (paper Sec. 3.1, Sec. 4.1; docs/paper.md §1.1): datasets, label statistics, the
human-centric crop, the person detectors for raw photos, and the memory-mapped corpus every later stage reads.
"""
