"""Fig. 1 of the paper, stage by stage, from the committed CCP label maps (no dataset photo, no network run).

Usage: ``python data_scripts/ccp_stage_figure.py [RESULTS] [--ids 0003 0271]`` (RESULTS defaults to
``results/ccp``) writes ``RESULTS/stages.png``: for each test image, its ground truth, then the KNN label
transfer (the neighbours' labels, no network: the non-parametric half), the from-scratch M-CNN's MAP labelling
before the superpixel vote (``pred/mcnn-wo-ss``: matching, moved boxes, M_l, seeds, geodesic background, MAP;
docs/paper.md §1.8 steps 1–7) and after it (``pred/mcnn-ss``: step 8), and the trunk family's default
(``pred/trunk-cross54``: the same stages on the frozen ImageNet trunk). Every row carries the post-processing its
family chose on the validation split (``tuning/postprocess_val.json``). Every map is a committed palette PNG at
the profile's crop (``warp``, 145 px); the default ids are the two test images with the most labels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from qparse_lite.io import atomic_path
from qparse_lite.labels import get_label_set, read_label_png
from qparse_lite.viz.plots import label_map_grid

RESULTS = Path(__file__).resolve().parent.parent / "results" / "ccp"
STAGES = {
    "ground truth": "gt",
    "KNN label transfer\n(no network)": "pred/label-transfer",
    "M-CNN: MAP\n(before superpixels)": "pred/mcnn-wo-ss",
    "M-CNN: superpixel\nvote": "pred/mcnn-ss",
    "trunk M-CNN\n(the kit's default)": "pred/trunk-cross54",
}


def stage_figure(results: Path, ids: list[str] | None = None, n: int = 2) -> Path:
    """Write ``results/stages.png``; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gt_dir = results / "gt"
    missing = [d for d in STAGES.values() if not (results / d).is_dir()]
    if missing:
        raise SystemExit(
            f"{results}: missing {', '.join(missing)}. Fix: pass the committed results/ccp folder."
        )
    if not ids:
        names = sorted(p.stem for p in gt_dir.glob("*.png"))
        ids = sorted(names, key=lambda x: (-len(np.unique(read_label_png(gt_dir / f"{x}.png"))), x))[:n]
    cols = {title: [read_label_png(results / d / f"{i}.png") for i in ids] for title, d in STAGES.items()}
    fig = label_map_grid(cols, get_label_set("ccp-coarse"), row_names=[f"test {i}" for i in ids])
    fig.set_size_inches(1.9 * len(cols) + 1.6, 2.0 * len(ids) + 0.5)
    fig.tight_layout()
    out = results / "stages.png"
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", type=Path, default=RESULTS)
    ap.add_argument("--ids", nargs="*", help="test image ids (default: the two with the most labels)")
    args = ap.parse_args(argv)
    print(stage_figure(args.results, args.ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
