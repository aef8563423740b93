"""Build the kit as a static HTML book, offline: ``python data_scripts/build_book.py [OUT]`` (``make book``).

The book is the README (its front page), docs/paper.md (equations rendered by MathJax), the notebook guide,
the CCP results and their report, and the executed chapters committed by
``data_scripts/export_executed_chapters.py`` (``results/ccp/notebooks/`` and ``results/quick/notebooks/``,
whichever exist), rendered with their stored outputs: nothing is executed. Sphinx + MyST-NB with the furo
theme (the ``book`` extra of pyproject.toml); MathJax 2.7 is copied from the ``jupyter-server-mathjax``
wheel into the book, so no page loads anything from the network.

Each source is staged at its path in the repository under ``OUT/src`` (the README as ``index.md``); relative
links between staged pages are kept, images they show are copied beside them, and links to files that are
not pages of the book (code, CSV, folders) become plain text. The HTML goes to ``OUT/html``
(default ``OUT`` = ``build/book``); ``data_scripts/check_book.py OUT/html`` tests it in a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = [
    "README.md",
    "docs/paper.md",
    "notebooks/README.md",
    "results/ccp/README.md",
    "results/ccp/report.md",
]
CHAPTERS = {
    "results/ccp/notebooks": "Chapters, executed on real data (CCP profile)",
    "results/quick/notebooks": "Chapters, executed on the quick profile (synthetic data)",
}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
_IMG_SRC = re.compile(r'(<img\b[^>]*\bsrc=")([^"]+)(")')
_EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|#|/)", re.I)


def staged_name(repo_path: str) -> str:
    """Where a repository file lives in the book's sources (the README is the front page)."""
    return "index.md" if repo_path == "README.md" else repo_path


def book_sources(repo: Path = REPO) -> tuple[list[str], dict[str, list[str]]]:
    """The pages (repository paths) and the executed chapters per folder that exist in ``repo``."""
    pages = [p for p in PAGES if (repo / p).is_file()]
    chapters = {d: sorted(p.relative_to(repo).as_posix() for p in (repo / d).glob("[0-9][0-9]_*.ipynb"))
                for d in CHAPTERS}  # fmt: skip
    return pages, {d: c for d, c in chapters.items() if c}


def rewrite_links(text: str, doc: str, pages: set[str], repo: Path, src: Path) -> str:
    """Rewrite the relative links of ``doc`` (a repository path) for the book (see the module docstring)."""
    here = os.path.dirname(doc)
    staged_here = os.path.dirname(staged_name(doc))

    def target(raw: str) -> str | None:
        """The new link target, or None when it leaves the book."""
        path, hash_, anchor = raw.partition("#")
        if not path:
            return raw
        rp = os.path.normpath(os.path.join(here, path)).replace(os.sep, "/")
        suffix = hash_ + anchor
        if rp in pages:
            return Path(os.path.relpath(staged_name(rp), staged_here or ".")).as_posix() + suffix
        file = repo / rp
        if file.is_file() and file.suffix.lower() in IMAGE_EXT:
            (src / rp).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, src / rp)
            return Path(os.path.relpath(rp, staged_here or ".")).as_posix()
        return None

    def link(m: re.Match[str]) -> str:
        bang, label, raw = m.groups()
        if _EXTERNAL.match(raw):
            return m.group(0)
        new = target(raw)
        if new is None:
            return label if not bang else f"*{label}*"
        return f"{bang}[{label}]({new})"

    def img(m: re.Match[str]) -> str:
        raw = m.group(2)
        if _EXTERNAL.match(raw) or raw.startswith("data:"):
            return m.group(0)
        new = target(raw)
        return m.group(0) if new is None else m.group(1) + new + m.group(3)

    return _IMG_SRC.sub(img, _LINK.sub(link, text))


def _toctree(caption: str, entries: list[str]) -> str:
    body = "\n".join(os.path.splitext(e)[0] for e in entries)
    return f"\n```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n{body}\n```\n"


def stage(src: Path, repo: Path = REPO) -> list[str]:
    """Write the book's sources into ``src`` (emptied first); return the staged documents."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    pages, chapters = book_sources(repo)
    docs = set(pages) | {c for cs in chapters.values() for c in cs}
    staged = []
    for page in pages:
        text = rewrite_links((repo / page).read_text(), page, docs, repo, src)
        if page == "README.md":
            text += "\n## Contents of this book\n"
            text += _toctree("The paper", ["docs/paper.md"])
            for folder, cs in chapters.items():
                text += _toctree(CHAPTERS[folder], cs)
            text += _toctree(
                "Guides and results", [p for p in pages if p not in {"README.md", "docs/paper.md"}]
            )
        out = src / staged_name(page)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        staged.append(staged_name(page))
    for cs in chapters.values():
        for chapter in cs:
            nb = json.loads((repo / chapter).read_text())
            for cell in nb["cells"]:
                if cell["cell_type"] == "markdown":
                    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                    cell["source"] = rewrite_links(source, chapter, docs, repo, src)
            (src / chapter).parent.mkdir(parents=True, exist_ok=True)
            (src / chapter).write_text(json.dumps(nb, indent=1))
            staged.append(chapter)
    shutil.copy2(repo / "docs" / "book" / "conf.py", src / "conf.py")
    vendor_mathjax(src / "_static" / "mathjax")
    return staged


def vendor_mathjax(dst: Path) -> Path:
    """Copy MathJax 2.7 from the ``jupyter-server-mathjax`` wheel (without the accessibility extensions, the
    non-English menus and the SVG output, which the book does not load)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SystemExit(
            "jupyter-server-mathjax is missing. Fix: make venv (pyproject extra `book`)."
        ) from None
    static = Path(jupyter_server_mathjax.__file__).parent / "static"

    def skip(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(static).as_posix()
        if rel == "extensions":
            return {"a11y"}
        if rel == "localization":
            return {n for n in names if n != "en"}
        if rel == "jax/output":
            return {"SVG"}  # the book uses the HTML-CSS output (conf.py)
        return set()

    shutil.copytree(static, dst, ignore=skip)
    return dst


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(out: Path, *, strict: bool = False) -> Path:
    """Stage the sources and run Sphinx; return the HTML folder."""
    src, html = out / "src", out / "html"
    t0 = time.perf_counter()
    staged = stage(src)
    if html.exists():
        shutil.rmtree(html)
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-q",
        "-d",
        str(out / "doctrees"),
        str(src),
        str(html),
    ]
    if strict:
        cmd.insert(4, "-W")
    subprocess.run(cmd, check=True)
    secs = time.perf_counter() - t0
    print(f"book: {len(staged)} pages in {html} ({_size(html) / 2**20:.1f} MiB) in {secs:.0f} s")
    return html


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "build" / "book", help="default build/book")
    ap.add_argument("--strict", action="store_true", help="turn Sphinx warnings into errors")
    args = ap.parse_args(argv)
    build(args.out.resolve(), strict=args.strict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
