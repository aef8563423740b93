"""Quasi-parametric parsing of one test image (paper Sec. 3.3, Fig. 1), stage by stage.

For a test image I and its K nearest corpus images g_1..g_K:

1. **Matching** (the M-CNN stage). Every KNN region g_kl (g_k with only label l kept, the rest the
   corpus mean image) is paired with I and the M-CNN predicts (ĉ_kl, t̂_kl). All K×L pairs run in
   batched passes; the test image's own path is computed once (``encode_test``) and shared.
2. **Label confidence** ĉ_l = mean of ĉ_kl over the KNN images that contain l; l is visible iff
   ĉ_l > ξ1.
3. **Transfer.** For each visible l and each g_k containing l, l's box in g_k is moved by t̂_kl and
   l's mask in g_k is warped into the moved box; the warped masks average into M_l.
4. **Foreground / background.** p_fg = max_l M_l; rough fg = p_fg > ξ2; fg and bg eroded (size 10
   at 227 px) into seeds; background probability from the seeds by a geodesic method.
5. **MAP** over (background, labels) pixel-wise, then **superpixel smoothing** (majority vote).

:class:`MCNNParser` returns every intermediate (:class:`ParseStages`) so notebook 04 can draw Fig. 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qparse_lite.parse import postprocess as pp

__all__ = ["ParseStages", "MCNNParser", "TrunkParser", "make_parser", "PhotoParse", "label_boxes", "parse_photo", "paste_back", "overlay"]


def label_boxes(labels: np.ndarray, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label boxes of label maps ``labels`` (K×H×W): presence K×L bool and boxes K×L×4 in pixels
    (x0, y0, x1, y1 with x1/y1 exclusive; zeros where absent), by :func:`qparse_lite.train.pairs.mask_boxes`."""
    from qparse_lite.train.pairs import mask_boxes

    lab = torch.from_numpy(np.ascontiguousarray(labels)).long()
    k, h, w = lab.shape
    masks = lab[:, None] == torch.arange(num_labels)[None, :, None, None]  # K×L×H×W
    present, boxes = mask_boxes(masks.reshape(k * num_labels, h, w), normalise=False)
    return present.reshape(k, num_labels).numpy(), boxes.reshape(k, num_labels, 4).numpy()


@dataclass
class ParseStages:
    """Every intermediate of one parse (Fig. 1), at the corpus crop size S×S."""

    image: np.ndarray  # S×S×3 uint8, the test crop I
    neighbours: np.ndarray  # K corpus indices
    present: np.ndarray  # K×L bool: g_k contains l
    c: np.ndarray  # K×L predicted confidence ĉ_kl (denormalised)
    t: np.ndarray  # K×L×4 predicted displacement t̂_kl (normalised image units, denormalised)
    label_confidence: np.ndarray  # L: ĉ_l
    visible: np.ndarray  # L bool: ĉ_l > ξ1
    prob_maps: np.ndarray  # L×S×S: M_l (0 for invisible labels and background)
    fg_prob: np.ndarray  # S×S
    rough_fg: np.ndarray  # S×S bool
    fg_seed: np.ndarray  # S×S bool
    bg_seed: np.ndarray  # S×S bool
    bg_prob: np.ndarray  # S×S
    map_labels: np.ndarray  # S×S uint8, pixel-wise MAP before superpixel smoothing
    segments: np.ndarray | None  # S×S superpixel ids (None without smoothing)
    labels: np.ndarray  # S×S uint8, the final parse
    extra: dict[str, Any] = field(default_factory=dict)


