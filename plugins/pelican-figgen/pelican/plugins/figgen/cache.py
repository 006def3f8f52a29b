"""Cache phase: content-hash keys, records of successful runs, and the up-to-date check.

Layout under the cache folder: `objects/<sha256><suffix>` holds every produced file under its
own hash; `records/<name>.json` says which inputs (by hash) made which objects. A record is
written last and atomically, so a record never points at a missing or partial object, and a
failed run leaves the previous record alone (`failures/<name>.json` says why it failed).
Records carry their own hash and objects are named by theirs: a damaged entry reads as stale.
`locks/<name>.lock` serialises concurrent builds of one figure; `tmp/<pid>-build`
(contract.SCRATCH) are scratch folders, dropped once their process is gone (a build killed
with -9 leaves one behind). `drafts/`, make serve's drafts, is a store of the same layout whose
records that can never show again, then objects no record names, are dropped (Store.tidy,
alone under `locks/.objects.lock`, which a build using the store holds shared).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pelican_figgen import dists, importpath
from pelican_figgen.contract import (
    SCRATCH,
    aside,
    aside_owner,
    locked,
    scratch_owner,
    write_atomic,
)

logger = logging.getLogger(__name__)
_UNWRITABLE: set[Path] = set()  # cache folders a build could not write in, warned about once
FORMAT = 7  # bump when the record layout changes: old records then read as "never run"
# path -> [size, mtime_ns, ctime_ns, inode, sha256] of each file the last build hashed: an
# unchanged file is not read again (a checkout or copy changes ctime: it is).
HASH_MEMO = "hashes.json"
SETTLED_NS = 2_000_000_000  # a file's stamp is trusted once it is this old
# In locks/: held shared while objects are put and recorded, or taken and copied out; alone to
# trim them.
OBJECTS_LOCK = ".objects.lock"


@dataclass(frozen=True)
class Image:
    """A produced image, stored in the cache under its hash."""

    sha256: str
    suffix: str
    width: int  # CSS pixels
    height: int
    density: int = 1  # image pixels per CSS pixel, as the harness saved it
    # sha256 of its lossless WebP twin (suffix .webp); "": none (a render that is a WebP)
    webp: str = ""

    def twin(self) -> Asset | None:
        """Its lossless WebP twin as a stored file, if it has one."""
        return Asset(self.webp, ".webp") if self.webp else None

    def for_browsers(self) -> Image | Asset | None:
        """The lossless WebP a `<source>` offers for it: itself if it is one, else its twin."""
        return self if self.suffix == ".webp" else self.twin()


@dataclass(frozen=True)
class Asset:
    """A file a run published beside its image (an interactive module, its data), by hash."""

    sha256: str
    suffix: str


@dataclass(frozen=True)
class Record:
    """What a successful run consumed (by hash) and produced."""

    name: str
    # path -> sha256: script, data, every imported file in no installed distribution (relative
    # to root; outside it, a portable name: pelican_figgen.importpath)
    inputs: Mapping[str, str]
    params: str  # canonical JSON of seed and parameters
    # Python, the distributions the run imported and those FIGGEN["versions"] adds, threads
    environment: Mapping[str, str]
    image: Image  # a figure is one image
    fields: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # How it was made, beyond the key: device, source commit, whether the tree was dirty.
    provenance: Mapping[str, Any] = field(default_factory=dict)
    # Peak resident memory of the run, MiB: the pool's estimate for the next run. Not
    # published: it varies between runs as the run time does. None: not measured.
    memory: float | None = None
    # Files beside the image, by role ("module", "data"): none for a plain figure.
    assets: Mapping[str, Asset] = field(default_factory=dict)
    # Other renders of the same run, by role ("dark", "narrow", "narrow-dark"): WebPs.
    renders: Mapping[str, Image] = field(default_factory=dict)

    def objects(self) -> tuple[Image | Asset, ...]:
        """Every stored file of this record: the image, its renders, each with its twin, assets."""
        images = (self.image, *(self.renders[k] for k in sorted(self.renders)))
        twins = (image.twin() for image in images)
        return (*images, *(t for t in twins if t is not None),
                *(self.assets[k] for k in sorted(self.assets)))


@dataclass(frozen=True)
class Failure:
    """Why a figure's last run failed, and every input it read or may have read."""

    name: str
    cause: str
    detail: str
    # The run's list of imports where it left one, and its script's as read statically.
    # None: saved by an older build, which listed nothing for a crash: it runs again.
    inputs: Mapping[str, str | None] | None
    params: str
    environment: Mapping[str, str]


