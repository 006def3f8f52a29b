"""The shared look of the two-pixel figures: one framing, one pair of colours and markers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import nn

from figgen.twopixel.models import cat_probability
from figgen.twopixel.world import CAT, CLASS_NAMES, DOG, PIXEL_MAX, REGIONS, grid

if TYPE_CHECKING:  # only for the hint: importing it would tie every figure to the attacks
    from figgen.twopixel.adversarial import Attack

# Okabe-Ito vermillion and blue: a pair that colour-blind readers tell apart.
COLOURS = {CAT: "#D55E00", DOG: "#0072B2"}
MARKERS = {CAT: "o", DOG: "s"}
TINTS = {CAT: "#FBE3D6", DOG: "#DCEAF5"}  # very light versions, for a model's decision areas
PANEL = (4.5, 4.5)  # inches; the harness saves at 200 dpi
BOUNDARY = {"colors": "black", "linewidths": 1.6}  # a model's p(cat) = 0.5 line
GRID = 256  # evaluation grid for boundaries and maps: one sample per grey level
FONT = 11  # points; a 450-pixel panel shrinks to about 0.7 on a phone
TICKS = (0, 64, 128, 192, 255)


def plane(size: tuple[float, float] = PANEL) -> tuple[Figure, Axes]:
    """A figure with the one framing every panel shares: 0-255 on both axes, equal aspect."""
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(0, PIXEL_MAX)
    ax.set_ylim(0, PIXEL_MAX)
    ax.set_aspect("equal")
    ax.set_xticks(TICKS)
    ax.set_yticks(TICKS)
    ax.tick_params(labelsize=FONT - 1, length=3)
    ax.set_xlabel("pixel 1", fontsize=FONT)
    ax.set_ylabel("pixel 2", fontsize=FONT)
    return fig, ax


def draw_points(ax: Axes, points: np.ndarray, labels: np.ndarray, size: float = 60, **kw) -> None:
    """Cats and dogs as filled markers in their colours, with a white rim."""
    for c in (CAT, DOG):
        p = points[labels == c]  # [n, 2]
        style = {"s": size, "edgecolors": "white", "linewidths": 1.0, "zorder": 5} | kw
        ax.scatter(p[:, 0], p[:, 1], c=COLOURS[c], marker=MARKERS[c], **style)


def draw_regions(ax: Axes, alpha: float = 0.28, outline: bool = False) -> None:
    """The true regions as shaded areas in the class colours (or as outlines)."""
    axis, points = grid(GRID)
    for c, region in REGIONS.items():
        inside = region.radius_ratio(points).reshape(GRID, GRID)  # [G, G]
        if outline:
            ax.contour(axis, axis, inside, levels=[1.0], colors=COLOURS[c], linewidths=1.2)
        else:
            ax.contourf(axis, axis, inside, levels=[0.0, 1.0], colors=COLOURS[c], alpha=alpha)


def probability_map(model: nn.Module, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """The axis values [n] and the model's cat probability on the n x n grid [n, n]."""
    axis, points = grid(n)
    return axis, cat_probability(model, points).reshape(n, n)


def draw_boundary(ax: Axes, model: nn.Module, **kw) -> None:
    """The model's decision boundary, the p(cat) = 0.5 contour."""
    axis, p = probability_map(model)
    ax.contour(axis, axis, p, levels=[0.5], **(BOUNDARY | kw))


def draw_decision(ax: Axes, model: nn.Module) -> None:
    """The model's decision areas as light tints, its boundary as a black line."""
    axis, p = probability_map(model)
    tints = ListedColormap([TINTS[DOG], TINTS[CAT]])
    ax.pcolormesh(axis, axis, (p > 0.5).astype(float), cmap=tints, vmin=0, vmax=1,
                  shading="nearest", rasterized=True, zorder=0)
    ax.contour(axis, axis, p, levels=[0.5], **BOUNDARY)


def cat_dog_cmap() -> LinearSegmentedColormap:
    """A diverging colour map: dog blue at 0, white at 0.5, cat vermillion at 1."""
    return LinearSegmentedColormap.from_list("dog_cat", [COLOURS[DOG], "white", COLOURS[CAT]])


def point_handles(size: float = 7) -> list[Line2D]:
    """Legend entries for the cat and dog markers."""
    return [
        Line2D([], [], ls="none", marker=MARKERS[c], ms=size, mfc=COLOURS[c], mec="white",
               label=f"{CLASS_NAMES[c]} (training)")
        for c in (CAT, DOG)
    ]


def family_colours() -> tuple[str, ...]:
    """Line colours for model families: the Okabe-Ito colours left after cat and dog."""
    return ("#000000", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7B3294")


def draw_attacks(ax: Axes, attacks: list[Attack], alpha: float = 1.0) -> None:
    """Each attack as a black arrow from its natural image to the attacked one, numbered."""
    for a in attacks:
        ax.annotate("", xy=a.end, xytext=a.start, zorder=6, alpha=alpha,
                    arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.8,
                                "shrinkA": 0, "shrinkB": 0, "mutation_scale": 14})
        ax.scatter(*a.start, s=40, c=COLOURS[a.label], marker=MARKERS[a.label],
                   edgecolors="black", linewidths=0.8, zorder=7, alpha=alpha)
        ax.scatter(*a.end, s=40, facecolors="white", marker=MARKERS[a.label],
                   edgecolors=COLOURS[a.label], linewidths=1.6, zorder=7, alpha=alpha)
        label_at = a.start - 9 * (a.end - a.start) / max(abs(a.end - a.start).max(), 1e-9)
        ax.text(*label_at, str(a.kind), ha="center", va="center", fontsize=FONT + 1,
                weight="bold", zorder=8, alpha=alpha,
                bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "black", "lw": 0.8})
