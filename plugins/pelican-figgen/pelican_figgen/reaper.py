"""A figure run's supervisor: the script runs as its child, and nothing it started outlives it.

The supervisor makes itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): every
process the script starts, whatever it does with setsid, setpgrp, a double fork or an empty
environment, is re-parented to the supervisor when its own parent dies. When the script
ends, or the supervisor is told to stop (SIGTERM, SIGINT or SIGHUP: a time-out, Ctrl-C, the
build dying, through PDEATHSIG), it kills every process below it and reaps them until it has
no child left, then writes ``{"status", "killed", "stopped"}`` to its report file: the
script's exit status (negative for a signal), how many other processes it killed, and
whether it was told to stop. SIGUSR1 is passed on to the script (the harness dumps its
Python stack on it).

Run as ``python -m pelican_figgen.reaper PARENT_PID REPORT SCRIPT ARGS...`` (the script is started
in ``sys.executable``); the warm server (pelican_figgen.forkserver) calls `supervise` in its forked
child instead. Standard library only: it must start fast, and never imports the script's
libraries.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from pelican_figgen.contract import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, load_prctl, prctl

load_prctl()  # now: a forked child calls prctl (the warm server imports this module)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stop(Exception):  # noqa: N818 (a request, not an error)
    """The supervisor was told to stop: kill everything."""


def supervise(parent: int, report: Path, start: Callable[[], int]) -> NoReturn:
    """Become the run's subreaper, start the script with `start`, reap, report and exit."""
    script = 0

    def stop(signum: int, frame: object) -> None:
        raise Stop

    def forward(signum: int, frame: object) -> None:
        if script:
            with contextlib.suppress(ProcessLookupError):
                os.kill(script, signal.SIGUSR1)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    signal.signal(signal.SIGUSR1, forward)
    # Handlers first: a stop that comes from here on is caught, and the script not yet
    # started is never left alone. A build that died before this line: nobody waits for us.
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    status: int | None = None
    stopped = False
    try:
        script = start()
        status = _wait_for(script)
    except Stop:
        stopped = True
    # No signal may interrupt the clean-up; a second stop asks for what is happening anyway.
    signal.pthread_sigmask(signal.SIG_BLOCK, {*STOP_SIGNALS, signal.SIGUSR1})
    killed, ended = kill_descendants(spare=script)
    if status is None:
        status = ended.get(script, -signal.SIGKILL)
    with contextlib.suppress(OSError):
        report.write_text(json.dumps({"status": status, "killed": killed, "stopped": stopped}))
    os._exit(status if status >= 0 else 128 - status)  # as a shell reports a signal


def _wait_for(script: int) -> int:
    """Reap children (orphans adopted meanwhile too) until the script ends; its exit status."""
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == script:
            return os.waitstatus_to_exitcode(status)


def kill_descendants(spare: int = 0) -> tuple[int, dict[int, int]]:
    """SIGKILL every process below this one and reap until none is left.

    Returns how many live processes other than `spare` were killed, and the exit status of
    each child reaped meanwhile.
    """
    killed: set[int] = set()
    ended: dict[int, int] = {}
    while True:
        # No child left: every descendant is re-parented here, so none is left at all, and
        # the usual end of a run (the script alone, reaped) needs no reading of /proc.
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return len(killed), ended
        if pid:
            ended[pid] = os.waitstatus_to_exitcode(status)
            continue
        for pid, zombie in descendants(os.getpid()):
            if zombie:  # already dead: its parent (or we) will reap it
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                if pid != spare:
                    killed.add(pid)
        try:
            # Blocks until one child ends; a process forked meanwhile is killed next round.
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # none left: every descendant was re-parented and reaped
            return len(killed), ended
        ended[pid] = os.waitstatus_to_exitcode(status)


def descendants(root: int) -> list[tuple[int, bool]]:
    """Every process below `root`, with whether it is a zombie, read from /proc."""
    children: dict[int, list[tuple[int, bool]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: split after the last ")".
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):  # ended meanwhile
            continue
        children.setdefault(int(ppid), []).append((int(stat.parent.name), state == "Z"))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def become_script(supervisor: int) -> None:
    """In the script's process, just forked: signals as in a fresh interpreter; dies with us."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGUSR1 prints the script's stack (a time-out's report). Unregistered first: a fork of a
    # process whose faulthandler had it (a preloaded harness) keeps that flag, and register()
    # would then install nothing over the supervisor's handler: the script would die silently.
    faulthandler.unregister(signal.SIGUSR1)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor gone, the script goes too
    if os.getppid() != supervisor:  # it went before the line above
        os._exit(1)


def _exec_script(argv: list[str]) -> int:
    """Fork and exec the script in this interpreter; return its pid."""
    supervisor = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        become_script(supervisor)
        os.execv(sys.executable, [sys.executable, *argv])
    except BaseException as err:  # noqa: BLE001 (say why in the script's stderr)
        print(f"pelican_figgen.reaper: cannot start {argv[0]}: {err}", file=sys.stderr)
    os._exit(127)


def main() -> None:
    """Supervise the script named on the command line (see the module's docstring)."""
    parent, report, *argv = sys.argv[1:]
    supervise(int(parent), Path(report), lambda: _exec_script(argv))


if __name__ == "__main__":
    main()