def record_from(raw: dict[str, Any]) -> Record:
    """A record from its JSON fields (TypeError or KeyError when one is wrong or missing)."""
    fields = dict(raw)
    fields["image"] = Image(**fields["image"])
    fields["assets"] = {k: Asset(**v) for k, v in fields.get("assets", {}).items()}
    fields["renders"] = {k: Image(**v) for k, v in fields.get("renders", {}).items()}
    return Record(**fields)


@dataclass(frozen=True)
class Expected:
    """What a figure's record must match, known before running it."""

    params: str  # canonical JSON of seed and parameters
    environment: Mapping[str, str]  # Python, FIGGEN["versions"] and threads
    inputs: tuple[str, ...]  # the script and its declared data, relative to root
    # Every distribution's version now, to compare with those a record names; None: do not
    # compare (frozen mode compares sources only).
    installed: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a figure is up to date, and why not."""

    fresh: bool
    reason: str
    record: Record | None


class Hashes:
    """SHA-256 of files, each read at most once per build (with a memo, once while unchanged)."""

    def __init__(self, memo: Path | None = None, python: str | None = None) -> None:
        self._known: dict[Path, str] = {}
        self._memo_path = memo  # None: every build reads every file
        self._memo: dict[str, list] | None = None  # read on first use
        self._used: dict[str, list] = {}  # the entries this build confirmed or made
        self._joined: dict[tuple[Path, str], Path | None] = {}  # (root, input's name) -> path
        self._python = python or sys.executable  # the scripts' interpreter
        self._import_paths: dict[Path, importpath.ImportPath] = {}  # root -> its import path

    def under(self, root: Path, rel: str) -> str | None:
        """Hash a file by its name in a record: relative to root, portable, or absolute."""
        # Figures share most inputs: each path is joined once a build (pathlib's `/` costs).
        if (root, rel) not in self._joined:
            self._joined[root, rel] = self.locate(root, rel) if importpath.is_portable(rel) \
                else root / rel
        path = self._joined[root, rel]
        return None if path is None else self(path)

    def locate(self, root: Path, name: str) -> Path | None:
        """Where the scripts' interpreter imports a portable name's file from; None: nowhere."""
        # Asked only for a record that names one: a build without outside inputs asks nothing.
        if root not in self._import_paths:
            self._import_paths[root] = scripts_import_path(self._python, root)
        return self._import_paths[root].find(name)

    def __call__(self, path: Path) -> str | None:
        """Hash a file's bytes; None when it does not exist."""
        if path not in self._known:
            digest = self._hash(path)
            if digest is None:
                return None
            self._known[path] = digest
        return self._known[path]

    def forget(self, path: Path) -> None:
        """Drop what is known of a file this build is about to replace."""
        self._known.pop(path, None)
        self._used.pop(str(path), None)

    def _hash(self, path: Path) -> str | None:
        """A file's hash, from the memo when the file is unchanged since it was made."""
        try:
            st = path.stat()  # before reading: a write in between changes the stamp, not the memo
            stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            entry = self._entries().get(str(path))
            if entry and entry[:4] == stamp:
                self._used[str(path)] = entry
                return entry[4]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None
        # Timestamps tick coarsely: a file changed within the last seconds could change again
        # with the same stamp. Any write sets ctime to now, so an older stamp is trusted.
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLED_NS:
            self._used[str(path)] = [*stamp, digest]
        return digest

    def _entries(self) -> dict[str, list]:
        """The memo the last build left (empty without one, or when unreadable)."""
        if self._memo is None:
            self._memo = {}
            if self._memo_path is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._memo = json.loads(self._memo_path.read_text(encoding="utf-8"))
        return self._memo

    def save(self, cache_dir: Path) -> None:
        """Keep this build's entries for the next build, unless the memo already holds them."""
        if self._memo_path is not None and self._used and self._used != self._entries():
            write_optional(self._memo_path, json.dumps(self._used), cache_dir)


