"""Verify: re-run every frozen figure and compare its renders with the frozen ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cache import Cache, Image, Record, Store


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
    """Compare each render of a figure's re-run with its frozen one: the worst one counts."""
    name = frozen.name
    if not freeze.intact(frozen):
        where = freeze.store.object_path(frozen.image)
        return Comparison(name, "damaged", f"its frozen image {where} (or a render of it) is "
                                           "missing or damaged; `make freeze` copies it again")
    pairs = {"": (frozen.image, fresh.image)} | {
        role: (frozen.renders.get(role), fresh.renders.get(role))
        for role in sorted({*frozen.renders, *fresh.renders})}
    found = [_compare_render(role, old, new, (freeze.store, fresh_store), tolerance)
             for role, (old, new) in pairs.items()]
    worst = max(found, key=lambda verdict_detail: VERDICTS.index(verdict_detail[0]))
    if worst[0] == "identical":
        return Comparison(name, "identical", "same bytes")
    return Comparison(name, worst[0], "; ".join(detail for verdict, detail in found
                                                if verdict != "identical"))


VERDICTS = ("identical", "close", "drifted")  # a figure's verdict is its worst render's


def _compare_render(
    role: str, old: Image | None, new: Image | None, stores: tuple[Store, Store],
    tolerance: float,
) -> tuple[str, str]:
    """One render's verdict and what it says: by hash, then by pixels (role "": the main)."""
    what = f"its {role} render: " if role else ""
    if old is None or new is None:
        return "drifted", f"{what}{'new' if old is None else 'gone'} since the freeze"
    if old.sha256 == new.sha256:
        return "identical", f"{what}same bytes"
    distance = image_distance(stores[0].object_path(old), stores[1].object_path(new))
    if distance is None:
        return "drifted", f"{what}the image size changed"
    verdict = "close" if distance <= tolerance else "drifted"
    return verdict, f"{what}RMS difference {distance:.4f} of RGBA values in [0, 1]; " \
                    f"tolerance {tolerance:g}"


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
