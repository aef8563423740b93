"""Ship a trained run as a self-contained model folder for ``qparse parse`` (issue 30).

    python data_scripts/ship_model.py RUN CORPUS OUT

``OUT`` gets the run's ``checkpoint.pt``, ``run.json``, ``log.csv`` and ``postprocess.json`` (when tuned), the
corpus's retrieval head as ``retrieval_head.pt`` (so photos retrieve their neighbours with the head the model
was trained with), the corpus's ``fg-head`` person detector as ``person_head.pt`` (trained on the corpus's
train split when it is missing: :func:`qparse_lite.data.person.fit_person_head`) and ``corpus.json``, the record
of the corpus the model needs beside it (the command that prepares it, its fingerprint and checksums: ``qparse
parse --corpus`` must be that corpus, and the checksums let a user verify it). Every file is copied atomically;
an existing OUT is refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from qparse_lite.data.crops import corpus_fingerprint
from qparse_lite.data.person import PERSON_HEAD_FILE, fit_person_head
from qparse_lite.data.prepare import Corpus
from qparse_lite.io import atomic_write_json
from qparse_lite.retrieval.features import get_extractor


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    if tmp.stat().st_size != src.stat().st_size:
        raise OSError(f"{tmp}: short copy of {src}")
    tmp.replace(dst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("corpus", type=Path)
    p.add_argument("out", type=Path)
    a = p.parse_args()
    if a.out.exists():
        sys.exit(f"{a.out} exists; choose a new folder (nothing was written)")
    corpus = Corpus.load(a.corpus)
    rec = json.loads((a.run / "run.json").read_text())
    head = get_extractor(rec["profile_fields"]["features"], corpus=corpus)
    person = fit_person_head(corpus)
    a.out.mkdir(parents=True)
    for name in ("checkpoint.pt", "run.json", "log.csv", "postprocess.json"):
        if (a.run / name).is_file():
            _copy(a.run / name, a.out / name)
    if getattr(head, "path", None) is not None:
        _copy(Path(head.path), a.out / "retrieval_head.pt")
    _copy(Path(person), a.out / PERSON_HEAD_FILE)
    meta = corpus.meta
    args = list(meta.get("prepare_args") or [])
    for flag, word in (("--data-root", "DIR"), ("--root", "DIR"), ("--out", "CORPUS")):  # no machine paths
        if flag in args[:-1]:
            args[args.index(flag) + 1] = word
    record = {
        "command": " ".join(["qparse", "prepare", *args, "--out", "CORPUS"]), "prepare_args": args,
        "dataset_version": meta.get("version"), "size": meta.get("size"), "feature_size": meta.get("feature_size"),
        "crop": meta.get("crop"), "margin": meta.get("margin"), "fingerprint": corpus_fingerprint(corpus),
        "checksums": meta.get("checksums"), "splits": {k: len(v) for k, v in meta.get("splits", {}).items()},
    }  # fmt: skip
    atomic_write_json(a.out / "corpus.json", record)
    print(f"{a.out}: " + ", ".join(sorted(f.name for f in a.out.iterdir())))


if __name__ == "__main__":
    main()
