"""Run phase, starting a script: its own interpreter, or a fork of the warm server.

The warm server (``python -m pelican_figgen.forkserver``, see its docstring) imports the libraries
the scripts share once per build and forks a child per script, so a figure no longer pays
Python's start-up and torch's import. Both ways give the run phase the same process to wait
for and signal: the run's supervisor (pelican_figgen.reaper), in a session of its own, whose child
is the script (stdin and stdout on /dev/null, stderr to a file) and which kills whatever the
script started when the run ends. The server's client, shared with a Dask worker, is
pelican_figgen.forkclient; `WarmServer` says how a build starts it and asks for a run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pelican_figgen.contract import PR_SET_PDEATHSIG, load_prctl, prctl
from pelican_figgen.forkclient import ForkClient, Run, ServerGone

load_prctl()  # now: stop_with_parent calls it in a forked child

__all__ = ["Process", "Request", "ServerGone", "WarmServer", "available", "start_direct",
           "stop_with_parent"]


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


class WarmServer(ForkClient):
    """The warm server of one build: started with the scripts to run, closed at the end."""

    def __init__(self, python: str, scripts: Sequence[Path], root: Path,
                 env: Mapping[str, str], log: Path) -> None:
        """Start the server and wait until it has imported what the scripts share."""
        super().__init__([python, "-m", "pelican_figgen.forkserver", *map(str, scripts)], root,
                         env, log)

    def start(self, request: Request) -> Run:
        """Ask the server to fork the script; return once the child exists."""
        return self.fork({"argv": list(request.argv), "env": dict(request.env),
                          "cwd": str(request.cwd), "stderr": str(request.stderr),
                          "report": str(request.report)})


def available() -> bool:
    """Whether this system can run the warm server (it forks and waits on pidfds: Linux)."""
    return hasattr(os, "pidfd_open") and hasattr(os, "fork")

