"""What the build and a figure's processes agree on, spelled once for both sides.

The plugin (``pelican.plugins.figgen``) and the scripts' runtime (this package) import it:
the environment variables a run is given, the files a run leaves, how a file is written
aside then renamed, the one lock helper, Linux's prctl, and which runtime this is. It imports
no Pelican, no torch, nothing slow: a figure's process loads it before anything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# Environment variables the plugin sets for a run (and its children inherit).
ROOT = "FIGGEN_ROOT"  # the project root; a script run alone: the current folder
RUN = "FIGGEN_RUN"  # the run's output folder: marks the script and every child it starts
LANE = "FIGGEN_LANE"  # "cpu" or "gpu": the queue the figure runs in
THREADS = "FIGGEN_THREADS"  # compute threads of a run (torch's); default 1
PROGRESS = "FIGGEN_PROGRESS"  # the file the harness appends JSON lines of progress to
INTERMEDIATES = "FIGGEN_INTERMEDIATES"  # where @cached results are stored; unset: none
ENVIRONMENT = "FIGGEN_ENVIRONMENT"  # JSON: Python and library versions, for their keys
# "1": a preview (make serve): ctx.save makes only the main render, a fast lossless PNG
DRAFT = "FIGGEN_DRAFT"

# Files a run leaves in its output folder, and the manifest's keys.
MANIFEST = "manifest.json"  # written by the harness: what the run made, or what it imported
# The manifest's one image: {"file" (a PNG), "webp" (its lossless twin), "width", "height"
# (CSS px), "density"}
IMAGE = "image"
# Other renders of the same run, by role ("dark", "narrow", "narrow-dark"), each as IMAGE but
# with a lossless WebP as its "file" and no twin
RENDERS = "renders"
# files the run imported that no installed distribution holds (root-relative, or portable:
# pelican_figgen.importpath)
MODULES = "modules"
DISTRIBUTIONS = "distributions"  # the installed distributions the run imported -> versions
FAILED = "failed"  # true in the manifest of a run whose main() raised
DRAFTED = "draft"  # true in the manifest of a draft run (DRAFT): never a real result
# The manifest's files published beside the image, {"module": {"file"}, "data": {"file"}}
ASSETS = "assets"

# The other files a run leaves in its output folder (read by the plugin, for the log).
PROGRESS_FILE = ".figgen-progress.jsonl"  # named by PROGRESS: the harness's JSON lines
STDERR_FILE = ".figgen-stderr.txt"  # the script's stderr
REPORT_FILE = ".figgen-reaper.json"  # how the script ended, from its supervisor (reaper)
SERVER_LOG = "forkserver-stderr.txt"  # the warm server's stderr, in the build's scratch folder
SCRATCH = "{pid}-build"  # a build's scratch folder in the cache's tmp/, named by its process

# Linux's prctl options (linux/prctl.h).
PR_SET_PDEATHSIG = 1  # a signal for this process when its parent thread dies
PR_SET_CHILD_SUBREAPER = 36  # orphans below this process are re-parented to it
_PRCTL: list[Callable[[int, int], int]] = []  # Linux's prctl, once load_prctl() found it


def load_prctl() -> None:
    """Look up Linux's prctl now: each module that calls prctl does at its import.

    Not in a forked child, where loading a library could deadlock; not at this module's
    import either: the build's no-op path never calls it, and ctypes takes ~2 ms to import.
    """
    if not _PRCTL and sys.platform.startswith("linux"):
        import ctypes

        _PRCTL.append(ctypes.CDLL(None).prctl)


def prctl(option: int, value: int) -> None:
    """Call Linux's prctl; nothing elsewhere."""
    load_prctl()  # found already (at the caller's import): a lookup
    if _PRCTL:
        _PRCTL[0](option, value)


def scratch_owner(name: str) -> str:
    """The process id (as text) in a scratch folder's name, as SCRATCH spells it."""
    return name.partition("-")[0]


def project_file(path: Path, root: Path) -> bool:
    """Whether a file is the project's own: below the root and in no installed package."""
    # A venv inside the root holds installed packages, not project files.
    return "site-packages" not in path.parts and path.is_relative_to(root)


def aside(path: Path) -> Path:
    """Where to write a file before renaming it to path: hidden, named by thread and process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The thread too: two figures of one build that made the same bytes store one object at
    # once, and one thread's rename must not take the other's half-written file.
    return path.with_name(f".{path.name}.{threading.get_native_id()}.{os.getpid()}.tmp")


def aside_owner(name: str) -> str | None:
    """The process id (as text) in the name of a file written aside; None for any other name."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    return name.rsplit(".", 2)[-2]


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    tmp = aside(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk or an interrupt leaves no stray file


@contextlib.contextmanager
def locked(
    path: Path, waiting: Callable[[bool], None] | None = None, block: bool = True,
    shared: bool = False,
) -> Iterator[bool]:
    """Hold an exclusive (or ``shared``) lock on the lock file at path; yield whether it is held.

    The kernel drops it when the process dies. Lock files are never deleted, so the file a
    process locked is the one the next process opens. ``waiting(True)`` is called before
    waiting for another holder, ``waiting(False)`` once the lock is ours; without ``block``
    a lock held elsewhere is not waited for: False is yielded. Shared locks are held together;
    an exclusive one waits for them all, and they for it.
    """
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if not block:
                yield False
                return
            if waiting:
                waiting(True)
            fcntl.flock(handle, mode)
            if waiting:
                waiting(False)
        yield True  # closing the file releases the lock


# Each runtime file's sha256 by its path, with the (inode, size, mtime) it was hashed at: a
# worker or make serve asks for the runtime's hashes several times a task or build, and an
# upgrade under them (new files, or files rewritten) changes what stat says.
_HASHED: dict[Path, tuple[tuple[int, int, int], str]] = {}


def runtime_files(folder: Path | None = None) -> dict[str, str]:
    """This runtime's source files (this package's modules, or those in `folder`), each by its
    sha256; a file is hashed again only once its inode, size or mtime changed."""
    found = {}
    for path in sorted((folder or Path(__file__).parent).glob("*.py")):
        info = path.stat()
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        known = _HASHED.get(path)
        if known is None or known[0] != stamp:
            known = _HASHED[path] = (stamp, _sha256(path))
        found[path.name] = known[1]
    return found


def _sha256(path: Path) -> str:
    """A file's sha256, in hex."""
    import hashlib  # here: only a warm server's key and a cluster's task ask

    return hashlib.sha256(path.read_bytes()).hexdigest()


def runtime_digest(folder: Path | None = None) -> str:
    """One sha256 of this runtime's source files: a build and a worker must run the same."""
    import hashlib
    import json

    files = runtime_files(folder)
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
