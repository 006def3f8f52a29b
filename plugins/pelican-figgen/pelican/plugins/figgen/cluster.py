"""Run phase on a Dask cluster: each stale figure a task carrying its files, run by a worker.

Used instead of the local pool when FIGGEN["executor"] names a scheduler (or is a
distributed Client). A task is plain data: the script, the project files it imports (those its
last run recorded and those its source imports, with the non-Python files beside them) and its
declared data, each by sha256, so a worker needs no checkout and no shared file system. The
worker (`pelican_figgen.worker.run_task`) runs the script under the same harness and
supervisor as a local run and sends back the files it made; they land in the run's scratch
folder and go through the same checks and storage as a local run's (`run.judge`,
`execute._record`). GPU figures ask for a ``GPU`` worker resource when a worker has one.
A worker that dies, or a task that does not come back, is a failed figure with its cause.
`distributed` is imported only here, and only when the executor is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pelican_figgen import contract, imports
from pelican_figgen.importpath import is_portable
from pelican_figgen.worker import run_task

from . import execute, progress, run
from .errors import SettingsError
from .run import RunResult
from .settings import FiggenSettings

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT = 30.0  # seconds to reach the scheduler, and for a first worker to join it
REPLY_GRACE = 120.0  # seconds past a figure's time-out for shipping it and its answer
SIBLING_MAX = 4 * 2**20  # bytes: a non-Python file beside a shipped module is shipped below it
# The harness's variables a task carries (never the build's other variables: no secrets).
SHIPPED = (*run.THREAD_VARIABLES, "MPLBACKEND", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
           "PYTHONFAULTHANDLER", "SOURCE_DATE_EPOCH", "MALLOC_TRIM_THRESHOLD_",
           contract.ENVIRONMENT, contract.LANE)
EXTRA = "pip install 'pelican-figgen[dask]'"


@contextlib.contextmanager
def lanes(
    shared: execute.RunContext, pending: Mapping[str, execute.Pending]
) -> Iterator[execute.Lanes]:
    """The cluster as the build's lanes (execute.Engine): each figure a task, as many at once as
    it has threads."""
    settings = shared.settings
    with connect(settings.executor) as client:
        cpus, gpus = capacity(client)
        logger.info("figgen: running %d figure(s) on the Dask cluster at %s (%d threads, %d "
                    "GPUs)", len(pending), client.scheduler.address, cpus, len(gpus))
        with _progress(client, shared.board, settings, shared.force) as runner:
            # As many at once as the cluster has threads: a task's time-out then counts from
            # its start, give or take its shipping. Ctrl-C cancels what the cluster runs.
            yield execute.Lanes(max(1, cpus - len(gpus)), gpus, runner.cancel_all,
                                runner=runner)


@contextlib.contextmanager
def _progress(
    client: Any, board: progress.Board, settings: FiggenSettings, force: bool
) -> Iterator[Runner]:
    """A runner whose figures' reports reach the build: their waits for another figure's
    intermediate (its slot is lent, as in the pool) and, when the board draws bars, the rest."""
    runner = Runner(client, settings, force, f"figgen-progress-{uuid.uuid4().hex}",
                    bars=board.display is not None)

    def show(event: tuple[float, Any]) -> None:
        message = event[1]
        name = message.get("figure") if isinstance(message, dict) else None
        report = runner.reports.get(name)  # none for a late report of a figure that ended
        if report and isinstance(message.get("report"), dict):
            report(message["report"])

    client.subscribe_topic(runner.topic, show)
    try:
        yield runner
    finally:
        client.unsubscribe_topic(runner.topic)


@contextlib.contextmanager
def connect(executor: Any) -> Iterator[Any]:
    """A distributed Client for the executor setting: the one given, or one to its scheduler."""
    if not isinstance(executor, str):  # a Client made in pelicanconf.py: its owner closes it
        yield executor
        return
    try:
        from distributed import Client
    except ImportError:
        raise SettingsError(f"FIGGEN['executor'] is {executor!r}, a Dask scheduler, but the "
                            f"'distributed' package is not installed: {EXTRA}") from None
    try:
        client = Client(executor, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise SettingsError(f"FIGGEN['executor'] is {executor!r}: cannot reach that Dask "
                            f"scheduler ({err})") from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except TimeoutError:
            raise SettingsError(f"FIGGEN['executor'] is {executor!r}: no Dask worker joined "
                                f"that scheduler within {CONNECT_TIMEOUT:g} s") from None
        yield client
    finally:
        client.close()


def capacity(client: Any) -> tuple[int, tuple[str, ...]]:
    """The cluster's worker threads, and one lane per GPU its workers advertise."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sum(int(w.get("nthreads", 1)) for w in workers)
    gpus = sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers)
    return threads, tuple(str(i) for i in range(gpus))


