"""Export the executed chapters of a ``qparse reproduce`` run for committing: outputs kept, figures small,
machine text scrubbed, dataset photos only as thumbnails with their attribution.

Usage::

    python data_scripts/export_executed_chapters.py RUN_DIR OUT_DIR [--max-px 800] [--photo-px 320]

``RUN_DIR`` is a folder ``qparse reproduce --out RUN_DIR`` wrote (``notebooks/NN_*.ipynb`` executed, ``run.json``,
``status.json``). Every executed notebook ``NN_*.ipynb`` is written to ``OUT_DIR/NN_*.ipynb`` (the folder's
other ``*.ipynb`` are removed first, so the folder is exactly this run's chapters) with:

- every PNG output (and every ``data:image/png`` inside HTML) downscaled to at most ``--max-px`` on its longer
  side and stored as an optimised palette PNG when that is smaller;
- on a real-data profile (``ccp``, ``atr``), every figure that is photographic (more distinct colours than a
  plot or a label map has, :func:`is_photographic`) at most ``--photo-px``, followed by a line naming the
  dataset and its licence (:data:`ATTRIBUTION`); label maps and plots stay at ``--max-px``;
- machine text scrubbed from sources, outputs and metadata (:func:`scrubber`): the run folder becomes ``RUN``,
  the repository ``REPO``, the dataset root ``DATA``, site-packages ``SITE``, home folders ``~``, temporary
  paths ``TMP``, the host name ``HOST``; ANSI colour codes are removed;
- widget views, widget state and papermill's per-cell timing metadata dropped (they show nothing without a
  kernel); a first markdown cell saying which run, profile and commit produced the outputs.

The source notebooks under ``notebooks/`` stay stored without outputs; only these copies carry them.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from PIL import Image

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = {"ccp", "atr"}
ATTRIBUTION = {
    "ccp": (
        "Photos: Clothing Co-Parsing (W. Yang, P. Luo, L. Lin, CVPR 2014), "
        "bearpaw/clothing-co-parsing@fe34fb7, Apache-2.0; shown as thumbnails."
    ),
    "atr": "Photos: ATR human parsing dataset (X. Liang et al.), as distributed; shown as thumbnails.",
}
PHOTO_COLOURS = 16_000
"""A figure with more distinct RGB colours than this (counted at ``--max-px``) is photographic: plots and
label maps (a 16–18-colour palette plus anti-aliased edges) stay below it (the committed CCP figures: 500–10,600),
one CCP photo in a 2×3-inch panel is above (20,000; a grid of them 30,000–65,000)."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DATA_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=\s]+)")
_DATA_URI = re.compile(r"(data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+)")


def scrubber(run_dir: Path, data_root: str | None = None, repo: Path = REPO) -> Callable[[str], str]:
    """A function that replaces machine paths and names in a string by placeholders (see the module doc)."""
    subs: list[tuple[str, str]] = []
    for path, name in ((run_dir, "RUN"), (data_root, "DATA"), (repo, "REPO")):
        if path:
            p = str(path).rstrip("/")
            subs += [(p, name), (os.path.realpath(p), name)]
    subs.sort(key=lambda s: -len(s[0]))  # the longest (most specific) path first
    patterns: list[tuple[re.Pattern[str], str]] = [
        (re.compile(r"(?<![\w.+-])/[^\s\"'()\[\]<>:]*/(?:site|dist)-packages(?=/)"), "SITE"),
        (
            re.compile(r"(?<![\w.+-])(?:/private)?/(?:tmp|var/tmp|var/folders)(?:/[^\s\"'()\[\]<>`,;:]*)?"),
            "TMP",
        ),
        (re.compile(r"(?<![\w.+-])/home/[^/\s\"']+"), "~"),
        (re.compile(r"(?<![\w.+-])/Users/[^/\s\"']+"), "~"),
        (re.compile(r"(?<![\w.-])/root(?=/|\b)"), "~"),
    ]
    host = socket.gethostname()
    if host and host not in {"localhost"} and len(host) >= 3:
        patterns.append((re.compile(rf"(?<![\w-]){re.escape(host)}(?![\w-])"), "HOST"))

    def scrub_part(text: str) -> str:
        text = patterns[0][0].sub(
            patterns[0][1], text
        )  # site-packages first: it may lie inside the repository
        for old, new in subs:
            text = text.replace(old, new)
        for pat, rep in patterns:
            text = pat.sub(rep, text)
        return text

    def scrub(text: str) -> str:
        text = _ANSI.sub("", text)
        parts = _DATA_URI.split(text)  # base64 payloads (odd indices) are kept as they are
        return "".join(p if i % 2 else scrub_part(p) for i, p in enumerate(parts))

    return scrub


_LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")


def relink(markdown: str, src_dir: Path, dst_dir: Path) -> str:
    """Rewrite the relative Markdown links of a text written in ``src_dir`` so they work from ``dst_dir``."""

    def fix(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", target, re.I):  # a URL, an anchor or an absolute path
            return m.group(0)
        path, _, anchor = target.partition("#")
        new = os.path.relpath(os.path.normpath(os.path.join(src_dir, path)), dst_dir)
        return f"{m.group(1)}({Path(new).as_posix()}{'#' + anchor if anchor else ''})"

    return _LINK.sub(fix, markdown)


def is_photographic(img: Image.Image) -> bool:
    """True when the image has more than :data:`PHOTO_COLOURS` distinct RGB colours (a photo, not a plot)."""
    rgb = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(np.uint32)
    codes = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return len(np.unique(codes)) > PHOTO_COLOURS


def shrink_png(data: bytes, max_px: int, photo_px: int | None = None) -> tuple[bytes, bool]:
    """Downscale a PNG to ``max_px`` (``photo_px`` when it is photographic and ``photo_px`` is given) and
    re-encode it as the smaller of an optimised RGB(A) PNG and a 256-colour palette PNG.

    Returns the new bytes and whether the image was treated as a photo.
    """
    img = Image.open(io.BytesIO(data))
    img.load()
    img = img.convert("RGBA")
    if img.getchannel("A").getextrema()[0] == 255:  # opaque (matplotlib's figures): drop the alpha channel
        img = img.convert("RGB")
    if max(img.size) > max_px:
        img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    photo = photo_px is not None and is_photographic(img)
    if photo and max(img.size) > photo_px:
        img.thumbnail((photo_px, photo_px), Image.Resampling.LANCZOS)
    candidates = []
    for im in (img, img.quantize(colors=256, method=Image.Quantize.FASTOCTREE)):
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        candidates.append(buf.getvalue())
    return min(candidates, key=len), photo


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def export_notebook(
    src: Path, dst: Path, *, scrub: Callable[[str], str], header: str, profile: str,
    max_px: int = 800, photo_px: int = 320,
) -> dict[str, int]:  # fmt: skip
    """Write the exported copy of one executed notebook; return counts (images, photos, bytes)."""
    nb = nbformat.read(src, as_version=4)
    photo_limit = photo_px if profile in REAL_DATA else None
    note = ATTRIBUTION.get(profile, "")
    counts = {"images": 0, "photos": 0}
    for cell in nb.cells:
        cell.source = scrub(cell.source)
        if cell.cell_type == "markdown":
            cell.source = relink(cell.source, REPO / "notebooks", dst.parent)
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = scrub(out.text)
            elif out.output_type == "error":
                out.evalue = scrub(out.evalue)
                out.traceback = [scrub(line) for line in out.traceback]
            else:  # display_data / execute_result
                data = out.get("data", {})
                data.pop(WIDGET_VIEW, None)
                if not data:
                    continue
                photo = False
                if "image/png" in data:
                    png, photo = shrink_png(base64.b64decode(data["image/png"]), max_px, photo_limit)
                    data["image/png"] = _b64(png)
                    counts["images"] += 1
                    if "image/png" in out.get("metadata", {}):
                        out.metadata.pop("image/png")  # the width/height recorded for the original size
                for mime, value in list(data.items()):
                    if mime.startswith("text/") or mime == "application/json":
                        text = value if isinstance(value, str) else json.dumps(value)
                        if mime == "text/html":
                            text = _DATA_PNG.sub(lambda m: _html_png(m, max_px, photo_limit), text)
                        text = scrub(text)
                        data[mime] = text if isinstance(value, str) else json.loads(text)
                if photo and note:
                    counts["photos"] += 1
                    outputs.append(out)
                    out = nbformat.v4.new_output("stream", name="stdout", text=note + "\n")
            outputs.append(out)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    nb.metadata["qparse_export"] = {"profile": profile, "source": f"notebooks/{src.name}"}
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(header))
    nbformat.validate(nb)
    text = nbformat.writes(nb) + "\n"
    atomic_write_text(dst, text)
    counts["bytes"] = len(text.encode())
    return counts


