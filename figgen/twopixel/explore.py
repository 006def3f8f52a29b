"""What the explorable two-pixel figures publish for the page's module (explore.js)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from torch import nn

from figgen.twopixel.models import linears
from figgen.twopixel.world import REGIONS

MODULE = "../twopixel/explore.js"  # relative to figgen/figures/, as ctx.save_interactive reads it


def packed(values: Any) -> str:
    """Float32 values, little-endian, in base64: exact, and a third the size of decimals."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def model_data(model: nn.Sequential, activation: str) -> dict[str, Any]:
    """An MLP of figgen.twopixel.models as the module reads it: its layers and activation."""
    layers = [{"in": layer.in_features, "out": layer.out_features,
               "weight": packed(layer.weight.detach().cpu().numpy()),  # [out, in] row-major
               "bias": packed(layer.bias.detach().cpu().numpy())}
              for layer in linears(model)]
    return {"activation": activation, "layers": layers}


def regions_data() -> list[dict[str, Any]]:
    """The true regions (world.py), cat first: the module tells what a point means."""
    return [{"class": c, "center": list(r.center), "axes": list(r.axes), "angle": r.angle,
             "wobble": [list(w) for w in r.wobble]} for c, r in sorted(REGIONS.items())]


def votes_data(votes: np.ndarray, n_models: int) -> dict[str, Any]:
    """An ensemble's cat votes per grid cell [n, n] (shares), run-length coded in base64."""
    counts = np.rint(votes.ravel() * n_models).astype(int)  # [n * n]
    runs = bytearray()
    start = 0
    for i in range(1, len(counts) + 1):
        if i == len(counts) or counts[i] != counts[start] or i - start == 255:
            runs += bytes((i - start, counts[start]))
            start = i
    return {"n": int(votes.shape[0]), "models": n_models,
            "runs": base64.b64encode(bytes(runs)).decode("ascii")}