def task_files(settings: FiggenSettings, job: execute.Pending) -> dict[str, bytes]:
    """The files a figure's task carries, by path relative to the root."""
    # Read here, not by the scripts' interpreter (execute.static_imports): a process less per
    # figure on the way to the cluster. Parsing imports nothing of the blog's.
    names = {*job.want.inputs, *(job.previous.inputs if job.previous else ()),
             *imports.project_files(settings.root, job.figure.script)}
    files: dict[str, bytes] = {}
    for rel in sorted(names):
        path = settings.root / rel
        # A file outside the root (a portable name, or absolute in an older record) is the
        # worker's own to have, like a library: its run names it, the build finds it here.
        if is_portable(rel) or Path(rel).is_absolute() or not path.is_file():
            continue
        files[rel] = path.read_bytes()
    # What a module reads beside itself (a page's JS, a table): each module's folder listed
    # once, however many of its modules the figure imports.
    for folder in sorted({(settings.root / rel).parent for rel in files
                          if Path(rel).suffix == ".py"}):
        files |= _siblings(settings, folder, files)
    return files


def _siblings(
    settings: FiggenSettings, folder: Path, have: Mapping[str, bytes]
) -> dict[str, bytes]:
    """The small non-Python files in a folder of modules, outside the scripts folder."""
    if folder == settings.scripts:  # other figures' folder: nothing a module reads
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        rel = path.relative_to(settings.root).as_posix()
        if (path.is_file() and path.suffix not in (".py", ".pyc") and not path.name.startswith(".")
                and rel not in have and path.stat().st_size <= SIBLING_MAX):
            found[rel] = path.read_bytes()
    return found


def task_of(
    settings: FiggenSettings, job: execute.Pending, env: Mapping[str, str], force: bool
) -> dict[str, Any]:
    """A figure's task: its files by sha256, their bytes, seed, parameters, harness variables."""
    files = task_files(settings, job)
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    shipped = {k: v for k, v in {**run.script_env(settings), **env}.items() if k in SHIPPED}
    # A GPU figure sees the worker's own GPU (not a device id of this machine); a CPU figure
    # sees none there either.
    if env.get(contract.LANE) != "gpu" and "CUDA_VISIBLE_DEVICES" in env:
        shipped["CUDA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
    script = job.figure.script.relative_to(settings.root).as_posix()
    return {
        "files": digests,
        "blobs": {digests[rel]: data for rel, data in files.items()},
        "name": job.figure.name,
        "script": script,
        "runtime": contract.runtime_digest(),  # the worker's must be the same
        # The worker gives them as a local run does (lifecycle.script_argv), with its folders.
        "seed": settings.seed,
        "params": dict(job.figure.params),
        "env": shipped,
        "timeout": job.figure.timeout,
        "fresh": force,  # forced: no intermediate made before is reused, there either
        "warm": settings.preload,  # forked from the worker's warm server, as here from the pool's
    }


@dataclass(frozen=True)
class Reply:
    """What a worker sent back, checked: how the run ended and the files it made."""

    status: int | None
    killed: int
    seconds: float
    root: str
    stderr: str
    files: Mapping[str, bytes]


def reply_of(value: Any) -> Reply:
    """A worker's answer as a Reply; ValueError when it is not the plain data it should be."""
    if not isinstance(value, dict):
        raise ValueError(f"the worker answered a {type(value).__name__}, not a dict")
    status, files = value.get("status"), value.get("files")
    if not (status is None or type(status) is int) or type(value.get("killed")) is not int:
        raise ValueError("the worker's answer has no exit status")
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, bytes) for k, v in files.items()):
        raise ValueError("the worker's answer holds files that are not bytes by name")
    for name in files:  # a plain name in the run's folder, as for a local run
        if not run.own_name(name):
            raise ValueError(f"the worker sent a file outside the run's folder: {name!r}")
    return Reply(status, value["killed"], float(value.get("seconds", 0.0)),
                 str(value.get("root", "")), str(value.get("stderr", "")), files)


