"""The evaluation harness: one loop for every parser, Table 1/2 rows, and the Fig. 5 sweep.

A *parser* here is any callable ``parse(i) -> H×W uint8`` over corpus indices of the evaluated split;
the harness accumulates one confusion matrix over the split (``qparse_lite.metrics``), optionally
writes per-image PNG label maps that ``qparse score`` accepts (``pred/<id>.png`` and ``gt/<id>.png``),
and returns the scores. Images are scored at two resolutions:

- **crop level** (``table1.csv``, ``scores.json`` top level): the S×S label map against the corpus's S×S
  crop of the ground truth (the kit's first metric, kept for continuity); it depends on the crop geometry
  (``square``/``warp``) and size, so two corpora cannot be compared on it;
- **full resolution** (``table1_full.csv``, ``scores.json["full_resolution"]``): the S×S map pasted back into
  the original photo (:func:`qparse_lite.parse.parser.paste_back`, the inverse of the corpus crop) against the
  photo's own ground truth, background outside the crop — the metric of ``qparse photos`` and of the paper,
  which evaluates at the images' own resolution (docs/paper.md §2). Every crop geometry and size is
  scored on the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from qparse_lite.errors import QparseError
from qparse_lite.evaluation.reported import label_column
from qparse_lite.io import atomic_save_png, atomic_write_text
from qparse_lite.labels import LabelSet
from qparse_lite.metrics import ConfusionMatrix, scores, table1_row, table2_row
from qparse_lite.parse.defaults import resolve_postprocess
from qparse_lite.retrieval.search import split_neighbours

__all__ = ["evaluate_parser", "tables", "write_tables", "k_sweep", "make_parser_fn", "fig5_sweep", "plot_fig5", "evaluate", "parameter_sweep", "tune_postprocessing", "tune_label_transfer", "coordinate_ascent", "grid_edges", "FIG5_KS", "METHODS", "full_resolution_gt"]  # fmt: skip


def evaluate_parser(
    parse: Callable[[int], np.ndarray],
    corpus: Any,
    indices: Iterable[int],
    label_set: LabelSet,
    out_dir: str | Path | None = None,
    desc: str = "evaluate",
    progress: bool | None = None,
    full_gt: Callable[[int], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Run ``parse`` over ``indices`` of ``corpus``, return :func:`qparse_lite.metrics.scores` (crop level).

    With ``out_dir``, writes ``out_dir/pred/<id>.png`` and ``out_dir/gt/<id>.png`` (palette PNGs).
    With ``full_gt`` (corpus index -> the photo's ground truth H×W at its own resolution), each S×S map is
    also pasted back into the photo through the corpus's crop box (:func:`qparse_lite.parse.parser.paste_back`)
    and scored there: ``scores["full_resolution"]`` (and ``out_dir/full/pred|gt/<id>.png``).
    """
    from qparse_lite.parse.parser import paste_back

    cm = ConfusionMatrix(label_set.num_labels)
    cm_full = ConfusionMatrix(label_set.num_labels) if full_gt is not None else None
    out = Path(out_dir) if out_dir is not None else None
    for i in tqdm(list(indices), desc=desc, mininterval=1.0, disable=None if progress is None else not progress):
        pred = np.asarray(parse(int(i)), dtype=np.uint8)
        gt = np.asarray(corpus.labels[int(i)])
        cm.update(pred, gt)
        name = f"{corpus.ids[int(i)]}.png"
        if out is not None:
            atomic_save_png(out / "pred" / name, pred, label_set.palette)
            atomic_save_png(out / "gt" / name, gt, label_set.palette)
        if full_gt is not None and cm_full is not None:
            g = np.asarray(full_gt(int(i)), dtype=np.uint8)
            p = paste_back(pred, tuple(int(v) for v in corpus.boxes[int(i)]), g.shape[:2])  # type: ignore[arg-type]
            cm_full.update(p, g)
            if out is not None:
                atomic_save_png(out / "full" / "pred" / name, p, label_set.palette)
                atomic_save_png(out / "full" / "gt" / name, g, label_set.palette)
    sc = scores(cm, label_set)
    if cm_full is not None:
        sc["full_resolution"] = scores(cm_full, label_set)
    return sc


