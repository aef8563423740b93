"""Sphinx configuration of the qparse-lite book (``make book``; sources staged by data_scripts/build_book.py).

Offline by construction: the executed chapters are rendered as stored (no execution), and MathJax is served
from the book's own ``_static/mathjax`` (copied from the ``jupyter-server-mathjax`` wheel), never a CDN.
"""

project = "qparse-lite"
author = "qparse-lite contributors"
copyright = "qparse-lite contributors, Apache-2.0"
root_doc = "index"
extensions = ["myst_nb", "sphinx.ext.mathjax"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# MyST: $...$ / $$...$$ math, GitHub-style heading anchors (the README's links use them), HTML images
myst_enable_extensions = ["dollarmath", "amsmath", "html_image", "colon_fence"]
myst_heading_anchors = 4
myst_dmath_double_inline = True

# myst-nb: render the stored outputs of the executed chapters; never run a kernel
nb_execution_mode = "off"
nb_merge_streams = True
nb_output_stderr = "show"
myst_update_mathjax = False  # no MathJax-3 `window.MathJax` object: it would replace the 2.7 configuration

# MathJax 2.7 from the jupyter-server-mathjax wheel, copied into _static/mathjax by the build script. The wheel
# ships its combined configuration (TeX + AMS, HTML-CSS output) and the STIX-Web fonts only (as Jupyter's
# classic notebook used them).
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {"processEscapes": True, "processEnvironments": True},
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
    "MMLorHTML": {"prefer": "HTML"},
    # one typesetting pass (no quick preview first: a chapter has a hundred formulas), and no hidden MathML
    # copy (its styles would fetch TeX fonts the wheel does not ship)
    "fast-preview": {"disabled": True},
    "CHTML-preview": {"disabled": True},
    "AssistiveMML": {"disabled": True},
    "menuSettings": {"assistiveMML": False, "CHTMLpreview": False},
    "showProcessingMessages": False,
    "messageStyle": "none",
}

html_theme = "furo"
html_title = "qparse-lite: M-CNN meets KNN, reproduced"
html_static_path = ["_static"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
suppress_warnings = ["mystnb.unknown_mime_type"]
