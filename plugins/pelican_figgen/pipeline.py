"""The build: discover references, run what is out of date, cache it, embed every figure.

A failing figure never stops the others: every error is collected and the figures that worked
are embedded. Then, with on_error "strict", the build fails once with a summary of all that
went wrong; with "keep-going", each failed figure shows its last good image marked stale, or
a box with its error, and the build succeeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cache, discover, embed, launch, progress, provenance, schedule
from .cache import Expected, Failure, Hashes, Record, Store
from .discover import Figure, FigureRef
from .errors import FigureBuildError, FigureError
from .launch import WarmServer
from .markdown_ext import FigureReferenceExtension
from .run import RunResult, run_figure, script_env
from .settings import FiggenSettings, merge

logger = logging.getLogger(__name__)
CONTENT_LISTS = (  # every list of content objects Pelican's generators keep
    "articles", "translations", "drafts", "drafts_translations", "hidden_articles",
    "hidden_translations", "pages", "hidden_pages", "draft_pages", "draft_translations",
)


@dataclass
class Report:
    """What this build did with each figure; saved as last-build.json in the cache."""

    ran: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    causes: dict[str, str] = field(default_factory=dict)  # failed figure -> why
    # Seconds each figure that ran spent in its own main(), less waits for another figure's
    # intermediate: the part of a run that start-up and imports do not explain.
    compute: dict[str, float] = field(default_factory=dict)
    preloaded: list[str] = field(default_factory=list)  # what the warm server imported


@dataclass
class Outcome:
    """The records to embed (fresh, or the last good one), and what happened to each figure."""

    records: dict[str, Record] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # shown although stale -> why
    errors: list[FigureError] = field(default_factory=list)
    report: Report = field(default_factory=Report)
    store: Store | None = None  # where the records' images are


def add_markdown_extension(pelican: Any) -> None:
    """Check FIGGEN early and teach Pelican's Markdown reader the figure reference syntax."""
    merge(pelican.settings.get("FIGGEN"), pelican.settings["PATH"])
    # A copy: Pelican's default MARKDOWN dict is shared between Pelican instances.
    md = dict(pelican.settings["MARKDOWN"])
    extensions = list(md.get("extensions", []))
    if not any(isinstance(e, FigureReferenceExtension) for e in extensions):
        extensions.append(FigureReferenceExtension())
    pelican.settings["MARKDOWN"] = md | {"extensions": extensions}


def build_figures(generators: list[Any]) -> None:
    """Make every referenced figure and embed it; in strict mode, exit once if any failed."""
    settings = merge(generators[0].settings.get("FIGGEN"), generators[0].settings["PATH"])
    contents = list(_contents(generators))
    errors: list[FigureError] = []
    refs = _discover(contents, settings, errors)
    figures = _resolve(refs, settings, errors)
    articles = articles_of(refs.values())
    if settings.mode == "frozen":
        outcome = thaw(figures, settings, articles)
    else:
        outcome = make(figures, settings, articles)
    errors.extend(outcome.errors)
    _embed(contents, refs, figures, outcome, generators[0], settings, errors)
    save_report(settings, outcome)
    finish(errors, settings)


def finish(errors: list[FigureError], settings: FiggenSettings) -> None:
    """Log every error; in strict mode, end the build non-zero with a summary."""
    strict = settings.on_error == "strict"
    for error in errors:
        logger.log(logging.ERROR if strict else logging.WARNING, "figgen: %s", error.describe())
    if errors and strict:
        failure = FigureBuildError(errors)
        logger.error("figgen: %s", failure.summary)
        raise failure
    if errors:
        logger.warning("figgen: %d figure error(s) shown on the pages (keep-going)", len(errors))


def _contents(generators: Iterable[Any]) -> Iterator[Any]:
    """Every article and page (drafts, hidden and translations too), once each."""
    seen: set[int] = set()
    for generator in generators:
        for attr in CONTENT_LISTS:
            for content in getattr(generator, attr, []):
                if id(content) not in seen and hasattr(content, "_content"):
                    seen.add(id(content))
                    yield content


