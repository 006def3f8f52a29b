"""Run phase: execute one figure script in a subprocess and check what it produced."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .discover import Figure
from .settings import FiggenSettings

FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+')
TRACEBACK_START = "Traceback (most recent call last):"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HARNESS = ("figgen", "harness.py")  # the runner's own frames are noise in a script's traceback


@dataclass(frozen=True)
class RunResult:
    """How one run ended: a manifest of what was made, or the cause of failure."""

    ok: bool
    seconds: float
    out_dir: Path
    manifest: Mapping[str, Any] | None = None
    cause: str = ""
    detail: str = ""


def command(figure: Figure, settings: FiggenSettings, out_dir: Path) -> list[str]:
    """The command line that runs a figure script for the plugin."""
    return [
        settings.python,
        str(figure.script),
        "--out",
        str(out_dir),
        "--seed",
        str(settings.seed),
        "--params",
        json.dumps(dict(figure.params), sort_keys=True),
        "--manifest",
        str(out_dir / "manifest.json"),
    ]


def script_env(root: Path) -> dict[str, str]:
    """Environment of a figure run: project importable, no display, stable hashing."""
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return os.environ | {
        "PYTHONPATH": path,
        "FIGGEN_ROOT": str(root),
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run_figure(figure: Figure, settings: FiggenSettings, out_dir: Path) -> RunResult:
    """Run a figure script with a time-out; never raises for anything the script does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # A session of its own, so a time-out can kill the script and all its children.
    proc = subprocess.Popen(
        command(figure, settings, out_dir),
        cwd=settings.root,
        env=script_env(settings.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=figure.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        cause = f"timed out after {figure.timeout:g} s and was killed"
        return RunResult(False, time.perf_counter() - start, out_dir, cause=cause)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        keep = _own_frames(settings.root, figure.script)
        return RunResult(
            False, seconds, out_dir, cause=_exit_cause(proc.returncode),
            detail=trim_traceback(stderr, keep),
        )
    return _check_outputs(out_dir, seconds)


def _exit_cause(returncode: int) -> str:
    """Describe a non-zero exit, naming the signal when the script was killed by one."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"the script failed (exit status {returncode})"


def _check_outputs(out_dir: Path, seconds: float) -> RunResult:
    """Check that a finished run left a manifest and readable images."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        cause = "exited without writing its manifest (does it end with run(main)?)"
        return RunResult(False, seconds, out_dir, cause=cause)
    if not manifest.get("images"):
        return RunResult(False, seconds, out_dir, cause="produced no image")
    for image in manifest["images"]:
        path = out_dir / image["file"]
        if not path.is_file() or path.read_bytes()[:8] != PNG_SIGNATURE:
            return RunResult(False, seconds, out_dir, cause=f"{image['file']} is not a PNG image")
    return RunResult(True, seconds, out_dir, manifest=manifest)


def _own_frames(root: Path, script: Path) -> Callable[[str], bool]:
    """A test for traceback frames that belong to the project, not the harness or libraries."""

    def keep(file: str) -> bool:
        path = Path(file)
        if path == script:
            return True
        inside = path.is_relative_to(root) and "site-packages" not in path.parts
        return inside and path.parts[-2:] != HARNESS

    return keep


def trim_traceback(stderr: str, keep: Callable[[str], bool]) -> str:
    """Keep the traceback's message and the frames `keep` accepts; count the hidden ones."""
    start = stderr.find(TRACEBACK_START)
    if start < 0:  # no Python traceback (a crash, or a message): the end of stderr says most
        return "\n".join(stderr.rstrip().splitlines()[-20:])
    out: list[str] = []
    hidden, keeping = 0, True
    for line in stderr[start:].rstrip().splitlines():
        frame = FRAME.match(line)
        if frame:
            keeping = keep(frame["file"])
        elif not line.startswith("    "):  # a header or the message: always kept
            keeping = True
        if not keeping:  # a hidden frame, or the source lines under it
            hidden += frame is not None
            continue
        if hidden:
            out.append(f"  ... {hidden} frame(s) of library code hidden")
            hidden = 0
        out.append(line)
    return "\n".join(out)
