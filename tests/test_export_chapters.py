"""``data_scripts/export_executed_chapters.py``: the committed executed chapters keep their outputs, with small
figures, thumbnails of dataset photos (with the attribution) and no machine paths."""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from qparse_lite.errors import QparseError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_scripts"))
import export_executed_chapters as exp  # noqa: E402


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _plot(h: int = 1200, w: int = 1600) -> np.ndarray:
    """A plot-like image: white, a few flat colour blocks (a label map) and lines."""
    img = np.full((h, w, 3), 255, np.uint8)
    palette = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [0, 0, 128]], np.uint8)
    n = min(h, w) // 2
    img[50 : 50 + n, 50 : 50 + n] = palette[(np.arange(n)[:, None] // 150 + np.arange(n)[None] // 200) % 4]
    img[h - 50 : h - 45, 50 : w - 50] = [31, 119, 180]
    return img


def _photo(h: int = 900, w: int = 1200) -> np.ndarray:
    """A photo-like image: smooth gradients plus noise, tens of thousands of colours."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _run(tmp_path: Path, profile: str = "ccp", status: str = "ok") -> Path:
    run = tmp_path / "runs" / f"{profile}-20261207"
    (run / "notebooks").mkdir(parents=True)
    host = socket.gethostname()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f'profile = "{profile}"\noutput_dir = "{run}"\n')
    params.metadata["tags"] = ["injected-parameters"]
    params.metadata["papermill"] = {"duration": 0.1, "status": "completed"}
    cell = nbformat.v4.new_code_cell("show()", execution_count=2)
    cell.outputs = [
        nbformat.v4.new_output(
            "stream",
            name="stdout",
            text=f"corpus at {run}/corpus, cache /tmp/tmpab12/x.npy, home /home/alice/data, "
            f"on {host}, torch at /opt/venv/lib/python3.11/site-packages/torch\n",
        ),  # fmt: skip
        nbformat.v4.new_output(
            "display_data",
            data={"image/png": _png(_plot()), "text/plain": "<Figure>"},
            metadata={"image/png": {"width": 1600, "height": 1200}},
        ),  # fmt: skip
        nbformat.v4.new_output("display_data", data={"image/png": _png(_photo()), "text/plain": "<Figure>"}),
        nbformat.v4.new_output(
            "display_data",
            data={
                exp.WIDGET_VIEW: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "interactive(children=(FloatSlider(...),))",
            },
        ),  # fmt: skip
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/html": f'<p>{run}/figures/a.png</p><img src="data:image/png;base64,{_png(_plot())}"/>',
                "text/plain": "<HTML>",
            },
        ),  # fmt: skip
        nbformat.v4.new_output(
            "error",
            ename="ValueError",
            evalue=f"bad {run}/x",
            traceback=[f"\x1b[31mValueError\x1b[0m: bad file /root/.cache/x in {run}"],
        ),  # fmt: skip
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 · Test"), params, cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["papermill"] = {"input_path": "/work/x/notebooks/00_test.ipynb", "output_path": str(run),
                                "parameters": {"profile": profile, "output_dir": str(run)}}  # fmt: skip
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, run / "notebooks" / "00_test.ipynb")
    (run / "status.json").write_text(json.dumps({"_profile": profile, "00_test": {"status": status}}))
    (run / "run.json").write_text(json.dumps({"profile": profile, "git_commit": "0123456789abcdef",
                                              "finished_at": "2026-12-07T01:00:00+00:00"}))  # fmt: skip
    return run


def _images(nb: nbformat.NotebookNode) -> list[Image.Image]:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if "image/png" in o.get("data", {}):
                out.append(Image.open(io.BytesIO(base64.b64decode(o.data["image/png"]))))
    return out


def test_export_keeps_outputs_shrinks_figures_and_scrubs_paths(tmp_path):
    run = _run(tmp_path)
    out = tmp_path / "results" / "ccp" / "notebooks"
    out.mkdir(parents=True)
    (out / "99_stale.ipynb").write_text("{}")  # a chapter of an earlier run: the folder holds this run only
    rows = exp.export_run(run, out, max_px=400, photo_px=160)
    assert [p.name for p in sorted(out.glob("*.ipynb"))] == ["00_test.ipynb"]
    assert rows[0]["images"] == 2 and rows[0]["photos"] == 1
    nb = nbformat.read(out / "00_test.ipynb", as_version=4)
    nbformat.validate(nb)
    plot, photo = _images(nb)
    assert max(plot.size) == 400 and max(photo.size) == 160  # the plot at --max-px, the photo a thumbnail
    text = (out / "00_test.ipynb").read_text()
    raw = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert len(text) < 200_000  # two 1600-px figures of several hundred KiB each became small
    # the attribution follows the photo, and only the photo
    outputs = nb.cells[3].outputs
    kinds = [o.output_type for o in outputs]
    assert kinds == [
        "stream",
        "display_data",
        "display_data",
        "stream",
        "display_data",
        "display_data",
        "error",
    ]
    assert "Clothing Co-Parsing" in outputs[3].text and "Apache-2.0" in outputs[3].text
    # no machine text: run folder, temporary paths, homes, site-packages, host name, ANSI codes
    for s in (str(run), str(tmp_path), "/tmp/tmpab12", "/home/alice", "/root/", "/opt/venv", "\x1b["):
        assert s not in text, s
    host = socket.gethostname()
    if len(host) >= 3:
        assert host not in raw
    assert (
        "corpus at RUN/corpus" in outputs[0].text and "TMP" in outputs[0].text and "~/data" in outputs[0].text
    )
    assert "SITE/torch" in outputs[0].text and "RUN/x" in outputs[6].evalue
    assert outputs[5].data["text/html"].startswith("<p>RUN/figures/a.png</p>")
    # the HTML's embedded figure was shrunk too
    html_png = exp._DATA_PNG.search(outputs[5].data["text/html"]).group(1)
    assert max(Image.open(io.BytesIO(base64.b64decode(html_png))).size) == 400
    # widget views, widget state and papermill's metadata are gone; the header names run and commit
    assert exp.WIDGET_VIEW not in raw and outputs[4].data["text/plain"].startswith("interactive(")
    assert "widgets" not in nb.metadata and "papermill" not in nb.metadata
    assert "papermill" not in nb.cells[2].metadata
    assert nb.cells[0].cell_type == "markdown" and "commit `0123456`" in nb.cells[0].source
    assert "Apache-2.0" in nb.cells[0].source and nb.cells[1].source.startswith("# 00 · Test")
    assert 'output_dir = "RUN"' in nb.cells[2].source


def test_quick_profile_has_no_thumbnails_or_attribution(tmp_path):
    run = _run(tmp_path, profile="quick")
    rows = exp.export_run(run, tmp_path / "out", max_px=400, photo_px=160)
    nb = nbformat.read(tmp_path / "out" / "00_test.ipynb", as_version=4)
    assert rows[0]["photos"] == 0 and [max(i.size) for i in _images(nb)] == [400, 400]
    assert "Clothing Co-Parsing" not in json.dumps(nb)


def test_photographic_tells_photos_from_plots():
    assert exp.is_photographic(Image.fromarray(_photo(400, 600)))
    assert not exp.is_photographic(Image.fromarray(_plot(600, 800)))


def test_an_unfinished_run_is_refused(tmp_path):
    run = _run(tmp_path, status="failed")
    with pytest.raises(QparseError, match="00_test.*--resume"):
        exp.export_run(run, tmp_path / "out")
    with pytest.raises(QparseError, match="no executed notebooks"):
        exp.export_run(tmp_path, tmp_path / "out")


def test_relative_links_follow_the_copy(tmp_path):
    src, dst = tmp_path / "notebooks", tmp_path / "results" / "ccp" / "notebooks"
    md = "see [the budget](../results/ccp/size_budget.md#top), [web](https://x.org/a) and [here](#sec)"
    assert exp.relink(md, src, dst) == (
        "see [the budget](../size_budget.md#top), [web](https://x.org/a) and [here](#sec)"
    )
    assert exp.relink("![f](fig.png)", src, dst) == "![f](../../../notebooks/fig.png)"


def test_solutions_notebook_follows_the_notebook_rules():
    """notebooks/solutions.ipynb: stored without outputs, the five parameters, a section per chapter; nbval
    runs it (make test's glob is the folder) but qparse reproduce does not (it lists NN_*.ipynb only)."""
    from qparse_lite.pipeline.reproduce import NOTEBOOK_DIR, list_notebooks

    path = NOTEBOOK_DIR / "solutions.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    names = [line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line]
    assert names == ["profile", "data_root", "device", "seed", "output_dir"]
    headings = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    chapters = list_notebooks()
    assert path not in chapters
    for ch in chapters:
        assert f"## {ch.stem[:2]} ·" in headings, f"solutions.ipynb has no section for {ch.name}"
    makefile = (NOTEBOOK_DIR.parent / "Makefile").read_text()
    assert "-p no:randomly notebooks/\n" in makefile  # nbval collects every notebook of the folder
