"""A small library of gradient attacks on image classifiers, in the style of torchattacks.

Every attack is a plain function ``attack(model, images, labels, eps, ...) -> images``: the
model maps images in [0, 1] (any shape [B, ...]) to logits [B, C]; ``labels`` are the true
classes for an untargeted attack and the target classes for a targeted one; the result stays
in [0, 1] and within eps of ``images`` in the L-infinity norm. Each attack checks its
arguments first (``_common``): a bad one is a ValueError or TypeError that names it.
"""

from figgen.attacks._common import input_gradient
from figgen.attacks.fgsm import fgsm
from figgen.attacks.pgd import pgd

__all__ = ["fgsm", "input_gradient", "pgd"]