def feature_image(corpus: Any, i: int) -> np.ndarray | None:
    """Corpus image ``i``'s F-px feature crop (what a trunk M-CNN reads, :class:`~qparse_lite.parse.parser.TrunkParser`),
    or None for a corpus without feature crops."""
    src = getattr(corpus, "feature_images", None)
    return None if src is None else np.asarray(src[int(i)])


def full_resolution_gt(corpus: Any, dataset: Any) -> Callable[[int], np.ndarray]:
    """``gt(i)``: the ground truth of corpus image ``i`` at its photo's own resolution, from ``dataset`` (the
    corpus's source, :func:`qparse_lite.data.prepare.source_dataset`), in the corpus's label set."""
    if list(dataset.label_set.names) != list(corpus.label_set.names):
        raise QparseError(
            f"the dataset has label set {dataset.label_set.name}, the corpus {corpus.path} {corpus.label_set.name}. "
            "Fix: pass the --data-root the corpus was prepared from."
        )
    pos = {x: j for j, x in enumerate(dataset.ids)}
    return lambda i: np.asarray(dataset[pos[corpus.ids[i]]].label)


def tables(
    results: Sequence[tuple[str, str | None, dict[str, Any]]], label_set: LabelSet
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 and Table 2 DataFrames from ``(method, paper_method, scores)`` triples.

    Column names follow the paper's CSVs (Table 2 uses ``_`` for ``-`` in label names), plus a
    ``paper_method`` column naming the paper's row this one corresponds to (or empty).
    """
    t1, t2 = [], []
    for method, paper_method, sc in results:
        t1.append(
            {"method": method, "paper_method": paper_method or "", **_strip_method(table1_row(sc, method))}
        )
        row2 = _strip_method(table2_row(sc, method))
        t2.append(
            {
                "method": method,
                "paper_method": paper_method or "",
                **{label_column(k): v for k, v in row2.items()},
            }
        )
    return pd.DataFrame(t1), pd.DataFrame(t2)


def _strip_method(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "method"}


def write_tables(df: pd.DataFrame, out: str | Path, name: str, decimals: int = 2) -> tuple[Path, Path]:
    """Write ``out/name.csv`` and ``out/name.md`` atomically (floats with ``decimals`` decimals)."""
    out = Path(out)
    csv = atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format=f"%.{decimals}f"))
    md = atomic_write_text(out / f"{name}.md", df.to_markdown(index=False, floatfmt=f".{decimals}f") + "\n")
    return csv, md


def k_sweep(
    parse_k: Callable[[int, int], np.ndarray],
    corpus: Any,
    indices: Sequence[int],
    label_set: LabelSet,
    ks: Sequence[int] = (1, 3, 5, 7, 9, 11, 15),
    progress: bool | None = None,
) -> pd.DataFrame:
    """Fig. 5: average F1 (and the other Table 1 metrics) against K.

    ``parse_k(i, k)`` parses corpus image ``i`` with its first ``k`` neighbours; parsers that match
    all ``max(ks)`` neighbours once and reuse them for smaller K make the sweep cheap.
    """
    cms = {k: ConfusionMatrix(label_set.num_labels) for k in ks}
    for i in tqdm(list(indices), desc="K sweep", mininterval=1.0, disable=None if progress is None else not progress):
        gt = np.asarray(corpus.labels[int(i)])
        for k in ks:
            cms[k].update(np.asarray(parse_k(int(i), k), dtype=np.uint8), gt)
    rows = [{"k": k, **_strip_method(table1_row(scores(cms[k], label_set), f"K={k}"))} for k in ks]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# whole evaluations: a trained run or a baseline on a corpus split (``qparse evaluate``)
# ---------------------------------------------------------------------------------------------------

FIG5_KS = (1, 3, 5, 7, 9, 11, 15)
"""The K of the paper's Fig. 5."""

METHODS = ("mcnn", "label-transfer", "mean-label-map", "parametric")
"""What ``qparse evaluate --method`` can evaluate on the same harness."""


def make_parser_fn(
    method: str, corpus: Any, split: str, neighbours: np.ndarray, k: int, parser: Any = None,
    superpixel_method: str | None = "slic", n_segments: int = 200, *, rank_power: float = 1.0,
    bg_weight: float = 1.0, min_share: float = 0.0,
) -> Callable[[int], np.ndarray]:  # fmt: skip
    """``parse(i) -> H×W`` for corpus index ``i`` of ``split`` with one of :data:`METHODS`.

    ``mcnn`` needs ``parser`` (an :class:`~qparse_lite.parse.parser.MCNNParser`); ``label-transfer`` is
    :class:`~qparse_lite.baselines.nonparametric.LabelTransfer` over the same K neighbours, with its knobs
    ``rank_power`` γ, ``bg_weight`` β, ``min_share`` τ, ``superpixel_method`` and ``n_segments``; ``mean-label-map`` the
    train split's per-pixel majority label (:func:`~qparse_lite.baselines.nonparametric.mean_label_map`); ``parametric``
    needs ``parser`` (a :class:`~qparse_lite.baselines.parametric.ParametricParser`, which ignores the neighbours and
    sees the corpus's feature crops when it has them).
    """
    from qparse_lite.baselines.nonparametric import LabelTransfer, mean_label_map

    rows = {int(i): r for r, i in enumerate(corpus.split(split))}
    if method == "mcnn":
        if parser is None:
            raise ValueError("method 'mcnn' needs a parser")
        return lambda i: parser.parse(np.asarray(corpus.images[i]), neighbours[rows[i]][:k], feature_image(corpus, i)).labels
    if method == "label-transfer":
        lt = LabelTransfer(corpus.label_set.num_labels, superpixel_method, n_segments, rank_power=rank_power,
                           bg_weight=bg_weight, min_share=min_share)  # fmt: skip
        return lambda i: lt(np.asarray(corpus.images[i]), np.asarray(corpus.labels[neighbours[rows[i]][:k]]))
    if method == "parametric":
        if parser is None:
            raise ValueError("method 'parametric' needs a parser")
        src = corpus.feature_images if getattr(corpus, "feature_images", None) is not None else corpus.images
        return lambda i: parser(np.asarray(src[i]))
    if method == "mean-label-map":
        prior = mean_label_map(np.asarray(corpus.labels[corpus.split("train")]), corpus.label_set.num_labels)
        return lambda i: prior
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def fig5_sweep(
    parser: Any, corpus: Any, split: str, neighbours: np.ndarray, ks: Sequence[int] = FIG5_KS,
    limit: int | None = None, progress: bool | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Fig. 5 for an M-CNN parser: the Table 1 metrics against K, matching each image once
    (:meth:`~qparse_lite.parse.parser.MCNNParser.parse_k`)."""
    idx = np.asarray(corpus.split(split))[:limit]
    rows = {int(i): r for r, i in enumerate(corpus.split(split))}
    cache: dict[int, dict[int, Any]] = {}

    def parse_k(i: int, k: int) -> np.ndarray:
        if i not in cache:
            cache.clear()
            cache[i] = parser.parse_k(np.asarray(corpus.images[i]), neighbours[rows[i]], ks, feature_image(corpus, i))
        return cache[i][k].labels

    return k_sweep(parse_k, corpus, idx, corpus.label_set, ks, progress=progress)


def plot_fig5(df: pd.DataFrame, ax: Any = None, label: str = "this run") -> Any:
    """Average F1 against K, this run's curve beside the two points the paper states (K = 1, 9)."""
    import matplotlib.pyplot as plt

    from qparse_lite.evaluation import reported

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(df["k"], df["avg_f1"], "o-", label=label)
    paper = reported.fig5()
    ax.plot(paper["k"], paper["avg_f1"], "s", color="k", label="paper (stated in the text)")
    ax.set_xlabel("K (KNN images per test image)")
    ax.set_ylabel("average F1 (%)")
    ax.set_xticks(list(df["k"]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def evaluate(
    corpus: Any, out: str | Path, *, method: str = "mcnn", model: str | Path | None = None, split: str = "test",
    k: int = 9, features: str | None = None, device: str = "cpu", xi1: float | None = None,
    xi2: float | None = None, erosion: int | None = None, superpixel_method: str | None = "slic",
    n_segments: int | None = None, background: str = "geodesic", fig5: bool = False, limit: int | None = None,
    name: str | None = None, displacement_scale: float | None = None, progress: bool | None = None,
    knn_dir: str | Path | None = None, full_resolution: bool | None = None, data_root: str | Path | None = None,
    rank_power: float | None = None, bg_weight: float | None = None, min_share: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Evaluate a trained run (``method="mcnn"``, ``model`` = its folder) or a baseline on a corpus split.

    Writes into ``out``: ``pred/<id>.png`` and ``gt/<id>.png`` (palette label maps that ``qparse score``
    accepts), ``table1.csv/.md`` and ``table2.csv/.md`` (one row, the paper's column names, with
    ``paper_method`` naming the paper's row where there is one), ``scores.json`` (every metric) and, with
    ``fig5``, ``fig5.csv/.md`` and ``fig5.png`` (K ∈ :data:`FIG5_KS`). ``knn_dir``: where the neighbours and
    features are cached (default ``out/knn``; the cache is keyed by everything that changes it, so several
    evaluations of one corpus can share one folder). The erosion size defaults to the run's profile (10 px
    at 227). ξ1, ξ2, ``n_segments`` (0 = no superpixel smoothing) and ``displacement_scale`` left at None are
    resolved by :func:`qparse_lite.parse.defaults.resolve_postprocess` (the model's ``postprocess.json``, else
    its profile; label transfer: its own entry); ``run.postprocess`` records each value and its source.
    ``rank_power`` γ, ``bg_weight`` β and ``min_share`` τ are label transfer's own knobs (with ``n_segments``;
    :class:`~qparse_lite.baselines.nonparametric.LabelTransfer`), resolved the same way; another method refuses them.
    Returns the scores with a ``run`` record.

    ``full_resolution`` (default: whenever the corpus's source dataset can be opened, from its ``meta.json``
    or ``data_root``): also score every map pasted back into its photo (see the module docstring), written
    as ``table1_full.csv/.md``, ``table2_full.csv/.md``, ``scores.json["full_resolution"]`` and
    ``full/pred|gt/<id>.png``. ``True`` raises when the dataset cannot be opened. A model trained on a corpus
    of another crop mode (``square``/``warp``) than ``corpus`` is refused.
    """
    import time

    from qparse_lite.data.crops import check_crop, corpus_crop
    from qparse_lite.evaluation.tables import json_safe
    from qparse_lite.io import atomic_write_json
    from qparse_lite.model.mcnn import method_name, paper_row
    from qparse_lite.runinfo import run_record

    t0 = time.perf_counter()
    out = Path(out)
    parser, prof, variant, post = None, None, None, None
    no_ss_asked = not superpixel_method  # the caller's "w/o ss" (a choice of n_segments 0 is not that row)
    lt_knobs = {"rank_power": rank_power, "bg_weight": bg_weight, "min_share": min_share}
    mcnn_knobs = {"xi1": xi1, "xi2": xi2, "displacement_scale": displacement_scale}
    if method != "mcnn" and any(v is not None for v in mcnn_knobs.values()):
        given = ", ".join(f"{n} (--{n.replace('_', '-')})" for n, v in mcnn_knobs.items() if v is not None)
        raise QparseError(f"{given}: the M-CNN's post-processing; --method {method} has none. Fix: drop them, "
                          "or --method mcnn")  # fmt: skip
    if method != "label-transfer" and any(v is not None for v in lt_knobs.values()):
        given = ", ".join(f"{n} (--lt-{n.replace('_', '-')})" for n, v in lt_knobs.items() if v is not None)
        raise QparseError(f"{given}: label transfer's knobs; --method {method} has none. Fix: drop them, or "
                          "--method label-transfer")  # fmt: skip
    if method == "mcnn":
        if model is None:
            raise QparseError("qparse evaluate --method mcnn needs --model RUN (a qparse train folder)")
        from qparse_lite.parse.parser import MCNNParser

        parser = MCNNParser.from_run(
            model, corpus, device=device, xi1=xi1, xi2=xi2, n_segments=n_segments,
            displacement_scale=displacement_scale, erosion=erosion, superpixel_method=superpixel_method,
            background=background,
            fix="evaluate it on a corpus prepared with qparse prepare --crop {crop}, or train a model on this corpus",
        )  # fmt: skip
        prof, variant, post = parser.profile, parser.meta["variant"], parser.resolved
        n_segments = int(post.values["n_segments"])
        superpixel_method = parser.superpixel_method
        features = features or prof.features
    elif method == "parametric":
        if model is None:
            raise QparseError("qparse evaluate --method parametric needs --model RUN (a qparse baseline train folder)")
        from qparse_lite.baselines.parametric import ParametricParser, load_parametric

        net, pcfg, pmeta = load_parametric(model, device=device)
        check_crop(pmeta["crop"], corpus, str(model), "evaluate it on a corpus prepared with "
                   f"qparse prepare --crop {pmeta['crop']}, or train one on this corpus (qparse baseline train)")
        if pmeta["label_set"]["names"] != list(corpus.label_set.names):
            raise QparseError(
                f"{model}: trained on label set {pmeta['label_set']['name']}, the corpus {corpus.path} has "
                f"{corpus.label_set.name}. Fix: evaluate on the corpus the model was trained with."
            )
        parser = ParametricParser(net, pcfg.input_size, corpus.size, device=device)
        variant = "lraspp-efficientnet-lite0" + ("" if pcfg.pretrained else "-scratch")
    elif method not in METHODS:
        raise QparseError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "label-transfer":  # its own values: the model's postprocess.json, else the profile
        from qparse_lite.parse.defaults import run_profile
        from qparse_lite.profiles import profile_for_dataset

        lt_prof = run_profile(model) if model else profile_for_dataset(str(corpus.meta.get("dataset", "synthetic")))
        post = resolve_postprocess("label-transfer", lt_prof, model, n_segments=n_segments, **lt_knobs)
        n_segments = int(post.values["n_segments"])
        superpixel_method = superpixel_method if n_segments else None
        lt_knobs = {n: float(post.values[n]) for n in lt_knobs}
    if features is None:  # a baseline: the features of the profile whose dataset the corpus holds
        from qparse_lite.profiles import features_for_dataset

        features = features_for_dataset(str(corpus.meta.get("dataset", "synthetic")))
    kmax = max(k, *FIG5_KS) if fig5 else k
    nb = None if method == "parametric" else split_neighbours(corpus, split, kmax, features, Path(knn_dir or out / "knn"))
    fn = make_parser_fn(method, corpus, split, nb, k, parser, superpixel_method, n_segments or 200,
                        **{n: v for n, v in lt_knobs.items() if v is not None})  # fmt: skip
    idx = np.asarray(corpus.split(split))[:limit]
    full_gt = None
    if full_resolution or full_resolution is None:
        from qparse_lite.data.prepare import source_dataset

        try:
            ds = source_dataset(corpus, data_root)
        except QparseError as e:
            if full_resolution:
                raise
            import warnings

            warnings.warn(f"no full-resolution scores: {e}", stacklevel=2)
            ds = None
        if ds is None and full_resolution:
            raise QparseError(f"the corpus {corpus.path} records no dataset to re-open for full-resolution "
                              "scoring. Fix: prepare it with qparse prepare, or pass --crop-level-only.")  # fmt: skip
        full_gt = None if ds is None else full_resolution_gt(corpus, ds)
    sc = evaluate_parser(fn, corpus, idx, corpus.label_set, out, desc=f"evaluate {method}", progress=progress,
                         full_gt=full_gt)  # fmt: skip
    label = name or {
        "mcnn": method_name(variant or ""),  # a trunk variant: its paper row + ", ImageNet trunk"
        "label-transfer": "KNN label transfer (PaperDoll-like)",
        "mean-label-map": "mean label map (prior)",
        "parametric": f"LR-ASPP on EfficientNet-Lite0 ({'ImageNet' if variant and 'scratch' not in variant else 'scratch'}; not in the paper)",
    }[method]
    paper = {"mcnn": paper_row(variant or ""), "label-transfer": "PaperDoll [28]"}.get(method, "")
    if method == "mcnn" and no_ss_asked and paper == "M-CNN":  # the paper's "w/o ss" row, in either family
        paper = "M-CNN (w/o ss)"
    t1, t2 = tables([(label, paper, sc)], corpus.label_set)
    write_tables(t1, out, "table1")
    write_tables(t2, out, "table2")
    if "full_resolution" in sc:
        t1f, t2f = tables([(label, paper, sc["full_resolution"])], corpus.label_set)
        write_tables(t1f, out, "table1_full")
        write_tables(t2f, out, "table2_full")
    if fig5:
        if method != "mcnn":
            raise QparseError("--fig5 sweeps K for the M-CNN; use --method mcnn")
        df = fig5_sweep(parser, corpus, split, nb, FIG5_KS, limit, progress=progress)
        write_tables(df, out, "fig5")
        import matplotlib.pyplot as plt

        ax = plot_fig5(df)
        from qparse_lite.io import atomic_path

        with atomic_path(out / "fig5.png", suffix=".png") as tmp:
            ax.figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(ax.figure)
    rec = run_record(
        stage="evaluate", method=method, model=str(model) if model else None, variant=variant,
        profile=prof.name if prof else None, seed=prof.seed if prof else None,
        dataset=(corpus.meta or {}).get("dataset"), dataset_version=(corpus.meta or {}).get("version"),
        corpus=str(corpus.path), split=split, k=k, features=features, images=len(idx), crop=corpus_crop(corpus),
        size=int(corpus.size), full_resolution="full_resolution" in sc,
        parser={"xi1": getattr(parser, "xi1", None), "xi2": getattr(parser, "xi2", None),
                "erosion": getattr(parser, "erosion", None), "superpixels": superpixel_method,
                "n_segments": n_segments, "background": background,
                "displacement_scale": getattr(parser, "displacement_scale", None), **lt_knobs},
        postprocess=post.record() if post else None, wall_time_s=round(time.perf_counter() - t0, 2),
    )  # fmt: skip
    atomic_write_json(out / "scores.json", json_safe({**sc, "method": label, "run": rec}))
    return {**sc, "method": label, "paper_method": paper, "run": rec}


def parameter_sweep(
    parser: Any, corpus: Any, split: str, neighbours: np.ndarray, name: str, values: Sequence[Any],
    k: int = 9, limit: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The Table 1 metrics of an M-CNN parser for each value of one post-processing parameter.

    ``name`` is an attribute of :class:`~qparse_lite.parse.parser.MCNNParser` (``xi1``, ``xi2``, ``erosion``,
    ``superpixel_method``, ``n_segments``, ``background``, ``displacement_scale``). The M-CNN runs once per image; only the
    post-processing is repeated per value. Used to choose ξ1 on the validation split (notebook 04).
    """
    import copy

    if not hasattr(parser, name):
        raise ValueError(f"the parser has no parameter {name!r}")
    idx = np.asarray(corpus.split(split))[:limit]
    rows = {int(i): r for r, i in enumerate(corpus.split(split))}
    variants = []
    for v in values:
        p = copy.copy(parser)
        setattr(p, name, v)
        variants.append(p)
    cms = [ConfusionMatrix(corpus.label_set.num_labels) for _ in values]
    for i in tqdm(idx, desc=f"{name} sweep", mininterval=1.0, disable=None):
        image, nb = np.asarray(corpus.images[i]), neighbours[rows[int(i)]][:k]
        present, c, t = parser.match(image, nb, feature_image(corpus, i))
        gt = np.asarray(corpus.labels[i])
        for p, cm in zip(variants, cms, strict=True):
            cm.update(p.postprocess(image, nb, present, c, t).labels, gt)
    out = [{name: v, **_strip_method(table1_row(scores(cm, corpus.label_set), str(v)))} for v, cm in zip(values, cms, strict=True)]
    return pd.DataFrame(out)


def _set_knob(parser: Any, name: str, value: Any) -> None:
    """Set one post-processing value on a parser copy; ``n_segments`` 0 turns superpixel smoothing off."""
    setattr(parser, name, value)
    if name == "n_segments":
        parser.superpixel_method = None if not value else (parser.superpixel_method or "slic")


def grid_edges(chosen: dict[str, Any], grid: dict[str, Sequence[Any]]) -> list[str]:
    """The parameters of :func:`tune_postprocessing` whose chosen value is the smallest or largest of
    their grid — the optimum may lie beyond it, so the grid should be widened — except where that end is
    the parameter's own bound (a displacement scale or segment count of 0, ξ of 0 or 1; label transfer's rank
    power γ or minimum share τ of 0, a background weight β of 0). ``None`` values (superpixels off) are ignored."""
    bounds = {"xi1": (0.0, 1.0), "xi2": (0.0, 1.0), "displacement_scale": (0.0, None), "n_segments": (0, None),
              "rank_power": (0.0, None), "bg_weight": (0.0, None), "min_share": (0.0, 1.0)}  # fmt: skip
    out = []
    for name, values in grid.items():
        nums = [x for x in values if isinstance(x, int | float)]
        v = chosen.get(name)
        if not nums or not isinstance(v, int | float):
            continue
        lo, hi = min(nums), max(nums)
        b_lo, b_hi = bounds.get(name, (None, None))
        if (v == lo and lo != b_lo) or (v == hi and hi != b_hi):
            out.append(name)
    return out


def coordinate_ascent(
    score: Callable[[dict[str, Any]], dict[str, Any]], start: dict[str, Any], grid: dict[str, Sequence[Any]],
    metric: str = "avg_f1",
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """Choose the parameters of ``grid`` one at a time in its order: each takes the value of its list that
    maximises ``score(setting)[metric]`` with the ones chosen before it fixed and the later ones at ``start``;
    ties keep the earlier value of its list, so list the default first. ``score`` returns the Table 1 metrics of
    a full setting (every name of ``grid``). The one search of :func:`tune_postprocessing` (the M-CNN) and
    :func:`tune_label_transfer`.

    Returns ``(chosen, table)``: the chosen value per parameter and one row per (parameter, value) tried, with
    the other parameters' values at the time.
    """
    chosen = {name: start[name] for name in grid}
    out = []
    for name, values in grid.items():
        best, best_v = -np.inf, chosen[name]
        for v in values:
            row = score({**chosen, name: v})
            out.append({"parameter": name, "value": v, **{kk: chosen[kk] for kk in chosen if kk != name}, **row})
            if row[metric] > best + 1e-9:
                best, best_v = row[metric], v
        chosen[name] = best_v
    return chosen, pd.DataFrame(out)


def tune_postprocessing(
    parser: Any, corpus: Any, split: str, neighbours: np.ndarray, grid: dict[str, Sequence[Any]], k: int = 9,
    limit: int | None = None, metric: str = "avg_f1", progress: bool | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """Choose post-processing parameters of an M-CNN parser on ``split`` (the **validation** split), one at a
    time in the order of ``grid`` (:func:`coordinate_ascent`: each parameter takes the value that maximises
    ``metric`` with the ones chosen before it fixed; ties keep the earlier value of its list, so list the
    default first), starting from the parser's values. The M-CNN runs once per image; only post-processing
    repeats. ``n_segments`` 0 means no superpixel smoothing (the "w/o ss" setting).

    Returns ``(chosen, table)``: the chosen value per parameter and one row per (parameter, value) tried.
    """
    import copy

    idx = np.asarray(corpus.split(split))[:limit]
    rows = {int(i): r for r, i in enumerate(corpus.split(split))}
    matched = []
    for i in tqdm(idx, desc=f"match {split}", mininterval=1.0, disable=None if progress is None else not progress):
        image, nb = np.asarray(corpus.images[i]), neighbours[rows[int(i)]][:k]
        matched.append((int(i), image, nb, *parser.match(image, nb, feature_image(corpus, i))))

    def score(setting: dict[str, Any]) -> dict[str, Any]:
        p = copy.copy(parser)
        for name, v in setting.items():
            _set_knob(p, name, v)
        cm = ConfusionMatrix(corpus.label_set.num_labels)
        for i, image, nb, present, c, t in matched:
            cm.update(p.postprocess(image, nb, present, c, t).labels, np.asarray(corpus.labels[i]))
        return _strip_method(table1_row(scores(cm, corpus.label_set), ""))

    return coordinate_ascent(score, {name: getattr(parser, name) for name in grid}, grid, metric)


def tune_label_transfer(
    corpus: Any, split: str, neighbours: np.ndarray, grid: dict[str, Sequence[Any]], start: dict[str, Any],
    k: int = 9, limit: int | None = None, metric: str = "avg_f1", superpixel_method: str = "slic",
    progress: bool | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """Choose KNN label transfer's knobs (names of :class:`~qparse_lite.baselines.nonparametric.LabelTransfer`:
    ``rank_power``, ``bg_weight``, ``min_share``, ``n_segments`` with 0 = no superpixels) on ``split`` (the
    **validation** split) by the same :func:`coordinate_ascent` as the M-CNN's, from ``start`` (all four, e.g.
    the profile's values; a knob not in ``grid`` keeps its value there). Each image's neighbour maps are read once and its superpixels computed once per segment count;
    every setting gives exactly the parse of ``LabelTransfer`` with those values.

    Returns ``(chosen, table)`` like :func:`tune_postprocessing`.
    """
    from qparse_lite.baselines.nonparametric import LabelTransfer
    from qparse_lite.parse.postprocess import superpixels

    idx = np.asarray(corpus.split(split))[:limit]
    rows = {int(i): r for r, i in enumerate(corpus.split(split))}
    images = [(int(i), np.asarray(corpus.images[i]), np.asarray(corpus.labels[neighbours[rows[int(i)]][:k]]))
              for i in idx]  # fmt: skip
    segs: dict[int, list[np.ndarray]] = {}  # one segment count at a time: the ascent sweeps it last, once each

    def segments(n: int) -> list[np.ndarray]:
        if n not in segs:
            segs.clear()
            segs[n] = [superpixels(image, method=superpixel_method, n_segments=n)
                       for _, image, _ in tqdm(images, desc=f"superpixels ({n})", mininterval=1.0,
                                               disable=None if progress is None else not progress)]  # fmt: skip
        return segs[n]

    def score(setting: dict[str, Any]) -> dict[str, Any]:
        knobs = {**start, **setting}
        ns = int(knobs["n_segments"])
        lt = LabelTransfer(corpus.label_set.num_labels, superpixel_method if ns else None, **knobs)
        seg = segments(ns) if ns else [None] * len(images)
        cm = ConfusionMatrix(corpus.label_set.num_labels)
        for (i, image, nb_labels), s in zip(images, seg, strict=True):
            cm.update(lt(image, nb_labels, s), np.asarray(corpus.labels[i]))
        return _strip_method(table1_row(scores(cm, corpus.label_set), ""))

    return coordinate_ascent(score, start, grid, metric)
