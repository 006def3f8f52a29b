"""Run phase, for a whole build: the stale figures through the pool, each under its lock.

Imported only when a figure is stale: a no-op build never loads the run phase. A figure that
fails is recorded as a failure and shown by the embed phase; the others go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pelican_figgen import contract, dists
from pelican_figgen.forkclient import server_key

from . import cache, discover, launch, progress, provenance, remote, run, schedule
from .cache import Cache, Expected, Failure, Image, Record, Store
from .discover import Figure
from .errors import BuildInterrupted, SettingsError
from .launch import WarmServer
from .outcome import drafting
from .run import RunResult, run_figure, script_env, stop_all
from .settings import FiggenSettings

logger = logging.getLogger(__name__)
STATIC_TIMEOUT = 60  # seconds for reading a script's imports: parsing, far less in practice


@dataclass(frozen=True)
class RunFailure:
    """Why a figure's run failed, as each article that uses it is told (FigureError)."""

    cause: str
    detail: str = ""
    hint: str = ""


@dataclass(frozen=True)
class FigureEnd:
    """How the run phase left one stale figure: ran, failed, or made meanwhile elsewhere."""

    name: str
    # The record to show: the new one, one a concurrent build made, or (failed) the last good
    # one, intact; None: nothing to show.
    record: Record | None
    ran: bool  # False: a concurrent build had made it meanwhile
    seconds: float = 0.0  # the run's wall time
    compute: float = 0.0  # the run's own main(), less waits (Report.compute)
    failure: RunFailure | None = None  # None: it did not fail


@dataclass(frozen=True)
class RunPhase:
    """What the run phase returns: each stale figure's end, and what the warm server loaded."""

    ends: tuple[FigureEnd, ...]
    preloaded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pending:
    """A figure whose record was not fresh when the build looked: it may have to run."""

    figure: Figure
    want: Expected
    previous: Record | None
    reason: str  # why it is not fresh, for the log


@dataclass(frozen=True)
class Attempted:
    """How a pending figure ended: a new record, a failure, or found fresh after all."""

    record: Record | None
    result: RunResult | None  # None: a concurrent build had made it meanwhile
    previous: Record | None  # the last good record, shown (marked stale) if this run failed


# Runs one figure elsewhere (cluster.Runner) and leaves what it made in the given folder.
Runner = Callable[[Pending, Path, run.Placement, Callable[[Mapping[str, Any]], None]], RunResult]


@dataclass(frozen=True)
class RunContext:
    """What every run of one build shares: settings, cache, warm server, progress, extras."""

    settings: FiggenSettings
    cache: Cache
    force: bool
    server: WarmServer | None
    board: progress.Board
    env: Mapping[str, str]  # added to every script's environment
    scratch: Path  # this build's scratch folder in the cache
    retry: bool  # run a figure whose last failure is known (strict builds, forced runs)
    runner: Runner | None = None  # None: run_figure, here


@dataclass(frozen=True)
class Lanes:
    """Where an engine runs a build's figures: how many at once, and what each run is given."""

    workers: int  # CPU figures at once
    gpus: tuple[str, ...]  # a lane each
    stop: Callable[[], int]  # Ctrl-C: stop every run still going; how many it stopped
    env: Mapping[str, str] = field(default_factory=dict)  # added to every script's environment
    server: WarmServer | None = None  # the runs fork from it
    runner: Runner | None = None  # None: run_figure, here
    memory: float | None = None  # MiB the CPU figures may need together; None: no bound
    preloaded: tuple[str, ...] = ()  # what its warm server imported, for the report


# Starts the lanes of a build (this machine's pool, a Dask cluster) for its pending figures,
# given what every run shares; they end when the build's runs did.
Engine = Callable[[RunContext, Mapping[str, Pending]], contextlib.AbstractContextManager[Lanes]]


