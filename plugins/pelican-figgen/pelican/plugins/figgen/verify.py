"""Verify: re-run every frozen figure and compare its image with the frozen one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cache import Cache, Record, Store


@dataclass(frozen=True)
class Comparison:
    """How a re-run image compares with its frozen one."""

    name: str
    verdict: str  # "identical" or "close" (both fine); "drifted", "damaged", "missing", "failed"
    detail: str

    @property
    def ok(self) -> bool:
        """Whether the re-run image matches its frozen one, exactly or within tolerance."""
        return self.verdict in ("identical", "close")


def compare(
    frozen: Record, freeze: Cache, fresh: Record, fresh_store: Store, tolerance: float
) -> Comparison:
    """Compare a figure's re-run image with its frozen image: by hash, then by pixels."""
    name, old, new = frozen.name, frozen.image, fresh.image
    if not freeze.intact(frozen):
        where = freeze.store.object_path(old)
        return Comparison(name, "damaged", f"its frozen image {where} is missing or damaged; "
                                           "`make freeze` copies it again")
    if old.sha256 == new.sha256:
        return Comparison(name, "identical", "same bytes")
    distance = image_distance(freeze.store.object_path(old), fresh_store.object_path(new))
    if distance is None:
        return Comparison(name, "drifted", "the image size changed")
    detail = f"RMS difference {distance:.4f} of RGBA values in [0, 1]; tolerance {tolerance:g}"
    return Comparison(name, "close" if distance <= tolerance else "drifted", detail)


def image_distance(a: Path, b: Path) -> float | None:
    """Root-mean-square difference of two images' RGBA values in [0, 1]; None if sizes differ."""
    import numpy as np  # here: frozen builds and the plugin itself never need them
    from PIL import Image

    with Image.open(a) as one, Image.open(b) as two:
        x = np.asarray(one.convert("RGBA"), dtype=np.float64) / 255  # (H, W, 4)
        y = np.asarray(two.convert("RGBA"), dtype=np.float64) / 255  # (H, W, 4)
    if x.shape != y.shape:
        return None
    return float(np.sqrt(np.mean((x - y) ** 2)))
