"""The figures without a site build: list their state, run them, drop the cache, freeze, verify.

    pelican-figgen [-s pelicanconf.py] COMMAND   (or python -m pelican.plugins.figgen)
      list                      every figure script: fresh, stale and why, or failed
      run [NAME ...] [--force]  bring figures up to date (default: every referenced one)
      clean                     drop the figure cache: every figure re-runs next time
      freeze                    bring every referenced figure up to date and copy it into the
                                freeze (FIGGEN["freeze_dir"]), which `mode: frozen` builds from
      verify                    re-run every frozen figure; compare: identical, close, drifted

Settings and the content folder come from the Pelican settings file, as for a build.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import markdown
from rich.logging import RichHandler

from . import cache, discover, pipeline, progress, verify
from .cache import Cache, Expected, Hashes, Record, Store, copy_unless_same
from .discover import Figure, FigureRef
from .errors import FigureError, SettingsError
from .markdown_ext import FigureReferenceExtension
from .outcome import Outcome, save_report
from .settings import FiggenSettings, merge

logger = logging.getLogger(__name__)
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mkd", ".mdown"}  # what Pelican's reader reads
COMMAND_LINE = "(command line)"  # the "article" of a figure named on the command line


@dataclass(frozen=True)
class Project:
    """The settings and every figure reference in the content."""

    settings: FiggenSettings
    refs: tuple[FigureRef, ...]
    errors: tuple[FigureError, ...]  # references that are wrong in themselves

    @functools.cached_property
    def articles(self) -> dict[str, list[str]]:
        """The articles that reference each figure (read in loops: computed once)."""
        return pipeline.articles_of([list(self.refs)])


def load(settings_file: Path) -> Project:
    """Read the Pelican settings and find the figure references of every Markdown file."""
    from pelican.settings import read_settings

    conf = read_settings(str(settings_file))
    settings = merge(conf.get("FIGGEN"), conf["PATH"])
    md = _markdown(conf["MARKDOWN"])
    refs: list[FigureRef] = []
    errors: list[FigureError] = []
    for path in sorted(Path(conf["PATH"]).rglob("*")):
        if path.suffix in MARKDOWN_SUFFIXES and path.is_file():
            article = path.resolve().relative_to(settings.root).as_posix()
            html = md.reset().convert(path.read_text("utf-8"))
            errors += discover.stray_errors(article, html)
            refs += discover.find_refs(article, html)
    return Project(settings, tuple(refs), tuple(errors))


def _markdown(config: dict) -> markdown.Markdown:
    """A Markdown converter configured as Pelican's reader, plus the reference syntax."""
    configs = config.get("extension_configs", {})
    extensions = [*config.get("extensions", []), *configs, FigureReferenceExtension()]
    return markdown.Markdown(extensions=extensions, extension_configs=configs)


def figures(project: Project, names: list[str], errors: list[FigureError]) -> dict[str, Figure]:
    """The figures to act on: the named ones, or every referenced one."""
    s = project.settings
    if not names:
        errors += project.errors
        return pipeline.resolve_all(project.refs, s, errors)
    known = discover.script_names(s.scripts)
    found = {}
    for name in names:
        where = project.articles.get(name) or [COMMAND_LINE]
        try:
            found[name] = discover.load_figure(where[0], name, s, known)
        except FigureError as err:
            errors += [FigureError(article, name, err.cause, err.detail, err.hint)
                       for article in where]
    return found


def cmd_list(project: Project, args: argparse.Namespace) -> int:
    """Print every figure script with its state and the articles that use it."""
    s, articles = project.settings, project.articles
    errors: list[FigureError] = []
    names = sorted(set(discover.script_names(s.scripts)) | set(articles))
    found = figures(project, names, errors)
    cached = Cache(s.root, Store(s.cache_dir), Hashes(python=s.python))
    installed = cache.installed(s.python, s.root)
    want = functools.partial(pipeline.expected, settings=s,
                             environment=pipeline.run_environment(s, installed),
                             installed=installed)
    width = max(map(len, names), default=0)
    for name in names:
        used = ", ".join(articles.get(name, [])) or "not referenced"
        print(f"{name:<{width}}  {_state(found.get(name), cached, want)}"
              f"  [{used}]")
    for error in errors:
        print(f"error: {error.describe()}")
    return 1 if errors else 0


def _state(figure: Figure | None, cached: Cache, expect: Callable[[Figure], Expected]) -> str:
    """fresh, stale (and why), or failed (and why), with the last run's time."""
    if figure is None:
        return "error (see below)"
    want = expect(figure)
    verdict = cached.verdict(figure.name, want)
    took = f" (ran in {verdict.record.seconds:.1f} s)" if verdict.record else ""
    if verdict.fresh:
        return f"fresh{took}"
    failure = cached.store.load_failure(figure.name)
    if failure:
        return f"failed: {failure.cause}; stale: {verdict.reason}"
    return f"stale: {verdict.reason}{took}"


def cmd_run(project: Project, args: argparse.Namespace) -> int:
    """Bring the named (or every referenced) figure up to date."""
    errors: list[FigureError] = []
    found = figures(project, args.names, errors)
    articles = {n: project.articles.get(n) or [COMMAND_LINE] for n in found}
    outcome = pipeline.update_figures(found, project.settings, articles, force=args.force)
    save_report(project.settings, outcome)
    return _finish(errors + outcome.errors)