def run_stale(
    stale: Mapping[str, tuple[Figure, Expected, cache.Verdict]],
    settings: FiggenSettings,
    force: bool,
    cached: Cache,
    environment: Mapping[str, str],
) -> RunPhase:
    """Run the stale figures (all of them if force); return how each one ended."""
    pending = {name: Pending(figure, want, verdict.record, "forced" if force else verdict.reason)
               for name, (figure, want, verdict) in stale.items()}
    # A draft (make serve's preview) is never taken from, nor sent to, a shared cache.
    draft = drafting(environment)
    shared = None if draft else remote.open_remote(settings)
    # Readers only: a writer (CI) makes what it signs, so a bad record never outlives its next
    # build; forced, nothing made before is reused.
    reads = shared is not None and not shared.write and not force
    done = _from_remote(shared, pending, cached) if reads else {}
    rest = {name: job for name, job in pending.items() if name not in done}
    preloaded: tuple[str, ...] = ()
    if rest:
        ran, preloaded = _pool(rest, settings, cached, force, environment)
        done |= ran
        if shared:
            _publish(shared, cached, rest, ran)
    # In the figures' order, however the pool ran them.
    ends = tuple(_end(cached, name, done[name]) for name in pending)
    return RunPhase(ends, preloaded)


def _from_remote(
    shared: remote.Remote, pending: Mapping[str, Pending], cached: Cache
) -> dict[str, Attempted]:
    """The pending figures the remote cache holds for this checkout, each under its lock."""
    found = {}
    for name, job in pending.items():
        with cached.store.lock(name):  # a concurrent build may be making it: look again first
            verdict = cached.verdict(name, job.want)
            record = verdict.record if verdict.fresh else shared.fetch(cached, name, job.want)
        if record:
            found[name] = Attempted(record, None, verdict.record)
    return found


def _publish(
    shared: remote.Remote, cached: Cache, pending: Mapping[str, Pending],
    done: Mapping[str, Attempted],
) -> None:
    """Send each figure that ran here and succeeded to the remote cache (when writing is on)."""
    for name, end in done.items():
        if end.result is not None and end.record is not None:
            shared.publish(cached.store, end.record, pending[name].want)


def _pool(
    pending: Mapping[str, Pending], settings: FiggenSettings, cached: Cache,
    force: bool, environment: Mapping[str, str],
) -> tuple[dict[str, Attempted], tuple[str, ...]]:
    """Run the pending figures in their engine's lanes (GPU ones in their queue), slowest first,
    each under its lock; how each ended, and what the warm server preloaded."""
    # Strict builds (make site, CI) try every figure; others skip a failure already known,
    # while nothing it read has changed.
    retry = force or settings.on_error == "strict"
    jobs = [_job(settings, name, job) for name, job in pending.items()]
    scratch = _scratch(cached.store, list(pending))
    extra = {contract.ENVIRONMENT: json.dumps(environment, sort_keys=True),
             contract.DRAFT: "1" if drafting(environment) else ""}
    with progress.board() as board:
        shared = RunContext(settings, cached, force, None, board, extra, scratch, retry)
        with _engine(settings, environment)(shared, pending) as lanes:
            context = replace(shared, server=lanes.server, runner=lanes.runner,
                              env={**extra, **lanes.env})
            try:
                done = schedule.run_all(jobs, lanes.workers, lanes.gpus,
                                        lambda job, lane, idle: _attempt(context, job.name,
                                                                         pending[job.name],
                                                                         lane, idle),
                                        lanes.memory)
            except KeyboardInterrupt:  # Ctrl-C: stop what runs (before its engine goes), exit 130
                error = BuildInterrupted(lanes.stop())
                logger.error("%s", error)
                raise error from None
    return done, lanes.preloaded


def _engine(settings: FiggenSettings, environment: Mapping[str, str]) -> Engine:
    """What runs the build's figures: a Dask cluster when the settings name one, else the pool."""
    # A draft runs here, on the kept warm server.
    if settings.executor == "local" or drafting(environment):
        return _local
    from . import cluster  # imported only then (it imports distributed when it connects)

    return cluster.lanes