def _article(content: Any, settings: FiggenSettings) -> str:
    """The article's source path as messages show it."""
    path = Path(content.source_path)
    return path.relative_to(settings.root).as_posix() if path.is_relative_to(settings.root) \
        else str(path)


def _discover(
    contents: list[Any], settings: FiggenSettings, errors: list[FigureError]
) -> dict[int, list[FigureRef]]:
    """Find the references of every content object, keyed by the object's id."""
    refs = {}
    for content in contents:
        try:
            refs[id(content)] = discover.find_refs(_article(content, settings), content._content)
        except FigureError as err:
            errors.append(err)
    return refs


def _resolve(
    refs: dict[int, list[FigureRef]], settings: FiggenSettings, errors: list[FigureError]
) -> dict[str, Figure]:
    """Resolve every distinct figure name to its script."""
    return resolve_all((r for rs in refs.values() for r in rs), settings, errors)


def resolve_all(
    refs: Iterable[FigureRef], settings: FiggenSettings, errors: list[FigureError]
) -> dict[str, Figure]:
    """Resolve each distinct name among the references, collecting errors."""
    names = discover.script_names(settings.scripts)
    figures: dict[str, Figure] = {}
    for ref in refs:
        try:
            figures.setdefault(ref.name, discover.resolve(ref, settings, names))
        except FigureError as err:
            errors.append(err)
    return figures


def articles_of(refs: Iterable[list[FigureRef]]) -> dict[str, list[str]]:
    """The articles that reference each figure name, sorted."""
    found: dict[str, set[str]] = {}
    for ref in (r for rs in refs for r in rs):
        found.setdefault(ref.name, set()).add(ref.article)
    return {name: sorted(articles) for name, articles in found.items()}


def expected(figure: Figure, settings: FiggenSettings, environment: Mapping[str, str]) -> Expected:
    """What a figure's record must match to be fresh."""
    return Expected(
        cache.params_key(settings.seed, figure.params),
        environment,
        tuple(_rel(p, settings) for p in (figure.script, *figure.data)),
    )


@dataclass(frozen=True)
class Pending:
    """A figure whose record was not fresh when the build looked: it may have to run."""

    figure: Figure
    want: Expected
    previous: Record | None
    reason: str  # why it is not fresh, for the log


@dataclass(frozen=True)
class Done:
    """How a pending figure ended: a new record, a failure, or found fresh after all."""

    record: Record | None
    result: RunResult | None  # None: a concurrent build had made it meanwhile
    previous: Record | None  # the last good record, shown (marked stale) if this run failed


@dataclass(frozen=True)
class Runner:
    """What every run of one build shares: settings, cache, warm server, progress, extras."""

    settings: FiggenSettings
    store: Store
    hashes: Hashes
    force: bool
    server: WarmServer | None
    board: progress.Board
    env: Mapping[str, str]  # added to every script's environment


def make(
    figures: Mapping[str, Figure],
    settings: FiggenSettings,
    articles: Mapping[str, list[str]],
    force: bool = False,
) -> Outcome:
    """Bring every figure up to date: reuse its record or run its script (always if force)."""
    store, hashes = Store(settings.cache_dir), Hashes()
    environment = run_environment(settings)
    outcome = Outcome(store=store)
    pending: dict[str, Pending] = {}
    for name, figure in figures.items():
        want = expected(figure, settings, environment)
        verdict = cache.verdict(store.load(name), settings.root, want, store, hashes)
        if verdict.fresh and verdict.record and not force:
            _cached(outcome, verdict.record)
        else:
            pending[name] = Pending(figure, want, verdict.record,
                                    "forced" if force else verdict.reason)
    done = _bring_up_to_date(pending, settings, store, hashes, force, environment, outcome)
    for name in pending:  # in the figures' order, however the pool ran them
        end = done[name]
        if end.result is None and end.record:
            _cached(outcome, end.record)
        elif end.result is not None:
            _account(outcome, name, end.record, end.result, end.previous,
                     articles.get(name, []), hashes)
    return outcome


def run_environment(settings: FiggenSettings) -> dict[str, str]:
    """What a figure's bytes depend on besides its inputs: library versions, thread count."""
    return {**cache.environment(settings.python, settings.versions),
            "threads": str(settings.threads)}


