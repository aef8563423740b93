"""The notebook rules (notebooks/README.md): stored without outputs, one ``parameters`` cell as the whole
interface, kernel ``python3``; and ``qparse reproduce`` failing loudly, naming the notebook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from qparse_lite.errors import QparseError
from qparse_lite.pipeline.reproduce import NOTEBOOK_DIR, list_notebooks, reproduce

PARAMETERS = ["profile", "data_root", "device", "seed", "output_dir"]
NOTEBOOKS = list_notebooks()


def test_the_reading_order_is_complete():
    names = [p.stem for p in NOTEBOOKS]
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(len(names))]
    for stem in ("00_setup_and_data", "01_knn_retrieval", "02_mcnn_architecture", "03_training",
                 "04_parsing_step_by_step", "05_reproduce_tables", "06_new_labels_without_retraining"):  # fmt: skip
        assert stem in names
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    for n in names:
        assert n in readme, f"notebooks/README.md does not list {n}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_one_parameters_cell(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{path.name}: outputs stored; clear them"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    names = [line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line]
    assert names == PARAMETERS
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.stem[:2]} ·")
    assert "papermill" not in json.dumps(nb.metadata)  # no executed-notebook metadata committed


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'profile = "quick"\ndata_root = None\ndevice = "auto"\nseed = 0\noutput_dir = None'
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 · test"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_reproduce_stops_naming_the_notebook_and_resumes(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_ok.ipynb", "open(output_dir + '/00.txt', 'w').write(str(seed))")
    _notebook(
        nbs / "01_data.ipynb",
        "from pathlib import Path\nfrom qparse_lite.errors import QparseError\n"
        "if data_root and not Path(data_root).is_dir():\n"
        "    raise QparseError(f'{data_root}: no dataset here. Fix: qparse data download --dataset ccp --data-root DIR')",
    )
    out = tmp_path / "run"
    with pytest.raises(QparseError) as e:
        reproduce("quick", out, data_root=str(tmp_path / "missing"), notebook_dir=nbs, seed=3)
    msg = str(e.value)
    assert "01_data.ipynb" in msg and "no dataset here" in msg and "--resume" in msg
    status = json.loads((out / "status.json").read_text())
    assert status["00_ok"]["status"] == "ok" and status["01_data"]["status"] == "failed"
    assert len(status["00_ok"]["load_before"]) == len(status["00_ok"]["load_after"]) == 3  # how busy it was
    assert (out / "00.txt").read_text() == "3"
    (out / "00.txt").unlink()
    run = reproduce("quick", out, resume=True, data_root=str(tmp_path), notebook_dir=nbs, seed=3)
    assert not (out / "00.txt").exists()  # 00 was complete: skipped
    assert json.loads((run / "status.json").read_text())["01_data"]["status"] == "ok"
    assert (run / "report.md").is_file() and (run / "notebooks" / "01_data.html").is_file()
    rec = json.loads((run / "run.json").read_text())
    assert rec["seed"] == 3 and rec["git_commit"] and rec["hardware"]


def test_reproduce_real_notebook_with_a_bad_data_root(tmp_path):
    """The injected failure of the issue: the ccp profile with a data root that does not exist."""
    with pytest.raises(QparseError) as e:
        reproduce("ccp", tmp_path / "run", data_root=str(tmp_path / "nowhere"), notebooks=["00"])
    assert "00_setup_and_data.ipynb" in str(e.value)


# -- checks that can fail ------------------------------------------------------------------------------
# Notebooks are stored without outputs, so nbval has nothing to compare a ``# NBVAL_CHECK_OUTPUT`` cell with:
# it skips cells whose stored execution_count is None, and the marker checks nothing. Notebooks check what
# they show with ``assert`` instead, which nbval (--nbval-lax) reports as a failing cell.
MARKER = "NBVAL_CHECK_OUTPUT"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_output_check_markers(path: Path):
    nb = nbformat.read(path, as_version=4)
    marked = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and MARKER in c.source]
    assert not marked, (
        f"{path.name}: cell(s) {marked} carry # {MARKER}, which checks nothing in a notebook stored without "
        "outputs; replace it with asserts on the values the cell shows"
    )


def _nbval(*paths: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "--nbval-lax", "--nbval-current-env", "-p", "no:randomly",
           "-p", "no:cacheprovider", *(p.name for p in paths)]  # fmt: skip
    return subprocess.run(cmd, cwd=paths[0].parent, capture_output=True, text=True, timeout=600)


def test_a_false_assert_in_a_notebook_fails_nbval(tmp_path):
    """A copy of notebook 00 cut down to its title, parameters, imports and the checksum-list cell (seconds to
    run), twice: as it is, and with one of its asserts made false. One nbval run: the first copy passes, the
    second fails on that cell with an AssertionError."""
    src = nbformat.read(NOTEBOOK_DIR / "00_setup_and_data.ipynb", as_version=4)
    keep = [c for c in src.cells if c is src.cells[0] or "parameters" in c.metadata.get("tags", [])
            or "ws = Workspace(" in c.source or "sums = read_sums(CCP_SUMS_FILE)" in c.source]  # fmt: skip
    assert len(keep) == 4, "notebook 00 changed: pick the cells again"
    params = next(c for c in keep if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("output_dir = None", f"output_dir = {str(tmp_path / 'ws')!r}")
    check = keep[-1]
    assert "assert len(sums) == 2010" in check.source
    src.cells = keep
    good, bad = tmp_path / "nb_good.ipynb", tmp_path / "nb_bad.ipynb"
    nbformat.write(src, good)
    check.source = check.source.replace("assert len(sums) == 2010", "assert len(sums) == 2011")  # now false
    nbformat.write(src, bad)
    res = _nbval(good, bad)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    failed = [ln for ln in res.stdout.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED nb_bad.ipynb::Cell 2")  # code cells count from 0, out[-3000:]
    assert "AssertionError" in res.stdout and "1 failed" in res.stdout and "passed" in res.stdout


# -- chapters that read like chapters: short cells, short lines, a summary and exercises ----------------
MAX_CODE_LINE = 100
"""Longest code line in a notebook (rasbt's chapters stay under 88; the package's formatter allows 110)."""
MAX_MEAN_MARKDOWN = 360
"""Mean characters per markdown cell in a notebook (rasbt's ch04: about 265). A long explanation is several
short cells, or a page under results/ or docs/ that the chapter links."""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_cells_are_short(path: Path):
    nb = nbformat.read(path, as_version=4)
    long = [(i, len(line)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in c.source.splitlines() if len(line) > MAX_CODE_LINE]  # fmt: skip
    assert not long, f"{path.name}: code lines over {MAX_CODE_LINE} characters (cell, length): {long}"
    md = [len(c.source) for c in nb.cells if c.cell_type == "markdown"]
    mean = sum(md) / len(md)
    assert mean <= MAX_MEAN_MARKDOWN, (
        f"{path.name}: markdown cells average {mean:.0f} characters (at most {MAX_MEAN_MARKDOWN}); "
        "split long cells, or move a study to a linked page"
    )
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()]
    assert "## Summary" in headings and "## Exercises" in headings, f"{path.name}: keep Summary and Exercises"


def test_a_long_line_or_long_markdown_fails_the_check(tmp_path, monkeypatch):
    """The check above reads what it should: a notebook with a 101-character code line, or markdown cells
    averaging more than the bound, fails it."""
    def chapter(code: str, markdown: str) -> Path:
        p = tmp_path / "00_x.ipynb"
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell(code),
                    nbformat.v4.new_markdown_cell("## Summary\n\n## Exercises")]  # fmt: skip
        nbformat.write(nb, p)
        return p

    test_chapter_cells_are_short(chapter("x = 1", "# 00 · x"))
    with pytest.raises(AssertionError, match="code lines over 100"):
        test_chapter_cells_are_short(chapter("x = " + "1" * 97, "# 00 · x"))
    with pytest.raises(AssertionError, match="markdown cells average"):
        test_chapter_cells_are_short(chapter("x = 1", "a" * (3 * MAX_MEAN_MARKDOWN)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapters_name_the_package_as_it_is_laid_out(path: Path):
    """A chapter imports each name from the module that defines it (no second home), and every
    ``qparse_lite.x.y`` or ``qparse_lite/x/y.py`` its text names exists."""
    import ast
    import importlib
    import re

    from conftest import resolve_dotted

    nb = nbformat.read(path, as_version=4)
    repo = NOTEBOOK_DIR.parent
    wrong = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            for node in ast.walk(ast.parse(c.source)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qparse_lite"):
                    mod = importlib.import_module(node.module)
                    for alias in node.names:
                        obj = getattr(mod, alias.name, None)
                        home = getattr(obj, "__module__", node.module) if hasattr(obj, "__qualname__") else None
                        if obj is None or (home and home != node.module):
                            wrong.append(f"cell {i}: from {node.module} import {alias.name} (defined in {home})")
        for ref in set(re.findall(r"qparse_lite/[\w/]+\.py", c.source)):
            if not (repo / ref).is_file():
                wrong.append(f"cell {i}: {ref} does not exist")
        for ref in set(re.findall(r"qparse_lite(?:\.[A-Za-z_]\w*)+", c.source)):
            if resolve_dotted(ref) is None:
                wrong.append(f"cell {i}: {ref} does not resolve")
    assert wrong == [], f"{path.name}: " + "; ".join(wrong)