class Runner:
    """Runs one figure on the cluster and leaves what it made in its scratch folder."""

    def __init__(self, client: Any, settings: FiggenSettings, force: bool, topic: str = "",
                 bars: bool = False) -> None:
        """Submit to `client`; with a `topic`, the workers send the scripts' reports on it
        (those that draw bars only if `bars`)."""
        self.client, self.settings, self.force, self.topic = client, settings, force, topic
        self.bars = bars
        # The figures out on the cluster now, by name: where their reports go.
        self.reports: dict[str, Callable[[Mapping[str, Any]], None]] = {}
        self._futures: set[Any] = set()
        self._lock = threading.Lock()

    def __call__(
        self, job: execute.Pending, out_dir: Path, placement: run.Placement,
        report: Callable[[Mapping[str, Any]], None],
    ) -> RunResult:
        """Submit the figure's task, wait for its answer, write it out and judge it."""
        figure, start, settings = job.figure, time.perf_counter(), self.settings
        task = task_of(settings, job, placement.env, self.force) | {
            "progress": self.topic, "bars": self.bars}
        gpu = placement.env.get(contract.LANE) == "gpu"
        future = self.client.submit(run_task, task, key=f"figgen-{figure.name}-{uuid.uuid4()}",
                                    pure=False, retries=0, resources={"GPU": 1} if gpu else None)
        with self._lock:
            self._futures.add(future)
            self.reports[figure.name] = report
        try:
            reply = reply_of(future.result(timeout=figure.timeout + REPLY_GRACE))
        except Exception as err:  # noqa: BLE001 (whatever the cluster raised is the cause)
            future.cancel()
            return RunResult(False, time.perf_counter() - start, out_dir,
                             cause=self._cause(err, figure.timeout + REPLY_GRACE))
        finally:
            with self._lock:
                self._futures.discard(future)
                self.reports.pop(figure.name, None)
        _write(reply, out_dir, settings.root)
        return run.judge(figure, settings, out_dir, run.Ended(reply.status, reply.killed),
                         reply.seconds)

    @staticmethod
    def _cause(err: BaseException, waited: float) -> str:
        """Why a task gave no answer, as a figure's cause."""
        kind = type(err).__name__
        if kind == "KilledWorker":
            return (f"the Dask worker running it died ({err}); a figure that kills its worker "
                    "or runs it out of memory fails so")
        if isinstance(err, TimeoutError):
            return (f"timed out on the Dask cluster: no answer {waited:g} s after it was sent "
                    "(its time-out and the time to ship it); cancelled it")
        if kind == "CancelledError":
            return "cancelled on the Dask cluster (the scheduler or the build stopped it)"
        return f"the Dask cluster could not run it: {kind}: {err}"

    def cancel_all(self) -> int:
        """Cancel every task still out; how many."""
        with self._lock:
            futures = list(self._futures)
        if futures:
            self.client.cancel(futures)
        return len(futures)


def _write(reply: Reply, out_dir: Path, root: Path) -> None:
    """Put the files a worker made, and its stderr, in the run's folder, as a local run would."""
    for name, data in reply.files.items():
        (out_dir / name).write_bytes(data)
    # The worker's folder becomes the project's root: a traceback names the files here.
    stderr = reply.stderr.replace(reply.root, str(root)) if reply.root else reply.stderr
    (out_dir / contract.STDERR_FILE).write_text(stderr, encoding="utf-8")
