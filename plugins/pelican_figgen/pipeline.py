"""The build: discover references, run what is out of date, cache it, embed every figure.

A failing figure never stops the others: every error is collected, the figures that worked
are embedded, and the build then fails once with a summary of all that went wrong.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cache, discover, embed
from .cache import Expected, Hashes, Record, Store
from .discover import Figure, FigureRef
from .errors import FigureBuildError, FigureError
from .markdown_ext import FigureReferenceExtension
from .run import RunResult, run_figure
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
    """Make every referenced figure and embed it; raise once if any figure failed."""
    settings = merge(generators[0].settings.get("FIGGEN"), generators[0].settings["PATH"])
    contents = list(_contents(generators))
    errors: list[FigureError] = []
    refs = _discover(contents, settings, errors)
    figures = _resolve(refs, settings, errors)
    report = Report()
    records = _make(figures, refs, settings, report, errors)
    _embed(contents, refs, figures, records, generators[0], settings, errors)
    _save_report(settings, report)
    for error in errors:
        logger.error("figgen: %s", error.describe())
    if errors:
        raise FigureBuildError(errors)


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
    names = discover.script_names(settings.scripts)
    figures: dict[str, Figure] = {}
    for ref in (r for rs in refs.values() for r in rs):
        try:
            figures.setdefault(ref.name, discover.resolve(ref, settings, names))
        except FigureError as err:
            errors.append(err)
    return figures


def _make(
    figures: dict[str, Figure],
    refs: dict[int, list[FigureRef]],
    settings: FiggenSettings,
    report: Report,
    errors: list[FigureError],
) -> dict[str, Record]:
    """Bring every figure up to date: reuse its record or run its script."""
    store, hashes = Store(settings.cache_dir), Hashes()
    environment = cache.environment(settings.python, settings.versions)
    records = {}
    for name, figure in figures.items():
        expected = Expected(
            cache.params_key(settings.seed, figure.params),
            environment,
            tuple(_rel(p, settings) for p in (figure.script, *figure.data)),
        )
        verdict = cache.verdict(store.load(name), settings.root, expected, store, hashes)
        if verdict.fresh and verdict.record:
            report.cached.append(name)
            records[name] = verdict.record
            continue
        logger.info("figgen: running %s (%s)", name, verdict.reason)
        try:
            record, error = _run(figure, expected, settings, store, hashes, verdict.record)
        except (OSError, KeyError, TypeError, ValueError) as err:  # a malformed manifest
            record = None
            error = RunResult(False, 0.0, settings.cache_dir, cause=f"bad output: {err!r}")
        if record:
            report.ran[name] = record.seconds
            records[name] = record
            logger.info("figgen: %s done in %.1f s", name, record.seconds)
        else:
            report.failed.append(name)
            errors.extend(_blame(error, name, refs))
    return records


def _run(
    figure: Figure,
    expected: Expected,
    settings: FiggenSettings,
    store: Store,
    hashes: Hashes,
    previous: Record | None,
) -> tuple[Record | None, RunResult]:
    """Run one figure in a scratch folder and, on success, cache and record it."""
    before = {rel: hashes(settings.root / rel) for rel in expected.inputs}
    # Hash now (Hashes remembers) the modules the last run imported: a module edited while the
    # script runs is then recorded as it was read, and the next build sees the edit.
    for rel in previous.inputs if previous else ():
        hashes(settings.root / rel)
    scratch = settings.cache_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=figure.name.replace("/", "-")) as tmp:
        result = run_figure(figure, settings, Path(tmp))
        if not result.ok or result.manifest is None:
            return None, result
        manifest = result.manifest
        images = tuple(
            store.put(result.out_dir / i["file"], int(i["width"]), int(i["height"]))
            for i in manifest["images"]
        )
    modules = {rel: hashes(settings.root / rel) for rel in manifest.get("modules", [])}
    record = Record(
        name=figure.name,
        inputs={**modules, **before},
        params=expected.params,
        environment=expected.environment,
        images=images,
        fields=manifest.get("fields", {}),
        seconds=result.seconds,
    )
    store.save(record)
    return record, result


def _blame(result: RunResult, name: str, refs: dict[int, list[FigureRef]]) -> list[FigureError]:
    """One error per article that references a failed figure."""
    articles = sorted({r.article for rs in refs.values() for r in rs if r.name == name})
    return [FigureError(a, name, result.cause, result.detail) for a in articles]


def _embed(
    contents: list[Any],
    refs: dict[int, list[FigureRef]],
    figures: dict[str, Figure],
    records: dict[str, Record],
    generator: Any,
    settings: FiggenSettings,
    errors: list[FigureError],
) -> None:
    """Replace each reference marker with its figure's HTML."""
    store, published = Store(settings.cache_dir), {}
    static_content = generator.context["static_content"]
    for content in contents:
        html = content._content
        for index, ref in enumerate(refs.get(id(content), [])):
            if ref.name not in records:
                continue  # its failure is already among the errors
            figure, record = figures[ref.name], records[ref.name]
            if ref.name not in published:
                published[ref.name] = embed.publish(
                    figure, record, store, settings, Path(generator.output_path), static_content
                )
            script = _rel(figure.script, settings)
            try:
                tag = embed.figure_html(ref, record, published[ref.name], script, index > 0)
            except FigureError as err:
                errors.append(err)
                continue
            html = html.replace(ref.marker, tag, 1)
        content._content = html


def _rel(path: Path, settings: FiggenSettings) -> str:
    """A path relative to the project root, as records store it."""
    return path.relative_to(settings.root).as_posix()


def _save_report(settings: FiggenSettings, report: Report) -> None:
    """Log a one-line summary and keep the report beside the cache."""
    logger.info(
        "figgen: %d ran, %d cached, %d failed",
        len(report.ran), len(report.cached), len(report.failed),
    )
    cache.write_atomic(
        settings.cache_dir / "last-build.json", json.dumps(report.__dict__, indent=1)
    )
