"""Figures: the data, retrieval, training pairs and curves, and the parse stages of Fig. 1 (used by the
notebooks and the report; no stage imports them to compute a result).
"""
