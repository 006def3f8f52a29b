"""A dark render of any matplotlib figure: its neutral colours inverted, its data left alone.

The harness saves each figure twice from the same Figure object: as drawn, then inside
``dark_colours(fig)``. Every neutral colour (white, greys, black: backgrounds, text, spines,
ticks, legend frames, grid lines, plain black lines) is mapped by its lightness onto the dark
page's scale, white to ``BACKGROUND`` and black to ``FOREGROUND``; a colour with a hue (the
data's), images (photos, heatmaps) and colour-mapped collections (pcolormesh, contourf,
scatter with ``c=``) are left as they are. The colours are restored on leaving. A neutral
colour that is data (a grey level drawn as a patch) is marked with ``keep(artist)``. An
annotation's arrow (findobj never reaches it) and a hatch (unless it follows its patch's
visible edge) are left as they are too: on this blog they sit on the data's colours. One
drawn on the plain background is marked with ``recolour(artist)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

# The theme's dark page (its --bg and --fg): a dark render sits in it without a visible edge.
BACKGROUND = (0x16 / 255, 0x18 / 255, 0x1C / 255)
FOREGROUND = (0xE3 / 255, 0xE5 / 255, 0xE8 / 255)
NEUTRAL = 0.08  # a colour whose channels differ by at most this is a grey (or white, black)

Undo = list[tuple[Callable[[Any], Any], Any]]
KEEP = "_figgen_keep_colours"  # set on an artist whose colours are data: never recoloured
RECOLOUR = "_figgen_recolour"  # set on an artist whose arrow and hatch are recoloured as well
MARKS = {KEEP: "dark.keep", RECOLOUR: "dark.recolour"}


def keep(*artists: Any) -> None:
    """Leave these artists' colours alone in the dark render (greys that are data)."""
    for artist in artists:
        _mark(artist, KEEP, RECOLOUR)


def recolour(*artists: Any) -> None:
    """Recolour these artists' arrow (an annotation's) and hatch as neutral colours too.

    The opposite of ``keep``: a neutral (grey, black) annotation arrow or hatch drawn on the
    plain background is inverted in the dark render like the rest of the chrome, and
    restored after it; a colour with a hue stays. Marking an artist both ways is an error.
    A legend's swatch of a hatched patch is an artist of its own (``legend.legend_handles``).
    """
    from matplotlib.collections import Collection
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    for artist in artists:
        if not isinstance(artist, Text | Patch | Collection):
            raise TypeError(f"dark.recolour takes annotations, patches and collections, not "
                            f"{type(artist).__name__}: mark the artists themselves")
        _mark(artist, RECOLOUR, KEEP)


def _mark(artist: Any, mark: str, other: str) -> None:
    """Set one mark on an artist and its annotation arrow, refusing an artist with the other."""
    # The arrow is marked with its annotation: it is drawn by it, never reached by findobj.
    for part in (artist, getattr(artist, "arrow_patch", None)):
        if part is None:
            continue
        if getattr(part, other, False):
            raise ValueError(f"{MARKS[mark]}({part!r}): it is already marked {MARKS[other]}; "
                             f"an artist is either kept or recoloured in the dark render")
        setattr(part, mark, True)


def inverted(rgba: Any) -> tuple[float, ...] | None:
    """A neutral colour mapped onto the dark scale (alpha kept); None for a colour with a hue."""
    from matplotlib.colors import to_rgba

    r, g, b, a = to_rgba(rgba)
    if a == 0 or max(r, g, b) - min(r, g, b) > NEUTRAL:
        return None
    ink = 1.0 - (r + g + b) / 3  # 0 for white, 1 for black
    return (*(bg + ink * (fg - bg) for bg, fg in zip(BACKGROUND, FOREGROUND, strict=True)), a)


