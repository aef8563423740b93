"""qparse-lite: a teaching and reproduction kit for M-CNN quasi-parametric human parsing.

Liu et al., "Matching-CNN Meets KNN: Quasi-Parametric Human Parsing", CVPR 2015.
The science lives here, one module per concern (``labels``, ``datasets``, ``prepare``, ``metrics``,
``retrieval``, ``pairs``, ``mcnn``, ``train``, ``parse``, ``postprocess``, ...); the notebooks in
``notebooks/`` import it and explain it.
"""

__version__ = "0.1.0"
