"""A figure run on a Dask worker: the task's files in a fresh folder, the script under the harness.

The build (``pelican.plugins.figgen.cluster``) submits `run_task` with a task of plain data:
the script, the project files it imports and its declared data, each by relative path and
sha256, their bytes by sha256 (so a worker needs no checkout and no shared file system), the
harness's environment and the time-out. The script runs as in a local build: in its own
interpreter under its supervisor (pelican_figgen.reaper), with the same arguments, killed at
its time-out. What comes back is plain data too: the exit status, the files the run left in
its output folder, its stderr. When the build shows bars, the script's progress reports are
sent as they come, as Dask events on the task's topic. Standard library only, besides this
package (and distributed's worker, for those events).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pelican_figgen import contract

STOP_WAIT = 5.0  # seconds the supervisor may take to kill what the script started
STACK_WAIT = 0.5  # seconds a timed-out script has to print its stack before it is stopped
PROGRESS_POLL = 0.1  # seconds between two reads of the progress file
STDERR_MAX = 200_000  # bytes of stderr sent back: the end, where the traceback is
# Kept across tasks on this worker: results are keyed by the content of what they depend on.
INTERMEDIATES = Path(tempfile.gettempdir()) / f"figgen-intermediates-{os.getuid()}"


class TaskError(ValueError):
    """A task that this worker will not run: a path outside its folder, a wrong hash."""


def run_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one figure task in a fresh folder; return how it ended and the files it made."""
    folder = Path(tempfile.mkdtemp(prefix="figgen-task-"))
    try:
        root, out = folder / "project", folder / "out"
        write_files(root, task["files"], task["blobs"])
        out.mkdir()
        start = time.perf_counter()
        with _forwarding(task, out / contract.PROGRESS_FILE):
            status, killed = _run(task, root, out)
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


def _run(task: Mapping[str, Any], root: Path, out: Path) -> tuple[int | None, int]:
    """Start the script under its supervisor and wait for it; (status or None, killed)."""
    report, stderr = out / contract.REPORT_FILE, out / contract.STDERR_FILE
    argv = [sys.executable, "-m", "pelican_figgen.reaper", str(os.getpid()), str(report),
            str(root / task["script"]), "--out", str(out), *task["arguments"],
            "--manifest", str(out / contract.MANIFEST)]
    with stderr.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=root, env=_environment(task, root, out),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, preexec_fn=_stop_with_worker)
    timed_out = False
    try:
        proc.wait(timeout=float(task["timeout"]))
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR1)  # the harness prints the script's stack
        time.sleep(STACK_WAIT)
    finally:
        _stop(proc)
    status, killed = _report(report, proc)
    return (None if timed_out else status), killed


@contextlib.contextmanager
def _forwarding(task: Mapping[str, Any], path: Path) -> Iterator[None]:
    """While the run goes on, send each progress report to the build, if it listens."""
    topic = task.get("progress")
    if not topic:
        yield
        return
    from distributed import get_worker  # here: only a build that shows bars asks for them

    worker, name, done = get_worker(), task["name"], threading.Event()

    def send(report: dict[str, Any]) -> None:
        worker.log_event(topic, {"figure": name, "report": report})

    follower = threading.Thread(target=follow, args=(path, send, done), daemon=True)
    follower.start()
    try:
        yield
    finally:
        done.set()
        follower.join(timeout=STOP_WAIT)


def follow(path: Path, send: Callable[[dict[str, Any]], None], done: threading.Event) -> None:
    """Pass each JSON object line appended to `path` to `send`, until `done` (then once more)."""
    offset, partial = 0, b""
    while True:
        ended = done.is_set()  # read once more after the end: the last reports count
        with contextlib.suppress(OSError), path.open("rb") as file:
            file.seek(offset)
            data = file.read()
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError):  # a script's garbage is skipped
                    report = json.loads(line)
                    if isinstance(report, dict):
                        send(report)
        if ended:
            return
        done.wait(PROGRESS_POLL)


def _environment(task: Mapping[str, Any], root: Path, out: Path) -> dict[str, str]:
    """The script's environment: this worker's, the build's harness variables, its folders."""
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    intermediates = out / "intermediates" if task.get("fresh") else INTERMEDIATES
    return os.environ | dict(task["env"]) | {
        "PYTHONPATH": python_path, contract.ROOT: str(root), contract.RUN: str(out),
        contract.PROGRESS: str(out / contract.PROGRESS_FILE),
        contract.INTERMEDIATES: str(intermediates),
    }


def _stop_with_worker() -> None:
    """In the supervisor: SIGTERM it when the worker dies, so the run dies with it."""
    contract.prctl(contract.PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(proc: subprocess.Popen) -> None:
    """Make sure the run has ended: its supervisor stopped, and all it started."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_WAIT)
    except subprocess.TimeoutExpired:  # a supervisor that cannot clean up: kill its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _report(report: Path, proc: subprocess.Popen) -> tuple[int, int]:
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