def _html_png(m: re.Match[str], max_px: int, photo_limit: int | None) -> str:
    png, _ = shrink_png(base64.b64decode(re.sub(r"\s", "", m.group(1))), max_px, photo_limit)
    return "data:image/png;base64," + _b64(png)


def _header(nb_name: str, profile: str, commit: str, finished: str, out_dir: Path) -> str:
    src = REPO / "notebooks" / nb_name
    try:
        link = f"[`notebooks/{nb_name}`]({os.path.relpath(src, out_dir)})"
    except ValueError:  # another drive (Windows)
        link = f"`notebooks/{nb_name}`"
    lines = [
        f"> **Executed copy** of {link}: run by `qparse reproduce --profile {profile}` at commit `{commit}`"
        f" (finished {finished}), exported by `python data_scripts/export_executed_chapters.py`.",
        "> The outputs are this run's: timings, versions and trained numbers differ from machine to machine."
        " Paths are replaced by placeholders (`RUN` the run folder, `REPO` the repository, `DATA` the dataset).",
    ]
    if profile in ATTRIBUTION:
        lines.append(f"> {ATTRIBUTION[profile]} Label maps are shown at full size.")
    return "\n".join(lines)


def export_run(
    run_dir: Path, out_dir: Path, *, max_px: int = 800, photo_px: int = 320
) -> list[dict[str, Any]]:
    """Export every executed ``NN_*.ipynb`` of ``run_dir`` into ``out_dir``; return one row per notebook."""
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir).resolve()
    nb_dir = run_dir / "notebooks"
    nbs = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise QparseError(
            f"{nb_dir}: no executed notebooks NN_*.ipynb. Fix: pass the folder `qparse reproduce --out` wrote."
        )
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    failed = [n for n, s in status.items() if not n.startswith("_") and s.get("status") != "ok"]
    if failed:
        raise QparseError(
            f"{run_dir / 'status.json'}: notebooks not complete: {', '.join(failed)}. "
            "Fix: finish the run with `qparse reproduce --resume --out RUN_DIR` first."
        )
    first = nbformat.read(nbs[0], as_version=4).metadata.get("papermill", {}).get("parameters", {})
    profile = str(record.get("profile") or status.get("_profile") or first.get("profile") or "quick")
    commit = str(record.get("git_commit", "unknown"))[:7] + (
        "+dirty" if "dirty" in str(record.get("git_commit")) else ""
    )
    finished = str(record.get("finished_at", "")) or "unknown"
    scrub = scrubber(run_dir, first.get("data_root"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.ipynb"):
        old.unlink()
    rows = []
    for nb in nbs:
        header = _header(nb.name, profile, commit, finished[:10], out_dir)
        counts = export_notebook(nb, out_dir / nb.name, scrub=scrub, header=header, profile=profile,
                                 max_px=max_px, photo_px=photo_px)  # fmt: skip
        rows.append({"notebook": nb.name, **counts})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a folder written by `qparse reproduce --out`")
    ap.add_argument("out_dir", type=Path, help="where the exported notebooks go (e.g. results/ccp/notebooks)")
    ap.add_argument("--max-px", type=int, default=800, help="longer side of every figure (default 800)")
    ap.add_argument(
        "--photo-px", type=int, default=320, help="longer side of photographic figures (default 320)"
    )
    args = ap.parse_args(argv)
    try:
        rows = export_run(args.run_dir, args.out_dir, max_px=args.max_px, photo_px=args.photo_px)
    except QparseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    total = sum(r["bytes"] for r in rows)
    for r in rows:
        print(
            f"{r['notebook']}: {r['images']} images ({r['photos']} photographic), {r['bytes'] / 1024:.0f} KiB"
        )
    print(f"{len(rows)} notebooks, {total / 2**20:.2f} MiB in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
