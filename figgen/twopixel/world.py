"""The two-pixel world: images are points (pixel 1, pixel 2) in [0, 255]^2.

Two smooth made-up "true" regions, one of cats and one of dogs, are defined here and only
here; everything outside both is "neither" (meaningless noise). The six training images are
drawn from inside the regions with a fixed seed, so every figure agrees with every other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAT, DOG, NEITHER = 0, 1, -1  # model classes (logit columns) and the true "neither"
CLASS_NAMES = {CAT: "cat", DOG: "dog"}
PIXEL_MAX = 255.0
WORLD_SEED = 7  # the training images; fixed, so that all nine figures show the same world
N_PER_CLASS = 3
FAR = 40.0  # grey levels from the nearest training image beyond which space counts as empty
CORE = 0.75  # training images come from the inner part of a region (radius ratio below this)


@dataclass(frozen=True)
class Region:
    """A wobbly ellipse: an ellipse whose radius varies smoothly with the angle."""

    center: tuple[float, float]  # pixel 1, pixel 2
    axes: tuple[float, float]  # semi-axes, in grey levels
    angle: float  # rotation of the first axis, in degrees
    wobble: tuple[tuple[float, int, float], ...]  # (amplitude, frequency, phase) terms

    def radius_ratio(self, points: np.ndarray) -> np.ndarray:
        """Distance from the centre relative to the boundary in that direction (<1: inside)."""
        p = np.asarray(points, dtype=float)  # [N, 2]
        c, s = np.cos(np.radians(self.angle)), np.sin(np.radians(self.angle))
        d = p - np.asarray(self.center)  # [N, 2]
        u = (c * d[:, 0] + s * d[:, 1]) / self.axes[0]  # [N] along the first axis
        v = (-s * d[:, 0] + c * d[:, 1]) / self.axes[1]  # [N] along the second axis
        phi = np.arctan2(v, u)  # [N]
        edge = 1.0 + sum(a * np.sin(k * phi + ph) for a, k, ph in self.wobble)  # [N]
        return np.hypot(u, v) / edge  # [N]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each point lies inside the region."""
        return self.radius_ratio(points) < 1.0  # [N]


CAT_REGION = Region(
    center=(84.0, 162.0), axes=(70.0, 36.0), angle=30.0, wobble=((0.12, 3, 0.4), (0.05, 5, 1.3))
)
DOG_REGION = Region(
    center=(148.0, 94.0), axes=(68.0, 38.0), angle=30.0, wobble=((0.10, 3, 2.0), (0.06, 4, 0.2))
)
REGIONS = {CAT: CAT_REGION, DOG: DOG_REGION}


def true_class(points: np.ndarray) -> np.ndarray:
    """The true meaning of each point: CAT, DOG, or NEITHER outside both regions."""
    p = np.asarray(points, dtype=float)  # [N, 2]
    out = np.full(len(p), NEITHER)  # [N]
    out[CAT_REGION.contains(p)] = CAT
    out[DOG_REGION.contains(p)] = DOG
    return out


def sample_region(region: Region, n: int, rng: np.random.Generator, core: float) -> np.ndarray:
    """n points drawn uniformly from the part of a region with radius ratio below core."""
    reach = max(region.axes) * 1.5  # a box that holds the whole wobbly ellipse
    found: list[np.ndarray] = []
    while sum(len(f) for f in found) < n:
        box = rng.uniform(-reach, reach, size=(64, 2)) + np.asarray(region.center)  # [64, 2]
        found.append(box[region.radius_ratio(box) < core])
    return np.concatenate(found)[:n]  # [n, 2]


def training_set() -> tuple[np.ndarray, np.ndarray]:
    """The six training images, in grey levels [6, 2], and their labels [6] (3 cats, 3 dogs)."""
    rng = np.random.default_rng(WORLD_SEED)
    cats = sample_region(CAT_REGION, N_PER_CLASS, rng, CORE)  # [3, 2]
    dogs = sample_region(DOG_REGION, N_PER_CLASS, rng, CORE)  # [3, 2]
    points = np.rint(np.concatenate([cats, dogs]))  # [6, 2] grey levels are whole numbers
    labels = np.array([CAT] * N_PER_CLASS + [DOG] * N_PER_CLASS)  # [6]
    return points, labels


def grid(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid over the plane: the axis values [n] and the points [n * n, 2], row-major."""
    axis = np.linspace(0.0, PIXEL_MAX, n)  # [n]
    p1, p2 = np.meshgrid(axis, axis)  # [n, n] each; rows follow pixel 2
    return axis, np.stack([p1.ravel(), p2.ravel()], axis=1)  # [n], [n * n, 2]


def natural_points(region: Region, spacing: float = 4.0) -> np.ndarray:
    """Every point of a regular lattice (in grey levels) that lies inside a region."""
    axis = np.arange(0.0, PIXEL_MAX + 1e-9, spacing)  # [M]
    p1, p2 = np.meshgrid(axis, axis)  # [M, M]
    lattice = np.stack([p1.ravel(), p2.ravel()], axis=1)  # [M * M, 2]
    return lattice[region.contains(lattice)]  # [K, 2]


def distance_to_data(points: np.ndarray) -> np.ndarray:
    """Grey levels from each point [N, 2] to the nearest training image [N]."""
    train, _ = training_set()
    return np.linalg.norm(points[:, None, :] - train[None, :, :], axis=2).min(axis=1)  # [N]


def far_mask(n: int) -> np.ndarray:
    """Which cells of the n x n grid lie farther than FAR from every training image [n, n]."""
    _, points = grid(n)
    return (distance_to_data(points) > FAR).reshape(n, n)  # [n, n]
