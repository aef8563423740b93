"""Post-processing defaults of a run: every value from a flag, the model's ``postprocess.json``, or its profile.

The post-processing knobs (docs/paper.md §1.6-1.8) are ξ1 (label visibility), ξ2 (rough foreground), the
SLIC superpixel count (0 = no smoothing, the "w/o ss" row) and the displacement scale (how far each KNN box
moves by t̂; 1 = the paper). The values that suit a model depend on its confidences, so they belong to
the model: ``qparse tune`` chooses them on the **validation** split and writes ``postprocess.json`` beside
the checkpoint (:func:`write_postprocess`), one entry per method: the M-CNN's, and KNN label transfer's own four
(its rank power γ, background weight β, minimum label share τ and segment count; the kit's knobs, see
:mod:`qparse_lite.baselines.nonparametric`). ``qparse evaluate`` and ``qparse parse`` then resolve each value
(:func:`resolve_postprocess`):

1. ``flag``: a value given on the command line wins (the paper's row: ``--xi1 0.8 --xi2 0.5 --n-segments 200
   --displacement-scale 1``; label transfer: ``--lt-rank-power``, ``--lt-bg-weight``, ``--lt-min-share``,
   ``--n-segments``);
2. ``model``: else the model folder's ``postprocess.json`` for that method;
3. ``profile``: else the profile the run was trained with (``run.json: profile_fields``; a trunk-family
   network its ``trunk_*`` fallbacks where set; for a baseline without a model, the profile of the corpus's
   dataset).

The source of every value is printed and recorded (``scores.json: run.postprocess``, ``parse.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qparse_lite.errors import QparseError
from qparse_lite.io import atomic_write_json
from qparse_lite.profiles import Profile

__all__ = [
    "POSTPROCESS_FILE", "KNOBS", "SOURCES", "Resolved", "profile_values", "run_profile", "read_postprocess",
    "tuned_values", "resolve_postprocess", "write_postprocess",
]  # fmt: skip

POSTPROCESS_FILE = "postprocess.json"
"""The file beside a model's checkpoint that holds its post-processing values chosen on validation."""

KNOBS: dict[str, tuple[str, ...]] = {
    "mcnn": ("xi1", "xi2", "n_segments", "displacement_scale"),
    "label-transfer": ("rank_power", "bg_weight", "min_share", "n_segments"),
}
"""The tuned post-processing values of each method (``n_segments`` 0 = no superpixel smoothing; label transfer's
are the fields of :class:`~qparse_lite.baselines.nonparametric.LabelTransfer`)."""

SOURCES = ("flag", "model", "profile")
"""Where a value can come from, in order of precedence."""

_PROFILE_FIELDS = {
    "mcnn": {"xi1": "xi1", "xi2": "xi2", "n_segments": "n_segments", "displacement_scale": "displacement_scale"},
    "label-transfer": {"rank_power": "lt_rank_power", "bg_weight": "lt_bg_weight", "min_share": "lt_min_share",
                       "n_segments": "lt_n_segments"},
}


@dataclass(frozen=True)
class Resolved:
    """Resolved post-processing values of one method: ``values[name]`` and ``sources[name]`` (one of
    :data:`SOURCES`); ``file`` is the ``postprocess.json`` read, if any."""

    method: str
    values: dict[str, Any]
    sources: dict[str, str]
    file: str | None = None

    def describe(self) -> str:
        """One line for the console: ``post-processing (mcnn): xi1 0.5 [model], xi2 0.1 [model], ...``."""
        parts = [f"{k} {v} [{self.sources[k]}]" for k, v in self.values.items()]
        return f"post-processing ({self.method}): " + ", ".join(parts)

    def record(self) -> dict[str, Any]:
        """The JSON record of the resolution (values, their sources, the file read)."""
        return {"method": self.method, "values": dict(self.values), "sources": dict(self.sources), "file": self.file}


def _check_method(method: str) -> None:
    if method not in KNOBS:
        raise QparseError(f"no tunable post-processing for method {method!r}; methods: {', '.join(KNOBS)}")


def profile_values(profile: Profile, method: str, family: str = "scratch") -> dict[str, Any]:
    """The fallback values of ``method`` in ``profile`` (its fields ``xi1``, ``xi2``, ``n_segments``,
    ``displacement_scale``, or for a trunk-family network (``family="trunk"``) the ``trunk_*`` ones where set:
    :meth:`~qparse_lite.profiles.Profile.postprocess_for`; label transfer: ``lt_rank_power``, ``lt_bg_weight``,
    ``lt_min_share``, ``lt_n_segments``)."""
    _check_method(method)
    if method == "mcnn":
        return profile.postprocess_for(family)
    return {k: getattr(profile, f) for k, f in _PROFILE_FIELDS[method].items()}


