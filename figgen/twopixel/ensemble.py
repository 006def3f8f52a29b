"""Many classifiers trained on the same six images, and where they disagree."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from figgen.twopixel.models import MLPSpec, cat_probability, fit_many, predict
from figgen.twopixel.world import grid, training_set
from pelican_figgen.intermediates import cached

# Model families: depth, width, activation and initial input scale all shape the boundary.
FAMILIES = (
    MLPSpec(32, 2, "tanh"),
    MLPSpec(32, 2, "relu", scale=3.0),
    MLPSpec(32, 2, "gelu", scale=3.0),
    MLPSpec(16, 1, "tanh", scale=5.0),
    MLPSpec(64, 2, "sin", scale=3.0),
    MLPSpec(64, 2, "sin", scale=5.0),
)
SEEDS_PER_FAMILY = 12  # the chaos figure's ensemble
BOUNDARY_SEEDS = 2  # decision_boundaries: every family twice, so the seed's effect shows too


@dataclass(frozen=True)
class Member:
    """One trained classifier and how it was made."""

    spec: MLPSpec
    seed: int
    model: nn.Module


@cached  # 72 models for the chaos figure: trained once, not per restyle
def train_ensemble(seeds_per_family: int = SEEDS_PER_FAMILY) -> list[Member]:
    """Every family trained from seeds 0..n-1 on the six training images, family by family."""
    train, labels = training_set()
    seeds = list(range(seeds_per_family))
    return [
        Member(spec, seed, model)
        for spec in FAMILIES
        for seed, model in zip(seeds, fit_many(spec, seeds, train, labels), strict=True)
    ]


def all_correct(members: list[Member]) -> bool:
    """Whether every member classifies all six training images correctly."""
    train, labels = training_set()
    return all((predict(m.model, train) == labels).all() for m in members)


def cat_votes(members: list[Member], n: int) -> np.ndarray:
    """The share of members that say cat at each point of an n x n grid [n, n]."""
    _, points = grid(n)
    says_cat = np.stack([cat_probability(m.model, points) > 0.5 for m in members])  # [M, n*n]
    return says_cat.mean(axis=0).reshape(n, n)  # [n, n]


def disagreement(votes: np.ndarray, where: np.ndarray) -> float:
    """The fraction of the cells in where [n, n] on which the models are not unanimous."""
    split = (votes > 0.0) & (votes < 1.0)  # [n, n]
    return float(split[where].mean())
