"""The second matching system (docs/paper.md §4): Match R-CNN and DeepFashion2 (Ge et al., CVPR 2019).

The DeepFashion2 tools — :mod:`~qparse_lite.match_rcnn.format` (categories, the annotation loader, garment
tables, mask ↔ polygon geometry), :mod:`~qparse_lite.match_rcnn.coco` (COCO ground truth and results files),
:mod:`~qparse_lite.match_rcnn.metrics` (AP per subset, retrieval top-k, tables) and
:mod:`~qparse_lite.match_rcnn.export` (CCP and corpus exporters, label maps ↔ instances) — and the model:
:mod:`~qparse_lite.match_rcnn.model` (network and loss), :mod:`~qparse_lite.match_rcnn.data` (samples),
:mod:`~qparse_lite.match_rcnn.train` (the loop), :mod:`~qparse_lite.match_rcnn.evaluate` (scores and report)
and :mod:`~qparse_lite.match_rcnn.figures`.

Match R-CNN is benchmarked on DeepFashion2. The DeepFashion2 tools read DeepFashion2's per-image annotation files, converts them to COCO, scores detections and
masks with pycocotools (overall and per subset, like Table 4 of the note), scores consumer-to-shop
retrieval by DeepFashion2's own protocol, and exports the Clothing Co-Parsing (CCP) mirror
(:func:`export_ccp`) or any prepared corpus (:func:`export_corpus`: the synthetic quick data, CCP or ATR
crops) into the same layout so that everything also runs on data the kit has.

**Parsers meet detectors.** A parser (the M-CNN) outputs a label map, a detector (Match R-CNN) outputs
scored instances. :func:`instances_from_label_map` turns a label map into instances (one per garment
category present, scored by the mean label probability) for AP_mask; :func:`instances_to_label_map`
paints instances into a garment label map for the pixel metrics of :mod:`qparse_lite.metrics`. Which
labels are garments is :data:`CORPUS_GARMENTS`.

**Annotation layout** (``annos/000001.json``; any numeric file stem works, its integer is the image id)::

    {"source": "user" | "shop", "pair_id": int,
     "item1": {"category_id": 1..13, "category_name": str, "style": int >= 0,
               "bounding_box": [x1, y1, x2, y2], "landmarks": [x, y, v, ...],
               "segmentation": [[x, y, x, y, ...], ...],
               "scale": 1|2|3, "occlusion": 1|2|3, "zoom_in": 1|2|3, "viewpoint": 1|2|3},
     "item2": {...}, ...}

Kit extensions: optional image-level ``width``/``height`` (used when the image file is not at hand);
attribute value ``0`` means *unknown* (the CCP export uses it for occlusion, zoom-in and viewpoint);
``category_id`` ≥ 14 are the kit's own categories of :data:`KIT_CATEGORIES` (CCP garments with no
DeepFashion2 counterpart).

**Results formats.** Detection/segmentation: a COCO results JSON list of
``{"image_id", "category_id", "score", "bbox": [x, y, w, h], "segmentation": RLE | [polygon, ...]}``
(``bbox`` is enough for ``--task bbox``, ``segmentation`` is required for ``--task segm``).
Retrieval: DeepFashion2's own format, one entry per *detected* consumer item::

    {"query_image_id": int, "query_bbox": [x1, y1, x2, y2], "query_score": float,
     "query_cls": int (optional), "gallery_image_id": [int, ...],      # ranked, best first
     "gallery_bbox": [[x1, y1, x2, y2], ...]}                             # same length

**Per-subset AP.** For a subset (say occlusion = heavy) every ground-truth item outside it is marked
*ignore*: a detection matched to an ignored item is dropped (neither true nor false positive), an
ignored item never counts as missed. pycocotools' ``COCOeval._prepare`` overwrites a ground truth's
``ignore`` with its ``iscrowd`` flag (pycocotools 2.0.x, cocoeval.py), so setting ``ignore`` in the
annotation file does not work; :func:`evaluate_detections` sets the flag on the prepared ground truth
after ``_prepare`` and re-runs ``evaluateImg`` on the cached IoUs. IoUs stay the ordinary (non-crowd)
ones. Unmatched detections remain false positives in every subset.
"""
