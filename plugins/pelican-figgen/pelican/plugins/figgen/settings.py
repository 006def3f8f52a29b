"""The FIGGEN setting: documented defaults, merged with pelicanconf.py's dict in one place."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import SettingsError

# Every key a user may set in FIGGEN and its default. What each one does, and the rules behind
# it (what re-runs, the pool, keep-going, the freeze), is written once: README.md, "Settings".
DEFAULTS: dict[str, Any] = {
    "root": None,  # None: the folder that holds the content folder (Pelican's PATH)
    "scripts": "figgen/figures",  # relative to root; {figure}NAME runs <scripts>/NAME.py
    "cache_dir": ".figgen-cache",  # relative to root
    "output_dir": "figures",  # inside OUTPUT_PATH
    "python": sys.executable,
    "seed": 0,
    "params": {},  # {figure or folder name: {key: value}}
    "timeout": 600,  # seconds; __figure__ may set a script's own
    "versions": (),  # distributions added to every key, beside those a run imported
    "source_url": None,  # a URL template with {path}; None: a page in the site
    "on_error": "strict",  # or "keep-going"; FIGGEN_ON_ERROR overrides
    "jobs": None,  # None: the usable cores / threads, less one per GPU; FIGGEN_JOBS overrides
    "threads": 1,
    "gpus": "auto",  # or a list of device ids, [] for none
    "preload": True,  # the warm server
    "memory_mb": "auto",  # or a whole number of MiB, or None for no cap
    "intermediates_max_mb": 2048,  # or None for no limit
    "mode": "run",  # or "frozen"; FIGGEN_MODE overrides
    "freeze_dir": "_freeze",  # relative to root
    "verify_tolerance": 0.01,  # largest RMS difference of RGBA values that `verify` calls close
    "remote": None,  # or an fsspec URL (s3://bucket/prefix, file:///shared); FIGGEN_REMOTE too
    "remote_write": False,  # send what runs here to the remote; FIGGEN_REMOTE_WRITE=1 overrides
    "executor": "local",  # or a Dask scheduler, "dask://host:8786"; FIGGEN_EXECUTOR overrides
}
# Overrides from the environment, by key.
ENVIRONMENT = {"on_error": "FIGGEN_ON_ERROR", "mode": "FIGGEN_MODE", "jobs": "FIGGEN_JOBS",
               "remote": "FIGGEN_REMOTE", "remote_write": "FIGGEN_REMOTE_WRITE",
               "executor": "FIGGEN_EXECUTOR"}
# How the environment's text reads for a key that is not a string: FIGGEN_JOBS=3 is a whole
# number, FIGGEN_REMOTE_WRITE=1 is True, FIGGEN_REMOTE= (empty: a CI secret not set) is None.
FROM_TEXT: dict[str, Callable[[str], Any]] = {
    "jobs": lambda text: int(text) if text.strip().isdigit() else text,
    "remote_write": lambda text: {"1": True, "true": True, "0": False, "false": False, "": False}
    .get(text.strip().lower(), text),
    "remote": lambda text: text.strip() or None,
    "executor": lambda text: text.strip() or "local",
}
FOLDERS = ("scripts", "cache_dir", "freeze_dir")  # relative to the root


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
    remote: str | None = None  # an fsspec URL
    remote_write: bool = False
    # "local" (the pool), a scheduler's address ("tcp://host:8786"), or a distributed Client
    executor: Any = "local"
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def merge(user: Mapping[str, Any] | None, content_path: str | Path) -> FiggenSettings:
    """Check the FIGGEN keys and the environment's overrides; merge them over the defaults."""
    if user is not None and not isinstance(user, Mapping):
        raise SettingsError(f"FIGGEN is {user!r}; expected a dict of settings, such as "
                            "{'timeout': 600} (every key: the plugin's README, Settings)")
    user = dict(user or {})
    for key in user:
        if key not in DEFAULTS:
            import difflib  # here: only a wrong name needs it

            close = difflib.get_close_matches(key, DEFAULTS, n=1) if isinstance(key, str) else []
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SettingsError(f"FIGGEN: unknown key {key!r}{hint} (known: {', '.join(DEFAULTS)})")
    checked = {key: _check(key, user.get(key, default)) for key, default in DEFAULTS.items()}
    for key, variable in ENVIRONMENT.items():  # the environment wins over pelicanconf.py
        if variable in os.environ:
            checked[key] = _check(key, os.environ[variable], variable)
    root = Path(checked["root"] or Path(content_path).parent).resolve()
    paths = {key: (root / checked[key]).resolve() for key in FOLDERS}
    if not paths["scripts"].is_relative_to(root):
        raise SettingsError(f"FIGGEN['scripts'] is {checked['scripts']!r}; expected a folder "
                            f"inside the project {root}")
    return FiggenSettings(**(checked | paths | {"root": root}))


