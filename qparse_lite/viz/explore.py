"""Looking at the data: label overlays, label statistics, a widget explorer and retrieval figures.

The teaching notebooks (``00_setup_and_data``, ``01_knn_retrieval``) call these so that they stay thin.
Nothing here changes the data; everything reads a :class:`~qparse_lite.data.prepare.Corpus` (or plain arrays)
and returns arrays, DataFrames, matplotlib figures or an ipywidgets widget.

* :func:`keep_labels` / :func:`overlay_labels`: a label map restricted to chosen labels, blended over its
  photo in the label set's palette (:func:`qparse_lite.parse.parser.overlay`).
* :func:`label_pixel_counts`, :func:`label_statistics`: per label and split, the share of pixels
  (pixel frequency) and the share of images that contain the label (image-level presence).
* :func:`coarse_mapping_table`: which CCP-59 names each coarse CCP label merges.
* :func:`draw_palette`, :func:`draw_overlay_grid`, :func:`draw_example`, :func:`draw_label_statistics`:
  figures.
* :func:`explorer`: an ipywidgets browser (image slider, overlay alpha, label filter). Widget state is not
  kept by papermill or in a stored notebook, so every call site also draws :func:`draw_example` statically.
* :func:`draw_neighbours`, :func:`overlap_at_ks`: the KNN images of test images (paper Sec. 3.1) and label
  overlap precision/recall against K for several neighbour tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from qparse_lite.data.statistics import keep_labels
from qparse_lite.labels import LabelSet
from qparse_lite.parse.parser import overlay


def overlay_labels(
    image: np.ndarray,
    label: np.ndarray,
    label_set: LabelSet,
    alpha: float = 0.55,
    keep: Iterable[int] | None = None,
) -> np.ndarray:
    """The photo with the labels in ``keep`` (all when None) blended in ``label_set``'s palette colours.

    ``alpha`` = 0 gives the photo, 1 the flat label colours; background and filtered-out labels are left
    as the photo. Returns uint8 H×W×3.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    label = np.asarray(label)
    label_set.check(label)
    return overlay(np.asarray(image), keep_labels(label, keep), label_set.palette, float(alpha))


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------


def legend_handles(label_set: LabelSet, ids: Iterable[int]) -> list[Any]:
    """Matplotlib patches (palette colour + name) for the labels ``ids``, for ``ax.legend(handles=...)``."""
    from matplotlib.patches import Patch

    return [Patch(color=label_set.palette[int(i)] / 255.0, label=f"{int(i)} {label_set.names[int(i)]}") for i in ids]


