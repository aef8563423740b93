"""The paper travels with the kit: docs/paper.md is the one account of it, and what cites it resolves.

* nothing in the repository refers to files beside it (``../shared``, the source notes ``NOTES.md``) except the
  tests' and CI's use of the CCP mirror;
* every ``docs/paper.md §N`` citation names a section that exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAPER = REPO / "docs" / "paper.md"
#: The only files that may name the folder beside the repository: the CCP mirror of the tests, and CI.
MIRROR_USERS = {"tests/conftest.py", ".ci/run"}
OUTSIDE = re.compile(r"\.\./shared|shared/(paper|datasets|seeds|docs)|NOTES\.md|NOTES §")
CITATION = re.compile(r"docs/paper\.md §\s?(\d+(?:\.\d+)?)(?:\s?[-–]\s?(\d+(?:\.\d+)?))?")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.splitlines():
        p = REPO / name
        if p.suffix in {".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".txt", ".cfg", ""} and p.is_file():
            files.append(p)
    return files


def _sections() -> set[str]:
    """Section numbers of docs/paper.md: ``## 2. Metrics`` → "2", ``### 1.8 Post-processing`` → "1.8"."""
    return {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", PAPER.read_text(), re.M)}


def test_paper_md_mirrors_the_numbering_code_cites():
    secs = _sections()
    assert {f"1.{i}" for i in range(1, 10)} <= secs and {"1", "2", "3", "4", "5", "6"} <= secs


def test_nothing_refers_outside_the_repository():
    bad = []
    for p in _tracked_text_files():
        rel = p.relative_to(REPO).as_posix()
        if rel in MIRROR_USERS or rel == "tests/test_docs.py":
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), start=1):
            if OUTSIDE.search(line):
                bad.append(f"{rel}:{n}: {line.strip()[:120]}")
    assert not bad, "references to files outside the repository (cite docs/paper.md §N instead):\n" + "\n".join(bad)


def test_every_citation_of_paper_md_resolves():
    secs = _sections()
    bad = []
    for p in _tracked_text_files():
        for m in CITATION.finditer(p.read_text(errors="replace")):
            for sec in filter(None, m.groups()):
                if sec not in secs:
                    bad.append(f"{p.relative_to(REPO)}: {m.group(0)}")
    assert not bad, "citations of sections docs/paper.md does not have:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_should():
    assert OUTSIDE.search("see ../shared/paper/NOTES.md §2") and OUTSIDE.search("NOTES §1.8")
    assert not OUTSIDE.search("the test image's path shared by all pairs; shared_paths=True")
    assert [m.groups() for m in CITATION.finditer("docs/paper.md §1.3-1.5, docs/paper.md §2")] == [
        ("1.3", "1.5"), ("2", None)
    ]


def test_readme_package_table_lists_exactly_the_modules():
    """The README's package table names every module of the package, each in its folder, and nothing else."""
    import qparse_lite

    pkg = Path(qparse_lite.__file__).parent
    text = (REPO / "README.md").read_text()
    table = text[text.index("## The package"):].split("\n\n")[2]
    listed = set()
    for row in table.splitlines()[2:]:
        folder_cell, modules_cell = row.split("|")[1:3]
        folder = re.match(r"\s*`(\w+)/`", folder_cell)
        prefix = folder.group(1) + "/" if folder else ""
        listed |= {prefix + m for m in re.findall(r"`(\w+)`", modules_cell)}
    actual = {p.relative_to(pkg).with_suffix("").as_posix() for p in pkg.rglob("*.py")
              if p.name not in ("__init__.py", "__main__.py")}  # fmt: skip
    assert listed == actual


def test_dotted_names_in_the_docs_resolve():
    """Every ``qparse_lite.x.y`` named in README, DEVELOPING.md and docs/ is a module or a name in one."""
    from conftest import resolve_dotted

    missing = []
    for doc in [REPO / "README.md", REPO / "DEVELOPING.md", *sorted((REPO / "docs").glob("*.md"))]:
        for ref in sorted(set(re.findall(r"qparse_lite(?:\.\w+)+", doc.read_text()))):
            if resolve_dotted(ref) is None:
                missing.append(f"{doc.name}: {ref}")
    assert missing == []


def test_developing_headings_name_real_modules():
    """DEVELOPING.md's contract headings name modules (``data/prepare``) and folders that exist."""
    import qparse_lite

    pkg = Path(qparse_lite.__file__).parent
    text = (REPO / "DEVELOPING.md").read_text()
    bad = []
    for head in re.findall(r"^### (.*)$", text, flags=re.M):
        folder = re.search(r"`(\w+)/`", head)
        for name in re.findall(r"`([\w/]+)`", head):
            path = name.rstrip("/")
            if folder and "/" not in name:
                path = f"{folder.group(1)}/{name}"
            if not ((pkg / f"{path}.py").exists() or (pkg / path).is_dir()):
                bad.append(name)
    assert bad == []
