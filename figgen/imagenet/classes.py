"""The 1,000 ImageNet class names, in the index order every ImageNet classifier uses.

Without torch, so that figures can label and plot stored predictions without importing it.

classes.txt holds one name a line, line k for class k: torchvision's short English names
(torchvision/models/_meta.py, BSD-3-Clause), copied once so that no build needs torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

FILE = Path(__file__).with_name("classes.txt")
N_CLASSES = 1000


@dataclass(frozen=True)
class Prediction:
    """A classifier's top-1 answer for one image."""

    label: int
    name: str
    confidence: float

    def __str__(self) -> str:
        return f"{self.name} ({self.confidence:.1%})"


@cache
def class_names() -> tuple[str, ...]:
    """Every ImageNet class name, indexed by class number."""
    names = tuple(FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != N_CLASSES:
        raise ValueError(f"{FILE} has {len(names)} class names, not {N_CLASSES}")
    return names


def class_index(name: str) -> int:
    """The class number of an ImageNet class name, e.g. 'jigsaw puzzle' -> 611."""
    try:
        return class_names().index(name)
    except ValueError:
        raise KeyError(f"no ImageNet class is named {name!r}") from None
