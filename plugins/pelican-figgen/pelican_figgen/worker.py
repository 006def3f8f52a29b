"""A figure run on a Dask worker: the task's files in a fresh folder, the script under the harness.

The build (``pelican.plugins.figgen.cluster``) submits `run_task` with a task of plain data:
the script, the project files it imports and its declared data, each by relative path and
sha256, their bytes by sha256 (so a worker needs no checkout and no shared file system), the
harness's environment and the time-out. The script runs as in a local build: forked from
this worker's warm server (pelican_figgen.forkserver, kept across tasks: `WarmServer`), or in
its own interpreter, under its supervisor (pelican_figgen.reaper), with the same arguments,
killed at its time-out. What comes back is plain data too: the exit status, every file the
run left in its output folder, its stderr. When the build shows bars, the script's progress
reports are sent as they come, as Dask events on the task's topic. Standard library only,
besides this package (and distributed's worker, for those events).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pelican_figgen import contract, dists
from pelican_figgen.forkclient import READY_TIMEOUT, ForkClient, Run, ServerGone, server_key
from pelican_figgen.imports import closure
from pelican_figgen.progress import follow

contract.load_prctl()  # now: _stop_with_worker calls it in a forked child

logger = logging.getLogger(__name__)

STOP_WAIT = 5.0  # seconds the supervisor may take to kill what the script started
STACK_WAIT = 0.5  # seconds a timed-out script has to print its stack before it is stopped
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
    if server is not None:
        try:
            child = server.start(task, root, out, _environment(task, root, out))
            return _wait(task, child, out, waiting)
        except ServerGone as err:  # the server, not the script: it runs in its own interpreter
            logger.warning("figgen worker: %s; %s runs in an interpreter of its own", err,
                           task["name"])
    return _wait(task, _start_direct(task, root, out), out, waiting)


def _start_direct(task: Mapping[str, Any], root: Path, out: Path) -> subprocess.Popen:
    """Start the script's supervisor, which starts it in an interpreter of its own."""
    report, stderr = out / contract.REPORT_FILE, out / contract.STDERR_FILE
    argv = [sys.executable, "-m", "pelican_figgen.reaper", str(os.getpid()), str(report),
            *_script_argv(task, root, out)]
    with stderr.open("wb") as err:
        return subprocess.Popen(argv, cwd=root, env=_environment(task, root, out),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, preexec_fn=_stop_with_worker)


def _script_argv(task: Mapping[str, Any], root: Path, out: Path) -> list[str]:
    """The script and its arguments, as a local run gives them."""
    return [str(root / task["script"]), "--out", str(out), *task["arguments"],
            "--manifest", str(out / contract.MANIFEST)]


def _wait(
    task: Mapping[str, Any], proc: Any, out: Path, waiting: threading.Event
) -> tuple[int | None, int]:
    """Wait for a started run until its time-out, then make sure it ended; (status, killed)."""
    report = out / contract.REPORT_FILE
    timed_out = False
    try:
        _wait_lending(proc, float(task["timeout"]), waiting)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR1)  # the harness prints the script's stack
        time.sleep(STACK_WAIT)
    finally:
        _stop(proc)
    status, killed = _report(report, proc)
    return (None if timed_out else status), killed


def _wait_lending(proc: Any, timeout: float, waiting: threading.Event) -> None:
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
        follower.join(timeout=STOP_WAIT)


def _environment(task: Mapping[str, Any], root: Path, out: Path) -> dict[str, str]:
    """The script's environment: this worker's, the build's harness variables, its folders."""
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    intermediates = out / "intermediates" if task.get("fresh") else INTERMEDIATES
    return _worker_env() | dict(task["env"]) | {
        "PYTHONPATH": python_path, contract.ROOT: str(root), contract.RUN: str(out),
        contract.PROGRESS: str(out / contract.PROGRESS_FILE),
        contract.INTERMEDIATES: str(intermediates),
    }


def _stop_with_worker() -> None:
    """In the supervisor: SIGTERM it when the worker dies, so the run dies with it."""
    contract.prctl(contract.PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(proc: Any) -> None:
    """Make sure the run has ended: its supervisor stopped, and all it started."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_WAIT)
    except subprocess.TimeoutExpired:  # a supervisor that cannot clean up: kill its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ServerGone):  # the server died: its supervisors died with it
            proc.wait()
    except ServerGone:
        pass


def _report(report: Path, proc: Any) -> tuple[int, int]:
    """The script's exit status and the processes killed, from the supervisor's report."""
    try:
        said = json.loads(report.read_text(encoding="utf-8"))
        return int(said["status"]), int(said["killed"])
    except (OSError, ValueError, KeyError, TypeError):  # the supervisor itself was killed
        return int(proc.returncode if proc.returncode is not None else -signal.SIGKILL), 0


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

    def start(self, task: Mapping[str, Any], root: Path, out: Path,
              env: Mapping[str, str]) -> Run:
        """Fork the task's run, from its own folder and import path; return once it exists."""
        with (out / contract.STDERR_FILE).open("wb"):
            pass  # there even if the run dies before the script opens it
        return self.fork({"argv": _script_argv(task, root, out), "env": dict(env),
                          "cwd": str(root), "path": [str(root)],
                          "stderr": str(out / contract.STDERR_FILE),
                          "report": str(out / contract.REPORT_FILE)})

    def close(self) -> None:
        """Stop the server now, not waiting for it to exit (its runs die with it)."""
        self.retire()
        with self._lock:
            self._close_input()


def warm_server(task: Mapping[str, Any], root: Path) -> WarmServer | None:
    """This worker's warm server, started or replaced if need be, with the task's libraries
    preloaded; None when forking is not possible here or the server cannot start."""
    global _SERVER
    if not (hasattr(os, "pidfd_open") and hasattr(os, "fork")):
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
