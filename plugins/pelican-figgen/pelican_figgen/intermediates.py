"""Expensive intermediates computed once: ``@cached`` library functions, stored on disk.

Several figures share work that is slow and does not depend on how they are drawn (a trained
classifier, an attacked batch). A function of a figgen library module decorated with
``@cached`` computes its result once; the figures (and rebuilds that only restyle a plot)
read it back::

    @cached
    def find_plausible() -> Plausible: ...

The store is active when the environment variable ``FIGGEN_INTERMEDIATES`` names a folder
(the plugin sets ``<cache_dir>/intermediates``); a script run alone without it computes, as
if the store were empty. Either way a result is kept in memory for the rest of the process.

The key (sha256 of canonical JSON) covers the function's module and name; the content of
every project file its module imports, transitively, lazy imports included
(``pelican_figgen.imports.closure``), so editing the module or anything below it recomputes while
editing a plotting module it does not import does not; its bound arguments with defaults;
the run's seed (``pelican_figgen.harness.SEED``); the environment the plugin describes
(``FIGGEN_ENVIRONMENT``: Python and ``FIGGEN["versions"]``); the versions of the installed
distributions the module's files import (read without importing them); ``FIGGEN_THREADS`` and
``FIGGEN_LANE`` (cpu or gpu). Arguments must be str, int, float, bool, None, lists, tuples,
dicts with str keys, or frozen dataclasses of those; anything else is a TypeError.

Results live in ``<folder>/<key[:2]>/<key>.pickle`` (a sha256 of the pickle, then the pickle,
protocol 5, of the value, the device that computed it, which a figure reading it names in its
provenance, and the distributions computing it imported, which it lists), written aside and
renamed into place; a damaged file is reported and computed again. A hit sets the file's
modification time: the plugin trims the least recently used results when the folder outgrows its
limit (``cache.trim_intermediates``), taking each one's lock first. A lock per key makes a
second process that wants the same result wait for the first and read it; ``stats()`` counts
hits, misses and the seconds spent waiting.

RNG contract, so that a figure is byte-identical whether a result was computed or read: a
computation runs with Python's, NumPy's and torch's global generators (CPU, and CUDA once
initialized) seeded with the run's seed, and every generator is put back as it was after;
torch imported during the computation is left seeded as a fresh import is (see
``pelican_figgen.harness.seed_on_import``). A hit touches no generator.

What a cached function must be: deterministic given its arguments and the seed, and
returning plain data (NumPy arrays, small dataclasses, CPU tensors, small nn.Modules), which
pickle stores. Pickles run code when read: the folder is a local, trusted cache, never a
download.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import pickle
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from pelican_figgen import contract, harness
from pelican_figgen.dists import versions_of
from pelican_figgen.imports import closure

PROTOCOL = 5
DIGEST = hashlib.sha256().digest_size  # bytes of the checksum that starts every file

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

_MEMO: dict[str, Any] = {}  # key -> value, for the rest of this process
_STATS: dict[str, Any] = {"hits": 0, "misses": 0, "waited": 0.0, "warnings": []}


def cached(func: F) -> F:
    """Compute ``func``'s result once per key and keep it on disk (see the module docstring)."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        files, distributions = _closure(func.__module__)
        # A hit skips the imports computing would make: the figure still depends on them.
        harness.depends_on(files)
        key = _key(func, files, bound.arguments, distributions)
        if key in _MEMO:
            _STATS["hits"] += 1
            return _MEMO[key]
        folder = os.environ.get(contract.INTERMEDIATES)
        compute = functools.partial(_seeded, func, args, kwargs)
        static = json.loads(distributions)
        stored = _stored(Path(folder), key, compute, static) if folder \
            else _as_read(_miss(compute, static))
        # What computing it imported counts for each figure that uses it, computed or read.
        harness.used_distributions(stored["distributions"])
        _MEMO[key] = stored["value"]
        return stored["value"]

    return wrapper  # type: ignore[return-value]