@contextlib.contextmanager
def _local(shared: RunContext, pending: Mapping[str, Pending]) -> Iterator[Lanes]:
    """This machine's lanes: the pool and GPU queues, a warm server, the build's intermediates."""
    settings, scratch = shared.settings, shared.scratch
    scripts = [job.figure.script for name, job in pending.items()
               if shared.retry or not shared.cache.known_failure(name, job.want)]
    # Found only when a figure wants one: nvidia-smi may take seconds to answer.
    gpus = _gpus(settings) if scripts and any(j.figure.gpu for j in pending.values()) else ()
    # A Ctrl-C'd pool's threads outlive it: the stop is cleared when the next one starts. Not in
    # make serve, whose Finisher clears its stop once the build ended: a stop() of a full build
    # that has not reached its pool yet must count.
    if KEEP_WARM is None:
        run.STOPPING.clear()
    with _intermediates(settings, scratch, shared.force) as kept, \
            _warm_server(settings, scripts, scratch) as server:
        yield Lanes(schedule.cpu_workers(settings.jobs, settings.threads, gpus),  # a core a lane
                    gpus, stop_all, {contract.INTERMEDIATES: str(kept)}, server,
                    memory=_memory(settings),
                    preloaded=tuple(server.ready.get("preloaded", [])) if server else ())


def _scratch(store: Store, names: list[str]) -> Path:
    """This build's scratch folder in the cache; one clear error when the cache is read-only."""
    try:
        return store.scratch()
    except OSError as err:  # every run, record and lock needs the cache: nothing can run
        raise SettingsError(
            f"FIGGEN['cache_dir'] is {store.path}, which cannot be written ({err.strerror or err}"
            f"), and {len(names)} figure(s) must run: {', '.join(names)}. Make it writable, set "
            "FIGGEN['cache_dir'] to a writable folder, or build from the freeze "
            "(FIGGEN_MODE=frozen)"
        ) from None


def _job(settings: FiggenSettings, name: str, pending: Pending) -> schedule.Job:
    """A pending figure as the pool sees it: its last run's time and memory, if it ran."""
    last = pending.previous
    if last is None and settings.freeze_dir.is_dir():  # a fresh clone: the freeze knows them
        last = Store(settings.freeze_dir).load(name)
    if last is None:
        return schedule.Job(name, pending.figure.gpu, None)
    return schedule.Job(name, pending.figure.gpu, last.seconds, last.memory)


def _memory(settings: FiggenSettings) -> float | None:
    """The MiB the CPU pool's figures may need together: the setting, or what is free now."""
    if settings.memory_mb != "auto":
        return settings.memory_mb  # type: ignore[return-value]
    available = schedule.available_memory()
    if available is None:
        logger.warning("figgen: cannot tell how much memory is free here: only FIGGEN['jobs'] "
                       "bounds the pool (set FIGGEN['memory_mb'] to bound its memory)")
    return available


@contextlib.contextmanager
def _intermediates(settings: FiggenSettings, scratch: Path, force: bool) -> Iterator[Path]:
    """Where the build's figures keep their cached intermediates (pelican_figgen.intermediates)."""
    if not force:
        # File times lag time.time() by up to a kernel tick: compare like with like.
        shared, start = settings.cache_dir / "intermediates", cache.file_clock(scratch)
        yield shared
        # After the pool, not in a finally: an interrupted build drops nothing.
        cache.trim_intermediates(shared, settings.intermediates_max_mb, start)
        return
    # Forced (run --force, verify): nothing made before is reused, not even an intermediate;
    # the figures of this build still share what they compute.
    with tempfile.TemporaryDirectory(dir=scratch, prefix="intermediates-") as fresh:
        yield Path(fresh)


def _gpus(settings: FiggenSettings) -> tuple[str, ...]:
    """The GPUs of this build: the setting's list, or those found."""
    return schedule.detect_gpus() if settings.gpus == "auto" else tuple(settings.gpus)