def _bring_up_to_date(
    pending: Mapping[str, Pending], settings: FiggenSettings, store: Store, hashes: Hashes,
    force: bool, environment: Mapping[str, str], outcome: Outcome,
) -> dict[str, Done]:
    """Run the pending figures in the pool (GPU ones in their queue), slowest first."""
    if not pending:
        return {}
    retry = force or settings.on_error == "strict"
    scripts = [job.figure.script for name, job in pending.items()
               if retry or not _known_failure(store, name, settings, job.want, hashes)]
    jobs = [schedule.Job(name, job.figure.gpu, job.previous.seconds if job.previous else None)
            for name, job in pending.items()]
    gpus = _gpus(settings) if scripts else ()
    extra = {"FIGGEN_INTERMEDIATES": str(settings.cache_dir / "intermediates"),
             "FIGGEN_ENVIRONMENT": json.dumps(environment, sort_keys=True)}
    with _warm_server(settings, scripts, store.scratch()) as server, progress.board() as board:
        runner = Runner(settings, store, hashes, force, server, board, extra)
        outcome.report.preloaded = list(server.ready.get("preloaded", [])) if server else []
        return schedule.run_all(jobs, settings.jobs, gpus,
                                lambda job, lane: _attempt(runner, job.name, pending[job.name],
                                                           lane))


def _gpus(settings: FiggenSettings) -> tuple[str, ...]:
    """The GPUs of this build: the setting's list, or those found."""
    return schedule.detect_gpus() if settings.gpus == "auto" else tuple(settings.gpus)


@contextlib.contextmanager
def _warm_server(
    settings: FiggenSettings, scripts: list[Path], scratch: Path
) -> Iterator[WarmServer | None]:
    """The build's warm server, when two or more scripts will run; else None."""
    if not settings.preload or len(scripts) < 2 or not launch.available():
        yield None
        return
    start = time.perf_counter()
    try:
        server = WarmServer(settings.python, scripts, settings.root, script_env(settings),
                            scratch / launch.SERVER_LOG)
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


def _attempt(runner: Runner, name: str, job: Pending, lane: schedule.Lane) -> Done:
    """Under the figure's lock: find it fresh after all, or a known failure, or run it."""
    store, settings, hashes = runner.store, runner.settings, runner.hashes
    with store.lock(name):  # a concurrent build may be making it: wait, then look again
        verdict = cache.verdict(store.load(name), settings.root, job.want, store, hashes)
        if verdict.fresh and verdict.record and not runner.force:
            return Done(verdict.record, None, verdict.record)
        # Strict builds (make site, CI) try every figure; others skip a failure already
        # known, while nothing it read has changed.
        retry = runner.force or settings.on_error == "strict"
        known = None if retry else _known_failure(store, name, settings, job.want, hashes)
        if known:
            return Done(None, known, verdict.record)
        logger.info("figgen: running %s (%s)", name, job.reason)
        record, result = _run(runner, job.figure, job.want, verdict.record, lane)
        return Done(record, result, verdict.record)


def _known_failure(
    store: Store, name: str, settings: FiggenSettings, want: Expected, hashes: Hashes
) -> RunResult | None:
    """The last run's failure, when nothing that run read has changed since; else None."""
    failure = store.load_failure(name)
    past = failure.as_record() if failure else None
    if not failure or not past or not cache.verdict(past, settings.root, want, store, hashes).fresh:
        return None
    cause = (f"{failure.cause} (in its last run; nothing it reads changed since, so it did "
             f"not re-run: `python -m pelican_figgen run --force {name}` retries)")
    return RunResult(False, 0.0, store.path, cause=cause, detail=failure.detail)


def _cached(outcome: Outcome, record: Record) -> None:
    """Note a figure taken, fresh, from the cache."""
    outcome.report.cached.append(record.name)
    outcome.records[record.name] = record


