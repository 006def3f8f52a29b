"""Render files with Pillow: whether one is whole, its size in pixels, the smallest encoding.

The harness measures the image it saved with it, the plugin checks a run's image with it:
one reader on both sides of the run. The main render is a PNG (feeds and every browser read
it); the others are lossless WebPs only (a `<source type="image/webp">` is all that shows them).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

# The first bytes of each kind of render file, by suffix; WebP's RIFF header has its size
# between "RIFF" and "WEBP", so the check reads twelve bytes and skips four.
SIGNATURE = b"\x89PNG\r\n\x1a\n"  # a PNG's
SIGNATURES = {".png": (SIGNATURE, b""), ".webp": (b"RIFF", b"WEBP")}
FORMATS = {".png": "PNG", ".webp": "WEBP"}


class ImageFileError(ValueError):
    """A file that is not a whole, readable render (PNG or WebP); the message says why."""


def image_size(path: Path) -> tuple[int, int]:
    """A whole render file's width and height in pixels; ImageFileError saying why not."""
    from PIL import Image, UnidentifiedImageError  # here: a no-op build never reads an image

    kind = FORMATS.get(path.suffix)
    if kind is None:
        raise ImageFileError(f"a render is a .png or a .webp file, not {path.suffix or 'none'}")
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except OSError as err:
        raise ImageFileError(f"cannot read it ({err.strerror})") from err
    first, second = SIGNATURES[path.suffix]
    if not head.startswith(first) or not head[8:].startswith(second):
        raise ImageFileError(f"no {kind} signature")
    try:
        with Image.open(path, formats=[kind]) as image:
            image.verify()  # a PNG's chunks and their checksums, up to IEND
        with Image.open(path, formats=[kind]) as image:  # verify() leaves it unusable
            image.load()  # the pixels: verify() does not decode them
            return image.size
    except UnidentifiedImageError as err:  # Pillow hides why: its header does not read
        raise ImageFileError("it is truncated or damaged (its header does not read)") from err
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's ways of saying "broken"
        raise ImageFileError(f"it is truncated or damaged ({err})") from err


# A lossy palette is kept only when it looks the same: PSNR at least this against the
# lossless render, over the whole image and (less strictly) over every tile of it, so that a
# photo in a mostly blank figure cannot hide its loss behind the blank.
PSNR_MIN_DB = 45.0
TILE = 64
TILE_PSNR_MIN_DB = 35.0
RGB_LEVEL = 6  # zlib level of lossless RGB: level 9 spared at most 2 % for 10x the time
# A lossy palette is tried only when the 256 most common colours of every STRIDE-th pixel of
# every STRIDE-th row cover this share of them: a plot's flat colours do (0.94 and more here),
# a photo's spread colours do not (0.77 at most), and its palettes, which cost up to 1.5 s to
# make and never pass, are not made.
STRIDE = 4
PALETTE_COVER_MIN = 0.85


def encode(image: Any) -> bytes:
    """The image as the smallest PNG of the ones tried that looks the same as the image."""
    return png_bytes(*smallest(image))


def smallest(image: Any) -> tuple[Any, dict[str, Any]]:
    """The pixels to store for a render, and the PNG options that make them smallest.

    Opaque images lose their alpha channel; at most 256 colours make an exact palette PNG;
    more (anti-aliased plots) a 256-colour palette when it passes ``looks_same``, else
    lossless RGB (photos, which ``few_colours`` tells apart before any palette is made).
    Every option is explicit: the same pixels give the same bytes.
    """
    from PIL import Image

    if image.mode != "RGBA":  # matplotlib's renders are: no copy of theirs
        image = image.convert("RGBA")
    if image.getextrema()[3][0] < 255:  # some transparency: keep it, losslessly
        return image, {"compress_level": RGB_LEVEL}
    image = image.convert("RGB")
    if image.getcolors(256) is not None:
        return exact_palette(image), {"optimize": True}
    if not few_colours(image):
        return image, {"compress_level": RGB_LEVEL}
    for method in (Image.Quantize.FASTOCTREE, Image.Quantize.MEDIANCUT):  # smaller one first
        palette = image.quantize(256, method=method, dither=Image.Dither.NONE)
        if looks_same(image, palette.convert("RGB")):
            return palette, {"optimize": True}
    return image, {"compress_level": RGB_LEVEL}