class KeptServer:
    """A warm server kept across builds (make serve), restarted when what it preloaded changes.

    Its preload list is decided when it starts, from every script in the scripts folder; a
    later build's script that needs a library it did not preload imports it itself. It
    restarts when a version of a distribution it preloaded changes, when a file of the
    pelican_figgen runtime changes (both looked at before each build: contract.runtime_files
    hashes a file again only when its stat changed), or when it died.
    """

    def __init__(self) -> None:
        self._server: WarmServer | None = None
        self._key: str = ""
        self._tops: tuple[str, ...] = ()
        self.starts = 0  # how many servers it started, for the log and the tests
        self._versions = dists.InstalledVersions()

    def server(self, settings: FiggenSettings, scratch: Path) -> WarmServer | None:
        """The running server, started or restarted if needed; None if it cannot start."""
        key = self._key_of(settings)
        if self._server is not None and (key != self._key or self._server.gone()):
            logger.info("figgen: restarting the warm server (%s)",
                        "it died" if self._server.gone() else "a preloaded library or the "
                        "figure runtime changed")
            self.close()
        if self._server is None:
            self._start(settings, scratch)
        return self._server

    def _start(self, settings: FiggenSettings, scratch: Path) -> None:
        """Start a server preloading what the scripts folder's scripts share."""
        scripts = [settings.scripts / f"{name}.py"
                   for name in discover.script_names(settings.scripts)]
        try:
            server = WarmServer(settings.python, scripts, settings.root, script_env(settings),
                                scratch / contract.SERVER_LOG)
        except launch.ServerGone as err:
            logger.warning("figgen: %s; each figure starts its own interpreter instead", err)
            return
        self._server, self.starts = server, self.starts + 1
        self._tops = tuple(sorted({n.partition(".")[0]
                                   for n in server.ready.get("preloaded", [])}))
        self._key = self._key_of(settings)
        logger.info("figgen: warm server %d started, kept across builds (%d libraries "
                    "preloaded)", self.starts, len(server.ready.get("preloaded", [])))

    def _key_of(self, settings: FiggenSettings) -> str:
        """What the server's state depends on: its interpreter, environment, runtime, versions."""
        return server_key(settings.python, script_env(settings), self._versions(self._tops),
                          str(settings.root))

    def close(self) -> None:
        """Stop the server (the figures it ran have ended with their builds)."""
        if self._server is not None:
            self._server.close()
            self._server = None


KEEP_WARM: KeptServer | None = None  # set by make serve: one warm server for all its builds


def kept_server(settings: FiggenSettings) -> KeptServer | None:
    """The kept warm server, when figures fork from it (make serve, preloading, forking here)."""
    if KEEP_WARM is None or not settings.preload or settings.mode == "frozen":
        return None
    return KEEP_WARM if launch.available() else None


@contextlib.contextmanager
def _warm_server(
    settings: FiggenSettings, scripts: list[Path], scratch: Path
) -> Iterator[WarmServer | None]:
    """The build's warm server, when two or more scripts will run; else None."""
    kept = kept_server(settings) if scripts else None
    if kept is not None:
        # make serve: the server outlives the build (it preloads for every script there is,
        # so even one restyled figure forks); only the figures' own runs end with the build.
        yield kept.server(settings, scratch)
        return
    if not settings.preload or len(scripts) < 2 or not launch.available():
        yield None
        return
    start = time.perf_counter()
    try:
        server = WarmServer(settings.python, scripts, settings.root, script_env(settings),
                            scratch / contract.SERVER_LOG)
    except launch.ServerGone as err:  # the figures still run, each in its own interpreter
        logger.warning("figgen: %s; each figure starts its own interpreter instead", err)
        yield None
        return
    logger.info("figgen: warm server ready in %.1f s, with %d shared libraries imported",
                time.perf_counter() - start, len(server.ready.get("preloaded", [])))
    try:
        yield server
    finally:
        server.close()


def _attempt(
    context: RunContext, name: str, job: Pending, lane: schedule.Lane, idle: Callable[[bool], None]
) -> Attempted:
    """Under the figure's lock: find it fresh after all, or a known failure, or run it."""
    with context.cache.store.lock(name):  # a concurrent build may be making it: wait, look again
        verdict = context.cache.verdict(name, job.want)
        if verdict.fresh and verdict.record and not context.force:
            return Attempted(verdict.record, None, verdict.record)
        known = None if context.retry else _known_failure(context.cache, name, job.want)
        if known:
            return Attempted(None, known, verdict.record)
        logger.info("figgen: running %s (%s)", name, job.reason)
        record, result = _run(context, job, verdict.record, lane, idle)
        return Attempted(record, result, verdict.record)