def _account(
    outcome: Outcome,
    name: str,
    record: Record | None,
    result: RunResult,
    previous: Record | None,
    articles: list[str],
    hashes: Hashes,
) -> None:
    """Note a run's result: its record, or its errors and the last good record to show."""
    assert outcome.store is not None
    if record:
        outcome.report.ran[name] = record.seconds
        outcome.report.compute[name] = compute_seconds(result.manifest or {})
        outcome.records[name] = record
        outcome.store.clear_failure(name)
        logger.info("figgen: %s ran in %.1f s", name, record.seconds)
        return
    outcome.report.failed.append(name)
    outcome.report.causes[name] = result.cause
    outcome.errors.extend(FigureError(a, name, result.cause, result.detail) for a in articles)
    logger.info("figgen: %s failed after %.1f s: %s", name, result.seconds, result.cause)
    if previous and cache.intact(previous, outcome.store, hashes):
        outcome.records[name] = previous
        outcome.stale[name] = f"last run failed ({result.cause})"


def compute_seconds(manifest: Mapping[str, Any]) -> float:
    """A run's own compute time: its main(), less the waits for others' intermediates."""
    waited = manifest.get("intermediates", {}).get("waited", 0.0)
    return round(float(manifest.get("seconds", 0.0)) - float(waited), 3)


def _run(
    runner: Runner, figure: Figure, expected: Expected, previous: Record | None,
    lane: schedule.Lane,
) -> tuple[Record | None, RunResult]:
    """Run one figure in a scratch folder and, on success, cache and record it."""
    settings, store, hashes = runner.settings, runner.store, runner.hashes
    before = {rel: hashes(settings.root / rel) for rel in expected.inputs}
    # Hash now (Hashes remembers) the modules the last run imported: a module edited while the
    # script runs is then recorded as it was read, and the next build sees the edit.
    for rel in previous.inputs if previous else ():
        hashes(settings.root / rel)
    prefix = figure.name.replace("/", "-")
    with tempfile.TemporaryDirectory(dir=store.scratch(), prefix=prefix) as tmp:
        result = run_figure(figure, settings, Path(tmp), runner.board.for_figure(figure.name),
                            {**runner.env, **lane.env}, runner.server)
        runner.board.done(figure.name)
        try:
            record = _record(figure, expected, settings, store, hashes, result, before) \
                if result.ok else None
        except (OSError, KeyError, TypeError, ValueError) as err:  # a malformed manifest
            record = None
            result = RunResult(False, result.seconds, result.out_dir, f"bad output: {err!r}")
    if record is None:
        read = None if result.modules is None else \
            _inputs(result.modules, before, settings, hashes)
        store.save_failure(Failure(figure.name, result.cause, result.detail, read,
                                   expected.params, expected.environment))
        return None, result
    store.save(record)
    return record, result


def _inputs(
    modules: Iterable[str], before: dict[str, str | None], settings: FiggenSettings,
    hashes: Hashes,
) -> dict[str, str | None]:
    """Every input a run read, by hash: the modules it imported, then its script and data."""
    return {**{rel: hashes(settings.root / rel) for rel in modules}, **before}


def _record(
    figure: Figure,
    expected: Expected,
    settings: FiggenSettings,
    store: Store,
    hashes: Hashes,
    result: RunResult,
    before: dict[str, str | None],
) -> Record:
    """Put a successful run's images in the store and describe it as a record."""
    manifest = result.manifest or {}
    images = tuple(
        store.put(result.out_dir / i["file"], int(i["width"]), int(i["height"]))
        for i in manifest["images"]
    )
    made = {"device": str(manifest.get("device", "unknown")),
            **provenance.source_commit(settings.root)}
    return Record(
        name=figure.name,
        inputs=_inputs(manifest.get("modules", []), before, settings, hashes),
        params=expected.params,
        environment=expected.environment,
        images=images,
        fields=manifest.get("fields", {}),
        seconds=result.seconds,
        provenance=made,
    )


