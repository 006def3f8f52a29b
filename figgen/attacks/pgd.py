"""PGD, projected gradient descent with an L-infinity budget.

Madry, Makelov, Schmidt, Tsipras and Vladu (2017), "Towards Deep Learning Models Resistant
to Adversarial Attacks", https://arxiv.org/abs/1706.06083. Repeated signed gradient steps of
size alpha, each followed by a projection back onto the L-infinity ball of radius eps around
the natural image and onto the valid range [0, 1]; optionally from a random start in the ball.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from figgen.attacks._common import (
    check_count,
    check_inputs,
    check_size,
    eval_mode,
    input_gradient,
    succeeded,
)


def pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    random_start: bool = False,
    targeted: bool = False,
    early_stop: bool = False,
    generator: torch.Generator | None = None,
    check_every: int = 8,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> Tensor:
    """Return PGD adversarial images within eps (L-infinity) of ``images``, in [0, 1].

    Arguments:
        model: a differentiable classifier taking images in [0, 1], shape [B, ...], to
            logits [B, C]; it runs in eval mode during the attack and gets its own modes back.
        images: natural images in [0, 1], shape [B, ...] ((B, C, H, W) for images), of the
            model's dtype and on its device.
        labels: integer class indices [B] in [0, classes): the true classes (untargeted) or
            the targets (targeted).
        eps: the L-infinity budget in input units (e.g. 8 / 255), finite and >= 0; no default.
        alpha: the size of each signed step in input units, finite and > 0; no default.
        steps: the number of steps, an int >= 1; no default.
        random_start: False (default) starts at the image; True starts at a uniform random
            point of the eps-ball (clipped to [0, 1]), drawn with ``generator``.
        targeted: False (default) ascends the cross-entropy of ``labels``; True descends it.
        early_stop: False (default) takes every step; True freezes each item at the first
            iterate that succeeds (is classified as its target, or away from its label), and
            ends the loop once all have succeeded.
        generator: the torch.Generator for the random start (default None: torch's global
            one); the same seeded generator gives the same result.
        check_every: with early_stop, how many steps between the checks whether every item
            has succeeded (an int >= 1, default 8); the check is the loop's only host
            synchronisation.
        progress: wraps the loop over step numbers (default None: no wrapper), e.g. a figure's
            ``ctx.progress`` to show a bar; it sees only integers, so it forces no host sync.

    The images are detached; no parameter gradient is accumulated.

    Raises, before any computation: TypeError for images that are not a floating tensor of
    the model's parameters' dtype, labels that are not an integer tensor, an eps or alpha that
    is not a number, a steps or check_every that is not an int; ValueError for images outside
    [0, 1], not [B, ...] with B = len(labels), channels-last (B, H, W, C) or on another device
    than the model, eps < 0, alpha <= 0, either infinite, steps or check_every < 1, a label
    < 0 (-100, cross-entropy's ignore_index, would leave the image untouched). A label past
    the last class raises after the first forward pass, before the loss (on CUDA it would be
    a device-side assert).
    """
    check_size("eps", eps, positive=False)
    check_size("alpha", alpha, positive=True)
    check_count("steps", steps)
    check_count("check_every", check_every)
    labels, largest = check_inputs(model, images, labels)  # [B] int64
    images = images.detach()  # [B, ...]
    lo, hi = images - eps, images + eps  # [B, ...] the L-infinity ball
    adv = images.clone()  # [B, ...]
    if random_start:
        device = generator.device if generator is not None else images.device
        shape, kind = images.shape, images.dtype
        noise = torch.rand(shape, generator=generator, device=device, dtype=kind)  # [B, ...]
        adv = (adv + eps * (2 * noise.to(images.device) - 1)).clamp(0.0, 1.0)  # [B, ...]
    sign = -1.0 if targeted else 1.0  # descend towards a target, ascend away from a label
    done = torch.zeros(len(images), dtype=torch.bool, device=images.device)  # [B]
    with eval_mode(model):
        for step in (progress or iter)(range(steps)):
            grad, logits = input_gradient(model, adv, labels, largest=largest)  # [B, ...], [B, C]
            moved = adv + sign * alpha * grad.sign()  # [B, ...]
            moved = torch.minimum(torch.maximum(moved, lo), hi).clamp(0.0, 1.0)  # [B, ...]
            if early_stop:
                # The logits are of the current iterate: an item that succeeds stays put.
                done = done | succeeded(logits, labels, targeted)  # [B]
                frozen = done.view(-1, *([1] * (images.dim() - 1)))  # [B, 1, ...]
                moved = torch.where(frozen, adv, moved)  # [B, ...]
                # A host sync, so only every few steps: stop once every item succeeded.
                if (step + 1) % check_every == 0 and bool(done.all()):
                    adv = moved
                    break
            adv = moved
    return adv