@dataclass(frozen=True)
class Store:
    """The cache folder: records and content-addressed objects."""

    path: Path

    def record_path(self, name: str) -> Path:
        """Where a figure's record is kept."""
        return self.path / "records" / f"{name}.json"

    def object_path(self, image: Image | Asset) -> Path:
        """Where an image (or asset) is kept, named by its hash."""
        return self.path.joinpath("objects", f"{image.sha256}{image.suffix}")

    def failure_path(self, name: str) -> Path:
        """Where the cause of a figure's last failed run is kept."""
        return self.path / "failures" / f"{name}.json"

    def load(self, name: str) -> Record | None:
        """Read a figure's record; None when there is none, or it is unreadable or altered."""
        path = self.record_path(name)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.pop("format") != FORMAT:
                return None
            if raw.pop("sha256") != _digest(raw):
                raise ValueError("its content does not match its recorded hash")
            return record_from(raw)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("figgen: ignoring damaged cache record %s (%s)", path, err)
            return None

    def save(self, record: Record) -> None:
        """Write a record atomically, with the hash of its content."""
        data = asdict(record)
        data |= {"format": FORMAT, "sha256": _digest(data)}
        write_atomic(self.record_path(record.name), json.dumps(data, indent=1, sort_keys=True))

    def put(self, source: Path, width: int, height: int, density: int = 1) -> Image:
        """Copy a produced file into the objects folder under its hash."""
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        image = Image(digest, source.suffix, width, height, density)
        copy_unless_same(source, self.object_path(image), image.sha256)
        return image

    def put_asset(self, source: Path) -> Asset:
        """Copy a file a run published beside its image into the objects folder under its hash."""
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        asset = Asset(digest, source.suffix)
        copy_unless_same(source, self.object_path(asset), asset.sha256)
        return asset

    def save_failure(self, failure: Failure) -> None:
        """Remember why a figure's last run failed, apart from records: never a success."""
        text = json.dumps(asdict(failure), indent=1, sort_keys=True)
        write_atomic(self.failure_path(failure.name), text)

    def load_failure(self, name: str) -> Failure | None:
        """Why the figure's last run failed; None when it did not (or it cannot be read)."""
        try:
            return Failure(**json.loads(self.failure_path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def clear_failure(self, name: str) -> None:
        """Forget a figure's last failure (its run has now succeeded)."""
        self.failure_path(name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold a figure's lock: a concurrent build waits, then finds the fresh record."""
        path = self.path / "locks" / f"{name}.lock"

        def waiting(now: bool) -> None:
            if now:
                logger.warning("figgen: waiting for another build that is making %s (it holds "
                               "%s)", name, path)

        with locked(path, waiting):
            yield

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold the store's objects lock shared while objects are put and recorded, or records
        taken and their objects copied out: no trim (tidy) meanwhile."""
        # A name no figure has (names start with a letter, digit or _): a figure's lock, held
        # by the same run, is another file. Shared: builds using the store never wait for each
        # other, only a trim needs it alone.
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locked(self.path / "locks" / OBJECTS_LOCK, shared=True))
            except OSError as err:  # a read-only cache: nothing is stored, nor trimmed, here
                logger.debug("figgen: cannot lock %s (%s)", self.path, err)
            yield

    def names(self) -> list[str]:
        """The names of the figures this store has a record of ('sub/name' for sub/name.json)."""
        records = self.path / "records"
        return sorted(p.relative_to(records).with_suffix("").as_posix()
                      for p in records.rglob("*.json"))

    def tidy(self, obsolete: Callable[[str, Record | None], bool]) -> int:
        """Delete the records obsolete(name, record) picks, then every object no record names.

        Returns how many objects went (the drafts' store: its records are replaced, and its
        objects never shared with another store).
        """
        # Alone under the objects lock, or not at all: a build that uses the store (stores a
        # record, or took one and has not copied its objects out yet) holds it shared for as
        # long, and may hold it for minutes; the next build's trim does it then.
        try:
            with locked(self.path / "locks" / OBJECTS_LOCK, block=False) as alone:
                if not alone:
                    logger.info("figgen: another build is using %s: trimming it is left to a "
                                "later build", self.path)
                    return 0
                return self._drop(obsolete)
        except OSError as err:  # housekeeping never fails a build
            logger.warning("figgen: cannot trim the records and objects in %s (%s)",
                           self.path, err)
            return 0

    def _drop(self, obsolete: Callable[[str, Record | None], bool]) -> int:
        """Delete the records obsolete picks, then the objects no record names; how many."""
        records = {name: self.load(name) for name in self.names()}
        for name, record in records.items():
            if obsolete(name, record):
                self.record_path(name).unlink(missing_ok=True)
                records[name] = None
        kept = {self.object_path(o) for r in filter(None, records.values()) for o in r.objects()}
        # Not a copy half made (".*.tmp"): drop_orphans knows whose it is.
        dropped = [p for p in self.path.glob("objects/[!.]*") if p not in kept]
        for path in dropped:
            path.unlink(missing_ok=True)
        return len(dropped)

    def scratch(self) -> Path:
        """This process's scratch folder; drops what processes now gone left half-written."""
        from .run import kill_strays  # here: only a build that runs something gets this far

        folder = self.path / "tmp"
        for old in folder.glob("*-*"):
            if _orphan(scratch_owner(old.name)):
                kill_strays(old)
                shutil.rmtree(old, ignore_errors=True)
        drop_orphans(self.path)
        mine = folder / SCRATCH.format(pid=os.getpid())
        mine.mkdir(parents=True, exist_ok=True)
        return mine


def trim_intermediates(folder: Path, limit_mib: int | None, since: float) -> None:
    """Drop the least recently used intermediates, none used since `since`, to fit the limit."""
    # pelican_figgen/intermediates.py keeps <key[:2]>/<key>.pickle, a .lock beside each (never
    # deleted), and sets a result's time on every hit. A dropped result is computed again
    # when next needed.
    if limit_mib is None:
        return
    results = sorted(_sizes(folder.glob("*/*.pickle")), key=lambda found: found[1])
    total, limit = sum(size for _, _, size in results), limit_mib * 2**20
    dropped = 0
    try:
        for path, used, size in results:  # oldest use first
            if total <= limit or used >= since:
                break
            if _drop_unlocked(path):
                total, dropped = total - size, dropped + 1
    except OSError as err:  # a read-only store, say: housekeeping never fails a build
        logger.warning("figgen: cannot trim the intermediates in %s (%s)", folder, err)
        return
    if dropped:
        logger.info("figgen: intermediates over %d MiB: dropped the %d least recently used",
                    limit_mib, dropped)
    if total > limit:
        logger.warning("figgen: the intermediates in use take %.0f MiB, over FIGGEN['intermediates"
                       "_max_mb'] = %d: raise it, or older ones are computed again when needed",
                       total / 2**20, limit_mib)


def file_clock(folder: Path) -> float:
    """The time a file written in folder now gets: its file system's clock, tick and all."""
    stamp = aside(folder / "clock")
    stamp.touch()
    try:
        return stamp.stat().st_mtime
    finally:
        stamp.unlink()


def _sizes(paths: Iterable[Path]) -> Iterator[tuple[Path, float, int]]:
    """Each file with its modification time and size; those gone meanwhile left out."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            found = path.stat()
            yield path, found.st_mtime, found.st_size


def _drop_unlocked(result: Path) -> bool:
    """Delete a stored intermediate, unless a figure holds its lock right now (kept: locks are
    never deleted, so a figure waiting on one holds the lock the next one opens)."""
    with locked(result.with_suffix(".lock"), block=False) as held:
        if held:  # else being computed again (it was damaged): in use
            result.unlink(missing_ok=True)
        return held


def _digest(data: Mapping[str, Any]) -> str:
    """Hash of a record's canonical JSON, to detect an altered record."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _orphan(pid: str) -> bool:
    """Whether a scratch name's process id is another process that no longer exists."""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def drop_orphans(folder: Path) -> None:
    """Delete what write_atomic and copy_atomic of processes now gone left below a folder."""
    for old in folder.rglob(".*.tmp"):
        if _orphan(aside_owner(old.name) or ""):
            old.unlink(missing_ok=True)


def copy_unless_same(
    source: Path, target: Path, sha256: str, hashes: Hashes | None = None
) -> None:
    """Copy a file with this hash into place, unless the target already holds those bytes.

    ``hashes``: the build's memo, which then hashes the target (a file it hashed before and
    that is unchanged is not read) and forgets it when it is replaced.
    """
    if hashes is not None:
        if hashes(target) == sha256:
            return
        hashes.forget(target)  # replaced: its stamp and hash change
    elif target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return
    copy_atomic(source, target)  # new, or replacing a damaged copy


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a file so that readers see no file or the whole file, never a part."""
    tmp = aside(target)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_optional(path: Path, text: str, cache_dir: Path) -> None:
    """Write a file a build can do without (its report, a memo); a read-only cache only warns."""
    try:
        write_atomic(path, text)
    except OSError as err:  # a read-only checkout or container: the build has what it needs
        if cache_dir not in _UNWRITABLE:
            _UNWRITABLE.add(cache_dir)
            logger.warning("figgen: cannot write in FIGGEN['cache_dir'] %s (%s): the build "
                           "goes on without keeping its report and highlighted code there",
                           cache_dir, err.strerror or err)


def params_key(seed: int, params: Mapping[str, Any]) -> str:
    """Canonical JSON of what the script is told, for the cache key."""
    return json.dumps({"seed": seed, "params": params}, sort_keys=True, separators=(",", ":"))


def script_path(root: Path) -> str:
    """The PYTHONPATH of a figure run: the project root, then the build's own."""
    return os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))


def installed(python: str, root: Path) -> dict[str, str]:
    """Python's version and every distribution's, as the interpreter running scripts sees them."""
    path = script_path(root)
    # Not resolved: two venvs link to one base interpreter but hold different packages.
    if Path(python).absolute() == Path(sys.executable).absolute():
        # A directory listing per path entry (not importlib.metadata, a few ms a distribution):
        # the no-op build must cost little more than Pelican alone. Read every build, never
        # kept: `make serve` must see an upgrade.
        entries = [*path.split(os.pathsep), *sys.path]
        return {"python": sys.version.split()[0], **dists.installed(entries)}
    # Another interpreter: ask it once per build (a directory listing, no heavy import).
    out = subprocess.run([python, "-m", "pelican_figgen.dists"], capture_output=True, text=True,
                         env=os.environ | {"PYTHONPATH": path}, cwd=root)
    return json.loads(out.stdout)


def scripts_import_path(python: str, root: Path) -> importpath.ImportPath:
    """Where the interpreter running scripts imports from, with the PYTHONPATH a run gets."""
    path = script_path(root)
    if Path(python).absolute() == Path(sys.executable).absolute():  # as in installed()
        return importpath.this_import_path(path.split(os.pathsep))
    # Another interpreter: ask it, once per build that has an input outside the root.
    try:
        out = subprocess.run([python, "-m", "pelican_figgen.importpath"], capture_output=True,
                             text=True, env=os.environ | {"PYTHONPATH": path}, cwd=root)
        found = json.loads(out.stdout)
        return importpath.ImportPath(tuple(found["entries"]), dict(found["editable"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("figgen: cannot ask FIGGEN['python'] %s where it imports from (%s): the "
                       "figures' inputs outside %s count as missing", python, err, root)
        return importpath.ImportPath(())


@dataclass(frozen=True)
class Cache:
    """A store judged against the project's files, each file hashed at most once per build."""

    root: Path  # records' relative inputs are relative to it
    store: Store
    hashes: Hashes = field(default_factory=Hashes)

    def verdict(self, name: str, want: Expected) -> Verdict:
        """Whether the figure's record in the store is fresh, and why not."""
        return self.judge(self.store.load(name), want)

    def judge(self, record: Record | None, want: Expected) -> Verdict:
        """Decide whether a record still matches its inputs; say why when it does not."""
        if record is None:
            return Verdict(False, "never run", None)
        changed = self.changed(record, want)
        if changed:
            return Verdict(False, changed, record)
        return self._objects_verdict(record) or Verdict(True, "up to date", record)

    def changed(self, record: Record, want: Expected) -> str:
        """Which key or input of a record differs from this checkout's, or '' (objects aside)."""
        return _changed(record, self.root, want, self.hashes)

    def known_failure(self, name: str, want: Expected) -> Failure | None:
        """The figure's last failure, when nothing it read or may have read changed since."""
        failure = self.store.load_failure(name)
        if failure is None or failure.inputs is None:  # None: it listed nothing it read
            return None
        return None if _changed(failure, self.root, want, self.hashes) else failure

    def intact(self, record: Record) -> bool:
        """Whether a record's image is in the store, undamaged."""
        return self._objects_verdict(record) is None

    def hash(self, rel: str) -> str | None:
        """The hash of a file, by its name as records give it (Hashes.under); None: absent."""
        return self.hashes.under(self.root, rel)

    def _objects_verdict(self, record: Record) -> Verdict | None:
        """A stale verdict when the record's image or an asset is missing or damaged; else None."""
        for stored in record.objects():
            found = self.hashes(self.store.object_path(stored))
            if found != stored.sha256:
                what = "missing" if found is None else "damaged (its hash changed)"
                kind = "image" if stored is record.image else "file"
                return Verdict(False, f"cached {kind} {what}", record)
        return None


def _changed(run: Record | Failure, root: Path, expected: Expected, hashes: Hashes) -> str:
    """Which key or input of a run differs from what is expected now, or ''."""
    if run.params != expected.params:
        return "seed or parameters changed"
    for key, value in expected.environment.items():
        if run.environment.get(key) != value:
            return f"{key} {run.environment.get(key, 'absent')} -> {value}"
    changed = _changed_distribution(run, expected)
    if changed:
        return changed
    missing = set(expected.inputs) - set(run.inputs or {})
    if missing:
        return f"new input {sorted(missing)[0]}"
    for rel, digest in (run.inputs or {}).items():
        now = hashes.under(root, rel)
        if now != digest:
            gone = "not found on the scripts' import path" if importpath.is_portable(rel) \
                else "deleted"
            return f"{rel} {gone if now is None else 'changed'}"
    return ""


def _changed_distribution(run: Record | Failure, expected: Expected) -> str:
    """The first distribution the run names whose installed version differs: 'numpy a -> b'."""
    if expected.installed is None:
        return ""
    for key, was in sorted(run.environment.items()):
        if key in expected.environment or key == "python":
            continue
        now = expected.installed.get(key, "absent")
        if now != was:
            return f"{key} {was} -> {now}"
    return ""
