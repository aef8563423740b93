"""The evaluation harness: one loop for every parser, Table 1/2 rows, and the Fig. 5 sweep.

A *parser* here is any callable ``parse(i) -> H×W uint8`` over corpus indices of the evaluated split;
the harness accumulates one confusion matrix over the split (``qparse_lite.metrics``), optionally
writes per-image PNG label maps that ``qparse score`` accepts (``pred/<id>.png`` and ``gt/<id>.png``),
and returns the scores. Images are evaluated at the corpus crop resolution S×S (the prepared,
human-centric crop); the paper evaluates ATR at the images' own resolution, which this kit does not
hold after preparation — a documented difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .io import atomic_save_png, atomic_write_text
from .labels import LabelSet
from .metrics import ConfusionMatrix, scores, table1_row, table2_row
from .reported import label_column

__all__ = ["evaluate_parser", "tables", "write_tables", "k_sweep"]


def evaluate_parser(
    parse: Callable[[int], np.ndarray],
    corpus: Any,
    indices: Iterable[int],
    label_set: LabelSet,
    out_dir: str | Path | None = None,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Run ``parse`` over ``indices`` of ``corpus``, return :func:`qparse_lite.metrics.scores`.

    With ``out_dir``, writes ``out_dir/pred/<id>.png`` and ``out_dir/gt/<id>.png`` (palette PNGs).
    """
    cm = ConfusionMatrix(label_set.num_labels)
    out = Path(out_dir) if out_dir is not None else None
    for i in tqdm(list(indices), desc=desc, mininterval=1.0, disable=None):
        pred = np.asarray(parse(int(i)), dtype=np.uint8)
        gt = np.asarray(corpus.labels[int(i)])
        cm.update(pred, gt)
        if out is not None:
            name = f"{corpus.ids[int(i)]}.png"
            atomic_save_png(out / "pred" / name, pred, label_set.palette)
            atomic_save_png(out / "gt" / name, gt, label_set.palette)
    return scores(cm, label_set)


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


def write_tables(df: pd.DataFrame, out: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``out/name.csv`` and ``out/name.md`` atomically."""
    out = Path(out)
    csv = atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.2f"))
    md = atomic_write_text(out / f"{name}.md", df.to_markdown(index=False, floatfmt=".2f") + "\n")
    return csv, md


def k_sweep(
    parse_k: Callable[[int, int], np.ndarray],
    corpus: Any,
    indices: Sequence[int],
    label_set: LabelSet,
    ks: Sequence[int] = (1, 3, 5, 7, 9, 11, 15),
) -> pd.DataFrame:
    """Fig. 5: average F1 (and the other Table 1 metrics) against K.

    ``parse_k(i, k)`` parses corpus image ``i`` with its first ``k`` neighbours; parsers that match
    all ``max(ks)`` neighbours once and reuse them for smaller K make the sweep cheap.
    """
    cms = {k: ConfusionMatrix(label_set.num_labels) for k in ks}
    for i in tqdm(list(indices), desc="K sweep", mininterval=1.0, disable=None):
        gt = np.asarray(corpus.labels[int(i)])
        for k in ks:
            cms[k].update(np.asarray(parse_k(int(i), k), dtype=np.uint8), gt)
    rows = [{"k": k, **_strip_method(table1_row(scores(cms[k], label_set), f"K={k}"))} for k in ks]
    return pd.DataFrame(rows)