class MCNNParser:
    """Parse corpus crops with a trained M-CNN and the corpus as KNN database.

    Args:
        model: a trained M-CNN / Siamese (``qparse_lite.model.mcnn``), in eval mode.
        target_norm: the training run's ``TargetNorm`` (maps outputs back to c and t).
        corpus: the prepared corpus (``qparse_lite.data.prepare.Corpus``); its images are the KNN database.
        xi1, xi2, erosion: ξ1, ξ2 and the seed erosion size in pixels (paper: 0.8, 0.5, 10 at 227).
        superpixel_method: ``slic`` | ``felzenszwalb`` | ``quickshift`` | ``None`` (the "w/o ss" ablation).
        n_segments: superpixels per crop (SLIC; the paper does not give its count).
        background: ``geodesic`` (paper-like) or ``complement`` (1 − p_fg, an ablation).
        displacement_scale: how far to trust the predicted displacement: each KNN box moves by
            ``displacement_scale · t̂_kl`` (1 = the paper; 0 = the neighbours' boxes unmoved). The paper
            does not have this knob; the kit chooses it on the validation split (notebook 05).
        device: where the M-CNN runs; batch_size: pairs per forward pass.
    """

    def __init__(
        self, model: torch.nn.Module, target_norm: Any, corpus: Any, *, xi1: float = 0.8, xi2: float = 0.5,
        erosion: int = 10, superpixel_method: str | None = "slic", n_segments: int = 200,
        background: str = "geodesic", device: str = "cpu", batch_size: int = 2048,
        displacement_scale: float = 1.0,
    ) -> None:  # fmt: skip
        from qparse_lite.train.pairs import image_to_input

        cfg = getattr(model, "cfg", None)
        size = getattr(cfg, "input_size", None)
        if getattr(cfg, "family", None) == "trunk":
            size = None  # a trunk model reads its F-px maps, whatever the corpus's S
        if size is not None and int(size) != int(corpus.size):
            from qparse_lite.errors import QparseError

            raise QparseError(
                f"{getattr(corpus, 'path', 'the corpus')}: its crops are {corpus.size}×{corpus.size} px but the "
                f"model was trained on {size}×{size} crops. Fix: pass the corpus the model was trained on "
                f"(its run.json names it), or `qparse prepare --size {size}`."
            )
        self.model = model.to(device).eval()
        self.target_norm = target_norm
        self.corpus = corpus
        self.L = corpus.label_set.num_labels
        self.xi1, self.xi2, self.erosion = xi1, xi2, erosion
        self.displacement_scale = float(displacement_scale)
        self.superpixel_method, self.n_segments, self.background = superpixel_method, n_segments, background
        self.device, self.batch_size = device, batch_size
        self._to_input = image_to_input
        self.mean = torch.from_numpy(np.array(corpus.mean, np.float32)).to(device).permute(2, 0, 1)
        # set by from_run: the run folder, its Profile, the checkpoint's metadata, the resolved post-processing
        self.run: Path | None = None
        self.profile: Any = None
        self.meta: dict[str, Any] = {}
        self.resolved: Any = None

    @classmethod
    def from_run(
        cls, run: str | Path, corpus: Any, *, device: str = "cpu", xi1: float | None = None,
        xi2: float | None = None, n_segments: int | None = None, displacement_scale: float | None = None,
        erosion: int | None = None, superpixel_method: str | None = "slic", background: str = "geodesic",
        batch_size: int = 2048, fix: str | None = None,
    ) -> MCNNParser:  # fmt: skip
        """The parser of a trained run folder (``qparse train``, a notebook's ``models/<variant>``): the kit's
        one way from a run to a parser (``qparse evaluate``, ``qparse parse``, ``Workspace.parser``).

        Loads the checkpoint (:func:`qparse_lite.train.checkpoint.load_model`), refuses a ``corpus`` of another
        label set or crop mode (``fix``: the remedy the message proposes; ``{crop}`` in it is the run's crop mode), warns when the run stopped before
        its profile's epochs, and resolves the post-processing values (ξ1, ξ2, superpixels, displacement
        scale) by :func:`qparse_lite.parse.defaults.resolve_postprocess`: an argument that is not None, else
        the run's ``postprocess.json``, else its profile; ``erosion`` defaults to the profile's. With
        ``n_segments`` 0 there is no superpixel smoothing. The parser keeps ``run``, ``profile`` (the run's
        :class:`~qparse_lite.profiles.Profile`), ``meta`` (the checkpoint's) and ``resolved`` (the
        post-processing values resolved, with the source of each: a ``parse.defaults.Resolved``).
        """
        import warnings

        from qparse_lite.data.crops import check_crop
        from qparse_lite.errors import QparseError
        from qparse_lite.model.mcnn import variant_family
        from qparse_lite.parse.defaults import resolve_postprocess
        from qparse_lite.profiles import Profile
        from qparse_lite.train.checkpoint import load_model

        net, tn, meta = load_model(run, map_location=device)
        fix = (fix or "use the corpus the model was trained with (qparse prepare --crop {crop})").format(crop=meta["crop"])
        check_crop(meta["crop"], corpus, str(run), fix)
        if meta["label_set"]["names"] != list(corpus.label_set.names):
            raise QparseError(
                f"{run}: trained on label set {meta['label_set']['name']}, the corpus "
                f"{getattr(corpus, 'path', '(in memory)')} has {corpus.label_set.name}. Fix: {fix}."
            )
        known = set(Profile.__dataclass_fields__)  # a field an older kit had and this one dropped is ignored
        prof = Profile(**{k: v for k, v in meta["profile"].items() if k in known})
        if int(meta["epoch"]) < prof.epochs:
            warnings.warn(
                f"{run}: an incomplete run, trained {meta['epoch']} of its {prof.epochs} epochs (interrupted?); "
                f"its scores are not those of the finished model. Fix: finish it with the qparse train command "
                f"that made it plus --resume.",
                stacklevel=2,
            )
        post = resolve_postprocess("mcnn", prof, run, family=variant_family(meta["variant"]), xi1=xi1, xi2=xi2,
                                   n_segments=n_segments, displacement_scale=displacement_scale)  # fmt: skip
        v = post.values
        parser = make_parser(
            net, tn, corpus, xi1=v["xi1"], xi2=v["xi2"], erosion=prof.erosion_px if erosion is None else erosion,
            superpixel_method=superpixel_method if int(v["n_segments"]) else None, n_segments=int(v["n_segments"]),
            background=background, device=device, batch_size=batch_size, displacement_scale=v["displacement_scale"],
        )  # fmt: skip
        parser.run, parser.profile, parser.meta, parser.resolved = Path(run), prof, meta, post
        return parser

    def photo_extractor(self, features: str | None = None) -> Any:
        """The retrieval features for photos parsed with this run's parser (made by :meth:`from_run`):
        ``features`` (default: the run's profile's); ``efficientnet-lite0-learned`` uses the head shipped in
        the run folder (``retrieval_head.pt``) when there is one, else the one trained on the corpus."""
        from qparse_lite.errors import QparseError
        from qparse_lite.retrieval.features import get_extractor

        features = features or self.profile.features
        if features == "oracle":
            raise QparseError("oracle features need ground truth; a photo has none. Fix: --features hog-color")
        head = self.run / "retrieval_head.pt"
        if features == "efficientnet-lite0-learned" and head.is_file():
            return get_extractor(features, head=head, device=self.device)
        if features.startswith("efficientnet"):
            return get_extractor(features, corpus=self.corpus, device=self.device)
        return get_extractor(features, corpus=self.corpus)

    # -- stage 1: the M-CNN over all K×L pairs --------------------------------------------------------
    @torch.no_grad()
    def match(
        self, image: np.ndarray, neighbours: np.ndarray, feature_image: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ĉ_kl and t̂_kl for every neighbour k and foreground label l; returns (present, c, t).
        ``feature_image`` (I's F-px feature crop) is read by :class:`TrunkParser` only."""
        dev, L = self.device, self.L
        nb_labels = np.asarray(self.corpus.labels[np.asarray(neighbours)])
        present, _ = label_boxes(nb_labels, L)
        g = torch.as_tensor(np.asarray(self.corpus.images[np.asarray(neighbours)]), device=dev)
        g = g.permute(0, 3, 1, 2).float()  # K×3×S×S, 0..255
        y = torch.as_tensor(nb_labels, device=dev).long()  # K×S×S
        I = torch.from_numpy(np.array(image, np.uint8)).to(dev).permute(2, 0, 1)[None].float()
        cache = self.model.encode_test(self._to_input(I, self.mean))
        fg = torch.arange(1, L, device=dev)
        kk, ll = torch.meshgrid(torch.arange(len(neighbours), device=dev), fg, indexing="ij")
        kk, ll = kk.reshape(-1), ll.reshape(-1)
        out = torch.zeros(len(kk), 5, device=dev)
        for s in range(0, len(kk), self.batch_size):
            k_b, l_b = kk[s : s + self.batch_size], ll[s : s + self.batch_size]
            keep = (y[k_b] == l_b[:, None, None])[:, None]  # B×1×S×S
            R = torch.where(keep, g[k_b], self.mean[None])  # g_kl: label l kept, the rest the mean image
            out[s : s + len(k_b)] = self.model.forward_cached(
                cache, self._to_input(R, self.mean), torch.zeros(len(k_b), dtype=torch.long, device=dev)
            ).float()
        c_hat, t_hat = self.target_norm.denormalise(out[:, 0], out[:, 1:])
        c = np.zeros((len(neighbours), L), np.float32)
        t = np.zeros((len(neighbours), L, 4), np.float32)
        c[kk.cpu(), ll.cpu()] = c_hat.cpu().numpy()
        t[kk.cpu(), ll.cpu()] = t_hat.cpu().numpy()
        return present, c, t

    # -- stages 2-5: post-processing ------------------------------------------------------------------
    def postprocess(
        self, image: np.ndarray, neighbours: np.ndarray, present: np.ndarray, c: np.ndarray, t: np.ndarray
    ) -> ParseStages:
        """Label confidence, transfer, fg/bg, MAP and superpixel smoothing (see the module docstring)."""
        S = image.shape[0]
        nb_labels = np.asarray(self.corpus.labels[np.asarray(neighbours)])
        present = present.copy()
        present[:, 0] = False  # background is not transferred (it comes from the geodesic stage)
        conf = pp.label_confidence(c, present)
        visible = pp.visible_labels(conf, self.xi1)
        _, boxes = label_boxes(nb_labels, self.L)
        M = pp.probability_maps(nb_labels, boxes, self.displacement_scale * t, present, visible, (S, S))
        fg_prob = pp.foreground_probability(M)
        rough = pp.rough_foreground(fg_prob, self.xi2)
        fg_seed, bg_seed = pp.seeds(rough, self.erosion, p_fg=fg_prob)
        if self.background == "geodesic":
            bg_prob = pp.background_probability(image, fg_seed, bg_seed)
        else:
            bg_prob = 1.0 - fg_prob
        map_labels = pp.map_labels(M, bg_prob)
        segments = None
        labels = map_labels
        if self.superpixel_method:
            segments = pp.superpixels(image, method=self.superpixel_method, n_segments=self.n_segments)
            labels = pp.superpixel_vote(map_labels, segments)
        return ParseStages(
            image=image, neighbours=np.asarray(neighbours), present=present, c=c, t=t,
            label_confidence=conf, visible=visible, prob_maps=M, fg_prob=fg_prob, rough_fg=rough,
            fg_seed=fg_seed, bg_seed=bg_seed, bg_prob=bg_prob, map_labels=map_labels,
            segments=segments, labels=np.asarray(labels, np.uint8),
        )  # fmt: skip

    def parse(self, image: np.ndarray, neighbours: np.ndarray, feature_image: np.ndarray | None = None) -> ParseStages:
        """All stages for one S×S×3 crop and its KNN corpus indices (nearest first); ``feature_image``: see
        :meth:`match`."""
        present, c, t = self.match(image, neighbours, feature_image)
        return self.postprocess(image, neighbours, present, c, t)

    def parse_k(
        self, image: np.ndarray, neighbours: np.ndarray, ks: Any, feature_image: np.ndarray | None = None
    ) -> dict[int, ParseStages]:
        """Parses with the first K neighbours for every K in ``ks`` (Fig. 5), matching only once.

        ĉ_kl and t̂_kl of a pair do not depend on the other neighbours, so the M-CNN runs over the
        ``max(ks)`` nearest images once and each K post-processes its first K rows.
        """
        ks = sorted({int(k) for k in ks})
        nb = np.asarray(neighbours)[: ks[-1]]
        if len(nb) < ks[-1]:
            raise ValueError(f"parse_k: {len(nb)} neighbours given, K up to {ks[-1]} asked for")
        present, c, t = self.match(image, nb, feature_image)
        return {k: self.postprocess(image, nb[:k], present[:k], c[:k], t[:k]) for k in ks}


class TrunkParser(MCNNParser):
    """The parser of a trunk M-CNN (:mod:`qparse_lite.model.trunk`, issue 30): stage 1 reads the frozen trunk's
    maps instead of images; stages 2-5 are :class:`MCNNParser`'s.

    The test image I enters as its trunk maps at the model's input side F (224): from ``feature_image`` (the
    corpus's F-px feature crop of I, or the photo cropped at F px, as the training cache saw it) when given, else
    from the S×S crop resized to F. The regions g_kl are built as in training
    (:class:`~qparse_lite.model.trunk.RegionMaps`): the maps of the neighbour g_k (its feature crop through the
    trunk and the model's stored projection, computed once per neighbour and kept) and the share of l in every
    cell of g_k's label map.
    """

    def __init__(self, model: torch.nn.Module, target_norm: Any, corpus: Any, **kwargs: Any) -> None:
        cfg = model.cfg  # type: ignore[attr-defined]
        if not bool(getattr(model, "has_projection", False)):
            raise ValueError("a trunk model without its projection cannot parse (train it with qparse train)")
        self._neighbour_maps: dict[int, dict[int, torch.Tensor]] = {}
        self._mean_maps: dict[int, torch.Tensor] | None = None
        super().__init__(model, target_norm, corpus, **kwargs)
        self.levels = cfg.levels

    def _source(self) -> Any:
        """The corpus's F-px feature crops when it has them at the model's F, else its S×S crops (the images the
        training cache read: ``Corpus.images_for``)."""
        return self.corpus.images_for(self.model.cfg.input_size)  # type: ignore[attr-defined]

    def _encode(self, images: np.ndarray) -> dict[int, torch.Tensor]:
        x = torch.from_numpy(np.array(images, np.uint8)).permute(0, 3, 1, 2)
        return self.model.encode_images(x)  # type: ignore[operator]

    def _maps_of(self, neighbours: np.ndarray) -> dict[int, torch.Tensor]:
        """The neighbours' maps (level → K×k×s×s), each corpus image through the trunk once per parser."""
        todo = sorted({int(n) for n in neighbours} - set(self._neighbour_maps))
        if todo:
            enc = self._encode(np.asarray(self._source()[np.asarray(todo)]))
            for j, n in enumerate(todo):
                self._neighbour_maps[n] = {lvl: enc[lvl][j] for lvl in self.levels}
        return {lvl: torch.stack([self._neighbour_maps[int(n)][lvl] for n in neighbours]) for lvl in self.levels}

    def _mean(self) -> dict[int, torch.Tensor]:
        """The maps of the train split's mean crop μ (read only where g_k lacks l, which parsing never pairs)."""
        if self._mean_maps is None:
            src, train = self._source(), np.asarray(self.corpus.split("train"))
            total = np.zeros(np.asarray(src[:1]).shape[1:], np.float64)
            for st in range(0, len(train), 128):
                total += np.asarray(src[train[st : st + 128]], np.float64).sum(0)
            mean = np.round(total / max(len(train), 1)).clip(0, 255).astype(np.uint8)
            self._mean_maps = self._encode(mean[None])
        return self._mean_maps

    @torch.no_grad()
    def match(
        self, image: np.ndarray, neighbours: np.ndarray, feature_image: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ĉ_kl and t̂_kl for every neighbour k and foreground label l; returns (present, c, t)."""
        from qparse_lite.model.trunk import RegionMaps
        from qparse_lite.train.trunk_pairs import LabelShares

        dev, L = self.device, self.L
        nb = np.asarray(neighbours)
        nb_labels = np.asarray(self.corpus.labels[nb])
        present, _ = label_boxes(nb_labels, L)
        I = self._encode(np.asarray(image if feature_image is None else feature_image)[None])
        maps, mean = self._maps_of(nb), self._mean()
        y = torch.as_tensor(nb_labels, device=dev).long()
        kk, ll = np.nonzero(present[:, 1:])  # only the (k, l) with l in g_k: the others are never read
        ll = ll + 1
        out = torch.zeros(len(kk), 5, device=dev)
        cfg = self.model.cfg  # type: ignore[attr-defined]
        for s in range(0, len(kk), self.batch_size):
            k_b = torch.as_tensor(kk[s : s + self.batch_size], dtype=torch.long, device=dev)
            l_b = torch.as_tensor(ll[s : s + self.batch_size], dtype=torch.long, device=dev)
            masks = {lvl: LabelShares.pool(y[k_b], l_b, cfg.map_size(lvl)) for lvl in self.levels}
            R = RegionMaps(maps=maps, mean=mean, masks=masks, row=k_b, mean_row=torch.zeros_like(k_b), label=l_b)
            out[s : s + len(k_b)] = self.model(I, R, torch.zeros_like(k_b)).float()
        c_hat, t_hat = self.target_norm.denormalise(out[:, 0], out[:, 1:])
        c = np.zeros((len(nb), L), np.float32)
        t = np.zeros((len(nb), L, 4), np.float32)
        c[kk, ll] = c_hat.cpu().numpy()
        t[kk, ll] = t_hat.cpu().numpy()
        return present, c, t


def make_parser(model: torch.nn.Module, target_norm: Any, corpus: Any, **kwargs: Any) -> MCNNParser:
    """The parser of a trained M-CNN of either family: :class:`TrunkParser` for a trunk model (its stage 1 reads
    trunk maps), else :class:`MCNNParser`; ``kwargs`` are the post-processing values of :class:`MCNNParser`."""
    family = getattr(getattr(model, "cfg", None), "family", None)
    return (TrunkParser if family == "trunk" else MCNNParser)(model, target_norm, corpus, **kwargs)


# -- raw photos ----------------------------------------------------------------------------------------


@dataclass
class PhotoParse:
    """The parse of a raw photo: the label map at the photo's resolution and how it was obtained."""

    labels: np.ndarray  # H×W uint8, background outside the person crop
    box: tuple[int, int, int, int]  # the square person crop in photo pixels (may extend past the border)
    crop_method: str  # the person detector that found the crop ("mediapipe" | "hog") | "whole-image" (nobody found)
    neighbours: np.ndarray  # the K corpus indices retrieved for the crop
    stages: ParseStages  # every intermediate at the crop size S×S


def paste_back(crop_labels: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Map an S×S label map of the crop ``box`` back onto an H×W photo: the inverse of
    :func:`qparse_lite.data.crops.crop_resize` for both crop modes (``square``: a square box, possibly past the
    border; ``warp``: any box inside the photo, so the map is stretched back to the box's own aspect).

    Nearest neighbour, pixel-centre aligned as the crop's (``INTER_NEAREST_EXACT``), so a label map cropped
    and pasted back is the original wherever S is at least the box's longer side; background outside the
    box; the parts of the box past the photo border (the square crop's padding) are dropped.
    """
    import cv2

    H, W = shape
    x0, y0, x1, y1 = (int(v) for v in box)
    big = cv2.resize(np.asarray(crop_labels, np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.zeros((H, W), np.uint8)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0:cy1, cx0:cx1] = big[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return out


def overlay(
    image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.55, out: np.ndarray | None = None
) -> np.ndarray:
    """The photo with its foreground labels blended in their palette colours (background untouched).

    Computed in blocks of rows (a few MB of float32 at a time, whatever the photo's size); ``out`` (may be
    ``image`` itself, to blend in place) receives the result."""
    image, labels = np.asarray(image), np.asarray(labels)
    pal = np.asarray(palette, np.float32)
    res = np.empty(image.shape, np.uint8) if out is None else out
    step = max(1, (1 << 20) // max(1, image.shape[1]))
    for y in range(0, image.shape[0], step):
        img = image[y : y + step].astype(np.float32)
        lab = labels[y : y + step]
        fg = (lab > 0)[..., None]
        res[y : y + step] = np.where(fg, (1 - alpha) * img + alpha * pal[lab], img).round().astype(np.uint8)
    return res


#: A photo whose longer side is above this is downscaled (area average) to it for the person detector, the
#: crop and the retrieval features (:func:`parse_photo`); the label map is still pasted back at full size.
WORK_SIDE = 2048


def parse_photo(
    parser: MCNNParser, image: np.ndarray, extractor: Any, database_features: np.ndarray,
    database_indices: np.ndarray, k: int = 9, detector: Any = "auto",
) -> PhotoParse:  # fmt: skip
    """Parse a raw photo of any size that is not in the corpus.

    1. human-centric crop around the person that ``detector`` finds (:mod:`qparse_lite.data.person`: ``auto``
       takes MediaPipe when installed, else OpenCV's HOG; :func:`qparse_lite.data.prepare.human_centric_crop`,
       the corpus's margin and crop mode, ``square`` or ``warp`` (docs/paper.md §1.1); the whole image, with a
       warning, when it finds nobody), resized to the corpus size S;
    2. its K nearest corpus images by ``extractor`` features among ``database_features`` (rows of
       ``database_indices``, normally the train split; :func:`qparse_lite.retrieval.features.corpus_features`);
    3. :meth:`MCNNParser.parse`; 4. the S×S result pasted back at the photo's resolution (:func:`paste_back`).

    A photo whose longer side is above :data:`WORK_SIDE` is downscaled to it for steps 1-2 (the crop is S px,
    so nothing is lost) and the box is scaled back for step 4: the memory beyond the photo itself is its
    H×W label map plus the resized crop labels, not several float copies of the photo.

    ``PhotoParse.stages.extra["timings_s"]`` holds the seconds of each stage (``crop``, ``features``,
    ``knn``, ``match``, ``postprocess``, ``paste``).
    """
    import time

    from qparse_lite.data.crops import check_crop, corpus_crop, crop_resize
    from qparse_lite.data.person import get_detector
    from qparse_lite.data.prepare import human_centric_crop
    from qparse_lite.retrieval.search import knn

    S = int(parser.corpus.size)
    meta = getattr(parser.corpus, "meta", None) or {}
    mode, margin = corpus_crop(parser.corpus), float(meta.get("margin", 0.1))
    tm: dict[str, float] = {}
    t0 = time.perf_counter()
    det = get_detector(detector) if isinstance(detector, str) else detector
    if getattr(det, "crop", None) is not None:  # a person head trained on a corpus: the same crop mode
        check_crop(det.crop, parser.corpus, str(getattr(det, "path", det.name)),
                   "use the person head of a model trained on this corpus, or --detector hog")  # fmt: skip
    image = np.asarray(image)
    work, scale = _work_image(image)
    crop, _, box, method = human_centric_crop(work, S, margin=margin, detector=det, crop=mode)
    tm["crop"] = time.perf_counter() - t0
    if extractor.needs_labels:
        raise ValueError(f"features {extractor.name!r} need label maps; a raw photo has none")
    t0 = time.perf_counter()
    fs = getattr(parser.corpus, "feature_size", None)
    if fs and getattr(extractor, "uses_feature_images", False) and getattr(extractor, "input_size", None) == fs:
        # the features see the photo cropped at F px, as the corpus's feature_images were
        feat = extractor(crop_resize(work, None, box, fs)[0][None], progress=False)
    else:
        feat = extractor(crop[None], progress=False)
    tm["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows, _ = knn(database_features, feat, k)
    neighbours = np.asarray(database_indices)[rows[0]]
    tm["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fimg = crop_resize(work, None, box, fs)[0] if fs and isinstance(parser, TrunkParser) else None
    present, c, t = parser.match(crop, neighbours, fimg)  # a trunk model reads the photo cropped at F px
    tm["match"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stages = parser.postprocess(crop, neighbours, present, c, t)
    tm["postprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if scale != 1.0:  # the crop box in the photo's pixels
        box = tuple(int(round(v * scale)) for v in box)
    full = paste_back(stages.labels, box, image.shape[:2])
    tm["paste"] = time.perf_counter() - t0
    stages.extra["timings_s"] = {k: round(v, 4) for k, v in tm.items()}
    return PhotoParse(full, tuple(int(v) for v in box), method, neighbours, stages)  # type: ignore[arg-type]


def _work_image(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image`` with its longer side at most :data:`WORK_SIDE` (area average) and the factor back to it."""
    import cv2

    H, W = image.shape[:2]
    side = max(H, W)
    if side <= WORK_SIDE:
        return image, 1.0
    f = WORK_SIDE / side
    w, h = max(1, round(W * f)), max(1, round(H * f))
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), W / w