def _known_failure(cached: Cache, name: str, want: Expected) -> RunResult | None:
    """The last run's failure as a result, when nothing that run read has changed since."""
    failure = cached.known_failure(name, want)
    if failure is None:
        return None
    cause = (f"{failure.cause} (in its last run; nothing it reads changed since, so it did "
             "not run again)")
    return RunResult(False, 0.0, cached.store.path, cause=cause, detail=failure.detail,
                     hint=f"`pelican-figgen run --force {name}` retries it")


def _end(cached: Cache, name: str, done: Attempted) -> FigureEnd:
    """A pending figure's end as the outcome takes it: its record, or its failure."""
    result = done.result
    if result is None:  # a concurrent build made it meanwhile
        return FigureEnd(name, done.record, ran=False)
    if done.record:
        cached.store.clear_failure(name)
        logger.info("figgen: %s ran in %.1f s", name, done.record.seconds)
        for warning in (result.manifest or {}).get("intermediates", {}).get("warnings", []):
            logger.warning("figgen: %s: %s", name, warning)  # it went on, but say so
        return FigureEnd(name, done.record, True, done.record.seconds,
                         compute_seconds(result.manifest or {}))
    logger.info("figgen: %s failed after %.1f s: %s", name, result.seconds, result.cause)
    # The last good record, shown marked stale, when its image is still there.
    shown = done.previous if done.previous and cached.intact(done.previous) else None
    return FigureEnd(name, shown, True, result.seconds,
                     failure=RunFailure(result.cause, result.detail, result.hint))


def compute_seconds(manifest: Mapping[str, Any]) -> float:
    """A run's own compute time: its main(), less the waits for others' intermediates."""
    waited = manifest.get("intermediates", {}).get("waited", 0.0)
    return round(float(manifest.get("seconds", 0.0)) - float(waited), 3)


def _run(
    context: RunContext, job: Pending, previous: Record | None, lane: schedule.Lane,
    idle: Callable[[bool], None],
) -> tuple[Record | None, RunResult]:
    """Run one figure in a scratch folder and, on success, cache and record it."""
    settings, cached, figure, expected = context.settings, context.cache, job.figure, job.want
    before = {rel: cached.hash(rel) for rel in expected.inputs}
    # Hash now (Hashes remembers) the modules the last run imported: a module edited while the
    # script runs is then recorded as it was read, and the next build sees the edit.
    for rel in previous.inputs if previous else ():
        cached.hash(rel)
    prefix = figure.name.replace("/", "-")
    with tempfile.TemporaryDirectory(dir=context.scratch, prefix=prefix) as tmp:
        placement = run.Placement({**context.env, **lane.env}, context.server)
        reports = _reports(context.board.for_figure(figure.name), idle)
        result = context.runner(job, Path(tmp), placement, reports) if context.runner else \
            run_figure(figure, settings, Path(tmp), reports, placement)
        context.board.done(figure.name)
        record, result = _stored(Made(figure, expected, result, before), cached)
    if record is None:
        read = _inputs((*static_imports(settings, figure.script), *(result.modules or ())),
                       before, cached)
        environment = {**(result.distributions or {}), **expected.environment}
        cached.store.save_failure(Failure(figure.name, result.cause, result.detail, read,
                                   expected.params, environment))
        return None, result
    return record, result


def _stored(made: Made, cached: Cache) -> tuple[Record | None, RunResult]:
    """Store a run's output and record it; None and the cause when its output is malformed."""
    result = made.result
    # A draft's objects are trimmed (pipeline.tidy_drafts, Store.tidy) under the store's
    # objects lock: its image must not go between being put and being recorded.
    storing = cached.store.in_use() if drafting(made.expected.environment) \
        else contextlib.nullcontext()
    with storing:
        try:
            record = _record(made, cached) if result.ok else None
        except (OSError, KeyError, TypeError, ValueError) as err:  # a malformed manifest
            return None, RunResult(False, result.seconds, result.out_dir,
                                   cause=f"bad output: {err!r}")
        if record is not None:
            cached.store.save(record)
    return record, result


