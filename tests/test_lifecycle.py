"""Unit tests of a run's lifecycle (pelican_figgen.lifecycle), shared by the build and a worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pelican_figgen import lifecycle

# A supervisor that will not stop: SIGTERM ignored, as a stuck clean-up would.
STUBBORN = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print(1, flush=True)\ntime.sleep(300)\n")


class Watched:
    """A started process whose waits are recorded (a Process, as the build's and a worker's)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.pid, self.timeouts = proc, proc.pid, []

    def wait(self, timeout: float | None = None) -> int:
        self.timeouts.append(timeout)
        return self.proc.wait(timeout=timeout)


def test_stop_kills_the_group_of_a_supervisor_that_ignores_sigterm_and_waits_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "STOP_WAIT", 0.5)
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline()  # its handler is set
        watched = Watched(proc)
        lifecycle.stop(watched)
        assert proc.returncode == -signal.SIGKILL  # the group kill, after SIGTERM did nothing
        assert watched.timeouts and None not in watched.timeouts  # never an unbounded wait
    finally:
        proc.kill()
        proc.wait()


def test_ended_reads_the_report_else_the_supervisors_status(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    report = tmp_path / "report.json"
    assert lifecycle.ended(proc, report, False) == lifecycle.Ended(3, 0)  # no report: killed
    report.write_text(json.dumps({"status": 1, "killed": 2, "stopped": False}))
    assert lifecycle.ended(proc, report, False) == lifecycle.Ended(1, 2)
    assert lifecycle.ended(proc, report, True) == lifecycle.Ended(None, 2)  # timed out


def test_script_argv_gives_seed_params_and_manifest_beside_the_output(tmp_path: Path) -> None:
    argv = lifecycle.script_argv(Path("figs/a.py"), tmp_path, 7, {"n": 3, "k": "a"})
    assert argv == ("figs/a.py", "--out", str(tmp_path), "--seed", "7",
                    "--params", '{"k": "a", "n": 3}', "--manifest",
                    str(tmp_path / "manifest.json"))
