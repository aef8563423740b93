"""Figures shared by the notebooks: training pairs, training curves, and the parse stages of Fig. 1.

Plotting glue only (matplotlib); the science is in the modules the figures take their inputs from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def to_image(x: Any, mean: Any) -> np.ndarray:
    """A network input (3×S×S, :func:`qparse_lite.train.pairs.image_to_input`) back to an S×S×3 uint8 image."""
    from qparse_lite.train.pairs import INPUT_SCALE

    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, np.float32)
    m = np.asarray(mean.detach().cpu() if hasattr(mean, "detach") else mean, np.float32)
    if m.shape[-1] == 3:
        m = m.transpose(2, 0, 1)
    return np.clip(x * INPUT_SCALE + m, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def draw_box(ax: Any, box: Sequence[float], size: int, color: str = "yellow", ls: str = "-", lw: float = 1.5) -> None:
    """Draw a box ``(x0, y0, x1, y1)`` given in normalised units (× ``size`` pixels) on ``ax``."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) * size for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, ls=ls, lw=lw))


def show_pairs(batch: Any, data: Any, label_names: Sequence[str], n: int = 8) -> Any:
    """Training pairs (I, g_kl) of a :class:`~qparse_lite.train.pairs.PairBatch`: top row I with l's box in I (solid,
    when l ∈ ϕ(I)) and the box moved from g_k by t (dashed: box_g − t, equal to the solid one by construction);
    bottom row the KNN region g_kl with l's box in g_k. Titles give l, c and the stratum."""
    import matplotlib.pyplot as plt

    from qparse_lite.train.pairs import STRATA

    n = min(n, len(batch.c))
    S = batch.I.shape[-1]
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.2), squeeze=False)
    rI, rG, lab = None, None, batch.label
    idx = batch.index
    rows_I = data.row(idx.query.to(data.device), 2 * idx.zoom_i.to(data.device) + idx.flip.to(data.device))
    rows_G = data.row(idx.knn.to(data.device), 2 * idx.zoom_g.to(data.device) + idx.flip.to(data.device))
    for j in range(n):
        l_j = int(lab[j])
        axes[0, j].imshow(to_image(batch.I[j], data.mean))
        axes[1, j].imshow(to_image(batch.R[j], data.mean))
        box_g = data.boxes[rows_G[j], l_j].cpu().numpy()
        if bool(data.present[rows_G[j], l_j]):
            draw_box(axes[1, j], box_g, S, "yellow")
        if bool(batch.c[j]):
            draw_box(axes[0, j], data.boxes[rows_I[j], l_j].cpu().numpy(), S, "yellow")
            if bool(batch.has_t[j]):
                draw_box(axes[0, j], box_g - batch.t[j].cpu().numpy(), S, "red", ls="--")
        axes[0, j].set_title(f"{label_names[l_j]}\nc={int(batch.c[j])} ({STRATA[int(idx.stratum[j])]})", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("test image I")
    axes[1, 0].set_ylabel("KNN region g_kl")
    del rI, rG
    fig.tight_layout()
    return fig


def plot_training_log(rows: Sequence[dict[str, float]], trivial: dict[str, float] | None = None,
                      total_epochs: int | None = None, axes: Any = None) -> Any:  # fmt: skip
    """Loss (train/val), validation confidence AUC and displacement error per epoch; the trivial predictor
    (ĉ = mean c, t̂ = mean t) dashed."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    ep = [r["epoch"] for r in rows]
    axes[0].plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    axes[0].plot(ep, [r["val_loss"] for r in rows], "s-", label="val")
    axes[1].plot(ep, [r["val_auc"] for r in rows], "o-", c="C2", label="M-CNN")
    axes[2].plot(ep, [r["val_disp_err"] for r in rows], "o-", c="C3", label="M-CNN")
    if trivial:
        axes[0].axhline(trivial["loss"], ls="--", c="gray", label="trivial (val)")
        axes[1].axhline(trivial["auc"], ls="--", c="gray", label="trivial")
        axes[2].axhline(trivial["disp_err"], ls="--", c="gray", label="trivial")
    for ax, t in zip(axes, ["loss J (Eq. 1, normalised)", "val AUC of ĉ (label presence)",
                            "val displacement error |t̂ − t|"], strict=True):  # fmt: skip
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("epoch")
        if total_epochs:
            ax.set_xlim(0.5, total_epochs + 0.5)
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    axes[0].figure.tight_layout()
    return axes[0].figure


def label_legend(ax: Any, label_set: Any, ids: Sequence[int], fontsize: str = "small") -> None:
    """A legend of palette colours for label ``ids`` (:func:`qparse_lite.viz.explore.legend_handles`) beside ``ax``."""
    from qparse_lite.viz.explore import legend_handles

    handles = legend_handles(label_set, ids)
    if handles:
        ax.legend(handles=handles, fontsize=fontsize, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  ncol=1 + len(handles) // 9)  # fmt: skip


def show_stages(stages: Any, label_set: Any, gt: np.ndarray | None = None) -> Any:
    """Fig. 1 of the paper, step by step, for one :class:`~qparse_lite.parse.parser.ParseStages`."""
    import matplotlib.pyplot as plt

    panels: list[tuple[str, Any, dict]] = [
        ("test image I", stages.image, {}),
        ("p_fg = max_l M_l", stages.fg_prob, {"cmap": "magma", "vmin": 0, "vmax": 1}),
        ("seeds (fg white, bg black)", np.where(stages.fg_seed, 1.0, np.where(stages.bg_seed, 0.0, 0.5)),
         {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ("P_bg (geodesic)", stages.bg_prob, {"cmap": "magma", "vmin": 0, "vmax": 1}),
        ("pixel-wise MAP", label_set.colorize(stages.map_labels), {}),
        ("after superpixel vote", label_set.colorize(stages.labels), {}),
    ]  # fmt: skip
    if gt is not None:
        panels.append(("ground truth", label_set.colorize(np.asarray(gt)), {}))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (title, img, kw) in zip(axes, panels, strict=True):
        ax.imshow(img, **kw)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    ids = sorted(set(np.unique(stages.labels).tolist()) | (set(np.unique(gt).tolist()) if gt is not None else set()))
    label_legend(axes[-1], label_set, [i for i in ids if i > 0])
    fig.tight_layout()
    return fig


def interactive(fn: Any, **controls: Any) -> Any:
    """Sliders (ipywidgets) that redraw the figure ``fn(**values)`` returns; display the returned box.

    Like ``ipywidgets.interact``, but the figure is put into the Output widget's state directly instead of
    being captured with ``with out:``: captured output can hang headless execution (papermill/nbclient,
    jupyter/nbclient#312). Widgets keep no state in a saved notebook: draw a static figure beside them.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    out = W.Output()

    def draw(*_: Any) -> None:
        fig = fn(**{k: w.value for k, w in controls.items()})
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    for name, w in controls.items():
        w.description = w.description or name
        w.continuous_update = False
        w.observe(draw, names="value")
    draw()
    return W.VBox([W.HBox(list(controls.values())), out])


def label_map_grid(columns: dict[str, Sequence[np.ndarray]], label_set: Any, row_names: Sequence[str] | None = None) -> Any:
    """Label maps side by side (the paper's Fig. 4 idea without the photos): one column per source
    (``{"ground truth": [...], "M-CNN": [...], ...}``, equal-length lists of H×W maps), one row per image,
    in the label set's palette, with a legend of the labels shown."""
    import matplotlib.pyplot as plt

    names = list(columns)
    n = len(columns[names[0]])
    fig, axes = plt.subplots(n, len(names), figsize=(1.6 * len(names), 1.6 * n), squeeze=False)
    pal = np.asarray(label_set.palette, np.uint8)
    shown: set[int] = set()
    for c, name in enumerate(names):
        for r, m in enumerate(columns[name]):
            m = np.asarray(m)
            shown |= set(np.unique(m).tolist())
            axes[r, c].imshow(pal[m])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
            if c == 0 and row_names is not None:
                axes[r, c].set_ylabel(row_names[r], fontsize=7)
    label_legend(axes[0, -1], label_set, sorted(i for i in shown if i > 0), fontsize="x-small")
    fig.tight_layout()
    return fig
