"""The harness's PNG encoder: smaller files that decode to the same (or same-looking) pixels."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pelican_figgen.png import PSNR_MIN_DB, encode, few_colours, looks_same, psnr_db  # noqa: E402


def decoded(data: bytes) -> Image.Image:
    """The PNG's image, loaded."""
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    return image


def photo(size: int = 96, seed: int = 0) -> np.ndarray:
    """A noisy RGB array with thousands of colours, like a photograph's pixels."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def line_plot() -> Image.Image:
    """An anti-aliased matplotlib plot, as the figure scripts draw them (over 256 colours)."""
    fig, ax = plt.subplots(figsize=(3, 2))
    x = np.linspace(0, 6, 200)
    for k in range(4):
        ax.plot(x, np.sin(x + k), lw=1.5)
    ax.set_title("four waves")
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=200)
    plt.close(fig)
    return decoded(out.getvalue())


def test_an_opaque_rgba_photo_comes_out_rgb_with_the_same_pixels() -> None:
    pixels = photo()
    rgba = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)]))
    out = decoded(encode(rgba))
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), pixels)


def test_transparency_is_kept() -> None:
    pixels = np.dstack([photo(), np.full((96, 96), 255, np.uint8)])
    pixels[0, 0, 3] = 10
    out = decoded(encode(Image.fromarray(pixels)))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out), pixels)


def test_few_colours_make_an_exact_palette_png() -> None:
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (256, 3), dtype=np.uint8)  # 256: the most a palette holds
    pixels = colours[rng.integers(0, 256, (80, 120))]
    rgba = Image.fromarray(pixels).convert("RGBA")
    out = decoded(encode(rgba))
    assert out.mode == "P"
    assert np.array_equal(np.asarray(out.convert("RGB")), pixels)


def test_an_anti_aliased_plot_becomes_a_palette_that_looks_the_same() -> None:
    plot = line_plot()
    assert plot.convert("RGB").getcolors(256) is None  # more colours than a palette holds
    data = encode(plot)
    out = decoded(data)
    assert out.mode == "P" and out.size == plot.size
    assert psnr_db(np.asarray(out.convert("RGB")), np.asarray(plot.convert("RGB"))) >= PSNR_MIN_DB


def test_a_photo_stays_lossless() -> None:
    pixels = photo(256)
    out = decoded(encode(Image.fromarray(pixels)))
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), pixels)


def test_a_small_photo_in_a_blank_figure_stays_lossless() -> None:
    # Over the whole image its palette's loss would pass: the white dilutes it. Per tile it fails.
    pixels = np.full((1280, 1280, 3), 255, np.uint8)
    pixels[:64, :64] = photo(64)
    out = decoded(encode(Image.fromarray(pixels)))
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), pixels)


def test_a_smooth_gradient_whose_palette_loses_evenly_stays_lossless() -> None:
    # No tile stands out, but the whole is below the bar: the global check keeps it RGB.
    y, x = np.mgrid[0:512, 0:512]
    pixels = np.dstack([x // 2, y // 2, np.full_like(x, 128)]).astype(np.uint8)
    out = decoded(encode(Image.fromarray(pixels)))
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), pixels)
    # (encode makes no palette of it at all: too many colours; the check itself says no too)
    image = Image.fromarray(pixels)
    palette = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    assert not looks_same(image, palette.convert("RGB"))


def test_a_photo_is_told_apart_before_any_palette_is_made(monkeypatch) -> None:
    def no_palette(*args: object, **kwargs: object) -> None:
        raise AssertionError("a palette was made of a photo")

    assert few_colours(line_plot().convert("RGB"))
    monkeypatch.setattr(Image.Image, "quantize", no_palette)
    pixels = photo(256)
    out = decoded(encode(Image.fromarray(pixels)))
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), pixels)
    assert not few_colours(Image.fromarray(pixels))


def test_the_same_image_gives_the_same_bytes() -> None:
    plot = line_plot()
    assert encode(plot) == encode(plot.copy()) == encode(line_plot())
    assert encode(Image.fromarray(photo())) == encode(Image.fromarray(photo()))
