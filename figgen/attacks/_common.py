"""What the attacks share: their arguments' checks, eval mode, the loss gradient w.r.t. the input.

Every attack checks its arguments first, before any computation, so a wrong one is a
ValueError or TypeError naming it rather than a silently different result (a negative eps,
images in [0, 255] clamped to [0, 1], a label of -100 that cross-entropy ignores) or an error
deep inside torch (a CUDA device-side assert for a label past the last class).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_size(name: str, value: object, *, positive: bool) -> None:
    """Raise unless value is a finite real number, > 0 if positive, else >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    bound = "> 0" if positive else ">= 0"
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_count(name: str, value: object) -> None:
    """Raise unless value is an int >= 1 (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def check_images(model: nn.Module, images: object) -> None:
    """Raise unless images are a floating batch [N, ...] of the model's dtype and device."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is not None and images.dtype != weight.dtype:
        raise TypeError(f"images are {images.dtype} but the model's parameters are "
                        f"{weight.dtype}: the dtypes must match")
    if weight is not None and images.device != weight.device:
        raise ValueError(f"images are on {images.device} but the model's parameters on "
                         f"{weight.device}")
    shape = tuple(images.shape)
    if images.dim() < 2:
        raise ValueError(f"images must be a batch [N, ...] of at least 2 dimensions, got {shape}")
    # (N, H, W, 1 or 3) with a dim 1 that is no channel count: torch wants channels first.
    if images.dim() == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W); {shape} looks channels-last "
                         "(N, H, W, C): pass images.permute(0, 3, 1, 2)")


def check_labels(images: Tensor, labels: object) -> None:
    """Raise unless labels are integer class indices [N] on the images' device."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({len(images)},), one per image of "
                         f"{tuple(images.shape)}, got {tuple(labels.shape)}")
    if labels.device != images.device:
        raise ValueError(f"labels are on {labels.device} but the images on {images.device}")


def check_inputs(model: nn.Module, images: object, labels: object) -> tuple[Tensor, int]:
    """Check images in [0, 1] and labels >= 0; return the labels as int64 and the largest."""
    check_images(model, images)
    check_labels(images, labels)
    if images.numel() == 0:
        return labels.long(), -1  # an empty batch: nothing to check, nothing to attack
    # One host sync for both ranges (on a GPU every .item() waits for the device): the four
    # bounds go to the host together, each as float32 (not promoted to float16 with half
    # images), which is exact for labels below 2**24 and for the image dtypes below float64.
    ranges = (*torch.aminmax(images.detach()), *torch.aminmax(labels))
    low, high, least, largest = torch.stack([b.float() for b in ranges]).tolist()  # 4 floats
    if not 0 <= low <= high <= 1:  # also false for NaN
        raise ValueError(f"images must be in [0, 1], got values in [{low:g}, {high:g}]"
                         + (": divide by 255" if high > 1 else ""))
    if least < 0:
        raise ValueError(f"labels must be class indices >= 0, got {least:g}"
                         + (" (cross-entropy's ignore_index)" if least == -100 else ""))
    return labels.long(), int(largest)


def check_classes(logits: Tensor, largest: int) -> None:
    """Raise if a label is past the model's last class (checked on the host: no device assert)."""
    if largest >= logits.shape[1]:
        raise ValueError(f"labels must be class indices < {logits.shape[1]}, the model's "
                         f"number of classes, got {largest}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # dropout off, batch-norm running stats: the attacked function is fixed
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def input_gradient(
    model: nn.Module, x: Tensor, labels: Tensor, *, largest: int | None = None
) -> tuple[Tensor, Tensor]:
    """Cross-entropy gradient w.r.t. the input x only, and the logits it was computed from.

    ``largest``, the largest label (from check_inputs), is checked against the number of
    classes before the loss: a label past it would be a device-side assert on CUDA.
    """
    x = x.detach().requires_grad_(True)  # [B, ...]
    logits = model(x)  # [B, C]
    if largest is not None:
        check_classes(logits, largest)
    # Summed, not averaged: each item's gradient does not depend on the batch size.
    loss = F.cross_entropy(logits, labels, reduction="sum")
    # autograd.grad w.r.t. x alone: no parameter's .grad is touched.
    (grad,) = torch.autograd.grad(loss, x)  # [B, ...]
    return grad, logits.detach()


def succeeded(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Whether each item is classified as its target (targeted) or away from its label."""
    hit = logits.argmax(dim=1) == labels  # [B]
    return hit if targeted else ~hit
