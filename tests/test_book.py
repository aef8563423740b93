"""``data_scripts/build_book.py``: how the book's sources are staged (the build itself and the browser test run
in ``make book-check``, part of ``make test``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_scripts"))
import build_book  # noqa: E402


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "results" / "ccp").mkdir(parents=True)
    (repo / "results" / "quick" / "notebooks").mkdir(parents=True)
    (repo / "docs" / "paper.md").write_text("# Paper\n\nSee the [README](../README.md#two-commands).\n")
    (repo / "results" / "ccp" / "fig5.png").write_bytes(b"\x89PNG fake")
    (repo / "results" / "quick" / "notebooks" / "00_a.ipynb").write_text("{}")
    return repo


def test_links_between_pages_stay_images_are_copied_and_other_files_become_text(tmp_path):
    repo, src = _repo(tmp_path), tmp_path / "src"
    pages = {"README.md", "docs/paper.md", "results/quick/notebooks/00_a.ipynb"}
    text = (
        "[paper](docs/paper.md#1-the-m-cnn-pipeline) · ![Fig. 5](results/ccp/fig5.png) · "
        '<img src="results/ccp/fig5.png" width="300"> · [code](qparse_lite/cli.py) · '
        "[a folder](results/ccp/retrieval/) · [web](https://example.org/x) · [here](#profiles) · "
        "[chapter](results/quick/notebooks/00_a.ipynb)"
    )
    out = build_book.rewrite_links(text, "README.md", pages, repo, src)
    assert "[paper](docs/paper.md#1-the-m-cnn-pipeline)" in out
    assert "![Fig. 5](results/ccp/fig5.png)" in out and '<img src="results/ccp/fig5.png" width="300">' in out
    assert (src / "results" / "ccp" / "fig5.png").read_bytes() == b"\x89PNG fake"
    assert "· code ·" in out and "· a folder ·" in out  # not pages of the book: the text stays, the link goes
    assert "[web](https://example.org/x)" in out and "[here](#profiles)" in out
    assert "[chapter](results/quick/notebooks/00_a.ipynb)" in out
    # from a page in a folder, the README is the book's index
    back = build_book.rewrite_links("[README](../README.md#two-commands)", "docs/paper.md", pages, repo, src)
    assert back == "[README](../index.md#two-commands)"


def test_sources_are_the_pages_and_the_executed_chapters_that_exist(tmp_path):
    repo = _repo(tmp_path)
    (repo / "README.md").write_text("# qparse-lite\n")
    pages, chapters = build_book.book_sources(repo)
    assert pages == ["README.md", "docs/paper.md"]
    assert chapters == {"results/quick/notebooks": ["results/quick/notebooks/00_a.ipynb"]}


def test_mathjax_is_vendored_from_the_wheel(tmp_path):
    pytest.importorskip("jupyter_server_mathjax")
    dst = build_book.vendor_mathjax(tmp_path / "mathjax")
    assert (dst / "MathJax.js").is_file()
    assert (dst / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert (dst / "jax" / "output" / "HTML-CSS" / "fonts" / "STIX-Web").is_dir()
    assert not (dst / "extensions" / "a11y").exists() and not (dst / "jax" / "output" / "SVG").exists()
    conf = (Path(build_book.REPO) / "docs" / "book" / "conf.py").read_text()
    assert 'mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"' in conf
    assert "http" not in conf.split("mathjax_path")[1].splitlines()[0]  # a local path, no CDN
