"""FGSM, the fast gradient sign method.

Goodfellow, Shlens and Szegedy (2014), "Explaining and Harnessing Adversarial Examples",
https://arxiv.org/abs/1412.6572. One step of size eps along the sign of the loss gradient:
an L-infinity attack, every input value moves by exactly eps (before clipping to [0, 1]).
"""

from __future__ import annotations

from torch import Tensor, nn

from figgen.attacks._common import check_inputs, check_size, eval_mode, input_gradient


def fgsm(
    model: nn.Module, images: Tensor, labels: Tensor, eps: float, *, targeted: bool = False
) -> Tensor:
    """Return FGSM adversarial images within eps (L-infinity) of ``images``, in [0, 1].

    Arguments:
        model: a differentiable classifier taking images in [0, 1], shape [B, ...], to
            logits [B, C]; it runs in eval mode during the attack and gets its own modes back.
        images: natural images in [0, 1], shape [B, ...] ((B, C, H, W) for images), of the
            model's dtype and on its device.
        labels: integer class indices [B] in [0, classes): the true classes (untargeted) or
            the targets (targeted).
        eps: the L-infinity budget in input units (e.g. 8 / 255), finite and >= 0; no default.
        targeted: False (default) ascends the cross-entropy of ``labels``; True descends it,
            pulling each image towards its target class.

    The images are detached; no parameter gradient is accumulated.

    Raises, before any computation: TypeError for images that are not a floating tensor of
    the model's parameters' dtype, labels that are not an integer tensor, an eps that is not
    a number; ValueError for images outside [0, 1], not [B, ...] with B = len(labels),
    channels-last (B, H, W, C) or on another device than the model, a negative or infinite
    eps, a label < 0 (-100, cross-entropy's ignore_index, would leave the image untouched).
    A label past the last class raises after the forward pass, before the loss (on CUDA it
    would be a device-side assert).
    """
    check_size("eps", eps, positive=False)
    labels, largest = check_inputs(model, images, labels)  # [B] int64
    with eval_mode(model):
        grad, _ = input_gradient(model, images, labels, largest=largest)  # [B, ...]
    step = eps * grad.sign()  # [B, ...]
    adv = images.detach() - step if targeted else images.detach() + step  # [B, ...]
    return adv.clamp(0.0, 1.0)
