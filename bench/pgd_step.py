"""PGD's cost per step against the bare forward and backward pass it cannot avoid.

A bare pass is what any gradient attack needs per step: logits, the cross-entropy, and its
gradient with respect to the input. A PGD step adds the sign, the projection and the clamp;
their share is the overhead, measured on the bundled ImageNet model at several batch sizes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from figgen.attacks import input_gradient, pgd
from figgen.imagenet import models, photos

STEPS = 8  # PGD steps per timed call; the ratio divides by them
REPEATS = 9  # medians of nine: batch 1 takes a few milliseconds a pass


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, waiting for the GPU when there is one (only the bench syncs)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def batch_of(size: int, model: models.Classifier) -> torch.Tensor:
    """A batch of shipped photos, repeated to ``size`` images [size, 3, S, S]."""
    names = list(photos.SOURCES)
    images = [photos.load_photo(names[i % len(names)], model.size) for i in range(size)]
    return torch.cat(images).to(model.device)


def step_over_bare(model: models.Classifier, size: int) -> float:
    """Median time of one PGD step divided by the median time of one bare pass."""
    x = batch_of(size, model)  # [B, 3, S, S]
    labels = torch.full((size,), 611, device=x.device)  # [B]

    def bare() -> None:
        input_gradient(model, x, labels)  # what each PGD step computes, and nothing else

    def attack() -> None:
        pgd(model, x, labels, 8 / 255, 2 / 255, STEPS, targeted=True)

    attack()  # warm-up: allocator, kernels, lazy init
    passes, steps = [], []
    for _ in range(REPEATS):  # interleaved, so drift on the machine hits both alike
        passes.append(timed(bare, x.device))
        steps.append(timed(attack, x.device) / STEPS)
    return statistics.median(steps) / statistics.median(passes)


def measure(sizes: tuple[int, ...] = (1, 8)) -> dict[str, float]:
    """PGD-step over bare-pass ratios of the bundled model, one per batch size."""
    model = models.load()
    return {f"pgd_step_over_bare_b{n}": round(step_over_bare(model, n), 3) for n in sizes}