def run_profile(model_dir: str | Path) -> Profile:
    """The profile a run was trained with, from ``model_dir/run.json`` (``profile_fields``; fields a newer
    kit added keep their defaults).

    Raises:
        QparseError: no run.json, or one without ``profile_fields``.
    """
    import json
    from dataclasses import fields

    path = Path(model_dir) / "run.json"
    if not path.is_file():
        raise QparseError(f"{path}: no run record. Fix: pass a `qparse train` run folder as --model")
    rec = json.loads(path.read_text())
    prof = rec.get("profile_fields")
    if not isinstance(prof, dict):
        raise QparseError(f"{path}: no profile_fields. Fix: pass a `qparse train` run folder as --model")
    known = {f.name for f in fields(Profile)}
    return Profile(**{k: v for k, v in prof.items() if k in known})


def read_postprocess(model_dir: str | Path) -> dict[str, Any] | None:
    """``model_dir/postprocess.json`` as a dict, or None when the run has none.

    Raises:
        QparseError: the file is not valid JSON, has no ``methods``, or was chosen on the test split.
    """
    import json

    path = Path(model_dir) / POSTPROCESS_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise QparseError(f"{path}: not valid JSON ({e}). Fix: rerun `qparse tune --model {model_dir} ...` "
                          "or delete the file to fall back to the profile") from None  # fmt: skip
    if not isinstance(rec, dict) or not isinstance(rec.get("methods"), dict):
        raise QparseError(f"{path}: no 'methods' object. Fix: rerun `qparse tune --model {model_dir} ...`")
    for method, entry in rec["methods"].items():
        if (entry or {}).get("split") == "test":
            raise QparseError(f"{path}: the {method} values were chosen on the test split. Fix: delete the file "
                              f"and rerun `qparse tune --model {model_dir} --split val ...`")  # fmt: skip
    return rec


def tuned_values(model_dir: str | Path | None, method: str) -> dict[str, Any]:
    """The values of ``method`` in ``model_dir/postprocess.json`` ({} when there is no file or no entry)."""
    _check_method(method)
    if model_dir is None:
        return {}
    rec = read_postprocess(model_dir)
    entry = (rec or {}).get("methods", {}).get(method) or {}
    return {k: v for k, v in (entry.get("values") or {}).items() if k in KNOBS[method]}


def resolve_postprocess(
    method: str, profile: Profile, model_dir: str | Path | None = None, *, family: str = "scratch", **flags: Any
) -> Resolved:
    """Each post-processing value of ``method``: the flag when not None, else the model's
    ``postprocess.json``, else ``profile`` (its ``family``'s fallbacks, :func:`profile_values`; see the module
    docstring). ``flags`` are keyword arguments named as in :data:`KNOBS` (``xi1=None, n_segments=400, ...``);
    unknown names raise :class:`QparseError`."""
    _check_method(method)
    unknown = set(flags) - set(KNOBS[method])
    if unknown:
        raise QparseError(f"{method} has no post-processing value(s) {sorted(unknown)}; it has {', '.join(KNOBS[method])}")
    tuned = tuned_values(model_dir, method)
    prof = profile_values(profile, method, family)
    values, sources = {}, {}
    for k in KNOBS[method]:
        if flags.get(k) is not None:
            values[k], sources[k] = flags[k], "flag"
        elif k in tuned:
            values[k], sources[k] = tuned[k], "model"
        else:
            values[k], sources[k] = prof[k], "profile"
    file = str(Path(model_dir) / POSTPROCESS_FILE) if "model" in sources.values() else None
    return Resolved(method, values, sources, file)


def write_postprocess(
    model_dir: str | Path, method: str, values: dict[str, Any], *, split: str, grid: dict[str, list[Any]],
    table: list[dict[str, Any]], score: dict[str, Any], record: dict[str, Any],
) -> Path:  # fmt: skip
    """Store ``method``'s chosen ``values`` in ``model_dir/postprocess.json`` (other methods' entries are
    kept), with the split they were chosen on, the grid, one row per value tried (``table``), the chosen
    setting's scores and the run record. Refuses the test split.

    Raises:
        QparseError: ``split`` is ``test``, ``values`` misses or adds a knob, or ``model_dir`` does not exist.
    """
    _check_method(method)
    if split == "test":
        raise QparseError(f"{model_dir}: post-processing chosen on the test split would score the test split with "
                          "values fitted to it. Fix: --split val")  # fmt: skip
    if set(values) != set(KNOBS[method]):
        raise QparseError(f"{method}: expected values for {', '.join(KNOBS[method])}, got {', '.join(values)}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise QparseError(f"{model_dir}: no such model folder. Fix: pass a `qparse train` run folder")
    rec = read_postprocess(model_dir) or {"methods": {}}
    rec["methods"][method] = {"values": dict(values), "split": split, "grid": grid, "score": score,
                              "table": table, "run": record}  # fmt: skip
    return atomic_write_json(model_dir / POSTPROCESS_FILE, rec)
