"""PNG files, read with Pillow: whether one is whole, and its size in pixels.

The harness measures the image it saved with it, the plugin checks a run's image with it:
one reader on both sides of the run.
"""

from __future__ import annotations

from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PNGError(ValueError):
    """A file that is not a whole, readable PNG image; the message says why."""


def png_size(path: Path) -> tuple[int, int]:
    """A whole PNG's width and height in pixels; PNGError saying what is wrong otherwise."""
    from PIL import Image, UnidentifiedImageError  # here: a no-op build never reads a PNG

    try:
        with path.open("rb") as handle:
            head = handle.read(len(SIGNATURE))
    except OSError as err:
        raise PNGError(f"cannot read it ({err.strerror})") from err
    if head != SIGNATURE:
        raise PNGError("no PNG signature")
    try:
        with Image.open(path, formats=["PNG"]) as image:
            image.verify()  # its chunks and their checksums, up to IEND
        with Image.open(path, formats=["PNG"]) as image:  # verify() leaves it unusable
            image.load()  # the pixels: verify() does not inflate them
            return image.size
    except UnidentifiedImageError as err:  # Pillow hides why: its header chunks are bad
        raise PNGError("it is truncated or damaged (its header chunks do not read)") from err
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's ways of saying "broken"
        raise PNGError(f"it is truncated or damaged ({err})") from err
