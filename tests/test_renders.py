"""A figure's renders from one run: the dark one (recoloured by the harness), a narrow one the
script draws for phones, each also as lossless WebP; the page's <picture>, the feed's PNG."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation
from PIL import Image

from conftest import Site
from pelican_figgen.dark import BACKGROUND, FOREGROUND, dark_colours, keep, recolour
from pelican_figgen.harness import PNG_DPI, Context, rasterize
from pelican_figgen.png import encode, webp

DARK_BG = tuple(round(c * 255) for c in BACKGROUND)
DARK_FG = tuple(round(c * 255) for c in FOREGROUND)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def near(pixel: np.ndarray, colour: tuple[int, ...], levels: int = 3) -> bool:
    return bool(np.abs(pixel.astype(int) - colour).max() <= levels)


def has(image: np.ndarray, colour: tuple[int, ...], levels: int = 3) -> bool:
    """Whether some pixel of the image is this colour, give or take `levels`."""
    return bool((np.abs(image.astype(int) - colour).max(axis=-1) <= levels).any())


def line_plot() -> Figure:
    """Black on white: a black line, a title, spines and tick labels."""
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="black", linewidth=4)
    ax.plot([0, 1], [1, 0], color="#d55e00", linewidth=4)  # a colour: the data's
    ax.set_title("a title")
    return fig


def save(tmp_path: Path, fig: Figure, **options: object) -> Context:
    ctx = Context("fig", 0, {}, tmp_path)
    ctx.save(fig, **options)
    return ctx


def test_the_dark_render_turns_a_black_on_white_plot_dark(tmp_path: Path) -> None:
    fig = line_plot()
    ctx = save(tmp_path, fig)
    light, dark = pixels(tmp_path / "fig.png"), pixels(tmp_path / ctx.renders["dark"]["file"])
    # (A 256-colour palette may move a colour by a level or two: PSNR 45 dB.)
    assert near(light[0, 0], (255, 255, 255)) and near(dark[0, 0], DARK_BG)
    assert has(dark, DARK_FG) and not has(dark, (0, 0, 0), 15)  # black line, text: light
    assert has(light, (0, 0, 0)) and not has(light, DARK_FG)
    assert has(dark, (0xD5, 0x5E, 0x00))  # the coloured line is left alone
    assert fig.get_facecolor() == (1, 1, 1, 1)  # the figure is given back as it was
    assert fig.axes[0].lines[0].get_color() == "black"


def test_the_dark_render_keeps_the_layout_of_the_light_one(tmp_path: Path) -> None:
    # Constrained layout run again moves the axes: an explorable figure's layer (placed from
    # the axes after ctx.save) and the dark render must lie where the light render's axes are.
    where = []
    for dark in (False, True):
        fig = Figure(figsize=(3, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("a label")
        (tmp_path / str(dark)).mkdir()
        save(tmp_path / str(dark), fig, dark=dark)
        where.append(tuple(ax.get_position().bounds))
        assert fig.get_layout_engine() is not None  # given back
    assert where[0] == where[1]


def test_the_dark_render_is_drawn_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # savefig draws a figure with a layout engine twice (the first time for its layout); the
    # dark render keeps the light one's layout, so it needs only the drawing itself.
    draws = []
    monkeypatch.setattr(Figure, "draw", lambda self, renderer, _draw=Figure.draw: (
        draws.append(self), _draw(self, renderer))[1])
    fig = Figure(figsize=(3, 2), layout="constrained")
    fig.subplots().plot([0, 1], [0, 1])
    save(tmp_path, fig)
    assert len(draws) == 3  # the light render's layout pass and drawing, the dark drawing


def test_a_draft_is_drawn_once_at_one_pixel_per_css_pixel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = []
    monkeypatch.setattr(Figure, "draw", lambda self, renderer, _draw=Figure.draw: (
        draws.append(self), _draw(self, renderer))[1])
    monkeypatch.setenv("FIGGEN_DRAFT", "1")
    fig = Figure(figsize=(3, 2), layout="constrained")
    fig.subplots().plot([0, 1], [0, 1], color="tab:green")
    ctx = save(tmp_path, fig)
    assert len(draws) == 1 and ctx.image["density"] == 1 and not ctx.renders
    with Image.open(tmp_path / ctx.image["file"]) as image:
        assert image.size == (300, 200) == (ctx.image["width"], ctx.image["height"])
        assert has(np.asarray(image.convert("RGB")), (44, 160, 44))  # the line, drawn
    assert fig.dpi == 100  # given back as it was
    # A site's own savefig colours are savefig's to apply: the draft is saved as a render is.
    monkeypatch.setitem(matplotlib.rcParams, "savefig.facecolor", "#ffeeee")
    (tmp_path / "pink").mkdir()
    save(tmp_path / "pink", fig)
    with Image.open(tmp_path / "pink" / "fig.png") as image:
        assert near(np.asarray(image.convert("RGB"))[0, 0], (0xFF, 0xEE, 0xEE))


def test_the_dark_render_leaves_an_images_pixels_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    photo[:10] = 255  # white and black rows: an image's neutral pixels are not the page's
    photo[10:15] = 0
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(photo, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    ctx = save(tmp_path, fig)
    assert np.array_equal(pixels(tmp_path / "fig.png"),
                          pixels(tmp_path / ctx.renders["dark"]["file"]))


def test_colour_mapped_collections_keep_their_colours() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(np.array([[0.0, 1.0]]), cmap="gray")
    points = ax.scatter([0], [0], color="black")
    fig.draw_without_rendering()  # maps the mesh's values to colours, as savefig does
    with dark_colours(fig):
        assert points.get_facecolor()[0][:3] == pytest.approx(FOREGROUND)
        assert mesh.get_facecolor()[0][:3] == pytest.approx((0, 0, 0))  # black stays black
    assert tuple(points.get_facecolor()[0]) == (0, 0, 0, 1)


def test_a_grey_marked_as_data_keeps_its_colour() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    swatch, frame = ax.bar([0, 1], [1, 1], color="0.3")  # two grey bars: the second is chrome
    keep(swatch)
    with dark_colours(fig):
        assert swatch.get_facecolor()[:3] == pytest.approx((0.3, 0.3, 0.3))
        assert frame.get_facecolor()[:3] != pytest.approx((0.3, 0.3, 0.3))
    assert frame.get_facecolor()[:3] == pytest.approx((0.3, 0.3, 0.3))



def arrow_on_the_background() -> tuple[Figure, Annotation]:
    """A thick black annotation arrow on the plain white background, nothing else."""
    fig = Figure(figsize=(2, 1))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    arrow = ax.annotate("", xy=(0.9, 0.5), xytext=(0.1, 0.5),
                        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 6})
    return fig, arrow


def hatch_on_the_background() -> tuple[Figure, Rectangle]:
    """A hatched bar without face or edge on the plain white background: its hatch alone."""
    fig = Figure(figsize=(2, 1))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    bar = ax.bar([0], [1], hatch="//", facecolor="none")[0]
    bar.set_hatch_linewidth(4)
    return fig, bar


@pytest.mark.parametrize("draw", [arrow_on_the_background, hatch_on_the_background])
def test_an_arrow_or_a_hatch_turns_light_in_the_dark_render_only_when_marked(
    tmp_path: Path, draw: Callable[[], tuple[Figure, Artist]]
) -> None:
    renders = {}
    for marked in (False, True):
        fig, artist = draw()
        if marked:
            recolour(artist)
        (tmp_path / str(marked)).mkdir()
        ctx = save(tmp_path / str(marked), fig)
        renders[marked] = (pixels(tmp_path / str(marked) / "fig.png"),
                           pixels(tmp_path / str(marked) / ctx.renders["dark"]["file"]))
        # Given back as it was: a later render is the light one again.
        assert np.array_equal(rasterize(fig, dark=False), rasterize(draw()[0], dark=False))
    (light, dark), (marked_light, marked_dark) = renders[False], renders[True]
    ink = light.max(axis=-1) <= 2  # the arrow's or the hatch's black pixels, edges left out
    assert ink.sum() > 500 and np.array_equal(light, marked_light)
    assert dark[ink].max() <= 3  # unmarked: black on the dark page, as on this blog
    assert np.abs(marked_dark[ink].astype(int) - DARK_FG).max() <= 3  # marked: the page's text
    assert near(marked_dark[0, 0], DARK_BG) and near(dark[0, 0], DARK_BG)


def test_the_mark_reaches_an_arrow_marked_alone_and_a_collections_hatch() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    arrow = ax.annotate("a", xy=(0, 0), xytext=(1, 1), arrowprops={"color": "0.2"}).arrow_patch
    band = ax.fill_between([0, 1], [0, 1], facecolor="none", hatch="x")
    plain = ax.fill_between([0, 1], [1, 2], facecolor="none", hatch="x")
    recolour(arrow, band)
    with dark_colours(fig):
        assert arrow.get_edgecolor()[:3] == arrow.get_facecolor()[:3] != pytest.approx((0.2,) * 3)
        assert band.get_hatchcolor()[0][:3] == pytest.approx(FOREGROUND)
        assert plain.get_hatchcolor()[0][:3] == pytest.approx((0, 0, 0))  # unmarked: as is
    assert arrow.get_edgecolor()[:3] == pytest.approx((0.2,) * 3)
    # The hatch follows its edge again, as the script left it: a black edge, a black hatch.
    band.set_edgecolor("red")
    assert band.get_hatchcolor()[0][:3] == pytest.approx((1, 0, 0))


def test_an_artist_is_either_kept_or_recoloured() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    bar, other = ax.bar([0, 1], [1, 1], hatch="//")
    note = ax.annotate("", xy=(0, 0), xytext=(1, 1), arrowprops={})
    keep(bar)
    recolour(other)
    keep(note)  # its arrow with it
    for mark, artist, first in [(recolour, bar, "keep"), (keep, other, "recolour"),
                                (recolour, note.arrow_patch, "keep")]:
        # The error names the artist and both marks, whichever came first.
        with pytest.raises(ValueError, match=rf"dark\.{mark.__name__}\(.+\): it is already "
                                             rf"marked dark\.{first}"):
            mark(artist)
    with pytest.raises(TypeError, match="dark.recolour takes .* not Axes"):
        recolour(ax)


def test_each_webp_holds_exactly_the_pixels_its_png_would(tmp_path: Path) -> None:
    fig = line_plot()
    fig.add_axes((0.6, 0.6, 0.3, 0.3)).imshow(np.random.default_rng(1).random((20, 20, 3)))
    narrow = line_plot()
    ctx = save(tmp_path, fig, narrow=narrow)
    png, twin = tmp_path / ctx.image["file"], tmp_path / ctx.image["webp"]
    assert twin.read_bytes()[8:12] == b"WEBP" and np.array_equal(pixels(png), pixels(twin))
    # The other renders are WebPs only: each holds what the smallest PNG of it would.
    for role, figure, dark in [("dark", fig, True), ("narrow", narrow, False),
                               ("narrow-dark", narrow, True)]:
        entry = ctx.renders[role]
        assert entry["file"] == f"fig.{role}.webp" and "webp" not in entry
        as_png = Image.open(io.BytesIO(encode(rasterize(figure, dark=dark))))
        assert np.array_equal(pixels(tmp_path / entry["file"]), np.asarray(as_png.convert("RGB")))
    noise = Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 60, 4), np.uint8))
    with Image.open(io.BytesIO(webp(noise))) as back:  # with alpha: lossless RGBA
        assert np.array_equal(np.asarray(back.convert("RGBA")), np.asarray(noise))


def test_rasterize_gives_the_pixels_of_savefig_at_two_x(tmp_path: Path) -> None:
    fig = line_plot()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=PNG_DPI)
    image = rasterize(fig, dark=False)
    assert image.size == (400, 300)
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(out).convert("RGBA")))


def test_two_saves_give_the_same_bytes(tmp_path: Path) -> None:
    made = []
    for run in ("one", "two"):
        folder = tmp_path / run
        folder.mkdir()
        save(folder, line_plot(), narrow=line_plot())
        made.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    # 4 renders: the main one as PNG and WebP, the three others as WebP
    assert len(made[0]) == 5 and made[0] == made[1]


def test_a_narrow_render_has_its_own_size_and_a_dark_twin_and_dark_is_optional(
    tmp_path: Path,
) -> None:
    narrow = Figure(figsize=(1, 3))
    narrow.add_subplot().plot([0, 1])
    ctx = save(tmp_path, line_plot(), narrow=narrow)
    assert set(ctx.renders) == {"dark", "narrow", "narrow-dark"}
    assert (ctx.image["width"], ctx.image["height"]) == (200, 150)  # CSS px at 2x
    for role in ("narrow", "narrow-dark"):
        assert (ctx.renders[role]["width"], ctx.renders[role]["height"]) == (100, 300)
    (tmp_path / "plain").mkdir()
    plain = save(tmp_path / "plain", line_plot(), dark=False)
    made = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert plain.renders == {} and made == ["fig.png", "fig.webp"]


NARROW = """\
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation

from pelican_figgen.harness import run


def main(ctx):
    wide, narrow = Figure(figsize=(3, 1)), Figure(figsize=(1, 2))
    for fig in (wide, narrow):
        fig.add_subplot().plot([0, 1, 0], color="black")
    ctx.fields["color"] = "black"
    ctx.save(wide, narrow=narrow)


if __name__ == "__main__":
    run(main)
"""

SOURCE = re.compile(r'<source type="image/webp"(?: media="([^"]*)")? srcset="([^"]*)" '
                    r'width="(\d+)" height="(\d+)">')


def test_the_page_offers_webp_renders_in_a_picture_and_the_feed_the_png(site: Site) -> None:
    site.write("figs/alpha.py", NARROW)
    site.append("pelicanconf.py", 'FEED_ALL_ATOM = "feeds/all.atom.xml"\nSITEURL = "/s"\n')
    site.build()
    page = site.html()
    picture = page[page.index("<picture"):page.index("</picture>")]
    sources = SOURCE.findall(picture)
    media = [m.replace("&amp;", "&") for m, *_ in sources]
    assert media == ["(max-width: 600px) and (prefers-color-scheme: dark)", "(max-width: 600px)",
                     "(prefers-color-scheme: dark)", ""]
    assert [(w, h) for *_, w, h in sources] == [("100", "200")] * 2 + [("300", "100")] * 2
    for _, srcset, width, _ in sources:
        url, density = srcset.split()
        assert density == "2x" and url.startswith("/s/figures/alpha-") and url.endswith(".webp")
        with Image.open(site.root / "output" / url.removeprefix("/s/")) as image:
            assert image.format == "WEBP" and image.width == 2 * int(width)
    img = re.search(r"<img [^>]*>", picture).group()
    assert 'width="300" height="100"' in img and ".png" in img
    assert len({s for _, s, *_ in sources}) == 4  # four renders, each its own file
    # The other figures have their dark render: each a <picture>, too.
    assert page.count("<picture data-figgen-picture>") == 3
    feed = (site.root / "output" / "feeds" / "all.atom.xml").read_text()
    assert "<picture" not in feed and "<source" not in feed and ".webp" not in feed
    srcs = re.findall(r'&lt;img src="([^"]*)"', feed)
    assert len(srcs) >= 3 and all(s.endswith(".png") for s in srcs) and "alpha-" in feed
    before = {p: p.read_bytes() for p in (site.root / "output").rglob("*") if p.is_file()}
    report = site.build()
    assert not report["ran"] and set(report["cached"]) == {"alpha", "beta", "gamma"}
    after = {p: p.read_bytes() for p in (site.root / "output").rglob("*") if p.is_file()}
    assert after == before