def draw_palette(label_set: LabelSet, ax: Any = None, ncols: int = 1) -> Any:
    """Swatches of every label of ``label_set`` with id and name; left/right pairs are joined by a bracket
    and marked "↔ id" (the label a horizontal mirror turns it into). Returns the axes."""
    import matplotlib.pyplot as plt

    L = label_set.num_labels
    rows = -(-L // ncols)
    if ax is None:
        _, ax = plt.subplots(figsize=(2.8 * ncols, 0.26 * rows + 0.5))
    partner = {a: b for a, b in label_set.lr_pairs} | {b: a for a, b in label_set.lr_pairs}
    for i, name in enumerate(label_set.names):
        col, row = divmod(i, rows)
        x, y = col * 3.0, rows - 1 - row
        ax.add_patch(plt.Rectangle((x, y + 0.1), 0.8, 0.8, color=label_set.palette[i] / 255.0, ec="0.5", lw=0.5))
        text = f"{i:>2} {name}" + (f"  ↔ {partner[i]}" if i in partner else "")
        ax.text(x + 1.0, y + 0.5, text, va="center", fontsize=8, color="C3" if i in partner else "black")
    ax.set_xlim(0, 3.0 * ncols)
    ax.set_ylim(0, rows)
    ax.set_axis_off()
    ax.set_title(f"{label_set.name}: {L} labels" + (f", {len(label_set.lr_pairs)} left/right pairs" if label_set.lr_pairs else ""),
                 fontsize=9)  # fmt: skip
    return ax


def draw_overlay_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    label_set: LabelSet,
    titles: Sequence[str] | None = None,
    alpha: float = 0.55,
    ncols: int = 6,
    size: float = 1.6,
) -> Any:
    """A grid of photos, each with its label overlay below it (two rows per row of images); a legend of
    the labels that occur. Returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(size * ncols + 1.8, 2 * size * nrows), squeeze=False)
    seen: set[int] = set()
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, (im, lb) in enumerate(zip(images, labels, strict=True)):
        r, c = divmod(k, ncols)
        axes[2 * r, c].imshow(im)
        axes[2 * r + 1, c].imshow(overlay_labels(im, lb, label_set, alpha))
        if titles is not None:
            axes[2 * r, c].set_title(str(titles[k]), fontsize=8)
        seen |= {int(v) for v in np.unique(lb) if v > 0}
    fig.legend(handles=legend_handles(label_set, sorted(seen)), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=7, frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


def draw_example(
    image: np.ndarray,
    label: np.ndarray,
    label_set: LabelSet,
    alpha: float = 0.55,
    keep: Iterable[int] | None = None,
    title: str = "",
    axes: Sequence[Any] | None = None,
) -> Any:
    """One image three ways: the photo, the overlay of the labels in ``keep``, and the (filtered) label map
    in palette colours, with a legend of the labels shown. The explorer's view and its static fallback.
    Returns the figure."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(8.5, 3.0))
    else:
        fig = axes[0].figure
    lb = keep_labels(label, keep)
    axes[0].imshow(image)
    axes[0].set_title(title or "image", fontsize=9)
    axes[1].imshow(overlay_labels(image, lb, label_set, alpha))
    axes[1].set_title(f"overlay (alpha {alpha:.2f})", fontsize=9)
    axes[2].imshow(label_set.palette[lb])
    shown = [int(v) for v in np.unique(lb) if v > 0]
    hidden = len([v for v in np.unique(label) if v > 0]) - len(shown)
    axes[2].set_title("labels" + (f" ({hidden} filtered out)" if hidden else ""), fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    axes[2].legend(handles=legend_handles(label_set, shown), loc="center left", bbox_to_anchor=(1.02, 0.5),
                   fontsize=7, frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


def draw_label_statistics(stats: Any, label_set: LabelSet, background: bool = False) -> Any:
    """Grouped bar charts of :func:`label_statistics`: pixel frequency (log scale) and image-level presence
    per label, one bar per split. Background is left out unless ``background``. Returns the figure."""
    import matplotlib.pyplot as plt

    df = stats if background else stats[stats.id > 0]
    splits = list(dict.fromkeys(df.split))
    ids = sorted(set(df.id))
    x = np.arange(len(ids))
    w = 0.8 / max(1, len(splits))
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.42 * len(ids) + 2), 5.5), sharex=True)
    for j, sp in enumerate(splits):
        d = df[df.split == sp].set_index("id").reindex(ids)
        for ax, col in zip(axes, ("pixel_pct", "image_pct"), strict=True):
            ax.bar(x + (j - (len(splits) - 1) / 2) * w, d[col].fillna(0), w, label=sp)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("% of pixels")
    axes[1].set_ylabel("% of images with it")
    axes[1].set_ylim(0, 105)
    axes[0].legend(fontsize=8, ncols=len(splits))
    axes[1].set_xticks(x, [label_set.names[i] for i in ids], rotation=60, ha="right", fontsize=8)
    axes[0].set_title(f"{label_set.name}: label statistics per split", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# the widget explorer
# ---------------------------------------------------------------------------------------------------


def explorer(corpus: Any, split: str | None = None, alpha: float = 0.55) -> Any:
    """An ipywidgets browser over a prepared corpus: split, image index slider, overlay alpha, and a
    label filter (multi-select; only the chosen labels are drawn). Each change redraws
    :func:`draw_example`. Returns the widget (display it as a cell's last expression).

    Widget state is not saved in a notebook or by papermill: always draw a static :func:`draw_example`
    beside it.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    ls: LabelSet = corpus.label_set
    names = list(dict.fromkeys(corpus.splits))
    split_w = W.Dropdown(options=names, value=split or names[-1], description="split")
    index_w = W.IntSlider(0, min=0, max=max(0, len(corpus.split(split_w.value)) - 1), description="image",
                          continuous_update=False)  # fmt: skip
    alpha_w = W.FloatSlider(alpha, min=0.0, max=1.0, step=0.05, description="alpha", continuous_update=False)
    options = [(f"{i} {ls.names[i]}", i) for i in ls.foreground]
    keep_w = W.SelectMultiple(options=options, value=tuple(ls.foreground), rows=min(10, len(options)),
                              description="labels")  # fmt: skip
    all_w, none_w = W.Button(description="all labels"), W.Button(description="no labels")
    out = W.Output()

    def draw(*_: Any) -> None:
        idx = corpus.split(split_w.value)
        if not len(idx):
            return
        i = int(idx[min(index_w.value, len(idx) - 1)])
        fig = draw_example(np.asarray(corpus.images[i]), np.asarray(corpus.labels[i]), ls, alpha_w.value,
                           keep_w.value, title=f"{split_w.value} #{index_w.value}: id {corpus.ids[i]}")  # fmt: skip
        # Set the Output widget's state directly rather than capturing with `with out:`: under headless
        # execution (papermill/nbclient) captured output makes the client echo widget state back over the
        # shell channel mid-cell, which can hang execution (jupyter/nbclient#312).
        out.outputs = ()
        out.append_display_data(fig)
        plt.close(fig)

    def on_split(change: Any) -> None:
        index_w.max = max(0, len(corpus.split(change["new"])) - 1)
        index_w.value = min(index_w.value, index_w.max)
        draw()

    split_w.observe(on_split, names="value")
    for w in (index_w, alpha_w, keep_w):
        w.observe(draw, names="value")
    all_w.on_click(lambda _: setattr(keep_w, "value", tuple(ls.foreground)))
    none_w.on_click(lambda _: setattr(keep_w, "value", ()))
    draw()
    controls = W.HBox([W.VBox([split_w, index_w, alpha_w, W.HBox([all_w, none_w])]), keep_w])
    box = W.VBox([controls, out])
    box.controls = {"split": split_w, "index": index_w, "alpha": alpha_w, "labels": keep_w}  # for tests
    return box


# ---------------------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------------------


def draw_neighbours(
    corpus: Any,
    queries: Sequence[int] | np.ndarray,
    neighbours: np.ndarray,
    k: int | None = None,
    alpha: float = 0.55,
    distances: np.ndarray | None = None,
    size: float = 1.25,
    title: str = "",
) -> Any:
    """One row per query: the query with its label overlay, then its first ``k`` neighbours (nearest
    first), each with its overlay and, per neighbour, the label-overlap precision |F(g) ∩ F(q)| / |F(g)|
    (and the feature distance when ``distances`` is given). ``queries`` and ``neighbours`` hold corpus
    indices (rows of ``neighbours`` belong to ``queries``). Returns the figure."""
    import matplotlib.pyplot as plt

    from qparse_lite.retrieval.quality import label_presence

    queries = np.asarray(queries, dtype=np.int64)
    neighbours = np.asarray(neighbours, dtype=np.int64)
    k = neighbours.shape[1] if k is None else int(k)
    ls: LabelSet = corpus.label_set
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(size * (k + 1), size * 1.4 * len(queries)), squeeze=False)
    for r, q in enumerate(queries):
        row = [int(q), *(int(g) for g in neighbours[r, :k])]
        pres = label_presence(np.stack([np.asarray(corpus.labels[i]) for i in row]), ls.num_labels)
        pres[:, 0] = False
        for c, i in enumerate(row):
            ax = axes[r, c]
            ax.imshow(overlay_labels(np.asarray(corpus.images[i]), np.asarray(corpus.labels[i]), ls, alpha))
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_title(f"query {corpus.ids[i]}", fontsize=7, color="C0")
                for s in ax.spines.values():
                    s.set_color("C0"), s.set_linewidth(2)
                continue
            ng = int(pres[c].sum())
            prec = (pres[c] & pres[0]).sum() / ng if ng else float("nan")
            text = f"{c}: p={prec:.2f}" + (f"\nd={distances[r, c - 1]:.2f}" if distances is not None else "")
            ax.set_title(text, fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
