"""A figure run on a Dask worker: the task's files in a fresh folder, the script under the harness.

The build (``pelican.plugins.figgen.cluster``) submits `run_task` with a task of plain data:
the script, the project files it imports and its declared data, each by relative path and
sha256, their bytes by sha256 (so a worker needs no checkout and no shared file system), its
seed and parameters, the harness's environment and the time-out. The script runs as in a
local build, through the same lifecycle (pelican_figgen.lifecycle): forked from this worker's
warm server (pelican_figgen.forkserver, kept across tasks: `WarmServer`), or in its own
interpreter, under its supervisor (pelican_figgen.reaper), with the same arguments, its stack
printed and it killed at its time-out. What comes back is plain data too: the exit status,
every file the run left in its output folder, its stderr. When the build shows bars, the
script's progress reports are sent as they come, as Dask events on the task's topic.
Standard library only, besides this package (and distributed's worker, for those events).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pelican_figgen import contract, dists, forkclient, lifecycle
from pelican_figgen.forkclient import READY_TIMEOUT, ForkClient, Run, ServerGone, server_key
from pelican_figgen.imports import closure
from pelican_figgen.lifecycle import Process, Request
from pelican_figgen.progress import follow

logger = logging.getLogger(__name__)

LEND_POLL = 0.2  # seconds between two looks at whether the script waits for another figure
STDERR_MAX = 200_000  # bytes of stderr sent back: the end, where the traceback is
# Kept across tasks on this worker: results are keyed by the content of what they depend on.
INTERMEDIATES = Path(tempfile.gettempdir()) / f"figgen-intermediates-{os.getuid()}"
# The task's variables that differ from figure to figure: the server's own are the others.
PER_RUN = (contract.LANE, "CUDA_VISIBLE_DEVICES")
# What a Dask nanny sets for its worker, not the build for its scripts: glibc trimming at 64 KiB
# makes a script's every large array a fresh mmap, and its compute far slower than the pool's.
# A build that sets it itself ships its own value.
NANNY_ONLY = ("MALLOC_TRIM_THRESHOLD_",)


class TaskError(ValueError):
    """A task that this worker will not run: a path outside its folder, a wrong hash."""


def run_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one figure task in a fresh folder; return how it ended and the files it made."""
    if task.get("runtime") != contract.runtime_digest():
        # The harness's files are in every figure's key: a run on another runtime would be
        # recorded under the build's key with another runtime's bytes.
        raise TaskError("this worker runs another pelican-figgen than the build that sent the "
                        "task (their runtime files differ): install the same version of it on "
                        "the build's machine and on every worker")
    folder = Path(tempfile.mkdtemp(prefix="figgen-task-"))
    try:
        root, out = folder / "project", folder / "out"
        write_files(root, task["files"], task["blobs"])
        out.mkdir()
        # Before the clock starts: a local run's time leaves out its server's imports too.
        server = warm_server(task, root) if task.get("warm", True) else None
        start = time.perf_counter()
        with _forwarding(task, out / contract.PROGRESS_FILE) as waiting:
            status, killed = _run(task, root, out, waiting, server)
        return {
            "status": status,  # None: timed out
            "killed": killed,
            "seconds": time.perf_counter() - start,
            "root": str(root),  # the build puts its own root in its place in tracebacks
            "stderr": _tail(out / contract.STDERR_FILE),
            "files": {p.name: p.read_bytes() for p in sorted(out.iterdir())
                      if p.is_file() and not p.name.startswith(".")},
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_files(root: Path, files: Mapping[str, str], blobs: Mapping[str, bytes]) -> None:
    """Write each file (relative path -> sha256) from its blob, checking path and hash."""
    for rel, digest in files.items():
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise TaskError(f"the task names a file outside its folder: {rel!r}")
        data = blobs[digest]
        if hashlib.sha256(data).hexdigest() != digest:
            raise TaskError(f"{rel}: its bytes do not match their sha256 {digest}")
        target = root.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _run(
    task: Mapping[str, Any], root: Path, out: Path, waiting: threading.Event,
    server: WarmServer | None,
) -> tuple[int | None, int]:
    """Run the script, forked from the warm server if given; (status or None, killed)."""
    request = Request(_script_argv(task, root, out), _environment(task, root, out), root,
                      out / contract.STDERR_FILE, out / contract.REPORT_FILE)
    request.stderr.touch()  # there even if the run dies before the script opens it
    if server is not None:
        try:
            return _finish(server.start(request, root), request, task, waiting)
        except ServerGone as err:  # the server, not the script: it runs in its own interpreter
            logger.warning("figgen worker: %s; %s runs in an interpreter of its own", err,
                           task["name"])
    return _finish(lifecycle.start_direct(sys.executable, request), request, task, waiting)


def _finish(
    proc: Process, request: Request, task: Mapping[str, Any], waiting: threading.Event
) -> tuple[int | None, int]:
    """Wait for the started run, lending the worker's thread once the script waits for
    another figure, until its time-out; stop it; (status or None, killed)."""
    lending = functools.partial(_wait_lending, waiting=waiting)
    ended = lifecycle.finish(proc, request, float(task["timeout"]), lending)
    return ended.status, ended.killed


def _script_argv(task: Mapping[str, Any], root: Path, out: Path) -> tuple[str, ...]:
    """The script and its arguments, as a local run gives them, with this worker's folders."""
    return lifecycle.script_argv(root / task["script"], out, task["seed"], task["params"])


def _wait_lending(proc: Process, timeout: float, waiting: threading.Event) -> None:
    """proc.wait(timeout), leaving the worker's thread pool once the script waits for another
    figure's intermediate: the worker then runs one more task, as the pool lends a slot."""
    deadline = time.monotonic() + timeout
    while not waiting.is_set():
        left = deadline - time.monotonic()
        try:
            proc.wait(timeout=max(0.0, min(left, LEND_POLL)))
            return
        except subprocess.TimeoutExpired:
            if left <= LEND_POLL:
                raise
    with contextlib.suppress(ImportError, ValueError):  # not on a Dask worker: nothing to lend
        from distributed import secede

        secede()  # for good: rejoin() would hold the run until a thread is free
    proc.wait(timeout=max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def _forwarding(task: Mapping[str, Any], path: Path) -> Iterator[threading.Event]:
    """While the run goes on, send its progress reports to the build, if it listens (its waits
    for another figure's intermediate always); yield an Event set once it waits."""
    topic, name, done, waiting = task.get("progress"), task["name"], threading.Event(), \
        threading.Event()
    worker = None
    if topic:
        from distributed import get_worker  # here: only a Dask task has a worker

        worker = get_worker()

    def send(report: dict[str, Any]) -> None:
        if report.get("waiting"):
            waiting.set()
        if worker is not None and ("waiting" in report or task.get("bars", True)):
            worker.log_event(topic, {"figure": name, "report": report})

    follower = threading.Thread(target=follow, args=(path, send, done), daemon=True)
    follower.start()
    try:
        yield waiting
    finally:
        done.set()
        follower.join(timeout=lifecycle.STOP_WAIT)


def _environment(task: Mapping[str, Any], root: Path, out: Path) -> dict[str, str]:
    """The script's environment: this worker's, the build's harness variables, its folders."""
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    intermediates = out / "intermediates" if task.get("fresh") else INTERMEDIATES
    return _worker_env() | dict(task["env"]) | {
        "PYTHONPATH": python_path, contract.ROOT: str(root), contract.RUN: str(out),
        contract.PROGRESS: str(out / contract.PROGRESS_FILE),
        contract.INTERMEDIATES: str(intermediates),
    }


def _tail(path: Path) -> str:
    """The end of a file as text; '' if it is not there."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-STDERR_MAX:].decode("utf-8", errors="replace")


# The warm server of this worker process: started by its first task, kept across tasks (and
# builds), replaced when the libraries it preloaded or the runtime change.
_SERVER: WarmServer | None = None
_SERVER_LOCK = threading.Lock()


class WarmServer(ForkClient):
    """A pelican_figgen.forkserver kept by this worker; each task's run is forked from it."""

    def __init__(self, key: str, env: Mapping[str, str]) -> None:
        """Start the server (preloading nothing yet) and wait until it says it is ready."""
        self.key, self.asked = key, set()
        self.loaded: set[str] = set()  # the top-level names of what it preloaded
        log = Path(tempfile.gettempdir()) / f"figgen-warm-{os.getpid()}-{id(self)}.log"
        super().__init__([sys.executable, "-m", "pelican_figgen.forkserver"],
                         Path(tempfile.gettempdir()), env, log)

    def preload(self, names: list[str]) -> None:
        """Have the server import the libraries it was not asked for before."""
        new = [n for n in names if n not in self.asked]
        if not new:
            return
        self.asked.update(new)
        run = self.send({"preload": new})
        if not run.started.wait(READY_TIMEOUT) or not run.answer:
            raise ServerGone(f"the warm server did not preload {new}: {self.log_tail()}")
        self.loaded.update(n.partition(".")[0] for n in run.answer.get("preloaded", []))
        self.ready = {**self.ready, "cuda_initialized": run.answer.get("cuda_initialized")}

    def start(self, request: Request, root: Path) -> Run:
        """Fork the task's run, with its folder `root` first on its import path; return once
        it exists."""
        return self.fork(request.fork_message() | {"path": [str(root)]})

    def close(self) -> None:
        """Stop the server now, not waiting for it to exit (its runs die with it)."""
        self.retire()
        with self._lock:
            self._close_input()


def warm_server(task: Mapping[str, Any], root: Path) -> WarmServer | None:
    """This worker's warm server, started or replaced if need be, with the task's libraries
    preloaded; None when forking is not possible here or the server cannot start."""
    global _SERVER
    if not forkclient.available():
        return None
    env = _server_env(task)
    with _SERVER_LOCK:
        server = _SERVER
        if server is not None and (server.gone() or _key_of(env, server.loaded) != server.key):
            logger.info("figgen worker: restarting the warm server (%s)", "it died"
                        if server.gone() else "a preloaded library or the runtime changed")
            server.retire()
            server = _SERVER = None
        try:
            if server is None:
                server = _SERVER = WarmServer(_key_of(env, set()), env)
            loaded = set(server.loaded)
            server.preload(libraries(root / task["script"], root))
        except ServerGone as err:
            logger.warning("figgen worker: %s; scripts start their own interpreter", err)
            if server is not None:
                server.close()
            _SERVER = None
            return None
        if server.loaded != loaded:  # hashed again only when it preloaded more
            server.key = _key_of(env, server.loaded)
        return server


def libraries(script: Path, root: Path) -> list[str]:
    """The installed libraries a script imports (read statically), the standard library aside."""
    try:
        found = closure(script, [root, script.parent])
    except (SyntaxError, ValueError, OSError):  # its run will say what is wrong with it
        return []
    stdlib = sys.stdlib_module_names
    return sorted(n for n in {*found.external, *found.maybe_external}
                  if n.partition(".")[0] not in stdlib)


def _server_env(task: Mapping[str, Any]) -> dict[str, str]:
    """The server's environment: the worker's, with the task's harness variables (a library
    reads some as it is imported: thread counts, the backend)."""
    return _worker_env() | {k: v for k, v in task["env"].items() if k not in PER_RUN}


def _worker_env() -> dict[str, str]:
    """This worker's environment, less what its nanny set for the worker alone."""
    return {k: v for k, v in os.environ.items() if k not in NANNY_ONLY}


def _key_of(env: Mapping[str, str], tops: set[str]) -> str:
    """What the server's state depends on: its environment, the runtime, preloaded versions."""
    return server_key(sys.executable, env, _VERSIONS(tops))


_VERSIONS = dists.InstalledVersions()  # a worker lives on: an upgrade must be seen


@atexit.register
def _close_server() -> None:
    """When the worker process ends: stop its warm server."""
    if _SERVER is not None:
        _SERVER.close()