def thaw(
    figures: Mapping[str, Figure], settings: FiggenSettings, articles: Mapping[str, list[str]]
) -> Outcome:
    """Frozen mode: take every figure from the freeze and run nothing."""
    store, hashes = Store(settings.freeze_dir), Hashes()
    outcome = Outcome(store=store)
    for name, figure in figures.items():
        record = store.load(name)
        problem = "" if record else f"missing from the frozen cache {settings.freeze_dir}"
        if record and not cache.intact(record, store, hashes):
            problem = "its frozen image is missing or damaged"
        if problem:
            cause = f"{problem} (frozen mode runs no script: freeze it where scripts can run)"
            outcome.report.failed.append(name)
            outcome.report.causes[name] = cause
            outcome.errors.extend(FigureError(a, name, cause) for a in articles.get(name, []))
            continue
        assert record is not None
        # Library versions may differ here (no torch at all): only the sources must match.
        verdict = cache.verdict(record, settings.root, expected(figure, settings, {}), store,
                                hashes)
        if not verdict.fresh:
            outcome.stale[name] = f"frozen before {verdict.reason}"
            logger.warning("figgen: frozen figure %s is stale: %s", name, verdict.reason)
        _cached(outcome, record)
    return outcome


def _embed(
    contents: list[Any],
    refs: dict[int, list[FigureRef]],
    figures: dict[str, Figure],
    outcome: Outcome,
    generator: Any,
    settings: FiggenSettings,
    errors: list[FigureError],
) -> None:
    """Replace each reference marker with its figure's HTML, or with its error box."""
    published: dict[str, embed.Published] = {}
    static_content = generator.context["static_content"]
    # A build killed while copying leaves a half image aside, which would be published.
    cache.drop_orphans(Path(generator.output_path) / settings.output_dir)
    for content in contents:
        html = content._content
        for index, ref in enumerate(refs.get(id(content), [])):
            try:
                tag = _figure_tag(ref, index, figures, outcome, published, generator, settings,
                                  static_content)
            except FigureError as err:
                errors.append(err)
                tag = None
            if tag is None:
                mine = [e for e in errors if (e.article, e.reference) == (ref.article, ref.name)]
                tag = embed.error_html(ref, mine)
            html = html.replace(ref.marker, tag, 1)
        content._content = html


def _figure_tag(
    ref: FigureRef,
    index: int,
    figures: dict[str, Figure],
    outcome: Outcome,
    published: dict[str, embed.Published],
    generator: Any,
    settings: FiggenSettings,
    static_content: Any,
) -> str | None:
    """The <figure> of one reference; None when its figure has no record to show."""
    record = outcome.records.get(ref.name)
    if record is None or outcome.store is None:
        return None
    figure = figures[ref.name]
    if ref.name not in published:
        published[ref.name] = embed.publish(
            figure, record, outcome.store, settings, Path(generator.output_path), static_content
        )
    script = _rel(figure.script, settings)
    stale = outcome.stale.get(ref.name, "")
    return embed.figure_html(ref, record, published[ref.name], script, index > 0, stale)


def _rel(path: Path, settings: FiggenSettings) -> str:
    """A path relative to the project root, as records store it."""
    return path.relative_to(settings.root).as_posix()


def save_report(settings: FiggenSettings, outcome: Outcome) -> None:
    """Log what each figure cost, slowest first, and keep the report beside the cache."""
    report = outcome.report
    logger.info(
        "figgen: %d ran, %d cached, %d failed",
        len(report.ran), len(report.cached), len(report.failed),
    )
    if report.ran or report.failed:  # a no-op build needs no table
        logger.info("figgen: time per figure, slowest first:\n%s", "\n".join(report_lines(outcome)))
    cache.write_atomic(
        settings.cache_dir / "last-build.json", json.dumps(report.__dict__, indent=1)
    )


def report_lines(outcome: Outcome) -> list[str]:
    """One line per figure, slowest first: name, what happened, seconds (cached: last run)."""
    report, rows = outcome.report, []
    for name, seconds in report.ran.items():
        rows.append((seconds, name, "ran"))
    for name in report.cached:
        rows.append((outcome.records[name].seconds, name, "cached"))
    for name in report.failed:
        rows.append((0.0, name, "FAILED"))
    width = max((len(name) for _, name, _ in rows), default=0)
    return [f"  {name:<{width}}  {state:<6} {seconds:7.1f} s"
            for seconds, name, state in sorted(rows, key=lambda r: (-r[0], r[1]))]
