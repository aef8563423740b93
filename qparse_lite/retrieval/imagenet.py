"""ImageNet retrieval features without a download, and a learned head: neighbours that wear the same garments.

Two extractors on EfficientNet-Lite0 (:mod:`qparse_lite.backbones`; registered in
:data:`qparse_lite.retrieval.features.EXTRACTORS`): ``efficientnet-lite0-imagenet`` (:class:`EfficientNetExtractor`,
pooled ImageNet features) and ``efficientnet-lite0-learned`` (:class:`LearnedRetrievalExtractor`).

Why. The paper retrieves the KNN images G of a test image I by the distance between ImageNet fc7
features (docs/paper.md §1.2). ImageNet features describe objects and scenes, not garments: on CCP their
neighbours share labels barely more often than random ones do (label precision@9, see notebook 01),
because skin, hair and shoes are in almost every photo and only the garments tell people apart.

What. A small head on the *frozen* EfficientNet-Lite0 feature map F (1,280 × h × w at stride 32, from
:class:`qparse_lite.retrieval.features.EfficientNetExtractor`), trained on the corpus's **train split only**, with
two outputs:

* presence: :math:`\\hat p_l = \\sigma(w_l^\\top \\bar F + b_l)`, the probability that label l appears in
  the image (:math:`\\bar F` the spatial mean of F), trained with binary cross-entropy against the
  ground-truth label sets;
* layout: :math:`\\hat q_{c} = \\mathrm{softmax}(W F_c + b)`, the label distribution of each cell c of the
  h×w grid (a 1×1 convolution), trained with cross-entropy against the cells' ground-truth label
  fractions (the oracle's feature, :class:`qparse_lite.retrieval.features.OracleExtractor`, predicted).

The retrieval embedding is :math:`[\\alpha\\,\\hat p,\\; \\beta\\,\\sqrt{\\hat q / (hw)^{1/2}}]`: by default
α = 1, β = 0 (presence only). The weights were chosen on the **validation** split of CCP (notebook 01
prints the comparison; the layout part is kept for teaching and for other corpora).

The trained head is saved beside the corpus (``<corpus>/retrieval/<name>_<key>.pt``, atomic), keyed by
the corpus fingerprint and every training setting, so training, parsing and ``qparse parse`` reuse the
same head; it is also a plain file that can be copied with a model (``head=PATH``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.backbones import imagenet_batch
from qparse_lite.data.crops import corpus_fingerprint
from qparse_lite.errors import QparseError
from qparse_lite.retrieval.batches import check_images, progress_bar

__all__ = ["EfficientNetExtractor", "LearnedRetrievalExtractor", "fit_retrieval_head", "default_input_size", "image_source", "POOLINGS", "OOF_FOLDS"]  # fmt: skip

OOF_FOLDS = 5
"""Folds of :meth:`LearnedRetrievalExtractor.out_of_fold` (the train split's own neighbours)."""

POOLINGS: tuple[str, ...] = ("global", "person", "grid")
"""How :class:`EfficientNetExtractor` pools its feature map: the mean over the map, a person-weighted mean
(a Gaussian over the crop's centre; the default), or a grid of cell means (see its docstring)."""


def default_input_size(crop_size: int) -> int:
    """The network input for S-px corpus crops: 224 (its own size) from S ≥ 96 px, else 128.

    Upsampling a 64-px crop to 224 adds no detail but costs 3× the time of 128 px (measured on the quick
    profile in notebook 01: the precision@9 of the two differs by less than the seed spread).
    """
    return 224 if int(crop_size) >= 96 else 128


class EfficientNetExtractor:
    """ImageNet EfficientNet-Lite0 features pooled from the last feature map (no download).

    The image is resized to ``input_size``×``input_size`` (bilinear, antialiased; 224 is the network's
    own size, any multiple of 32 gives the same "same" padding; default: the corpus's ``feature_size``
    when it has feature crops, else :func:`~qparse_lite.retrieval.imagenet.default_input_size`, else 224), normalised with the ImageNet mean/std,
    and passed through the frozen network (:class:`qparse_lite.backbones.EfficientNetLite0Trunk`) up to
    its head convolution: a 1,280 × (S/32) × (S/32) map :math:`F`. ``pooling`` turns it into a vector:

    * ``global``: the mean over all cells (what the ImageNet classifier sees; 1,280-d);
    * ``person``: a person-weighted mean :math:`\\sum_{ij} w_{ij} F_{ij} / \\sum_{ij} w_{ij}` with a
      centred Gaussian :math:`w_{ij} = \\exp(-\\tfrac{(x_j - 1/2)^2}{2\\sigma_x^2} - \\tfrac{(y_i - 1/2)^2}{2\\sigma_y^2})`
      (``sigma_x`` 0.2, ``sigma_y`` 0.35 of the crop: the human-centric crop puts the person upright in the
      middle, so background at the sides counts less; 1,280-d);
    * ``grid``: the mean over each cell of a ``grid``×``grid`` partition, concatenated (coarse layout;
      1,280·grid² values).

    The vector is L2-normalised (Euclidean KNN then ranks by cosine similarity).
    """

    name = "efficientnet-lite0-imagenet"
    needs_labels = False
    needs_corpus = True  # only for its default input size (the corpus's feature crops)
    uses_feature_images = True

    def __init__(
        self,
        pooling: str = "person",
        grid: int = 2,
        input_size: int | None = None,
        sigma_x: float = 0.2,
        sigma_y: float = 0.35,
        batch_size: int = 32,
        device: str = "cpu",
        weights: str | Path | None = None,
        corpus: Any = None,
    ) -> None:
        from qparse_lite.backbones import EFFICIENTNET_LITE0_FILE, EfficientNetLite0Trunk
        from qparse_lite.runinfo import get_device

        if input_size is None:  # the corpus's feature crops, else a size that suits its crops, else 224
            input_size = 224 if corpus is None else (
                getattr(corpus, "feature_size", None) or default_input_size(corpus.size))

        if pooling not in POOLINGS:
            raise QparseError(f"{self.name}: pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if input_size % 32:
            raise QparseError(f"{self.name}: input_size {input_size} must be a multiple of 32")
        self.pooling, self.grid, self.input_size = pooling, int(grid), int(input_size)
        self.sigma_x, self.sigma_y, self.batch_size = float(sigma_x), float(sigma_y), int(batch_size)
        self.device = get_device(device)
        self.trunk = EfficientNetLite0Trunk(weights, self.device)
        self.dim = 1280 * (self.grid**2 if pooling == "grid" else 1)
        self.config = {
            "name": self.name, "weights": Path(weights).name if weights else EFFICIENTNET_LITE0_FILE,
            "pooling": pooling, "input_size": self.input_size,
            **({"grid": self.grid} if pooling == "grid" else {}),
            **({"sigma_x": self.sigma_x, "sigma_y": self.sigma_y} if pooling == "person" else {}),
        }  # fmt: skip

    def feature_maps(self, images: np.ndarray, progress: bool | None = None, level: str = "c5") -> Any:
        """The frozen network's ``level`` map (``c3``/``c4``/``c5``) of every image, a float32 tensor N×C×h×w."""
        import torch

        images = check_images(images, self.name)
        out = []
        starts = range(0, len(images), self.batch_size)
        for s in progress_bar(starts, len(starts), self.name, progress):
            x = imagenet_batch(images[s : s + self.batch_size], self.input_size, self.device)
            out.append(self.trunk(x)[level].float().cpu())
        if not out:
            return torch.zeros((0, self.trunk.channels[level], 1, 1))
        return torch.cat(out)

    def pool(self, maps: Any) -> np.ndarray:
        """Pool N×1280×h×w maps into N×:attr:`dim` L2-normalised vectors (see the class docstring)."""
        import torch
        import torch.nn.functional as F

        if self.pooling == "global":
            v = maps.mean((2, 3))
        elif self.pooling == "person":
            h, w = maps.shape[-2:]
            y = (torch.arange(h, dtype=torch.float32) + 0.5) / h - 0.5
            x = (torch.arange(w, dtype=torch.float32) + 0.5) / w - 0.5
            wgt = torch.exp(-(y[:, None] ** 2) / (2 * self.sigma_y**2) - (x[None, :] ** 2) / (2 * self.sigma_x**2))
            v = (maps * wgt).sum((2, 3)) / wgt.sum()
        else:
            v = F.adaptive_avg_pool2d(maps, self.grid).flatten(1)
        v = v.numpy().astype(np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def __call__(
        self, images: np.ndarray, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Pooled ImageNet features, float32 N×:attr:`dim` (``labels`` is ignored)."""
        return self.pool(self.feature_maps(images, progress))


def image_source(corpus: Any, extractor: Any) -> Any:
    """The corpus images ``extractor`` should see: the F×F ``feature_images`` when the corpus has them at
    the extractor's ``input_size`` (ImageNet networks: crops taken from the photo at the resolution the
    network wants), else the S×S ``images``."""
    side = getattr(extractor, "input_size", None) if getattr(extractor, "uses_feature_images", False) else None
    images_for = getattr(corpus, "images_for", None)
    return images_for(side) if images_for is not None else corpus.images


def _head_module(in_ch: int, num_labels: int, seed: int = 0) -> Any:
    import torch.nn as nn

    class RetrievalHead(nn.Module):
        """Presence (linear on the pooled map) and layout (1×1 conv) heads on a normalised feature map."""

        def __init__(self) -> None:
            super().__init__()
            self.presence = nn.Linear(in_ch, num_labels)
            self.layout = nn.Conv2d(in_ch, num_labels, 1)

        def forward(self, f: Any) -> tuple[Any, Any]:
            return self.presence(f.mean((2, 3))), self.layout(f)

    import torch

    with torch.random.fork_rng(devices=[]):  # building it never shifts the caller's RNG stream
        torch.manual_seed(seed)
        return RetrievalHead()


def _head_outputs(head: Any, mean: Any, std: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(p̂, q̂)`` of a head on frozen maps normalised with its training mean/std (N×C×1×1)."""
    import torch

    with torch.no_grad():
        p_logit, q_logit = head((maps - mean) / std)
    return torch.sigmoid(p_logit).numpy(), torch.softmax(q_logit, 1).numpy()


def _targets(labels: np.ndarray, num_labels: int, grid: tuple[int, int]) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F

    lab = torch.from_numpy(np.asarray(labels).astype(np.int64))
    onehot = F.one_hot(lab, num_labels).permute(0, 3, 1, 2).float()
    layout = F.adaptive_avg_pool2d(onehot, grid)  # N×L×h×w: label fractions per cell
    presence = (onehot.flatten(2).sum(-1) > 0).float()  # N×L: label l covers ≥ 1 pixel
    return presence, layout


def fit_retrieval_head(
    maps: Any,
    labels: np.ndarray,
    num_labels: int,
    epochs: int = 30,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train the presence + layout head on frozen feature ``maps`` (N×C×h×w) of the train images.

    Loss per image: :math:`\\mathrm{BCE}(\\hat p, p) + \\frac{1}{hw}\\sum_c \\mathrm{CE}(\\hat q_c, q_c)`
    with p the label set and q_c the label fractions of cell c. AdamW with a one-cycle learning-rate
    schedule (peak ``lr``), ``epochs`` passes, deterministic for a given ``seed`` and thread count.
    Returns the head's state (``state_dict``, the per-channel normalisation ``mean``/``std`` and the
    settings), ready for :class:`LearnedRetrievalExtractor` or :func:`torch.save`.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if len(maps) != len(labels) or len(maps) < 2:
        raise QparseError(f"retrieval head: {len(maps)} feature maps for {len(labels)} label maps")
    maps = maps.float()
    mean = maps.mean((0, 2, 3), keepdim=True)
    std = maps.std((0, 2, 3), keepdim=True) + 1e-3
    x = (maps - mean) / std
    presence, layout = _targets(labels, num_labels, tuple(maps.shape[-2:]))
    g = torch.Generator().manual_seed(seed)
    head = _head_module(maps.shape[1], num_labels, seed)  # seeded init; the caller's RNG is untouched
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    head.train()
    bar = tqdm(range(epochs), desc="retrieval head", mininterval=1.0, disable=None if progress is None else not progress)
    loss_v = float("nan")
    for _ in bar:
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch_size):
            b = perm[s : s + batch_size]
            p_logit, q_logit = head(x[b])
            loss = F.binary_cross_entropy_with_logits(p_logit, presence[b])
            loss = loss - (layout[b] * F.log_softmax(q_logit, 1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_v = float(loss.detach())
        bar.set_postfix(loss=f"{loss_v:.3f}")
    head.eval()
    return {
        "format": "qparse-retrieval-head/1",
        "state_dict": {k: v.detach().clone() for k, v in head.state_dict().items()},
        "mean": mean.flatten(), "std": std.flatten(), "in_channels": int(maps.shape[1]),
        "num_labels": int(num_labels), "grid": list(maps.shape[-2:]),
        "train": {"images": int(len(x)), "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
                  "batch_size": batch_size, "seed": seed, "final_loss": loss_v},
    }  # fmt: skip


class LearnedRetrievalExtractor:
    """``efficientnet-lite0-learned``: the learned head's garment embedding on frozen ImageNet features.

    Args:
        corpus: a prepared corpus; the head is loaded from ``<corpus>/retrieval/`` or, if absent, trained
            on the corpus's train split (and saved there). Not needed when ``head`` is given.
        head: a head file (``.pt``) written by this class (e.g. copied beside a model).
        input_size: network input side (default: the corpus's ``feature_size`` when it has
            ``feature_images``, else :func:`default_input_size` of its crop size).
        presence_weight, layout_weight: α and β of the embedding (module docstring).
        epochs, lr, seed: head training settings (only used when training).
        device, batch_size: for the frozen network.
    """

    name = "efficientnet-lite0-learned"
    needs_labels = False
    needs_corpus = True
    uses_feature_images = True

    def __init__(
        self,
        corpus: Any = None,
        head: str | Path | None = None,
        input_size: int | None = None,
        presence_weight: float = 1.0,
        layout_weight: float = 0.0,
        epochs: int = 30,
        lr: float = 1e-2,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 32,
        progress: bool | None = None,
    ) -> None:
        from qparse_lite.io import atomic_torch_save

        if corpus is None and head is None:
            raise QparseError(
                f"{self.name}: needs the corpus whose train split trains its head (corpus=...) or a trained "
                "head file (head=PATH). Fix: pass the prepared corpus, e.g. get_extractor(name, corpus=corpus)."
            )
        given = None
        if head is not None:
            if not Path(head).is_file():
                raise QparseError(f"{head}: retrieval head file not found. Fix: copy the head file written with "
                                  "the corpus (<corpus>/retrieval/*.pt) or pass corpus=... to train one.")  # fmt: skip
            given = self._load(Path(head))
            trained_at = given.get("backbone", {}).get("input_size")
            if input_size is not None and trained_at is not None and int(input_size) != int(trained_at):
                raise QparseError(f"{head}: head trained at input {trained_at} px, asked for {input_size}. "
                                  f"Fix: pass input_size={trained_at} (or leave it out).")  # fmt: skip
            input_size = input_size or trained_at
        if input_size is None and corpus is not None:
            input_size = getattr(corpus, "feature_size", None) or default_input_size(corpus.size)
        if input_size is None:
            input_size = 224
        self.backbone = EfficientNetExtractor(
            pooling="global", input_size=input_size, device=device, batch_size=batch_size
        )
        self.input_size = int(input_size)
        self.presence_weight, self.layout_weight = float(presence_weight), float(layout_weight)
        self._memo: dict[str, Any] = {}
        train_cfg = {"epochs": int(epochs), "lr": float(lr), "seed": int(seed)}
        path: Path | None = Path(head) if head is not None else None
        if path is None:
            key = hashlib.sha256(
                json.dumps([corpus_fingerprint(corpus), self.backbone.config, train_cfg], sort_keys=True).encode()
            ).hexdigest()[:12]
            root = getattr(corpus, "path", None)
            path = Path(root) / "retrieval" / f"{self.name}_{key}.pt" if root else None
        state = given
        if state is None and path is not None and path.is_file():  # its key includes the input size
            state = self._load(path)
        if state is None:
            t0 = time.perf_counter()
            tr = np.asarray(corpus.split("train"), dtype=np.int64)
            maps = self._maps(corpus, tr, progress)
            state = fit_retrieval_head(
                maps, np.asarray(corpus.labels[tr]), corpus.num_labels, progress=progress, **train_cfg
            )
            state["train"]["seconds"] = round(time.perf_counter() - t0, 1)
            state["backbone"] = self.backbone.config
            state["corpus_fingerprint"] = corpus_fingerprint(corpus)
            if path is not None:
                atomic_torch_save(path, state)
        self.state, self.path = state, path
        self.num_labels = int(state["num_labels"])
        self._head = _head_module(state["in_channels"], self.num_labels)
        self._head.load_state_dict(state["state_dict"])
        self._head.eval()
        self._mean = state["mean"].view(1, -1, 1, 1)
        self._std = state["std"].view(1, -1, 1, 1)
        cells = int(np.prod(state["grid"]))
        self.dim = (self.num_labels if self.presence_weight else 0) + (
            self.num_labels * cells if self.layout_weight else 0
        )
        digest = hashlib.sha256()
        for k in sorted(state["state_dict"]):
            digest.update(state["state_dict"][k].numpy().tobytes())
        self.config = {
            "name": self.name, "backbone": self.backbone.config, "head_sha256": digest.hexdigest()[:16],
            "presence_weight": self.presence_weight, "layout_weight": self.layout_weight,
        }  # fmt: skip

    def _maps(self, corpus: Any, idx: np.ndarray, progress: bool | None) -> Any:
        """Feature maps of the corpus images ``idx``; remembered (by image content) for the first
        embedding pass, so the train split is not run through the network twice."""
        import torch

        source = image_source(corpus, self)
        parts = []
        for s in range(0, len(idx), 256):
            images = np.asarray(source[idx[s : s + 256]])
            maps = self.feature_maps(images, progress)  # remembered ones are reused
            for im, m in zip(images, maps, strict=True):
                self._memo[hashlib.sha1(im.tobytes()).hexdigest()] = m
            parts.append(maps)
        return torch.cat(parts)

    def feature_maps(self, images: np.ndarray, progress: bool | None = None) -> Any:
        """The frozen network's maps of ``images`` (remembered maps of the head's training images are reused
        once, then forgotten)."""
        import torch

        images = np.asarray(images)
        if not self._memo:
            return self.backbone.feature_maps(images, progress)
        keys = [hashlib.sha1(im.tobytes()).hexdigest() for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        fresh = self.backbone.feature_maps(images[todo], progress) if todo else None
        pos = {i: j for j, i in enumerate(todo)}
        out = [fresh[pos[i]] if i in pos else self._memo[k] for i, k in enumerate(keys)]
        for k in keys:
            self._memo.pop(k, None)
        return torch.stack(out) if out else self.backbone.feature_maps(images, progress)

    def _load(self, path: Path) -> dict[str, Any]:
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format") != "qparse-retrieval-head/1":
                raise ValueError(f"format {state.get('format')!r}")
        except Exception as e:
            raise QparseError(f"{path}: not a retrieval head file ({type(e).__name__}: {e}). Fix: delete it; "
                              "it is retrained from the corpus on next use.") from e  # fmt: skip
        return state

    def outputs(self, images: np.ndarray, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(p̂, q̂)``: presence probabilities N×L and per-cell label distributions N×L×h×w."""
        return _head_outputs(self._head, self._mean, self._std, self.feature_maps(images, progress))

    def embed(self, presence: np.ndarray, layout: np.ndarray) -> np.ndarray:
        """The retrieval vector :math:`[\\alpha\\hat p, \\beta\\sqrt{\\hat q/\\sqrt{hw}}]` (float32 N×dim)."""
        parts = []
        if self.presence_weight:
            parts.append(self.presence_weight * presence)
        if self.layout_weight:
            cells = layout.shape[-1] * layout.shape[-2]
            parts.append(self.layout_weight * np.sqrt(layout / np.sqrt(cells)).reshape(len(layout), -1))
        return np.concatenate(parts, 1).astype(np.float32)

    def __call__(
        self, images: np.ndarray, labels: np.ndarray | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Embeddings, float32 N×:attr:`dim` (``labels`` is ignored: a test image has none)."""
        return self.embed(*self.outputs(images, progress))

    def out_of_fold(self, corpus: Any, folds: int = OOF_FOLDS, progress: bool | None = None) -> np.ndarray:
        """Embeddings of the corpus's **train** images (rows in ``corpus.split("train")`` order), each from a
        head that never saw it: the train split is cut into ``folds`` random folds (seeded by the head's
        seed) and fold f is embedded by a head trained, with the same settings, on the other folds.

        Why: the head is trained on the train split, so its in-sample embedding of a train image is
        better than any test image's: on the quick corpus a train image's 10 neighbours share 98.5 % of
        their labels with it in-sample but 84.5 % out of fold, close to what a val image gets. Training
        pairs built from in-sample neighbours then carry almost no c = 0 (3 % on quick, against 22 % among
        the val pairs that parsing scores), and the confidence head learns nothing (notebook 03).
        The database side stays the full head's embedding, as at test time.
        """
        import torch

        if folds < 2:
            raise QparseError(f"{self.name}: out_of_fold needs at least 2 folds, got {folds}")
        tr = np.asarray(corpus.split("train"), dtype=np.int64)
        maps = self._maps(corpus, tr, progress)  # remembered: the database pass after this reuses them
        fold = np.random.default_rng(int(self.state["train"]["seed"])).permutation(len(tr)) % folds
        t = self.state["train"]
        out = np.zeros((len(tr), self.dim), dtype=np.float32)
        for f in range(folds):
            keep = torch.from_numpy(fold != f)
            st = fit_retrieval_head(maps[keep], np.asarray(corpus.labels[tr[fold != f]]), self.num_labels,
                                    epochs=t["epochs"], lr=t["lr"], seed=t["seed"], progress=False)  # fmt: skip
            head = _head_module(st["in_channels"], st["num_labels"])
            head.load_state_dict(st["state_dict"])
            head.eval()
            mean, std = st["mean"].view(1, -1, 1, 1), st["std"].view(1, -1, 1, 1)
            out[fold == f] = self.embed(*_head_outputs(head, mean, std, maps[~keep]))
        return out
