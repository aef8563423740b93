"""New labels without retraining: the quasi-parametric claim of the paper, measured (notebook 06).

Liu et al. (CVPR 2015, Sec. 1 and Sec. 5) argue that their framework "can be easily extended to newly
annotated images and labels": the M-CNN only *matches* a KNN region g_kl (neighbour g_k with every pixel
that is not of label l replaced by the corpus mean) into the test image I, and the label l that is
transferred comes from the annotated corpus, not from a classifier layer. So a label the network never
saw as a positive during training should still be parsed once annotated examples of it are in the corpus
the parser retrieves from. This module provides the pieces to measure that:

* :data:`HOLDOUT_LABELS` / :func:`choose_holdout_label`: the label held out of training (``bag`` for ATR-18;
  for a label set without a fixed choice, the foreground label present in the share of train images
  closest to :data:`PRESENCE_TARGET`, i.e. with the most balanced positive and negative examples).
* :func:`label_presence`: per label, the share (%) of a split's images that contain it.
* :func:`annotated_subset` / :func:`corpus_with_label_fraction`: a copy of the corpus in which only a
  fraction of the train images that contain the label keep its annotation (the others have it set to
  background) — "adding annotated examples at test time" without touching the images, the mean image or
  the splits. The subsets are nested (the 10 % images are among the 25 % ones, ...).
* :func:`label_f1_summary`: the held-out label's F1 and the average F1 over the other labels.
* :func:`evaluate_label`: parse a split against one corpus and score the label, with the label confidence
  ĉ_l per test image; :func:`confidence_summary`: does ĉ_l tell test images with the label from those without?
* :func:`fraction_sweep`: parse a split with an M-CNN (and/or the KNN label-transfer baseline) against each
  corpus copy and return one row per (method, fraction).
* :func:`plot_fraction_sweep`, :func:`draw_parse_rows`: the F1-against-fraction figure and side-by-side parses.
* :func:`finetune_new_label`: what a *parametric* parser (:mod:`qparse_lite.baselines.parametric`) must do
  instead: be fine-tuned on the same annotated subsets, at a measured cost in training time.

The KNN neighbours of the test images are computed from image features only (``hog-color`` or AlexNet fc7),
so one neighbour table serves every corpus copy. The M-CNN's *matching* does depend on the corpus labels (the
KNN regions g_kl are cut out with them), so every corpus copy gets its own parser and is parsed again; only a
test image whose K neighbours are exactly as in a copy already parsed (none of them changed) reuses that
parse — the same inputs, so the same output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qparse_lite.errors import QparseError
from qparse_lite.evaluation.evaluate import feature_image
from qparse_lite.labels import LabelSet

__all__ = [
    "HOLDOUT_LABELS",
    "PRESENCE_TARGET",
    "FRACTIONS",
    "label_presence",
    "choose_holdout_label",
    "annotated_subset",
    "corpus_with_label_fraction",
    "label_f1_summary",
    "evaluate_label",
    "confidence_summary",
    "fraction_sweep",
    "plot_fraction_sweep",
    "draw_parse_rows",
    "finetune_new_label",
]

HOLDOUT_LABELS: dict[str, str] = {"atr18": "bag"}
"""Fixed held-out label per label set (ATR-18: ``bag``, present in most people, never the whole body)."""

PRESENCE_TARGET = 50.0
"""For label sets without a fixed choice: hold out the label present in the share (%) of train images
closest to this (ties: the smaller label id)."""

FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
"""Shares of the train images containing the held-out label that keep its annotation in the sweep."""


def label_presence(corpus: Any, split: str = "train") -> np.ndarray:
    """Per label id, the share (%) of ``split``'s images whose label map contains it (length L, float64)."""
    from qparse_lite.data.statistics import label_pixel_counts

    idx = np.asarray(corpus.split(split))
    if idx.size == 0:
        raise QparseError(f"label_presence: split {split!r} of {corpus!r} is empty")
    counts = label_pixel_counts(corpus.labels, corpus.label_set.num_labels, idx)
    return 100.0 * (counts > 0).mean(0)