def stats() -> dict[str, Any]:
    """Hits, misses, seconds spent waiting for another process's result, and store warnings."""
    return {**_STATS, "waited": round(_STATS["waited"], 3), "warnings": list(_STATS["warnings"])}


@functools.cache
def _closure_at(file: Path, folders: tuple[Path, ...]) -> tuple[tuple[Path, ...], str]:
    """The project files a module file imports, itself first, and the distributions it imports.

    Read once per process; the distributions as canonical JSON of their versions, found
    without importing them (a hit must not load torch).
    """
    found = closure(file, folders)
    tops = {name.partition(".")[0] for name in found.external}
    tops -= set(sys.stdlib_module_names)
    return found.files, json.dumps(versions_of(tops), sort_keys=True)


def _closure(module: str) -> tuple[tuple[Path, ...], str]:
    """The project files a function's module imports, transitively, lazy imports included."""
    file = Path(sys.modules[module].__file__ or module).resolve()
    # The folder its top-level package sits in, too: a module outside the root still counts.
    top = file.parents[module.count(".") + (file.name == "__init__.py")]
    return _closure_at(file, tuple(dict.fromkeys((harness.project_root(), top))))


def _key(
    func: Callable[..., Any], files: tuple[Path, ...], arguments: dict[str, Any],
    distributions: str,
) -> str:
    """The sha256 of everything a result depends on, as canonical JSON."""
    where = f"{func.__module__}.{func.__qualname__}"
    parts = {
        "function": where,
        "files": {_name(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
        "arguments": {n: _plain(v, f"{where}: argument {n!r}") for n, v in arguments.items()},
        "seed": harness.SEED,
        "environment": os.environ.get(contract.ENVIRONMENT, ""),
        "distributions": distributions,
        "threads": os.environ.get(contract.THREADS, "1"),
        "lane": os.environ.get(contract.LANE, "cpu"),
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _name(file: Path) -> str:
    """A file as the key names it: relative to the root, so a moved checkout keeps its keys."""
    here = harness.project_root()
    return file.relative_to(here).as_posix() if file.is_relative_to(here) else str(file)


def _plain(value: Any, where: str) -> Any:
    """An argument as JSON data, or a TypeError that says which argument and why."""
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where} is a dict with keys that are not str: not part of a key")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    kind = type(value)
    if is_dataclass(value) and not isinstance(value, type):
        if not kind.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{where} is a {kind.__qualname__}, a dataclass that is not frozen")
        name = f"{kind.__module__}.{kind.__qualname__}"
        return {"dataclass": name, "fields": _plain(asdict(value), where)}
    raise TypeError(
        f"{where} is a {kind.__qualname__}: a cached function takes str, int, float, bool, "
        "None, lists, tuples, dicts and frozen dataclasses of these, so that it has a key"
    )


def _miss(compute: Callable[[], Any], static: dict[str, str]) -> bytes:
    """Compute a result that no store had, counting it: the pickle a store keeps of it.

    Beside the value, the device that computed it (a figure that only reads it names that
    device) and the distributions computing it imported: its module's static imports and
    what the computation loaded, which a figure that reads it never loads.
    """
    _STATS["misses"] += 1
    before = harness.loaded().distributions
    value = compute()
    new = {n: v for n, v in harness.loaded().distributions.items() if n not in before}
    stored = {"value": value, "device": harness.device(),
              "distributions": dict(sorted({**static, **new}.items()))}
    return pickle.dumps(stored, protocol=PROTOCOL)


def _as_read(body: bytes) -> dict[str, Any]:
    """A computed result as a hit reads it back from its pickle: value, device, distributions."""
    # Through pickle: what pickle drops (a tensor's grad, its graph, memory shared with another
    # object) is dropped alike, computed or read.
    return pickle.loads(body)


def _stored(
    folder: Path, key: str, compute: Callable[[], Any], static: dict[str, str]
) -> dict[str, Any]:
    """Read the result stored under key, or compute and store it while holding its lock."""
    path = folder / key[:2] / f"{key}.pickle"
    found = _read(path)
    if found is not None:
        return _hit(path, found)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        found = _read(path)  # another process may have made it while this one waited
        if found is not None:
            return _hit(path, found)
        body = _miss(compute, static)
        _write(path, body)
        return _as_read(body)


def _touch(path: Path) -> None:
    """Mark a result as just used: the build trims the least recently used ones first."""
    with suppress(OSError):  # a read-only store still serves hits
        os.utime(path)


def _hit(path: Path, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored result, its device noted for the run's provenance; counted, marked used."""
    _touch(path)  # also a result another process renamed into place, timed when written aside
    _STATS["hits"] += 1
    harness.computed_on(stored["device"])
    return stored


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on path, counting the seconds spent waiting for it."""
    start = time.perf_counter()
    # Another figure computing it: lend our core meanwhile (the pool starts one more).
    with contract.locked(path, harness.waiting):
        _STATS["waited"] += time.perf_counter() - start
        yield


def _read(path: Path) -> dict[str, Any] | None:
    """What is stored at path (value and device); None if absent or damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        _warn(f"cannot read cached intermediate {path} ({err}): computing it again")
        return None
    digest, body = data[:DIGEST], data[DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        _warn(f"cached intermediate {path} is damaged: computing it again")
        return None
    try:
        stored = pickle.loads(body)
    except Exception as err:  # whatever a damaged or outdated pickle raises: recompute
        _warn(f"cannot load cached intermediate {path} ({err}): computing it again")
        return None
    if not isinstance(stored, dict) or stored.keys() != {"value", "device", "distributions"}:
        _warn(f"cached intermediate {path} has an older layout: computing it again")
        return None
    return stored


def _warn(message: str) -> None:
    """Log a problem with the store, and keep it for the manifest: the build logs it."""
    log.warning("%s", message)
    _STATS["warnings"].append(message)


def _write(path: Path, body: bytes) -> None:
    """Store a pickle at path, its checksum first, atomically: written aside, then renamed."""
    # Named as the plugin's own leftovers are: a build drops them once their process is gone,
    # a kill -9 or the out-of-memory killer included.
    contract.write_atomic(path, hashlib.sha256(body).digest() + body)


def _seeded(func: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """Call func with every global generator seeded with the run's seed, then put them back."""
    import numpy  # a miss computes something heavy anyway; a hit never gets here

    seed, torch = harness.SEED, sys.modules.get("torch")
    saved = _generators(numpy, torch)
    if torch is None:
        harness.seed_on_import("torch", seed)  # a lazy import during func starts seeded
    random.seed(seed)
    harness.seed_numpy(numpy, seed)
    if torch is not None:
        torch.manual_seed(seed)  # CUDA's generators too, once it is initialized
    try:
        return func(*args, **kwargs)
    finally:
        _restore(saved, numpy, torch, seed)


def _generators(numpy: Any, torch: Any) -> dict[str, Any]:
    """The states of the global generators that exist now."""
    saved = {"random": random.getstate(), "numpy": numpy.random.get_state()}
    if torch is not None:
        saved["torch"] = torch.get_rng_state()
        if torch.cuda.is_initialized():
            saved["cuda"] = torch.cuda.get_rng_state_all()
    return saved


def _restore(saved: dict[str, Any], numpy: Any, torch: Any, seed: int) -> None:
    """Put the generators back; torch or CUDA started during the call are left as new."""
    random.setstate(saved["random"])
    numpy.random.set_state(saved["numpy"])
    now = sys.modules.get("torch")
    if torch is None and now is not None:
        now.manual_seed(seed)  # as the import hook left a fresh import
    if torch is None:
        return
    torch.set_rng_state(saved["torch"])
    if "cuda" in saved:
        torch.cuda.set_rng_state_all(saved["cuda"])
    elif torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)  # as the run's seed leaves CUDA when it starts
