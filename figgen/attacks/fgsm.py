"""FGSM, the fast gradient sign method.

Goodfellow, Shlens and Szegedy (2014), "Explaining and Harnessing Adversarial Examples",
https://arxiv.org/abs/1412.6572. One step of size eps along the sign of the loss gradient:
an L-infinity attack, every input value moves by exactly eps (before clipping to [0, 1]).
"""

from __future__ import annotations

from torch import Tensor, nn

from figgen.attacks._common import eval_mode, input_gradient


def fgsm(
    model: nn.Module, images: Tensor, labels: Tensor, eps: float, *, targeted: bool = False
) -> Tensor:
    """Return FGSM adversarial images within eps (L-infinity) of ``images``, in [0, 1].

    Arguments:
        model: a differentiable classifier taking images in [0, 1], shape [B, ...], to
            logits [B, C]; it runs in eval mode during the attack and gets its own modes back.
        images: natural images in [0, 1], shape [B, ...], on the model's device.
        labels: class indices [B]: the true classes (untargeted) or the targets (targeted).
        eps: the L-infinity budget in input units (e.g. 8 / 255); no default.
        targeted: False (default) ascends the cross-entropy of ``labels``; True descends it,
            pulling each image towards its target class.

    The images are detached; no parameter gradient is accumulated.
    """
    with eval_mode(model):
        grad, _ = input_gradient(model, images, labels)  # [B, ...]
    step = eps * grad.sign()  # [B, ...]
    adv = images.detach() - step if targeted else images.detach() + step  # [B, ...]
    return adv.clamp(0.0, 1.0)
