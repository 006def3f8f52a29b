"""Run phase, starting a script: its own interpreter, or a fork of the warm server.

The warm server (``python -m pelican_figgen.forkserver``, see its docstring) imports the libraries
the scripts share once per build and forks a child per script, so a figure no longer pays
Python's start-up and torch's import. Both ways give the run phase the same process to wait
for and signal: the run's supervisor (pelican_figgen.reaper), in a session of its own, whose child
is the script (stdin and stdout on /dev/null, stderr to a file) and which kills whatever the
script started when the run ends. The server's client, shared with a Dask worker, is
pelican_figgen.forkclient; `WarmServer` says how a build starts it and asks for a run. A
run's lifecycle (starting its own interpreter, waiting, stopping, its report), shared with a
Dask worker too, is pelican_figgen.lifecycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pelican_figgen.forkclient import ForkClient, Run, ServerGone, available
from pelican_figgen.lifecycle import Process, Request, start_direct, stop_with_parent

__all__ = ["Process", "Request", "ServerGone", "WarmServer", "available", "start_direct",
           "stop_with_parent"]


class WarmServer(ForkClient):
    """The warm server of one build: started with the scripts to run, closed at the end."""

    def __init__(self, python: str, scripts: Sequence[Path], root: Path,
                 env: Mapping[str, str], log: Path) -> None:
        """Start the server and wait until it has imported what the scripts share."""
        super().__init__([python, "-m", "pelican_figgen.forkserver", *map(str, scripts)], root,
                         env, log)

    def start(self, request: Request) -> Run:
        """Ask the server to fork the script; return once the child exists."""
        return self.fork(request.fork_message())

