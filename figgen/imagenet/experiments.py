"""The ImageNet figures' attacks, computed once: cached results of plain NumPy data.

Each function loads the model and the photo, attacks, classifies, checks that the attack
worked, and returns an ``Attacked``: the images as [H, W, 3] arrays in [0, 1], the
predictions and the caption values. pelican_figgen.intermediates stores it, so restyling a figure
only plots again. torch, the model code and the attacks are imported inside the functions,
never at the top: a figure that reads its result from the store never imports torch, which
alone takes longer than drawing the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from figgen.imagenet.classes import Prediction, class_index, class_names
from pelican_figgen.harness import progress
from pelican_figgen.intermediates import cached

if TYPE_CHECKING:  # only for the hint: importing it would load torch
    from torch import Tensor


@dataclass(frozen=True)
class Attacked:
    """A photo and its attacked copy as the model saw them, its answers, the caption values."""

    natural: np.ndarray  # [S, S, 3] in [0, 1]
    attacked: np.ndarray  # [S, S, 3] in [0, 1]
    clean: Prediction  # the model's answer for the natural photo
    adversarial: Prediction  # ... and for the attacked copy
    eps: float  # the L-infinity budget in [0, 1] units
    fields: dict[str, Any]  # model, size, credit, eps_255: what every caption states
    sign: np.ndarray | None = None  # [S, S, 3]: FGSM's gradient sign as an image (0, 0.5, 1)
    seen_sign: Prediction | None = None  # the model's answer for that sign image


def pixels(image: Tensor) -> np.ndarray:
    """An image [1, 3, H, W] in [0, 1] as an [H, W, 3] array for imshow."""
    return image.detach().squeeze(0).permute(1, 2, 0).clamp(0, 1).cpu().numpy()  # [H, W, 3]


@cached
def fgsm_step(model: str | None, photo: str, eps_255: float) -> Attacked:
    """One untargeted FGSM step from the model's own class; raises if the class stays."""
    import torch

    from figgen.attacks import fgsm, input_gradient
    from figgen.imagenet.models import classify
    from figgen.imagenet.scene import scene

    setting = scene(model, photo, eps_255)
    net, x, eps = setting.model, setting.image, setting.eps  # x: [1, 3, S, S]
    clean = classify(net, x)[0]
    own = torch.tensor([clean.label], device=x.device)  # [1] the model's own class
    grad, _ = input_gradient(net, x, own)  # [1, 3, S, S]
    sign = (grad.sign() + 1) / 2  # [1, 3, S, S] the sign as an image: 0, 0.5 or 1
    adv = fgsm(net, x, own, eps)  # [1, 3, S, S]
    seen_sign, attacked = classify(net, torch.cat([sign, adv]))  # [2] images at once
    if attacked.label == clean.label:
        raise RuntimeError(f"FGSM at {eps:.4f} left the class at {clean}: raise eps_255")
    return Attacked(
        pixels(x), pixels(adv), clean, attacked, eps, setting.fields(), pixels(sign), seen_sign
    )


@cached
def targeted_pgd(
    model: str | None, photo: str, target: str, eps_255: float, alpha_255: float, steps: int
) -> Attacked:
    """Targeted PGD towards the class named target; raises unless the model then says it."""
    import torch

    from figgen.attacks import pgd
    from figgen.imagenet.models import classify
    from figgen.imagenet.scene import scene

    setting = scene(model, photo, eps_255)
    net, x, eps = setting.model, setting.image, setting.eps  # x: [1, 3, S, S]
    goal = torch.tensor([class_index(target)], device=x.device)  # [1]
    bar = partial(progress, description=f"PGD towards {target}")  # a bar while it runs
    adv = pgd(net, x, goal, eps, alpha_255 / 255, steps, targeted=True, progress=bar)
    clean, attacked = classify(net, torch.cat([x, adv]))  # [2] images at once
    if attacked.label != goal.item():
        raise RuntimeError(f"PGD did not reach {target!r} ({attacked} instead): raise eps_255")
    return Attacked(pixels(x), pixels(adv), clean, attacked, eps, setting.fields())


@dataclass(frozen=True)
class Ranked:
    """A photo as the model saw it, its most probable classes, the caption values."""

    photo: np.ndarray  # [S, S, 3] in [0, 1]
    labels: np.ndarray  # [k] class numbers, most probable first
    names: np.ndarray  # [k] their class names
    probabilities: np.ndarray  # [k] their softmax probabilities, descending
    fields: dict[str, Any]  # model, size, credit, dims (input values), classes (outputs)


@cached
def top_classes(model: str | None, photo: str, k: int = 5) -> Ranked:
    """The model's k most probable classes for a shipped photo, with their probabilities."""
    import torch

    from figgen.imagenet import models, photos

    net = models.load(model or models.DEFAULT_MODEL)
    x = photos.load_photo(photo, net.size).to(net.device)  # [1, 3, S, S]
    with torch.no_grad():
        probs = net(x).softmax(dim=1)[0]  # [C]: one probability per class
    top = probs.topk(k)  # sorted, largest first
    labels = top.indices.cpu().numpy()  # [k]
    names = class_names()
    fields = {
        "model": net.name, "size": net.size, "credit": photos.credit(photo),
        "dims": x[0].numel(), "classes": len(probs),  # the input space's and the output's sizes
    }
    return Ranked(
        pixels(x), labels, np.array([names[i] for i in labels]), top.values.cpu().numpy(), fields
    )
