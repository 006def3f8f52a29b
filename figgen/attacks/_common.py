"""What the attacks share: eval mode for the attack, and the loss gradient w.r.t. the input."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def input_gradient(model: nn.Module, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy gradient w.r.t. the input x only, and the logits it was computed from."""
    x = x.detach().requires_grad_(True)  # [B, ...]
    logits = model(x)  # [B, C]
    # Summed, not averaged: each item's gradient does not depend on the batch size.
    loss = F.cross_entropy(logits, labels, reduction="sum")
    # autograd.grad w.r.t. x alone: no parameter's .grad is touched.
    (grad,) = torch.autograd.grad(loss, x)  # [B, ...]
    return grad, logits.detach()


def succeeded(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Whether each item is classified as its target (targeted) or away from its label."""
    hit = logits.argmax(dim=1) == labels  # [B]
    return hit if targeted else ~hit
