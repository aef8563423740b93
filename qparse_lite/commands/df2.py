"""``qparse df2``: DeepFashion2 format tools (docs/paper.md §4): evaluate, convert to COCO, export CCP or a
prepared corpus."""

from __future__ import annotations

import argparse
import json

from qparse_lite.commands.common import add_data_root, add_progress, add_split, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "df2",
        help="DeepFashion2 / Match R-CNN tools: evaluate results, convert to COCO, export CCP as DF2",
        description="Tools for the DeepFashion2 annotation format (annos/<id>.json): COCO AP of boxes or "
        "masks overall and per subset (scale, occlusion, zoom-in, viewpoint; Table 4 of the note), "
        "consumer-to-shop top-k retrieval accuracy, conversion to COCO, and export of the CCP mirror "
        "into the same format.",
    )
    s = p.add_subparsers(dest="df2_command", metavar="ACTION")
    s.required = True

    e = s.add_parser("eval", help="score results against DeepFashion2 annotations")
    e.add_argument("--annos", required=True, help="folder of DeepFashion2 annotation files (<id>.json)")
    e.add_argument("--results", required=True,
                   help="results JSON: COCO results (segm/bbox) or DeepFashion2 retrieval results")  # fmt: skip
    e.add_argument("--task", required=True, choices=["segm", "bbox", "retrieval"],
                   help="segm: AP_mask; bbox: AP_box; retrieval: top-k accuracy")  # fmt: skip
    e.add_argument("--images", default=None,
                   help="image folder (<id>.jpg) for image sizes; default: width/height of the annotation files")  # fmt: skip
    e.add_argument("--no-subsets", action="store_true", help="overall AP only (segm/bbox)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a Markdown table")
    e.set_defaults(func=_eval)

    c = s.add_parser("to-coco", help="convert DeepFashion2 annotations to one COCO ground-truth JSON")
    c.add_argument("--annos", required=True, help="folder of DeepFashion2 annotation files (<id>.json)")
    c.add_argument("--images", default=None, help="image folder (<id>.jpg); sizes are read from the images")
    c.add_argument("--out", required=True, help="COCO JSON file to write")
    c.set_defaults(func=_to_coco)

    x = s.add_parser("export-ccp", help="write the CCP mirror's pixel annotations as DeepFashion2 files")
    add_data_root(x, required=True, help="CCP mirror (read only; never written)")
    x.add_argument("--out", required=True, help="output folder; annotations go to OUT/annos/<id>.json")
    x.add_argument(
        "--ids", nargs="*", default=None, help="only these image ids (e.g. 0001 0002); default all"
    )
    add_split(x, default=None, help="only this split of qparse_lite.data.datasets (default: every image)")
    x.add_argument("--min-area", type=int, default=200, help="smallest item in pixels (default 200)")
    add_progress(x)
    x.set_defaults(func=_export)

    y = s.add_parser(
        "export-corpus",
        help="write a prepared corpus (qparse prepare) as DeepFashion2 files: garments become items",
        description="Export one split of a prepared corpus (any profile: synthetic, CCP, ATR crops) as "
        "DeepFashion2 annotation files OUT/annos/<id>.json (+ OUT/images/<id>.png). Items: one per garment "
        "category present (qparse_lite.match_rcnn.format.CORPUS_GARMENTS says which labels are garments); scale from "
        "the box area; occlusion, zoom-in and viewpoint 0 = unknown.",
    )
    y.add_argument("--corpus", required=True, help="prepared corpus folder (the --out of qparse prepare)")
    y.add_argument("--out", required=True, help="output folder")
    add_split(y, default="test")
    y.add_argument("--min-area", type=int, default=4, help="smallest item in crop pixels (default 4)")
    y.add_argument("--no-images", action="store_true", help="annotations only, no PNG crops")
    add_progress(y)
    y.set_defaults(func=_export_corpus)


def _eval(args: argparse.Namespace) -> int:
    from qparse_lite.match_rcnn.coco import read_results, to_coco
    from qparse_lite.match_rcnn.format import load_annos
    from qparse_lite.match_rcnn.metrics import (
        detection_table,
        evaluate_detections,
        evaluate_retrieval,
        retrieval_table,
    )

    images = load_annos(args.annos)
    results = read_results(args.results)
    if args.task == "retrieval":
        ev = evaluate_retrieval(images, results, results_name=args.results)
        print(json.dumps(ev) if args.json else retrieval_table(ev))
        return 0
    gt = to_coco(images, args.images)
    ev = evaluate_detections(
        gt, results, args.task, subsets=not args.no_subsets, results_name=args.results
    )
    print(json.dumps(ev) if args.json else detection_table(ev))
    return 0


def _to_coco(args: argparse.Namespace) -> int:
    from qparse_lite.io import atomic_write_json
    from qparse_lite.match_rcnn.coco import to_coco

    d = to_coco(args.annos, args.images)
    atomic_write_json(args.out, d)
    print(f"wrote {args.out}: {len(d['images'])} images, {len(d['annotations'])} annotations")
    return 0


def _export(args: argparse.Namespace) -> int:
    from qparse_lite.match_rcnn.export import export_ccp

    s = export_ccp(args.data_root, args.out, ids=args.ids, split=args.split, min_area=args.min_area,
                       progress=progress(args))  # fmt: skip
    print(
        f"exported {s['n_images']} images, {s['n_items']} items in {s['seconds']:.1f} s to {args.out}/annos"
    )
    print("| category | items |\n|---|---:|")
    for name, n in s["items_per_category"].items():
        print(f"| {name} | {n} |")
    return 0


def _export_corpus(args: argparse.Namespace) -> int:
    from qparse_lite.data.prepare import Corpus
    from qparse_lite.match_rcnn.export import export_corpus

    corpus = Corpus.load(args.corpus)
    s = export_corpus(corpus, args.out, split=args.split, min_area=args.min_area,
                          write_images=not args.no_images, progress=progress(args))  # fmt: skip
    print(f"exported {s['n_images']} {args.split} images, {s['n_items']} items to {args.out}/annos")
    print("| category | items |\n|---|---:|")
    for name, n in s["items_per_category"].items():
        print(f"| {name} | {n} |")
    return 0