def _check(key: str, value: Any, variable: str = "") -> Any:
    """A key's value (from `variable` in the environment, if named), normalised by its rule.

    A wrong value is a SettingsError naming the key, or the variable, and what it accepts.
    """
    check, accepts = RULES[key]
    given = FROM_TEXT[key](value) if variable and key in FROM_TEXT else value
    try:
        return check(given)
    except (TypeError, ValueError, KeyError, IndexError):  # the last two: a bad {} in source_url
        where = f"{variable} (FIGGEN[{key!r}])" if variable else f"FIGGEN[{key!r}]"
        raise SettingsError(f"{where} is {value!r}; expected {accepts}") from None


def _require(ok: bool) -> None:
    """Reject a value (the caller names the key and what it accepts)."""
    if not ok:
        raise ValueError


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A rule that also accepts None."""
    return lambda value: None if value is None else check(value)


def _folder(value: Any) -> str:
    """A path as a non-empty string."""
    _require(isinstance(value, (str, os.PathLike)) and str(value) != "")
    return str(value)


def _output_folder(value: Any) -> str:
    """A folder inside OUTPUT_PATH: relative, without '..' (images must stay in the site)."""
    _require(isinstance(value, str))
    folder = PurePosixPath(value)
    _require(value.strip("/") != "" and not folder.is_absolute() and ".." not in folder.parts
             and "\\" not in value)
    return value.rstrip("/")


def _whole(value: Any) -> int:
    """A whole number >= 1 (not a bool)."""
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    return value


def _seed(value: Any) -> int:
    """A seed NumPy and torch both take: 0 <= seed < 2**32."""
    _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32)
    return value


def seconds(value: Any) -> float:
    """A time-out: a finite number of seconds > 0 (not a bool)."""
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value) and value > 0)
    return float(value)


def _tolerance(value: Any) -> float:
    """A finite number >= 0 (not a bool)."""
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and math.isfinite(value) and value >= 0)
    return float(value)


def _params(value: Any) -> dict[str, dict[str, Any]]:
    """{figure name: {key: value}}, every value JSON (the script is passed them as JSON)."""
    _require(isinstance(value, Mapping) and all(
        isinstance(name, str) and isinstance(own, Mapping) and all(isinstance(k, str) for k in own)
        for name, own in value.items()))
    json.dumps(value, sort_keys=True, allow_nan=False)  # TypeError or ValueError when not JSON
    return {name: dict(own) for name, own in value.items()}


def _names(value: Any) -> tuple[str, ...]:
    """A list or tuple of non-empty strings."""
    _require(isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value))
    return tuple(value)


def _source_url(value: str) -> str:
    """A URL template with {path}: http(s), or relative to the site."""
    _require(isinstance(value, str) and "{path}" in value)
    _require(urlsplit(value.format(path="x.py")).scheme in ("", "http", "https"))
    return value


def _url(value: Any) -> str:
    """A URL with a protocol fsspec may know (scheme://...)."""
    _require(isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", value) is not None)
    return value


def _executor(value: Any) -> Any:
    """'local', a Dask scheduler's URL (dask:// is tcp://), or a distributed Client."""
    if not isinstance(value, str):  # a Client made in pelicanconf.py: not imported here
        _require(callable(getattr(value, "submit", None))
                 and callable(getattr(value, "scheduler_info", None)))
        return value
    if value == "local":
        return value
    found = re.fullmatch(r"(dask|tcp|tls)://(\[[0-9a-fA-F:]+\]|[\w.-]+):(\d{1,5})", value)
    _require(found is not None)
    scheme = "tcp" if found[1] == "dask" else found[1]  # type: ignore[index]
    return f"{scheme}://{found[2]}:{found[3]}"  # type: ignore[index]


def _choice(*allowed: str) -> Callable[[Any], str]:
    """A rule that accepts one of these strings."""

    def check(value: Any) -> str:
        _require(isinstance(value, str) and value in allowed)
        return value

    return check


def _memory(value: Any) -> int | str | None:
    """'auto', None or a whole number of MiB."""
    return value if value in (None, "auto") else _whole(value)


def _bool(value: Any) -> bool:
    """True or False, nothing merely truthy."""
    _require(isinstance(value, bool))
    return value


def _gpus(value: Any) -> str | tuple[str, ...]:
    """'auto', or the GPU ids as strings."""
    if value == "auto":
        return value
    _require(isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in value))
    return tuple(str(v) for v in value)


# Each key's rule (returns the value normalised, raises ValueError or TypeError when the value
# is wrong) and what it accepts, as a SettingsError says it.
RULES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "root": (_optional(_folder), "None or a folder (str or path)"),
    "scripts": (_folder, "a folder (str or path) inside the project"),
    "cache_dir": (_folder, "a folder (str or path), relative to root or absolute"),
    "output_dir": (_output_folder, "a folder name inside the output, such as 'figures' "
                                   "(relative, not empty, no '..')"),
    "python": (_folder, "the path of a Python interpreter (str)"),
    "seed": (_seed, "a whole number with 0 <= seed < 2**32 (NumPy and torch take no other)"),
    "params": (_params, "a dict {figure name: {key: value}} with str keys and JSON values"),
    "timeout": (seconds, "a number of seconds > 0"),
    "versions": (_names, "a list of distribution names (str)"),
    "source_url": (_optional(_source_url), "None or an http(s) or relative URL template "
                                           "containing {path}"),
    "on_error": (_choice("strict", "keep-going"), "one of ('strict', 'keep-going')"),
    "mode": (_choice("run", "frozen"), "one of ('run', 'frozen')"),
    "jobs": (_optional(_whole), "a whole number >= 1, or None (as the cores allow)"),
    "threads": (_whole, "a whole number >= 1"),
    "gpus": (_gpus, "'auto' or a list of GPU ids, such as [0, 1], or [] for none"),
    "preload": (_bool, "True or False"),
    "memory_mb": (_memory, "'auto', None or a whole number of MiB >= 1"),
    "intermediates_max_mb": (_optional(_whole), "a whole number of MiB >= 1, or None (no limit)"),
    "freeze_dir": (_folder, "a folder (str or path), relative to root or absolute"),
    "verify_tolerance": (_tolerance, "a number >= 0 (an RMS difference of RGBA values in [0, 1])"),
    "remote": (_optional(_url), "None or an fsspec URL such as 's3://bucket/prefix', "
                                "'gs://bucket/prefix' or 'file:///shared/folder'"),
    "remote_write": (_bool, "True or False (FIGGEN_REMOTE_WRITE: 1 or 0)"),
    "executor": (_executor, "'local' (the pool), a Dask scheduler's address such as "
                            "'dask://host:8786' (or tcp://, tls://), or a distributed Client"),
}
