"""A figure run's lifecycle, for the build and a Dask worker alike: start, wait, stop, report.

A run is its supervisor (pelican_figgen.reaper), started here in an interpreter of its own
(`start_direct`) or forked by a warm server (pelican_figgen.forkclient); either way the
caller gets a process to wait for and signal. `finish` waits for it until its time-out (a
caller may wait its own way: a Dask worker lends its thread meanwhile), has a timed-out script
print its stack, stops the supervisor (which kills what the script started) and reads how the
run ended from the supervisor's report. `script_argv` spells a script's arguments once.
Standard library only, besides this package: a Dask worker has no Pelican.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pelican_figgen import contract
from pelican_figgen.forkclient import ServerGone

contract.load_prctl()  # now: stop_with_parent calls it in a forked child

STOP_WAIT = 5.0  # seconds a supervisor may take to kill a run's processes
STACK_WAIT = 0.5  # seconds a timed-out script has to print its stack before it is killed
STACK_POLL = 0.02  # seconds between two looks at whether the stack is written
STACK_HEADER = "(most recent call first):"  # faulthandler's heading of each thread's stack


class Process(Protocol):
    """A started run: its supervisor's process id and a way to wait for it."""

    pid: int

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status (negative: killed by that signal); TimeoutExpired if not."""
        ...


Wait = Callable[[Process, float], object]  # waits up to the time-out; TimeoutExpired past it


@dataclass(frozen=True)
class Request:
    """How to start one script."""

    argv: tuple[str, ...]  # the interpreter's arguments: the script, then its own
    env: Mapping[str, str]
    cwd: Path
    stderr: Path
    report: Path  # where the supervisor says how the script ended (pelican_figgen.reaper)

    def fork_message(self) -> dict[str, Any]:
        """The warm server's request to fork this run (pelican_figgen.forkserver)."""
        return {"argv": list(self.argv), "env": dict(self.env), "cwd": str(self.cwd),
                "stderr": str(self.stderr), "report": str(self.report)}


@dataclass(frozen=True)
class Ended:
    """How a run ended: the script's exit status (None: timed out), other processes killed."""

    status: int | None
    killed: int


def script_argv(
    script: Path | str, out: Path, seed: int, params: Mapping[str, Any]
) -> tuple[str, ...]:
    """The interpreter's arguments that run a figure script: the script, then its options."""
    return (str(script), "--out", str(out), "--seed", str(seed),
            "--params", json.dumps(dict(params), sort_keys=True),
            "--manifest", str(out / contract.MANIFEST))


def stop_with_parent() -> None:
    """In a supervisor: SIGTERM it when its starter dies, so it kills the run before it ends."""
    contract.prctl(contract.PR_SET_PDEATHSIG, signal.SIGTERM)


def start_direct(python: str, request: Request) -> subprocess.Popen:
    """Start the script's supervisor, which starts the script in an interpreter of its own."""
    # A file, not a pipe: a child the script leaves running cannot keep its starter waiting.
    with request.stderr.open("wb") as stderr:
        return subprocess.Popen(
            [python, "-m", "pelican_figgen.reaper", str(os.getpid()), str(request.report),
             *request.argv],
            cwd=request.cwd, env=dict(request.env),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,  # no terminal's Ctrl-C reaches it: its starter stops it
            preexec_fn=stop_with_parent,
        )


def wait(proc: Process, timeout: float) -> None:
    """Wait for the run up to its time-out; TimeoutExpired past it."""
    proc.wait(timeout=timeout)


def finish(proc: Process, request: Request, timeout: float, wait_for: Wait = wait) -> Ended:
    """Wait for a started run until its time-out, then make sure it ended; how it ended.

    ServerGone when the warm server it was forked from died (the run died with it).
    """
    timed_out = False
    try:
        wait_for(proc, timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        dump_stack(proc.pid, request.stderr)
    stop(proc)
    return ended(proc, request.report, timed_out)


def stop(proc: Process) -> None:
    """Make sure a run has ended: its supervisor stopped, and every process it started."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)  # a supervisor that has ended: a zombie, no error
    try:
        proc.wait(timeout=STOP_WAIT)
    except subprocess.TimeoutExpired:  # a supervisor that cannot clean up: the old way
        kill_group(proc.pid)
    except ServerGone:  # it died with the server: its run stopped with it
        return
    with contextlib.suppress(subprocess.TimeoutExpired, ServerGone):
        proc.wait(timeout=STOP_WAIT)


def kill_group(pgid: int) -> None:
    """Kill a process group, if any of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def ended(proc: Process, report: Path, timed_out: bool) -> Ended:
    """How the run ended, from its supervisor's report (else from the supervisor's status)."""
    try:
        said = json.loads(report.read_text(encoding="utf-8"))
        status, killed = int(said["status"]), int(said["killed"])
    except (OSError, ValueError, KeyError, TypeError):  # the supervisor itself was killed
        try:
            status, killed = proc.wait(timeout=0), 0
        except (subprocess.TimeoutExpired, ServerGone):
            status, killed = -signal.SIGKILL, 0
    return Ended(None if timed_out else status, killed)


def dump_stack(pid: int, stderr: Path) -> None:
    """Have the timed-out script print its Python stack (SIGUSR1, the harness's faulthandler)."""
    offset = seen = _size(stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)  # the supervisor passes it to the script
    deadline = time.monotonic() + STACK_WAIT
    while time.monotonic() < deadline:  # written at once, if at all: wait until it stops growing
        time.sleep(STACK_POLL)
        size = _size(stderr)
        if size == seen > offset and STACK_HEADER in _read_from(stderr, offset):
            return
        seen = size


def _size(path: Path) -> int:
    """A file's size; 0 if it is not there."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    """What a file holds from `offset` on."""
    with contextlib.suppress(OSError), path.open("rb") as file:
        file.seek(offset)
        return file.read().decode("utf-8", errors="replace")
    return ""