def choose_holdout_label(
    corpus: Any, fixed: Mapping[str, str] | None = None, target: float = PRESENCE_TARGET
) -> str:
    """The label to hold out of training (deterministic).

    ``fixed`` (default :data:`HOLDOUT_LABELS`) names it per label-set name; otherwise it is the foreground
    label whose presence in the train split (:func:`label_presence`) is closest to ``target`` %, the smaller
    id on ties. Labels absent from the train split are never chosen.
    """
    ls: LabelSet = corpus.label_set
    fixed = HOLDOUT_LABELS if fixed is None else fixed
    if ls.name in fixed:
        name = fixed[ls.name]
        _label_id(ls, name)  # raises on an unknown name
        return name
    pres = label_presence(corpus, "train")
    cand = [i for i in range(1, ls.num_labels) if pres[i] > 0]
    if not cand:
        raise QparseError(f"choose_holdout_label: no foreground label in the train split of {corpus!r}")
    best = min(cand, key=lambda i: (abs(float(pres[i]) - target), i))
    return ls.names[best]


def _label_id(label_set: LabelSet, name: str) -> int:
    """Id of foreground label ``name``; :class:`QparseError` for an unknown name or the background."""
    try:
        lid = label_set.index(name)
    except KeyError as e:
        raise QparseError(str(e.args[0])) from None
    if lid == 0:
        raise QparseError(f"the background of {label_set.name} cannot be held out")
    return lid