# Lossless WebP, every option explicit: the same pixels give the same bytes. In lossless mode
# quality is the effort: 50 with method 1 is within 1 % of the smallest files (100, method 4)
# on this blog's figures, at a fifth to a tenth of the time (jigsaw's photos: 0.25 s, not 2.5).
WEBP_OPTIONS = {"lossless": True, "quality": 50, "method": 1, "exact": True}


def webp(image: Any) -> bytes:
    """An image's pixels, exactly, as a lossless WebP (``smallest``'s pixels: the PNG's)."""
    pixels = image.convert("RGBA" if _has_alpha(image) else "RGB")
    out = io.BytesIO()
    pixels.save(out, format="WEBP", **WEBP_OPTIONS)
    return out.getvalue()


def _has_alpha(image: Any) -> bool:
    """Whether an image has an alpha channel or a transparent palette entry."""
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def few_colours(image: Any) -> bool:
    """Whether an RGB image's 256 commonest colours cover most of it (a subsample's count)."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.uint32)[::STRIDE, ::STRIDE]
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    counts = np.sort(np.unique(packed, return_counts=True)[1])
    return int(counts[-256:].sum()) >= PALETTE_COVER_MIN * packed.size


def exact_palette(image: Any) -> Any:
    """An RGB image of at most 256 colours as a palette image with exactly its pixels."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image, dtype=np.uint32)
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    colours, index = np.unique(packed, return_inverse=True)  # sorted: a stable order
    indexed = Image.frombytes("P", image.size, index.astype(np.uint8).tobytes())
    rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1)
    indexed.putpalette(rgb.astype(np.uint8).tobytes())
    return indexed


def psnr_db(one: Any, two: Any) -> float:
    """The peak signal-to-noise ratio of two same-sized arrays of 8-bit values, in dB."""
    import numpy as np

    mse = float(np.mean((np.asarray(one, np.float64) - np.asarray(two, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def looks_same(lossless: Any, lossy: Any) -> bool:
    """Whether a lossy render is within PSNR_MIN_DB of the lossless one, and each tile too."""
    import numpy as np

    one, two = np.asarray(lossless), np.asarray(lossy)
    # Squared errors summed in integers per tile, then over the image: exact, as psnr_db's
    # float64 sums of integers are, so each decision is psnr_db's, at a fraction of its time.
    squared = np.subtract(one, two, dtype=np.int32)
    np.multiply(squared, squared, out=squared)
    height, width = one.shape[:2]
    channels = one.size // (height * width)
    rows, columns = range(0, height, TILE), range(0, width, TILE)
    sums = np.add.reduceat(np.add.reduceat(squared, rows, axis=0), columns, axis=1)
    sums = sums.reshape(len(rows), len(columns), -1).sum(axis=2, dtype=np.int64)
    if _db(int(sums.sum()), one.size) < PSNR_MIN_DB:
        return False
    return all(
        _db(int(sums[i, j]), (min(y + TILE, height) - y) * (min(x + TILE, width) - x) * channels)
        >= TILE_PSNR_MIN_DB for i, y in enumerate(rows) for j, x in enumerate(columns))


def _db(squared_errors: int, values: int) -> float:
    """PSNR in dB of 8-bit values from the sum of their squared errors (as psnr_db computes)."""
    mse = squared_errors / values
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def png_bytes(image: Any, options: dict[str, Any]) -> bytes:
    """The image's PNG bytes, written with these options and no metadata."""
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()
