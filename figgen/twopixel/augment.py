"""Data augmentation: brightness and contrast changes, which keep an image's meaning."""

from __future__ import annotations

import numpy as np
from torch import nn

from figgen.twopixel.models import fit
from figgen.twopixel.search import find_plausible
from figgen.twopixel.world import training_set, true_class
from pelican_figgen.intermediates import cached

N_COPIES = 12  # augmented copies of each training image
# Small enough that every copy of the six images stays inside its own true region.
BRIGHTNESS = 12.0  # grey levels added to both pixels, drawn from [-B, B]
CONTRAST = 0.15  # the difference from the image's mean grey is scaled by [1 - C, 1 + C]
AUGMENT_SEED = 11


def describe() -> str:
    """The augmentation in words, with its ranges."""
    return (
        f"brightness shifted by up to {BRIGHTNESS:g} grey levels and contrast scaled "
        f"by {1 - CONTRAST:g} to {1 + CONTRAST:g}"
    )


def augment(points: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The images [K, 2], then n copies of each [K * n, 2] that keep their meaning; labels."""
    rng = np.random.default_rng(AUGMENT_SEED)
    shift = rng.uniform(-BRIGHTNESS, BRIGHTNESS, size=(len(points), n, 1))  # [K, n, 1]
    scale = rng.uniform(1 - CONTRAST, 1 + CONTRAST, size=(len(points), n, 1))  # [K, n, 1]
    mean = points.mean(axis=1, keepdims=True)[:, None, :]  # [K, 1, 1]
    copies = mean + scale * (points[:, None, :] - mean) + shift  # [K, n, 2]
    copies = copies.reshape(-1, 2)  # [K * n, 2]
    copy_labels = np.repeat(labels, n)  # [K * n]
    changed = int((true_class(copies) != copy_labels).sum())
    if changed:  # not clipped either: a copy outside [0, 255] lies outside every region
        raise ValueError(f"{changed} augmented copies left their true region: not augmentation")
    return np.concatenate([points, copies]), np.concatenate([labels, copy_labels])


@cached
def augmented_model(n: int = N_COPIES) -> nn.Module:
    """The augmentation model: the plausible architecture and seed, on n copies of each image."""
    found = find_plausible()
    copies, copy_labels = augment(*training_set(), n)  # [6 * (n + 1), 2], [6 * (n + 1)]
    return fit(found.spec, found.seed, copies, copy_labels)
