"""Run phase, starting a script: its own interpreter, or a fork of the warm server.

The warm server (``python -m pelican_figgen.forkserver``, see its docstring) imports the libraries
the scripts share once per build and forks a child per script, so a figure no longer pays
Python's start-up and torch's import. Both ways give the run phase the same process to wait
for and signal: the run's supervisor (pelican_figgen.reaper), in a session of its own, whose child
is the script (stdin and stdout on /dev/null, stderr to a file) and which kills whatever the
script started when the run ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from pelican_figgen import contract
from pelican_figgen.contract import PR_SET_PDEATHSIG, prctl

logger = logging.getLogger(__name__)
READY_TIMEOUT = 600.0  # seconds the server may take to import the shared libraries


class ServerGone(ChildProcessError):
    """The warm server died: the scripts it was running died with it."""


class Process(Protocol):
    """A started run: its supervisor's process id and a way to wait for it."""

    pid: int

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status (negative: killed by that signal); TimeoutExpired if not."""
        ...


@dataclass(frozen=True)
class Request:
    """How to start one script."""

    argv: tuple[str, ...]  # the interpreter's arguments: the script, then its own
    env: Mapping[str, str]
    cwd: Path
    stderr: Path
    report: Path  # where the supervisor says how the script ended (pelican_figgen.reaper)


def die_with_parent() -> None:
    """In the child: ask Linux to kill the process when the build dies (kill -9 included)."""
    # Strictly: when the forking thread ends. Each worker thread waits for what it started.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_with_parent() -> None:
    """In a supervisor: SIGTERM it when the build dies, so it kills the run before it ends."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_direct(python: str, request: Request) -> subprocess.Popen:
    """Start the script's supervisor, which starts the script in an interpreter of its own."""
    # A file, not a pipe: a child the script leaves running cannot keep the build waiting.
    with request.stderr.open("wb") as stderr:
        return subprocess.Popen(
            [python, "-m", "pelican_figgen.reaper", str(os.getpid()), str(request.report),
             *request.argv],
            cwd=request.cwd, env=dict(request.env),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,  # no terminal's Ctrl-C reaches it: the build stops it
            preexec_fn=stop_with_parent,
        )


class WarmProcess:
    """A script forked by the warm server; its exit status arrives through the server."""

    def __init__(self) -> None:
        self.pid = 0
        self.started, self.ended = threading.Event(), threading.Event()
        self.status: int | None = None  # None once ended: the server died
        self.error = ""  # why the server could not fork it

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status, as Popen.wait does; ServerGone if the server died."""
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
        if self.status is None:
            raise ServerGone("the warm server died while the script ran (it died with it)")
        return self.status


class WarmServer:
    """The warm server of one build: started with the scripts to run, closed at the end."""

    def __init__(self, python: str, scripts: Sequence[Path], root: Path,
                 env: Mapping[str, str], log: Path) -> None:
        """Start the server and wait until it has imported what the scripts share."""
        self.log = log
        self._lock = threading.Lock()
        self._waiting: dict[int, WarmProcess] = {}
        self._next = 0
        self._dead = False  # set once its replies end: nothing more can start there
        with log.open("wb") as stderr:
            self._proc = subprocess.Popen(
                [python, "-m", "pelican_figgen.forkserver", *map(str, scripts)], cwd=root,
                env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self.ready = self._await_ready(self._proc.stdout)
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True).start()

    def _await_ready(self, out: IO[bytes]) -> Mapping[str, Any]:
        """The server's first line, once its imports are done; ServerGone if it never comes."""
        line = _readline(out, READY_TIMEOUT)
        try:
            return json.loads(line)
        except ValueError:
            self.close()
            raise ServerGone(f"the warm server did not start: {self.log_tail()}") from None

    def start(self, request: Request) -> WarmProcess:
        """Ask the server to fork the script; return once the child exists."""
        if request.env.get(contract.LANE) == "gpu" and self.ready.get("cuda_initialized"):
            raise ServerGone("a library the warm server preloaded started CUDA, which a forked "
                             "child cannot use")
        process = WarmProcess()
        with self._lock:
            if self._dead:
                raise ServerGone(f"the warm server is gone: {self.log_tail()}")
            self._next += 1
            self._waiting[self._next] = process
            message = {"id": self._next, "argv": list(request.argv), "env": dict(request.env),
                       "cwd": str(request.cwd), "stderr": str(request.stderr),
                       "report": str(request.report)}
            try:
                self._stdin.write((json.dumps(message) + "\n").encode())
                self._stdin.flush()
            except (BrokenPipeError, ValueError):
                raise ServerGone(f"the warm server is gone: {self.log_tail()}") from None
        process.started.wait()
        if process.error:
            raise ServerGone(f"the warm server could not start the script: {process.error}")
        if not process.pid:
            raise ServerGone(f"the warm server died before forking: {self.log_tail()}")
        return process

    def _read(self, out: IO[bytes]) -> None:
        """Pass each reply to the process it is about; when the server ends, end them all."""
        try:
            for line in out:
                self._reply(line)
        finally:  # whatever ended the replies, nobody may wait for one forever
            with self._lock:
                self._dead = True
                for process in self._waiting.values():  # still running: they died with it
                    process.started.set()
                    process.ended.set()
                self._waiting.clear()

    def _reply(self, line: bytes) -> None:
        """Act on one reply: a child's pid, its exit status, or why it could not be forked."""
        try:
            reply = json.loads(line)
            with self._lock:
                process = self._waiting[reply["id"]]
                if "exit" in reply:
                    process.status = reply["exit"]
                    del self._waiting[reply["id"]]
                    process.ended.set()
                    return
                process.pid, process.error = reply.get("pid", 0), reply.get("error", "")
                if process.error:
                    del self._waiting[reply["id"]]
                process.started.set()
        except (ValueError, KeyError, TypeError):
            logger.warning("figgen: the warm server said something unexpected: %r", line)

    def gone(self) -> bool:
        """Whether the server has ended: nothing more can start there."""
        with self._lock:
            return self._dead or self._proc.poll() is not None

    def log_tail(self) -> str:
        """The end of the server's stderr, to say why it died."""
        with contextlib.suppress(OSError):
            text = self.log.read_text(encoding="utf-8", errors="replace").strip()
            return "\n".join(text.splitlines()[-15:]) or "(it printed nothing)"
        return "(its log is gone)"

    def close(self) -> None:
        """End the server: close its input, then make sure it is gone."""
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _readline(out: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, or b'' when it ends or `timeout` seconds pass."""
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else b""


def available() -> bool:
    """Whether this system can run the warm server (it forks and waits on pidfds: Linux)."""
    return hasattr(os, "pidfd_open") and hasattr(os, "fork")

