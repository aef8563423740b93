"""``qparse match-rcnn``: train Match R-CNN on DeepFashion2-format data (the CCP export) and evaluate it
(docs/paper.md §4): AP_box / AP_mask per subset beside the note's Table 4, consumer-to-shop top-k."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from qparse_lite.commands.common import add_device, add_progress, add_split, progress
from qparse_lite.errors import QparseError

#: ``--budget`` presets: CPU (EfficientNet-Lite0, shorter side 320, minutes) and GPU (the note's scale).
BUDGETS: dict[str, dict[str, Any]] = {
    "cpu": {"steps": 1000, "batch_size": 2, "lr": 0.01, "min_size": 320, "max_size": 480,
            "backbone": "efficientnet-lite0"},
    "gpu": {"steps": 20_000, "batch_size": 8, "lr": 0.02, "min_size": 800, "max_size": 1333, "backbone": "auto"},
}  # fmt: skip
#: Detector options of the CPU preset (fewer proposals and sampled RoIs than torchvision's defaults).
CPU_DETECTOR = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 300,
                "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 128, "box_detections_per_img": 30}  # fmt: skip


def _add_data(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data-root", help="CCP mirror (read only): its splits are exported as DeepFashion2 files")
    g.add_argument("--df2", help="a DeepFashion2-layout folder with <split>/annos/*.json and <split>/images/")


def _add_common(p: argparse.ArgumentParser) -> None:
    add_device(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_progress(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "match-rcnn",
        help="train / evaluate Match R-CNN (DeepFashion2's system) on the CCP export or DeepFashion2 files",
        description="Match R-CNN = Mask R-CNN + a matching network (qparse_lite.match_rcnn.model). `train` "
        "fits it on the train split (CCP exported to DeepFashion2 format, or any DeepFashion2-layout "
        "folder); `eval` scores the test split: AP_box / AP_mask (COCO .50:.95, AP50, AP75) per subset "
        "beside the note's Table 4, and top-k retrieval on the two-views protocol against random ranking.",
    )
    s = p.add_subparsers(dest="match_rcnn_command", metavar="ACTION")
    s.required = True

    t = s.add_parser("train", help="train Match R-CNN (checkpoints, exact --resume, a wall-clock budget)")
    _add_data(t)
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv, run.json, data/")
    t.add_argument("--budget", default="cpu", choices=sorted(BUDGETS),
                   help="preset of steps/batch/lr/input size/backbone: cpu (default; EfficientNet-Lite0, "
                        "shorter side 320) or gpu (the note's scale)")  # fmt: skip
    t.add_argument("--steps", type=int, default=None, help="SGD steps of the schedule (default: the preset's)")
    t.add_argument("--minutes", type=float, default=None,
                   help="stop after this much wall time (checkpoint kept; --resume continues)")  # fmt: skip
    t.add_argument("--batch-size", type=int, default=None, help="images per step (each also as a view)")
    t.add_argument("--lr", type=float, default=None, help="SGD learning rate (momentum 0.9)")
    t.add_argument("--warmup", type=float, default=0.1, help="linear warm-up, fraction of --steps (default 0.1)")
    t.add_argument("--min-size", type=int, default=None, help="shorter image side fed to the detector")
    t.add_argument("--max-size", type=int, default=None, help="longer side cap")
    t.add_argument("--backbone", default=None, choices=["auto", "efficientnet-lite0", "resnet50"],
                   help="default: the preset's")  # fmt: skip
    t.add_argument("--max-images", type=int, default=None, help="train on the first N images only")
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    t.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    t.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt exactly")
    _add_common(t)
    t.set_defaults(func=_train)

    e = s.add_parser("eval", help="AP_box / AP_mask per subset and retrieval top-k of a trained run")
    _add_data(e)
    e.add_argument("--run", required=True, help="run folder of `qparse match-rcnn train` (or its checkpoint.pt)")
    e.add_argument("--out", required=True, help="results folder: report.md, *.csv, run.json, *.png")
    add_split(e, default="test", help="split to score (default test)")
    e.add_argument("--max-images", type=int, default=None, help="score the first N images only")
    e.add_argument("--retrieval-images", type=int, default=None,
                   help="images in the two-views retrieval set (default: all scored images)")  # fmt: skip
    e.add_argument("--score-thresh", type=float, default=0.05, help="detection score threshold of AP (default 0.05)")
    e.add_argument("--retrieval-score-thresh", type=float, default=0.3,
                   help="score threshold of retrieval queries and gallery items (default 0.3)")  # fmt: skip
    _add_common(e)
    e.set_defaults(func=_eval)


def _dataset_version(args: argparse.Namespace) -> str:
    if args.data_root:
        from qparse_lite.data.datasets import get_dataset

        return get_dataset("ccp", root=args.data_root).version
    return f"df2 folder {Path(args.df2).name}"


def _split_dirs(args: argparse.Namespace, split: str, work: Path, progress: bool | None) -> tuple[Path, Path]:
    """(annos folder, images folder) of ``split``; the CCP mirror is exported once into ``work``."""
    if args.df2:
        annos, images = Path(args.df2) / split / "annos", Path(args.df2) / split / "images"
        if not annos.is_dir():
            raise QparseError(f"{annos}: no annotation folder. Fix: --df2 needs {split}/annos/*.json inside.")
        return annos, images
    from qparse_lite.match_rcnn.export import export_ccp

    root = Path(args.data_root)
    if not (root / "label_list.mat").is_file():
        raise QparseError(f"{root}: not a CCP mirror (no label_list.mat). Fix: pass the mirror as --data-root.")
    dest = work / split
    if not (dest / "export.json").is_file():
        export_ccp(root, dest, split=split, progress=progress)
    return dest / "annos", root / "photos"


def _setup(args: argparse.Namespace) -> tuple[bool | None, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return progress(args), torch


def _train(args: argparse.Namespace) -> int:
    from qparse_lite.match_rcnn.data import Df2Detection
    from qparse_lite.match_rcnn.format import CATEGORIES, load_annos
    from qparse_lite.match_rcnn.model import MatchRCNN
    from qparse_lite.match_rcnn.train import train

    progress, torch = _setup(args)
    b = dict(BUDGETS[args.budget])
    for k in ("steps", "batch_size", "lr", "min_size", "max_size", "backbone"):
        if getattr(args, k) is not None:
            b[k] = getattr(args, k)
    out = Path(args.out)
    annos, images = _split_dirs(args, "train", out / "data", progress)
    ids = None
    if args.max_images:
        ids = [im.image_id for im in load_annos(annos)][: args.max_images]
    ds = Df2Detection(annos, images, ids=ids, max_side=b["max_size"])
    detector_kw = CPU_DETECTOR if args.budget == "cpu" else {}
    torch.manual_seed(args.seed)
    model = MatchRCNN(max(CATEGORIES) + 1, backbone=b["backbone"], min_size=b["min_size"],
                      max_size=b["max_size"], **detector_kw)  # fmt: skip
    print(f"Match R-CNN ({model.backbone_name}; {model.weights_source}); {len(ds)} train images, "
          f"{b['steps']} steps × {b['batch_size']} images + views, input {b['min_size']}-{b['max_size']} px, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    t0 = time.perf_counter()
    train(model, ds, out, steps=b["steps"], batch_size=b["batch_size"], lr=b["lr"], device=args.device,
          checkpoint_every=args.checkpoint_every, seed=args.seed, resume=args.resume, num_workers=args.workers,
          progress=progress, warmup=args.warmup, max_minutes=args.minutes,
          record={"command": "qparse match-rcnn train", "budget": args.budget, "dataset_version": _dataset_version(args),
                  "data": "ccp export" if args.data_root else "df2 folder", "n_train_images": len(ds),
                  "minutes_budget": args.minutes})  # fmt: skip
    import json

    rec = json.loads((out / "run.json").read_text())
    print(f"trained {rec['steps_done']}/{b['steps']} steps in {time.perf_counter() - t0:.0f} s"
          + (f" ({rec['stopped_early']})" if rec["stopped_early"] else "") + f" → {out}/checkpoint.pt")  # fmt: skip
    return 0


def _eval(args: argparse.Namespace) -> int:
    from qparse_lite.match_rcnn.evaluate import evaluate_run

    progress, _ = _setup(args)
    run = Path(args.run)
    work = (run if run.is_dir() else run.parent) / "data"
    annos, images = _split_dirs(args, args.split, work, progress)
    ev = evaluate_run(run, annos, images, args.out, split=args.split, max_images=args.max_images,
                      retrieval_images=args.retrieval_images, score_thresh=args.score_thresh, device=args.device,
                      retrieval_score_thresh=args.retrieval_score_thresh,
                      seed=args.seed, dataset_version=_dataset_version(args), progress=progress)  # fmt: skip
    print(ev["summary"])
    return 0
