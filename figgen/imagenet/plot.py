"""The shared look of the ImageNet figures: a row of image panels, each labelled by the run.

It draws NumPy arrays and imports no torch: a figure whose attack was read from the cache of
intermediates (figgen.imagenet.experiments) is plotted without loading torch at all.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from figgen.imagenet.classes import Prediction

FONT = 10  # points; a 720-pixel-wide row shrinks to about half on a phone
PANEL = 2.3  # inches per image panel; the harness saves at 200 dpi
GAP = 0.7  # inches for an operator ("+ 0.016 ×", "=") between two panels
# The narrow render for phones: 3 inches are 300 CSS px (200 dpi at 2x), drawn at its own size
# on a 360-px screen, so a FONT-point label stays 14 CSS px tall.
NARROW = 3.0
LABEL = 0.55  # inches under an image panel of the narrow render for its two-line label
BAR = "#0072B2"  # Okabe-Ito blue, as in the two-pixel figures


def row(kinds: str, panel: float = PANEL) -> tuple[Figure, list[Axes]]:
    """A one-row figure: 'i' an image panel, 'o' a narrow operator panel, in the given order."""
    widths = [panel if k == "i" else GAP for k in kinds]
    fig = Figure(figsize=(sum(widths), panel), layout="constrained")
    axes = fig.subplots(1, len(kinds), gridspec_kw={"width_ratios": widths})
    for ax in axes:
        # No ticks and no frame, but an x label: constrained layout makes room for it.
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    return fig, list(axes)


def column(kinds: str, width: float = NARROW) -> tuple[Figure, list[Axes]]:
    """The narrow render of row(kinds): the same panels stacked, for a phone's width."""
    heights = [width + LABEL if k == "i" else GAP * 0.6 for k in kinds]
    fig = Figure(figsize=(width, sum(heights)), layout="constrained")
    axes = fig.subplots(len(kinds), 1, gridspec_kw={"height_ratios": heights})
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    return fig, list(axes)


def show(ax: Axes, image: np.ndarray, title: str) -> None:
    """Draw an image [H, W, 3] in [0, 1] labelled below; nearest-neighbour keeps noise crisp."""
    ax.imshow(image.clip(0, 1), interpolation="nearest")
    ax.set_xlabel(title, fontsize=FONT, linespacing=1.3)


def operator(ax: Axes, text: str) -> None:
    """Write an operator such as '+' or '=' in the middle of a narrow panel."""
    ax.text(0.5, 0.55, text, fontsize=FONT + 6, ha="center", va="center")


def label(prediction: Prediction) -> str:
    """A panel title from the run: the top-1 class and its confidence."""
    return f"{prediction.name}\n{prediction.confidence:.1%} confidence"


def magnified(delta: np.ndarray, eps: float) -> np.ndarray:
    """A perturbation in [-eps, eps] rescaled to [0, 1] around mid-grey, so it is visible."""
    return delta / (2 * eps) + 0.5


def photo_and_bars(panel: float = PANEL) -> tuple[Figure, Axes, Axes]:
    """A figure of an image panel beside a wider panel for a horizontal bar chart."""
    fig = Figure(figsize=(panel * 2.6, panel), layout="constrained")
    photo, chart = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    photo.set_xticks([])
    photo.set_yticks([])
    photo.spines[:].set_visible(False)
    return fig, photo, chart


def photo_over_bars(width: float = NARROW) -> tuple[Figure, Axes, Axes]:
    """The narrow render of photo_and_bars(): the image panel above the bar chart."""
    fig = Figure(figsize=(width, width * 1.75), layout="constrained")
    photo, chart = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 0.75]})
    photo.set_xticks([])
    photo.set_yticks([])
    photo.spines[:].set_visible(False)
    return fig, photo, chart


def bars(ax: Axes, names: np.ndarray, probabilities: np.ndarray) -> None:
    """Classes as horizontal bars, the most probable on top, each labelled with its value."""
    y = np.arange(len(names))  # [k]
    ax.barh(y, probabilities, color=BAR, height=0.7)
    for row_, p in zip(y, probabilities, strict=True):
        ax.text(p + 0.015, row_, f"{p:.1%}", va="center", fontsize=FONT - 1)
    ax.set_yticks(y, names, fontsize=FONT)
    ax.invert_yaxis()  # the largest first, read from the top
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.tick_params(axis="x", labelsize=FONT - 1)
    ax.tick_params(axis="y", length=0)
    ax.spines[["top", "right"]].set_visible(False)
