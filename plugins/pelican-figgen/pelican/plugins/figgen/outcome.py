"""What a build made of its figures: the records to embed, what failed, and the report."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pelican_figgen import contract

from . import cache
from .cache import Record, Store
from .errors import FigureError
from .settings import FiggenSettings

if TYPE_CHECKING:  # the run phase's own types: a no-op build never imports it
    from .execute import RunPhase

logger = logging.getLogger(__name__)


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

    store: Store  # where the records' images are
    draft_store: Store | None = None  # where the drafts' images are (make serve's preview)
    records: dict[str, Record] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # shown although stale -> why
    errors: list[FigureError] = field(default_factory=list)
    report: Report = field(default_factory=Report)

    def take_cached(self, record: Record) -> None:
        """Note a figure taken, fresh, from the cache."""
        self.report.cached.append(record.name)
        self.records[record.name] = record

    def take_failed(self, name: str, cause: str, errors: Iterable[FigureError]) -> None:
        """Note a figure that has nothing fresh to show, and the errors its articles get."""
        self.report.failed.append(name)
        self.report.causes[name] = cause
        self.errors.extend(errors)

    def take_run(self, phase: RunPhase, articles: dict[str, list[str]]) -> None:
        """Fold the run phase's results in, each failure once per article that uses it."""
        self.report.preloaded = list(phase.preloaded)
        for end in phase.ends:
            if end.failure is not None:
                fail = end.failure
                self.take_failed(end.name, fail.cause, (
                    FigureError(a, end.name, fail.cause, fail.detail, fail.hint)
                    for a in articles.get(end.name, [])))
                if end.record:
                    self.records[end.name] = end.record
                    self.stale[end.name] = f"its last run failed: {fail.cause}"
            elif not end.ran and end.record:
                self.take_cached(end.record)
            elif end.record:
                self.report.ran[end.name] = end.seconds
                self.report.compute[end.name] = end.compute
                self.records[end.name] = end.record


def drafting(environment: Mapping[str, str]) -> bool:
    """Whether a run environment (a key's) is a draft's (make serve's preview, pipeline.DRAFT)."""
    return environment.get(contract.DRAFTED) == "true"


def is_draft(record: Record) -> bool:
    """Whether a record is a draft's."""
    return drafting(record.environment)


def save_report(settings: FiggenSettings, outcome: Outcome) -> None:
    """Log what each figure cost, slowest first, and keep the report beside the cache."""
    report = outcome.report
    logger.info(
        "figgen: %d ran, %d cached, %d failed",
        len(report.ran), len(report.cached), len(report.failed),
    )
    if report.ran or report.failed:  # a no-op build needs no table
        logger.info("figgen: time per figure, slowest first:\n%s", "\n".join(report_lines(outcome)))
    cache.write_optional(settings.cache_dir / "last-build.json",
                         json.dumps(report.__dict__, indent=1), settings.cache_dir)


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
