"""Photos that installed packages ship inside their wheels, with the credit a caption owes.

Read straight from the package folders (found without importing the packages, which is slow)
and decoded with Pillow, so nothing is fetched: scikit-image's and scikit-learn's sample
images that need a download are not offered.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class Source:
    """Where a shipped photo lies (package, path inside it) and its credit, in Markdown."""

    package: str
    path: str
    credit: str


SKIMAGE = "scikit-image's `skimage.data`"
SKLEARN = "scikit-learn's sample images"
SOURCES = {
    "coffee": Source("skimage", "data/coffee.png", f"Rachel Michetti, CC0, from {SKIMAGE}"),
    "chelsea": Source("skimage", "data/chelsea.png", f"Stefan van der Walt, CC0, from {SKIMAGE}"),
    "flower": Source(
        "sklearn", "datasets/images/flower.jpg",
        f"[vultilion on Flickr](https://www.flickr.com/photos/vultilion/6056698931), "
        f"[CC BY 2.0](https://creativecommons.org/licenses/by/2.0/), from {SKLEARN}",
    ),
    "china": Source(
        "sklearn", "datasets/images/china.jpg",
        f"[danielbuechele on Flickr](https://www.flickr.com/photos/danielbuechele/6061409035), "
        f"[CC BY 2.0](https://creativecommons.org/licenses/by/2.0/), from {SKLEARN}",
    ),
}


def photo_path(name: str) -> Path:
    """The file of a shipped photo, or an error that says which package to install."""
    if name not in SOURCES:
        raise KeyError(f"no shipped photo {name!r}; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"photo {name!r} ships with {source.package}: install it")
    path = Path(next(iter(spec.submodule_search_locations))) / source.path
    if not path.is_file():
        raise FileNotFoundError(f"photo {name!r}: {path} is missing from {source.package}")
    return path


def load_photo(name: str, size: int) -> Tensor:
    """A shipped photo as a [1, 3, size, size] tensor in [0, 1]: centre square, resized."""
    with Image.open(photo_path(name)) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        # Pillow's bicubic resize filters before it subsamples: no aliasing from the shrink.
        pixels = np.asarray(square.resize((size, size), Image.Resampling.BICUBIC)).copy()
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255  # [1, 3, size, size]


def credit(name: str) -> str:
    """The credit line of a shipped photo, in Markdown."""
    return SOURCES[name].credit