def annotated_subset(
    corpus: Any, label: str, fraction: float, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Which ``split`` images keep their annotation of ``label``.

    Returns ``(with_label, keep)``: the corpus indices of the split's images that contain ``label`` and the
    ``round(fraction · len(with_label))`` of them that keep it, drawn by one seeded permutation, so the
    subsets of a seed are nested (a smaller fraction keeps a prefix of a larger one's images).
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    from qparse_lite.data.statistics import label_pixel_counts

    lid = _label_id(corpus.label_set, label)
    idx = np.asarray(corpus.split(split), dtype=np.int64)
    with_label = idx[label_pixel_counts(corpus.labels, corpus.label_set.num_labels, idx)[:, lid] > 0]
    order = np.random.default_rng(seed).permutation(len(with_label))
    n_keep = int(round(float(fraction) * len(with_label)))
    return with_label, np.sort(with_label[order[:n_keep]])


def corpus_with_label_fraction(
    corpus: Any, label: str, fraction: float, seed: int = 0, split: str = "train"
) -> Any:
    """An in-memory copy of ``corpus`` where only ``fraction`` of the ``split`` images containing ``label``
    keep its annotation; in the others its pixels become background (0).

    Images and feature crops (shared, not copied; a trunk M-CNN reads the latter), the mean image, ids, boxes
    and splits are those of ``corpus``; only the label maps are a modified copy, and only for ``split`` (the
    val/test ground truth is untouched).
    ``meta["label_fraction"]`` records the label, fraction, seed and the kept images.
    """
    from qparse_lite.data.prepare import Corpus

    lid = _label_id(corpus.label_set, label)
    with_label, keep = annotated_subset(corpus, label, fraction, seed, split)
    labels = np.array(corpus.labels, dtype=np.uint8)  # a writable copy
    drop = np.setdiff1d(with_label, keep)
    if drop.size:
        sub = labels[drop]
        sub[sub == lid] = 0
        labels[drop] = sub
    meta = {
        "dataset": (corpus.meta or {}).get("dataset", "in-memory"),
        "version": (corpus.meta or {}).get("version", ""),
        "label_fraction": {
            "label": label, "fraction": float(fraction), "seed": int(seed), "split": split,
            "images_with_label": int(len(with_label)), "kept": keep.tolist(),
        },
    }  # fmt: skip
    copy = Corpus.from_arrays(
        corpus.images, labels, corpus.label_set, dict(corpus.splits), mean=np.asarray(corpus.mean),
        ids=list(corpus.ids), boxes=np.asarray(corpus.boxes), meta=meta,
    )  # fmt: skip
    copy.feature_images = getattr(corpus, "feature_images", None)  # shared: what a trunk M-CNN reads
    return copy


def label_f1_summary(scores: Mapping[str, Any], label: str) -> dict[str, float]:
    """``label_f1`` (F1 of ``label``, %), ``other_avg_f1`` (mean F1 over the other *scored* labels,
    background included — the kit's ``avg_f1`` definition without ``label``), ``other_avg_f1_fg`` (the same
    over foreground labels) and ``avg_f1``, from :func:`qparse_lite.metrics.scores`."""
    f1 = scores["per_label_f1"]
    if label not in f1:
        raise QparseError(f"label_f1_summary: {label!r} is not a label of these scores ({', '.join(f1)})")
    names = list(f1)
    others = [f1[n] for n in names if n != label and not np.isnan(f1[n])]
    others_fg = [f1[n] for n in names[1:] if n != label and not np.isnan(f1[n])]
    return {
        "label_f1": float(f1[label]),
        "other_avg_f1": float(np.mean(others)) if others else float("nan"),
        "other_avg_f1_fg": float(np.mean(others_fg)) if others_fg else float("nan"),
        "avg_f1": float(scores["avg_f1"]),
    }


def evaluate_label(
    parse: Any, corpus: Any, label: str, neighbours: np.ndarray, k: int, split: str = "test", *,
    gt_corpus: Any = None, cache: dict[Any, Any] | None = None, desc: str = "evaluate",
) -> tuple[dict[str, float], pd.DataFrame]:  # fmt: skip
    """Parse ``split`` against the KNN database ``corpus`` and score ``label`` (:func:`label_f1_summary`).

    Args:
        parse: an :class:`~qparse_lite.parse.parser.MCNNParser` whose database is ``corpus``, or a
            :class:`~qparse_lite.baselines.nonparametric.LabelTransfer`.
        corpus: the KNN database (e.g. a :func:`corpus_with_label_fraction` copy); ``gt_corpus`` holds the
            ground truth that scores the parses (default ``corpus``; the copies keep the test maps anyway).
        neighbours: KNN corpus indices of ``split`` (rows in ``split`` order); the first ``k`` are used.
        cache: a dict shared by calls on corpora that differ **only in which train images keep**
            ``label`` (copies of one corpus by :func:`corpus_with_label_fraction`) with the same ``parse``
            settings: a parse is then fully determined by the test image and which of its ``k`` neighbours
            have ``label``, so an image whose neighbours are unchanged is not parsed again (identical inputs,
            identical output; nothing is approximated).

    Returns ``(summary, per_image)``: the summary of :func:`label_f1_summary` plus ``images``, and one row per
    image: ``index``, ``has_label`` (ground truth), ``knn_with_label`` (neighbours with a region of ``label``),
    and for an M-CNN ``confidence`` (ĉ_l, the mean of ĉ_kl over those neighbours; NaN without any) and
    ``visible`` (ĉ_l > ξ1).
    """
    from tqdm.auto import tqdm

    from qparse_lite.metrics import ConfusionMatrix, scores

    gt_corpus = corpus if gt_corpus is None else gt_corpus
    lid = _label_id(corpus.label_set, label)
    mcnn = hasattr(parse, "parse")
    cm = ConfusionMatrix(corpus.label_set.num_labels)
    idx = np.asarray(corpus.split(split))
    cache = {} if cache is None else cache
    rows = []
    for r, i in enumerate(tqdm(idx, desc=desc, mininterval=1.0, disable=None)):
        nb = np.asarray(neighbours[r][:k])
        nb_labels = np.asarray(corpus.labels[nb])
        knn_has = (nb_labels == lid).any((1, 2))
        key = (int(i), tuple(knn_has.tolist()))
        if key not in cache:
            image = np.asarray(corpus.images[int(i)])
            if mcnn:
                st = parse.parse(image, nb, feature_image(corpus, int(i)))
                conf = float(st.label_confidence[lid]) if knn_has.any() else float("nan")
                cache[key] = (st.labels, conf, bool(st.visible[lid]))
            else:
                cache[key] = (parse(image, nb_labels), float("nan"), False)
        pred, conf, visible = cache[key]
        gt = np.asarray(gt_corpus.labels[int(i)])
        cm.update(np.asarray(pred, np.uint8), gt)
        row = {"index": int(i), "has_label": bool((gt == lid).any()), "knn_with_label": int(knn_has.sum())}
        if mcnn:
            row.update(confidence=conf, visible=visible)
        rows.append(row)
    summary = {**label_f1_summary(scores(cm, corpus.label_set), label), "images": len(idx)}
    return summary, pd.DataFrame(rows)


def confidence_summary(per_image: pd.DataFrame) -> dict[str, float]:
    """How well the label confidence ĉ_l of :func:`evaluate_label`'s ``per_image`` rows tells test images with
    the label from those without, over the images where at least one neighbour has a region of it
    (elsewhere the label cannot be transferred whatever ĉ_l):

    ``images_with_knn_region``; ``auc`` (ROC AUC of ĉ_l for ``has_label``; 0.5 = chance, NaN when one class
    is missing); ``conf_with`` / ``conf_without`` (mean ĉ_l on images with / without the label);
    ``visible_with`` / ``visible_without`` (% of them where ĉ_l > ξ1, i.e. the label is transferred).
    """
    from qparse_lite.train.matching_metrics import roc_auc

    d = per_image[per_image.knn_with_label > 0]
    pos, neg = d[d.has_label], d[~d.has_label]

    def mean(x: pd.Series, scale: float = 1.0) -> float:
        return float(scale * x.astype(float).mean()) if len(x) else float("nan")

    return {
        "images_with_knn_region": len(d),
        "auc": roc_auc(d.confidence.to_numpy(), d.has_label.to_numpy()) if len(d) else float("nan"),
        "conf_with": mean(pos.confidence), "conf_without": mean(neg.confidence),
        "visible_with": mean(pos.visible, 100.0), "visible_without": mean(neg.visible, 100.0),
    }  # fmt: skip


def fraction_sweep(
    corpus: Any, label: str, fractions: Sequence[float], neighbours: np.ndarray, k: int, *,
    model: Any = None, target_norm: Any = None, model_name: str = "M-CNN", trained_on_label: bool | None = None,
    parser_kw: Mapping[str, Any] | None = None, label_transfer: bool = False, split: str = "test",
    seed: int = 0, superpixel_method: str | None = "slic", n_segments: int = 200, rank_power: float = 1.0,
    bg_weight: float = 1.0, min_share: float = 0.0,
) -> pd.DataFrame:  # fmt: skip
    """Parse ``split`` against :func:`corpus_with_label_fraction` copies of ``corpus``, one per fraction.

    Args:
        corpus: the prepared corpus (its ground truth scores every parse).
        label: the label whose train annotations are thinned out.
        fractions: shares of the train images containing ``label`` that keep it (e.g. :data:`FRACTIONS`).
        neighbours: KNN corpus indices of ``split`` (rows in ``corpus.split(split)`` order; image features
            only, so valid for every copy); ``k``: neighbours used per image.
        model, target_norm: a trained M-CNN of either family (:func:`qparse_lite.train.checkpoint.load_model`),
            parsed with the parser :func:`~qparse_lite.parse.parser.make_parser` picks for it (``MCNNParser``, or
            ``TrunkParser`` for a trunk model, which reads the corpus's feature crops); ``parser_kw``: ``xi1``,
            ``xi2``, ``erosion``, ``device``, ...; None skips the M-CNN. ``model_name`` and ``trained_on_label``
            label its rows.
        label_transfer: also run :class:`~qparse_lite.baselines.nonparametric.LabelTransfer` (non-parametric, no training)
            on the same corpora and neighbours, with its knobs ``rank_power`` γ, ``bg_weight`` β, ``min_share`` τ
            (the defaults: the untuned transfer; the tuned ones: ``resolve_postprocess("label-transfer", ...).values``)
            and the shared ``superpixel_method`` / ``n_segments`` (0 = no superpixels).
        seed: draws the kept images (:func:`annotated_subset`).

    Every copy gets its own parser, and every test image is parsed against it, except where its ``k``
    neighbours are exactly as in a copy already parsed (:func:`evaluate_label`'s ``cache``: same inputs).

    Returns one row per (method, fraction): ``model``, ``trained_on_label``, ``annotated_fraction``,
    ``annotated_images``, ``label``, ``label_f1``, ``other_avg_f1``, ``other_avg_f1_fg``, ``avg_f1``,
    ``n_test_images`` (F1 in %).
    """
    from qparse_lite.baselines.nonparametric import LabelTransfer
    from qparse_lite.parse.parser import make_parser

    if model is None and not label_transfer:
        raise ValueError("fraction_sweep: give a model, label_transfer=True, or both")
    caches: dict[str, dict[Any, Any]] = {}
    rows = []
    for frac in fractions:
        cf = corpus_with_label_fraction(corpus, label, frac, seed)
        kept = len(cf.meta["label_fraction"]["kept"])
        runs: list[tuple[str, bool | None, Any]] = []
        if model is not None:
            parser = make_parser(model, target_norm, cf, superpixel_method=superpixel_method,
                                n_segments=n_segments, **dict(parser_kw or {}))  # fmt: skip
            runs.append((model_name, trained_on_label, parser))
        if label_transfer:
            lt = LabelTransfer(corpus.label_set.num_labels, superpixel_method, n_segments, rank_power=rank_power,
                               bg_weight=bg_weight, min_share=min_share)  # fmt: skip
            runs.append(("KNN label transfer", None, lt))
        for name, trained, parse in runs:
            summary, _ = evaluate_label(parse, cf, label, neighbours, k, split, gt_corpus=corpus,
                                        cache=caches.setdefault(name, {}), desc=f"{name} {frac:.0%}")  # fmt: skip
            rows.append({
                "model": name, "trained_on_label": trained, "annotated_fraction": float(frac),
                "annotated_images": kept, "label": label, **summary, "n_test_images": summary["images"],
            })  # fmt: skip
    return pd.DataFrame(rows).drop(columns="images")


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------


def plot_fraction_sweep(
    sweep: pd.DataFrame, label: str, references: Mapping[str, float] | None = None,
    column: str = "label_f1", ax: Any = None,
) -> Any:  # fmt: skip
    """``column`` (default the held-out label's F1) against ``annotated_fraction``, one line per ``model`` of
    ``sweep`` (:func:`fraction_sweep` rows), each ``references`` value (name → F1) a horizontal line.
    The x axis is in %, its ticks the swept fractions. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    styles = [dict(marker="o", ls="-"), dict(marker="s", ls="--"), dict(marker="^", ls=":")]
    for n, (name, d) in enumerate(sweep.groupby("model", sort=False)):
        d = d.sort_values("annotated_fraction")
        ax.plot(100 * d.annotated_fraction, d[column], ms=5, label=name, **styles[n % len(styles)])
    for n, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{3 + n}", lw=1.2, ls="-.", label=name)
    ticks = sorted(set(100 * sweep.annotated_fraction))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel(f"train images containing {label} that keep its annotation (%)")
    ax.set_ylabel(f"F1 of {label} (%)" if column == "label_f1" else column)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def draw_parse_rows(
    images: Sequence[np.ndarray], columns: Mapping[str, Sequence[np.ndarray]], label_set: LabelSet,
    label: str | None = None, titles: Mapping[str, Sequence[str]] | None = None, size: float = 1.9,
) -> Any:  # fmt: skip
    """One row per image: the photo, then one label map per entry of ``columns`` (name → maps, e.g.
    ground truth and parses) in palette colours. With ``label``, each map's pixels of that label are
    outlined in white so the held-out label stands out. ``titles`` (name → per-image strings) are added
    under the column names. Returns the figure."""
    import matplotlib.pyplot as plt

    from qparse_lite.viz.explore import legend_handles

    n, names = len(images), list(columns)
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(size * (1 + len(names)), size * n), squeeze=False)
    lid = _label_id(label_set, label) if label is not None else None
    seen: set[int] = set()
    for r, im in enumerate(images):
        axes[r, 0].imshow(im)
        for c, name in enumerate(names, start=1):
            lb = np.asarray(columns[name][r])
            axes[r, c].imshow(label_set.palette[lb])
            if lid is not None and (lb == lid).any():
                axes[r, c].contour(lb == lid, levels=[0.5], colors="white", linewidths=1.0)
            sub = f"\n{titles[name][r]}" if titles and name in titles else ""
            axes[r, c].set_title(f"{name}{sub}", fontsize=8)
            seen |= {int(v) for v in np.unique(lb) if v > 0}
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.legend(handles=legend_handles(label_set, sorted(seen)), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=7, frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig


def finetune_new_label(
    base_dir: str | Path, corpus: Any, label: str, fraction: float, out: str | Path, epochs: int,
    *, seed: int = 0, device: str = "cpu", progress: bool | None = None, lr: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Teach a parametric parser trained with ``label`` held out the label from ``fraction`` of its images.

    The train images that contain ``label`` keep its annotation only in the nested subset of
    :func:`annotated_subset` (the same subsets the M-CNN's zero-retraining route gets
    as its corpus); elsewhere its pixels are background. The network starts from ``base_dir``'s weights and
    is trained ``epochs`` more epochs over the whole train split (warm-up + cosine, as in training).
    Returns the run record, with the fine-tuning time ``train_s``: the price of a new label for a
    parametric parser.
    """
    from dataclasses import replace

    from qparse_lite.baselines.parametric import load_parametric, train_parametric

    _, base_cfg, _ = load_parametric(base_dir)
    if base_cfg.holdout_label != label:
        raise QparseError(f"{base_dir}: trained with holdout_label={base_cfg.holdout_label!r}, not {label!r}")
    lid = corpus.label_set.index(label)
    with_label, keep = annotated_subset(corpus, label, fraction, seed)
    labels = np.array(corpus.labels, dtype=np.uint8)
    drop = np.setdiff1d(with_label, keep)
    if drop.size:
        sub = labels[drop]
        sub[sub == lid] = 0
        labels[drop] = sub
    cfg = replace(base_cfg, holdout_label=None, epochs=int(epochs), seed=seed, lr=lr or base_cfg.lr / 2)
    return train_parametric(
        corpus, out, cfg, device=device, progress=progress, train_labels=labels, init_from=base_dir,
        extra={"new_label": label, "fraction": float(fraction), "images_with_label": int(len(with_label)),
               "images_annotated": int(len(keep))},
    )  # fmt: skip