def static_imports(settings: FiggenSettings, script: Path) -> tuple[str, ...]:
    """The project files a script imports, read from their source (pelican_figgen.imports)."""
    # What a failed run read, when it could not say: a time-out, a crash or a kill leaves no
    # list. Read by the scripts' interpreter, as the warm server reads them: the plugin does
    # not import the blog's library. Imports inside functions count: the run may have got there.
    argv = [settings.python, "-m", "pelican_figgen.imports", str(settings.root), str(script)]
    try:
        out = subprocess.run(argv, cwd=settings.root, env=script_env(settings),
                             capture_output=True, text=True, timeout=STATIC_TIMEOUT, check=True)
        found = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        logger.warning("figgen: cannot read what %s imports (%s): keep-going builds will not "
                       "run it again for an edit to a module it imports", script, err)
        return ()
    return tuple(str(rel) for rel in found)


def _reports(
    bars: Callable[[Mapping[str, Any]], None] | None, idle: Callable[[bool], None]
) -> Callable[[Mapping[str, Any]], None]:
    """What to do with a run's reports: say when it waits for another figure, else draw bars."""

    def report(message: Mapping[str, Any]) -> None:
        if "waiting" in message:  # for another figure's intermediate: its core is free
            idle(bool(message["waiting"]))
        elif bars:
            bars(message)

    return report


def _inputs(
    modules: Iterable[str], before: dict[str, str | None], cached: Cache
) -> dict[str, str | None]:
    """Every input a run read, by hash: the files it imported, then its script and data."""
    # A file outside the root has a portable name (pelican_figgen.importpath), found here again.
    return {**{rel: cached.hash(rel) for rel in modules}, **before}


@dataclass(frozen=True)
class Made:
    """A successful run, with what it was expected to match and its inputs' hashes before."""

    figure: Figure
    expected: Expected
    result: RunResult
    before: dict[str, str | None]  # script and data, hashed before it ran


def _record(made: Made, cached: Cache) -> Record:
    """Put a successful run's image in the store and describe it as a record."""
    figure, expected, result = made.figure, made.expected, made.result
    manifest = result.manifest or {}
    # A draft is never taken for a real result, nor a real result for a draft.
    if bool(manifest.get(contract.DRAFTED)) != drafting(expected.environment):
        raise ValueError(f"a {'draft' if manifest.get(contract.DRAFTED) else 'full'} run's "
                         "manifest where the other was expected")
    image = _put_render(manifest[contract.IMAGE], result.out_dir, cached.store)
    renders = {str(role): _put_render(entry, result.out_dir, cached.store)
               for role, entry in manifest.get(contract.RENDERS, {}).items()}
    assets = {str(role): cached.store.put_asset(_own_file(result.out_dir, entry["file"]))
              for role, entry in manifest.get(contract.ASSETS, {}).items()}
    made_by = {"device": str(manifest.get("device", "unknown")),
               **provenance.source_commit(cached.root)}
    memory = manifest.get("peak_rss_mib")
    return Record(
        name=figure.name,
        inputs=_inputs(manifest.get(contract.MODULES, []), made.before, cached),
        params=expected.params,
        # The distributions the run imported, by version, beside Python and the settings'.
        environment={**{str(k): str(v)
                        for k, v in manifest.get(contract.DISTRIBUTIONS, {}).items()},
                     **expected.environment},
        image=image,
        fields=manifest.get("fields", {}),
        seconds=result.seconds,
        provenance=made_by,
        memory=float(memory) if isinstance(memory, int | float) else None,
        assets=assets,
        renders=renders,
    )


def _put_render(saved: Mapping[str, Any], folder: Path, store: Store) -> Image:
    """Put one render of a run (its PNG, and its WebP twin if it made one) in the store."""
    image = store.put(_own_file(folder, saved["file"]), int(saved["width"]),
                      int(saved["height"]), int(saved.get("density", 1)))
    if "webp" not in saved:
        return image
    return replace(image, webp=store.put_asset(_own_file(folder, saved["webp"])).sha256)


def _own_file(folder: Path, name: str) -> Path:
    """A file the run left in its own output folder; ValueError for any other name."""
    if not run.own_name(name):
        raise ValueError(f"the manifest names a file outside the run's folder: {name!r}")
    return folder / name