def _finish(errors: list[FigureError]) -> int:
    """Log every error, naming article, figure, cause and traceback; the exit status."""
    for error in errors:
        logger.error("figgen: %s", error.describe())
    return 1 if errors else 0


def cmd_clean(project: Project, args: argparse.Namespace) -> int:
    """Drop the figure cache (not its locks, which a running build may hold)."""
    folder = project.settings.cache_dir
    failed: list[str] = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name == "locks" and entry.is_dir():
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        except OSError as err:  # a read-only cache, say: say what stays, and why
            failed.append(f"{entry} ({err.strerror or err})")
    if failed:
        raise SettingsError(f"FIGGEN['cache_dir'] is {folder}, which could not be emptied: "
                            f"{'; '.join(failed)}")
    print(f"removed {folder}, but its locks (a running build may hold one)")
    return 0


def cmd_freeze(project: Project, args: argparse.Namespace) -> int:
    """Bring every referenced figure up to date and copy it into the freeze."""
    s, errors = project.settings, []
    outcome = pipeline.update_figures(figures(project, [], errors), s, project.articles)
    save_report(s, outcome)
    freeze = Store(s.freeze_dir)
    try:
        _copy_into(freeze, outcome, Store(s.cache_dir))
        _prune(freeze, set(project.articles))
    except OSError as err:  # a read-only checkout, say
        raise SettingsError(f"FIGGEN['freeze_dir'] is {s.freeze_dir}, which cannot be written "
                            f"({err.strerror or err}): make it writable to freeze") from None
    print(f"froze {len(outcome.records) - len(outcome.stale)} figure(s) into {s.freeze_dir}")
    return _finish(errors + outcome.errors)


def _copy_into(freeze: Store, outcome: Outcome, source: Store) -> None:
    """Copy every figure made or found fresh into the freeze, its files first, then its record."""
    for name, record in outcome.records.items():
        if name in outcome.stale:  # its run failed: keep what was frozen before
            continue
        for stored in record.objects():  # re-copies a frozen file that is missing or damaged
            copy_unless_same(source.object_path(stored), freeze.object_path(stored),
                             stored.sha256)
        freeze.save(record)


def _prune(freeze: Store, keep: set[str]) -> None:
    """Drop frozen records of figures no article uses, and images no record uses."""
    used = set()
    for path in sorted((freeze.path / "records").rglob("*.json")):
        name = path.relative_to(freeze.path / "records").with_suffix("").as_posix()
        record = freeze.load(name) if name in keep else None
        if record is None:
            path.unlink()
            continue
        used.update(freeze.object_path(stored) for stored in record.objects())
    for path in (freeze.path / "objects").glob("*"):
        if path not in used:
            path.unlink()


def cmd_verify(project: Project, args: argparse.Namespace) -> int:
    """Re-run every referenced figure and compare it with its frozen image."""
    s, errors = project.settings, []
    found = figures(project, [], errors)
    outcome = pipeline.update_figures(found, s, project.articles, force=True)
    save_report(s, outcome)
    fresh, freeze = outcome.store, Cache(s.root, Store(s.freeze_dir), Hashes(python=s.python))
    failures = 0
    for name in sorted(found):
        frozen = freeze.store.load(name)
        if frozen is None:
            result = verify.Comparison(name, "missing", f"not in the freeze {s.freeze_dir}")
        elif name not in outcome.report.ran:
            result = verify.Comparison(name, "failed", outcome.report.causes.get(name, ""))
        else:
            result = verify.compare(frozen, freeze, outcome.records[name], fresh,
                                    s.verify_tolerance)
        failures += not result.ok
        age = "" if result.verdict == "damaged" else \
            _freeze_age(found[name], frozen, s, freeze)
        print(f"{name}: {result.verdict} ({result.detail}){age}")
    return max(_finish(errors + outcome.errors), int(failures > 0))


def _freeze_age(
    figure: Figure, frozen: Record | None, s: FiggenSettings, freeze: Cache
) -> str:
    """A note when the frozen figure predates an edit of its sources (drift is then expected)."""
    if frozen is None:
        return ""
    want = pipeline.expected(figure, s, {})
    verdict = freeze.judge(frozen, want)
    return "" if verdict.fresh else f"; frozen before {verdict.reason}: `make freeze` updates it"


COMMANDS: dict[str, Callable[[Project, argparse.Namespace], int]] = {
    "list": cmd_list, "run": cmd_run, "clean": cmd_clean, "freeze": cmd_freeze,
    "verify": cmd_verify,
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; return the exit status."""
    parser = argparse.ArgumentParser(prog="pelican-figgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--settings", type=Path, default=Path("pelicanconf.py"))
    commands = parser.add_subparsers(dest="command", required=True)
    for name, function in COMMANDS.items():
        sub = commands.add_parser(name, help=(function.__doc__ or "").strip())
        if name == "run":
            sub.add_argument("names", nargs="*", metavar="NAME")
            sub.add_argument("--force", action="store_true", help="run even if fresh")
    args = parser.parse_args(argv)
    handler = RichHandler(console=progress.console(), show_time=False, show_path=False)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    try:
        status = COMMANDS[args.command](load(args.settings), args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except SettingsError as err:  # a wrong FIGGEN key or FIGGEN_* variable: its message says all
        logger.error("figgen: %s", err)
        return 1
    except BrokenPipeError:  # `list | head`: the reader has all it wanted
        # Python flushes stdout again at exit: point it at /dev/null so that is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status
