"""Run phase: execute one figure script in a subprocess and check what it produced."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pelican_figgen import contract, lifecycle
from pelican_figgen.lifecycle import STACK_HEADER, STOP_WAIT, Ended
from pelican_figgen.png import ImageFileError, image_size
from pelican_figgen.progress import follow

from .cache import script_path
from .discover import Figure
from .launch import Process, Request, ServerGone, WarmServer, start_direct
from .settings import FiggenSettings

FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+')
TRACEBACK_START = "Traceback (most recent call last):"
# The runner's own frames are noise in a script's traceback: the harness, the cache of
# intermediates a library function goes through, the warm server that forked the script.
HARNESS = {("pelican_figgen", f"{name}.py")
           for name in ("harness", "intermediates", "forkserver", "reaper", "contract", "png")}
# What caps the thread pools of torch, OpenMP and the BLAS libraries NumPy may use.
THREAD_VARIABLES = (contract.THREADS, "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
FATAL = "Fatal Python error: "  # faulthandler's first line on a crash (segfault, abort)
Progress = Callable[[Mapping[str, Any]], None]  # called with each progress report of a run
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where a run goes: what its lane adds to its environment, and the server to fork it from."""

    env: Mapping[str, str]  # the lane's variables (its GPU, say), and the build's extras
    server: WarmServer | None = None  # None: the script starts its own interpreter


@dataclass(frozen=True)
class RunResult:
    """How one run ended: a manifest of what was made, or the cause of failure."""

    ok: bool
    seconds: float
    out_dir: Path
    manifest: Mapping[str, Any] | None = None
    cause: str = ""
    detail: str = ""
    modules: tuple[str, ...] | None = None  # what a failed run imported, if it could say
    distributions: Mapping[str, str] | None = None  # with their versions, likewise
    hint: str = ""  # what a developer can do about a failure: for the log, never the page


def arguments(figure: Figure, settings: FiggenSettings, out_dir: Path) -> tuple[str, ...]:
    """The interpreter's arguments that run a figure script for the plugin: script, options."""
    return lifecycle.script_argv(figure.script, out_dir, settings.seed, figure.params)


def script_env(settings: FiggenSettings) -> dict[str, str]:
    """Environment of a figure run: project importable, no display, reproducible output."""
    root = settings.root
    path = script_path(root)
    threads = str(settings.threads)
    return os.environ | {
        # Every BLAS and OpenMP pool capped: the pool's workers then share the cores without
        # oversubscribing them, and a figure's bytes do not depend on the machine's cores.
        **dict.fromkeys(THREAD_VARIABLES, threads),
        "PYTHONPATH": path,
        contract.ROOT: str(root),
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONFAULTHANDLER": "1",  # a segfault prints the script's Python stack
        # SOURCE_DATE_EPOCH and cuBLAS's workspace: the harness sets them, for runs alone too.
    }