@contextlib.contextmanager
def dark_colours(fig: Any) -> Iterator[None]:
    """Recolour a figure for a dark page while inside the block; restore it on leaving.

    The figure must have been drawn (saved) once: its layout is kept as that draw left it.
    """
    undo: Undo = []
    engine = fig.get_layout_engine()
    try:
        # A layout engine run again moves the axes a little (constrained layout starts from
        # its last result): the dark render must lie exactly where the light one does, for
        # an explorable figure's layer and for the swap between them. No engine at all, not
        # "none": savefig draws a figure with any engine twice, the first time for its layout.
        if engine is not None:
            _without_layout(fig)
        for artist in fig.findobj():
            _recolour(artist, undo)
        yield
    finally:
        for setter, old in reversed(undo):
            setter(old)
        if engine is not None:
            fig.set_layout_engine(engine)


def _without_layout(fig: Any) -> None:
    """Drop a figure's layout engine (set_layout_engine(None) may pick one from rcParams)."""
    import matplotlib

    with matplotlib.rc_context({"figure.autolayout": False,
                                "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)


def _recolour(artist: Any, undo: Undo) -> None:
    """Invert the neutral colours of one artist, noting how to put each one back."""
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    if getattr(artist, KEEP, False):
        return
    if getattr(artist, RECOLOUR, False) and isinstance(artist, Patch | Collection):
        _swap_hatch(artist, undo)  # before the edge: a hatch may follow the edge's colour
    if isinstance(artist, Text):
        _swap(artist.get_color, artist.set_color, undo)
        box = artist.get_bbox_patch()
        if box is not None:
            _recolour(box, undo)
        arrow = getattr(artist, "arrow_patch", None)
        if arrow is not None and getattr(arrow, RECOLOUR, False):
            _recolour(arrow, undo)
    elif isinstance(artist, Line2D):
        for prop in ("color", "markeredgecolor", "markerfacecolor"):
            _swap(getattr(artist, f"get_{prop}"), getattr(artist, f"set_{prop}"), undo)
    elif isinstance(artist, Patch):
        _swap(artist.get_facecolor, artist.set_facecolor, undo)
        _swap(artist.get_edgecolor, artist.set_edgecolor, undo)
    elif isinstance(artist, Collection) and artist.get_array() is None:  # not colour-mapped
        _swap_many(artist.get_facecolor, artist.set_facecolor, undo)
        _swap_many(artist.get_edgecolor, artist.set_edgecolor, undo)


def _swap(get: Callable[[], Any], put: Callable[[Any], Any], undo: Undo) -> None:
    """Replace one colour by its inverse when it is neutral."""
    old = get()
    if isinstance(old, str) and old in ("none", "auto"):
        return
    new = inverted(old)
    if new is not None:
        undo.append((put, old))
        put(new)


def _swap_many(get: Callable[[], Any], put: Callable[[Any], Any], undo: Undo) -> None:
    """Replace the neutral colours of a collection's array of colours."""
    old = np.array(get(), dtype=float)
    if old.size == 0:
        return
    new = np.array([inverted(c) or tuple(c) for c in old])
    if not np.array_equal(new, old):
        undo.append((put, old))
        put(new)


def _swap_hatch(artist: Any, undo: Undo) -> None:
    """Replace the neutral colour(s) of a patch's or a collection's hatch."""
    from matplotlib.patches import Patch

    if not artist.get_hatch():
        return
    if not hasattr(artist, "set_hatchcolor"):  # matplotlib < 3.10 draws a private colour
        _swap(lambda: artist._hatch_color, partial(setattr, artist, "_hatch_color"), undo)
        return
    setting = artist._original_hatchcolor  # as the script set it ("edge", None: rc's)
    swap, noted = _swap if isinstance(artist, Patch) else _swap_many, len(undo)
    swap(artist.get_hatchcolor, artist.set_hatchcolor, undo)
    if len(undo) > noted:  # put back that setting, not the colour it resolved to
        undo[-1] = (artist.set_hatchcolor, setting)
