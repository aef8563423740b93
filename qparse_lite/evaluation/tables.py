"""Tables as Markdown and JSON: the writers behind every Table 1/2 file the kit produces."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qparse_lite.io import atomic_write_text


def markdown_table(rows: pd.DataFrame | Sequence[Mapping[str, Any]], floatfmt: str = ".2f") -> str:
    """A Markdown (pipe) table of ``rows``; NaN prints as ``n/a``."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    df = df.astype(object).where(df.notna(), None)  # tabulate's missingval applies to None, not NaN
    return df.to_markdown(index=False, floatfmt=floatfmt, missingval="n/a")


def write_table(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]], out_dir: str | Path, name: str
) -> tuple[Path, Path]:
    """Write ``out_dir/name.csv`` and ``out_dir/name.md`` atomically (2 decimals; NaN → empty / n/a)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    out = Path(out_dir)
    csv = atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.2f"))
    md = atomic_write_text(out / f"{name}.md", markdown_table(df) + "\n")
    return csv, md


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by ``None`` and numpy scalars by Python ones (for JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