def run_figure(
    figure: Figure,
    settings: FiggenSettings,
    out_dir: Path,
    progress: Progress | None = None,
    placement: Placement | None = None,
) -> RunResult:
    """Run a figure script with a time-out; never raises for anything the script does.

    Raises Interrupted when the build is stopped (`stop_all`) meanwhile.
    """
    lane, server = (placement.env, placement.server) if placement else ({}, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    request = Request(
        arguments(figure, settings, out_dir),
        script_env(settings) | dict(lane) | {
            contract.PROGRESS: str(out_dir / contract.PROGRESS_FILE), contract.RUN: str(out_dir)},
        settings.root, out_dir / contract.STDERR_FILE, out_dir / contract.REPORT_FILE,
    )
    start = time.perf_counter()
    try:
        ended = _execute(request, figure.timeout, settings.python, progress, server)
    except ServerGone as err:  # the server, not the script: the script gets its own interpreter
        if STOPPING.is_set():  # the build stopped it: nothing runs again
            raise Interrupted(figure.name) from None
        logger.warning("figgen: %s: %s; it runs in an interpreter of its own", figure.name, err)
        start = time.perf_counter()
        ended = _execute(request, figure.timeout, settings.python, progress, None)
    seconds = time.perf_counter() - start
    if STOPPING.is_set():
        raise Interrupted(figure.name)
    return judge(figure, settings, out_dir, ended, seconds)


def judge(
    figure: Figure, settings: FiggenSettings, out_dir: Path, ended: Ended, seconds: float
) -> RunResult:
    """How a run that ended went, from what it left in out_dir: its outputs checked, or why not."""
    stderr = read_stderr(out_dir / contract.STDERR_FILE)
    if ended.status is None:
        cause = (f"timed out after {figure.timeout:g} s; killed it and {ended.killed} other "
                 "process(es) it started")
        return RunResult(False, seconds, out_dir, cause=cause,
                         detail=stack_at_timeout(stderr, _own_frames(settings.root, figure.script)))
    if ended.killed:
        logger.warning("figgen: %s: killed %d process(es) the script left running",
                       figure.name, ended.killed)
    if ended.status != 0:
        keep = _own_frames(settings.root, figure.script)
        return RunResult(
            False, seconds, out_dir, cause=_exit_cause(ended.status),
            detail=trim_traceback(stderr, keep), **_failed_imports(out_dir),
        )
    return _check_outputs(out_dir, seconds)


class Interrupted(Exception):  # noqa: N818 (what happened, as KeyboardInterrupt)
    """The build was stopped (Ctrl-C) while this figure ran: it was killed, not failed."""


STOPPING = threading.Event()  # set by stop_all: no figure starts or restarts any more
_RUNNING: set[Process] = set()  # the supervisors of the runs going on, for stop_all
_RUNNING_LOCK = threading.Lock()


def stop_all(seconds: float = STOP_WAIT) -> int:
    """Stop every run going on (their supervisors kill what they started); how many."""
    STOPPING.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    for proc in running:  # their clean-up takes milliseconds; the build exits after it
        with contextlib.suppress(subprocess.TimeoutExpired, ServerGone):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    return len(running)


def read_stderr(path: Path) -> str:
    """A run's stderr; '' if it was never made (a child killed before it opened it)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _execute(
    request: Request, timeout: float, python: str, progress: Progress | None,
    server: WarmServer | None,
) -> Ended:
    """Run the script to its end or its time-out; its supervisor kills what it left."""
    if STOPPING.is_set():
        raise ServerGone("the build is stopping")
    request.stderr.touch()  # there even if the run dies before the script opens it
    proc: Process = server.start(request) if server else start_direct(python, request)
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    done = threading.Event()
    # A file the script appends to, polled: it works alike for forked and started scripts.
    follower = threading.Thread(target=follow, args=(Path(request.env[contract.PROGRESS]),
                                                     progress, done), daemon=True)
    if progress:  # builds always pass one: reports also say when a run waits
        follower.start()
    try:
        return lifecycle.finish(proc, request, timeout)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
        done.set()
        if follower.is_alive():
            follower.join(timeout=1)


def stack_at_timeout(stderr: str, keep: Callable[[str], bool]) -> str:
    """The stack the script dumped on SIGUSR1 before its kill, trimmed to `keep`'s frames."""
    if STACK_HEADER not in stderr:  # it dumped nothing (killed before it started, say)
        return trim_traceback(stderr, lambda _: True)
    return "Where it was when it timed out:\n" + _trim_dump(stderr, keep, STACK_HEADER)


def _trim_dump(stderr: str, keep: Callable[[str], bool], first: str) -> str:
    """faulthandler's dump, from the line holding `first` on, with `keep`'s frames only."""
    found = stderr.find(first)
    lines: list[str] = []
    hidden = 0
    for line in stderr[stderr.rfind("\n", 0, found) + 1:].rstrip().splitlines():
        frame = FRAME.match(line)
        if frame and not keep(frame["file"]):
            hidden += 1
            continue
        if hidden:  # where the library frames were
            lines.append(f"  ... {hidden} frame(s) of library code hidden")
            hidden = 0
        lines.append(line)
    if hidden:
        lines.append(f"  ... {hidden} frame(s) of library code hidden")
    return "\n".join(lines)


def kill_strays(scratch: Path) -> None:
    """Kill what runs started from `scratch` left running (their build was killed with -9)."""
    # The script itself died with the build (PDEATHSIG); its children carry RUN_ENV.
    marker = f"{contract.RUN}={scratch}{os.sep}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if any(v.startswith(marker) for v in environ.split(b"\0")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _failed_imports(out_dir: Path) -> dict[str, Any]:
    """The files and distributions a failed run imported, from the manifest the harness left."""
    try:  # a failure's manifest, or a finished run's whose image is bad
        manifest = json.loads((out_dir / contract.MANIFEST).read_text(encoding="utf-8"))
        return {"modules": tuple(str(module) for module in manifest[contract.MODULES]),
                "distributions": {str(k): str(v) for k, v in
                                  manifest.get(contract.DISTRIBUTIONS, {}).items()}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # it crashed before saying
        return {}


def _exit_cause(returncode: int) -> str:
    """Describe a non-zero exit, naming the signal when the script was killed by one."""
    if returncode == -signal.SIGKILL:
        return "killed by SIGKILL (the kernel's out-of-memory killer does this)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"the script failed (exit status {returncode})"


def _check_outputs(out_dir: Path, seconds: float) -> RunResult:
    """Check that a finished run left a well-formed manifest and readable images."""
    try:
        manifest = json.loads((out_dir / contract.MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        cause = "exited without writing its manifest (does it end with run(main)?)"
        return RunResult(False, seconds, out_dir, cause=cause)
    cause = _manifest_problem(manifest) or _renders_problem(out_dir, manifest)
    if cause:
        return RunResult(False, seconds, out_dir, cause=cause, **_failed_imports(out_dir))
    return RunResult(True, seconds, out_dir, manifest=manifest)


def _manifest_problem(manifest: Any) -> str:
    """Say what is wrong with the shape of a manifest, or ''."""
    if not isinstance(manifest, dict):
        return f"wrote a manifest that is a JSON {type(manifest).__name__}, not an object"
    image = manifest.get(contract.IMAGE)
    if not image:
        return "produced no image"
    if not isinstance(image, dict):
        return "wrote a manifest whose image is not an object"
    if not own_name(image.get("file")):
        return f"wrote a manifest image entry without a file name in its folder: {image!r}"
    return ""


def _renders_problem(out_dir: Path, manifest: Mapping[str, Any]) -> str:
    """Say why the run's image, its WebP twin or one of its other renders is not whole; or ''."""
    image, renders = manifest[contract.IMAGE], manifest.get(contract.RENDERS) or {}
    if not isinstance(renders, dict) or not all(
            isinstance(r, dict) and own_name(r.get("file")) for r in renders.values()):
        return f"wrote a manifest whose renders are not each an image entry: {renders!r}"
    if not image["file"].endswith(".png"):  # feeds and browsers without WebP show it
        return f"wrote a main image that is not a .png file: {image['file']!r}"
    if "webp" in image and not own_name(image["webp"]):
        return f"wrote a manifest image entry whose WebP is not in its folder: {image!r}"
    twin = [image["webp"]] if "webp" in image else []
    names = (image["file"], *twin, *(r["file"] for r in renders.values()))
    # Pillow decodes without the GIL: an ImageNet figure's five files take half the time
    # on two threads, and a restyle waits for them.
    with ThreadPoolExecutor(min(len(names), os.cpu_count() or 1)) as pool:
        problems = list(pool.map(lambda name: image_problem(out_dir / name), names))
    for name, problem in zip(names, problems, strict=True):
        if problem:
            kind = "PNG" if name.endswith(".png") else "WebP"
            return f"{name} is not a readable {kind} image: {problem}"
    return ""


def own_name(name: Any) -> bool:
    """Whether a file name a run gives is a plain, visible name in the run's folder."""
    # Hidden names too are refused: half-written files (contract.aside) start with a dot.
    return isinstance(name, str) and name != "" and Path(name).name == name \
        and not name.startswith(".")


def image_problem(path: Path) -> str:
    """Say what is wrong with a render file (PNG or WebP: its header, checksums, pixels), or ''."""
    try:
        image_size(path)
    except ImageFileError as err:
        return str(err)
    return ""


def _own_frames(root: Path, script: Path) -> Callable[[str], bool]:
    """A test for traceback frames that belong to the project, not the harness or libraries."""

    def keep(file: str) -> bool:
        path = Path(file)
        if path == script:
            return True
        return contract.project_file(path, root) and path.parts[-2:] not in HARNESS

    return keep


def trim_traceback(stderr: str, keep: Callable[[str], bool]) -> str:
    """Keep the traceback's message and the frames `keep` accepts; count the hidden ones."""
    start = stderr.find(TRACEBACK_START)
    if start < 0 and FATAL in stderr:  # a crash: faulthandler's stack, trimmed alike
        return _trim_dump(stderr, keep, FATAL)
    if start < 0:  # no Python traceback (a message): the end of stderr says most
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
