"""A client of the warm server (pelican_figgen.forkserver): start it, fork runs from it, end it.

The build (pelican.plugins.figgen.launch) and a Dask worker (pelican_figgen.worker) each keep
one, a thin subclass saying how it is started and how a run is asked for. The protocol is the
server's (see its docstring): one JSON object per line each way. Each run forked is a `Run`,
which the caller waits for and signals as it would a Popen: the run's supervisor
(pelican_figgen.reaper). Standard library only, besides this package.
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
from pathlib import Path
from typing import IO, Any

from pelican_figgen import contract

contract.load_prctl()  # now: die_with_parent calls it in a forked child
logger = logging.getLogger(__name__)
READY_TIMEOUT = 600.0  # seconds the server may take to import the libraries asked for
CLOSE_WAIT = 5.0  # seconds a closed server may take to exit before it is killed
LOG_LINES = 15  # lines of the server's stderr that say why it died


def server_key(
    python: str, env: Mapping[str, str], versions: Mapping[str, str], project: str = ""
) -> str:
    """What a warm server's state depends on: interpreter, environment, runtime, versions.

    ``versions`` are those of the libraries it preloaded (dists.InstalledVersions), and
    ``project`` the root it serves, if only one: a server whose key changed is replaced.
    """
    files = contract.runtime_files()
    return json.dumps([python, project, dict(env), files, dict(versions)], sort_keys=True)


def available() -> bool:
    """Whether this system can run the warm server (it forks and waits on pidfds: Linux)."""
    return hasattr(os, "pidfd_open") and hasattr(os, "fork")


class ServerGone(ChildProcessError):
    """The warm server died, or could not start a run: the scripts it ran died with it."""


def die_with_parent() -> None:
    """In the server: ask Linux to kill it when the thread that started it ends (kill -9 too)."""
    contract.prctl(contract.PR_SET_PDEATHSIG, signal.SIGKILL)


class Run:
    """A run forked by the warm server (its supervisor); its exit status comes through it."""

    def __init__(self) -> None:
        self.pid = 0
        self.started, self.ended = threading.Event(), threading.Event()
        self.returncode: int | None = None  # None once ended: the server died
        self.answer: dict[str, Any] = {}  # the server's last reply about it

    @property
    def error(self) -> str:
        """Why the server could not fork it; '' if it did."""
        return str(self.answer.get("error", ""))

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status, as Popen.wait does; ServerGone if the server died."""
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
        if self.returncode is None:
            raise ServerGone("the warm server died while the script ran (it died with it)")
        return self.returncode


class ForkClient:
    """A running warm server: forks a `Run` per request, passes each reply to its run."""

    def __init__(self, command: Sequence[str], cwd: Path, env: Mapping[str, str],
                 log: Path) -> None:
        """Start the server and wait until it says it is ready (its imports done)."""
        self.log, self.pid = log, 0
        self.ready: Mapping[str, Any] = {}  # its "ready" reply: what it preloaded, CUDA's state
        self._lock, self._ready = threading.Lock(), threading.Event()
        self._waiting: dict[int, Run] = {}
        self._next, self._dead, self._retired = 0, False, False
        self._proc: subprocess.Popen | None = None
        self._stdin: IO[bytes] | None = None
        # Its own thread starts it and reads its replies for as long as it lives: Linux kills
        # it (PDEATHSIG) when that thread ends, and the thread asking for it may end before it.
        self.owner = threading.Thread(target=self._own, args=(list(command), cwd, env),
                                      daemon=True)
        self.owner.start()
        if not self._ready.wait(READY_TIMEOUT) or self._dead:
            self.close()
            raise ServerGone(f"the warm server did not start: {self.log_tail()}")

    def _own(self, command: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        """Start the server, then pass each of its replies on, until it ends."""
        try:
            with self.log.open("wb") as log:
                try:
                    proc = subprocess.Popen(
                        command, cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                        preexec_fn=die_with_parent)
                except OSError as err:  # said where a server's death is read from
                    log.write(f"cannot start {command[0]}: {err}\n".encode())
                    return
            assert proc.stdout is not None
            self._proc, self._stdin, self.pid = proc, proc.stdin, proc.pid
            for line in proc.stdout:
                self._reply(line)
            proc.wait()
        finally:
            self._end()

    def _end(self) -> None:
        """Mark the server dead; whatever ended its replies, nobody may wait for one forever."""
        with self._lock:
            self._dead = True
            for run in self._waiting.values():  # still running: they died with it
                run.started.set()
                run.ended.set()
            self._waiting.clear()
        self._ready.set()

    def _reply(self, line: bytes) -> None:
        """Act on one reply: ready, a child's pid or exit status, a preload's answer."""
        try:
            reply = json.loads(line)
            with self._lock:
                if "ready" in reply:
                    self.ready = reply
                    self._ready.set()
                    return
                run = self._waiting[reply["id"]]
                if "exit" in reply or "preloaded" in reply or "error" in reply:
                    del self._waiting[reply["id"]]
                    self._close_if_retired()
                run.answer = reply
                run.pid = int(reply.get("pid", run.pid))
                if "exit" in reply:
                    run.returncode = int(reply["exit"])
                    run.ended.set()
                run.started.set()
        except (ValueError, KeyError, TypeError):
            logger.warning("figgen: the warm server said something unexpected: %r", line)

    def send(self, message: Mapping[str, Any]) -> Run:
        """Send a request; return what will receive its replies."""
        run = Run()
        with self._lock:
            if self._dead or self._stdin is None:
                raise ServerGone(f"the warm server is gone: {self.log_tail()}")
            self._next += 1
            self._waiting[self._next] = run
            try:
                self._stdin.write((json.dumps({"id": self._next, **message}) + "\n").encode())
                self._stdin.flush()
            except (OSError, ValueError):
                raise ServerGone(f"the warm server is gone: {self.log_tail()}") from None
        return run

    def fork(self, message: Mapping[str, Any]) -> Run:
        """Ask the server to fork a run (argv, env, cwd, stderr, report); return once it exists."""
        if message["env"].get(contract.LANE) == "gpu" and self.ready.get("cuda_initialized"):
            raise ServerGone("a library the warm server preloaded started CUDA, which a forked "
                             "child cannot use")
        run = self.send(message)
        run.started.wait()
        if run.error:
            raise ServerGone(f"the warm server could not start the script: {run.error}")
        if not run.pid:
            raise ServerGone(f"the warm server died before forking: {self.log_tail()}")
        return run

    def gone(self) -> bool:
        """Whether the server has ended: nothing more can start there."""
        with self._lock:
            return self._dead or (self._proc is not None and self._proc.poll() is not None)

    def retire(self) -> None:
        """Close the server once the runs forked from it have ended."""
        with self._lock:
            self._retired = True
            self._close_if_retired()

    def _close_if_retired(self) -> None:
        """Under the lock: close its input (it then exits) if retired and idle."""
        if self._retired and not self._waiting:
            self._close_input()

    def _close_input(self) -> None:
        """Close the server's input: it exits (its runs die with it)."""
        if self._stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._stdin.close()

    def close(self) -> None:
        """End the server: close its input, then make sure it is gone."""
        with self._lock:
            self._close_input()
        if self._proc is None:
            return
        try:
            self._proc.wait(timeout=CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def log_tail(self) -> str:
        """The end of the server's stderr, to say why it died."""
        with contextlib.suppress(OSError):
            text = self.log.read_text(encoding="utf-8", errors="replace").strip()
            return "\n".join(text.splitlines()[-LOG_LINES:]) or "(it printed nothing)"
        return "(its log is gone)"
