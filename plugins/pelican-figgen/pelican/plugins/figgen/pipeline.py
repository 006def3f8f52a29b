"""The build: discover references, run what is out of date, cache it, embed every figure.

A failing figure never stops the others: every error is collected and the figures that worked
are embedded. Then, with on_error "strict", the build fails once with a summary of all that
went wrong; with "keep-going", each failed figure shows its last good image marked stale, or
a box with its error, and the build succeeds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pelican_figgen import contract, importpath
from pelican_figgen.dists import normalize

from . import cache, discover, embed
from .cache import Cache, Expected, Hashes, Record, Store
from .discover import Figure, FigureRef
from .errors import FigureBuildError, FigureError
from .markdown_ext import FigureReferenceExtension
from .outcome import Outcome, is_draft, save_report
from .settings import FiggenSettings, merge

logger = logging.getLogger(__name__)
# Set by make serve for its preview builds: a stale figure runs as a draft (contract.DRAFT),
# kept in a store of its own below the cache (DRAFTS), never among the real records.
DRAFT = False
DRAFTS = "drafts"
SHOWS_DRAFTS = False  # set by each build: whether it shows a draft (make serve then builds in full)
CONTENT_LISTS = (  # every list of content objects Pelican's generators keep
    "articles", "translations", "drafts", "drafts_translations", "hidden_articles",
    "hidden_translations", "pages", "hidden_pages", "draft_pages", "draft_translations",
)


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
    # One memo of file hashes for the build: its inputs, cached images and their output copies
    # (none in frozen mode, which writes only to the output).
    frozen = settings.mode == "frozen"
    hashes = Hashes(None if frozen else settings.cache_dir / cache.HASH_MEMO, settings.python)
    refs = _discover(contents, settings, errors)
    if not frozen:  # scripts' declarations as the last build read them, by the scripts' hashes
        discover.DECLARED.load(settings.cache_dir)
    figures = resolve_all((r for rs in refs.values() for r in rs), settings, errors,
                          None if frozen else hashes)
    articles = articles_of(refs.values())
    site = embed.Site(settings, Path(generators[0].output_path),
                      generators[0].context["static_content"], hashes)
    # A preview uses the drafts from taking them until their images are copied out: another
    # build sharing the cache trims none meanwhile (tidy_drafts, which this one does after).
    with Store(settings.cache_dir / DRAFTS).in_use() if DRAFT and not frozen \
            else contextlib.nullcontext():
        outcome = take_frozen(figures, settings, articles) if frozen \
            else update_figures(figures, settings, articles, hashes=hashes)
        errors.extend(outcome.errors)  # before the embedding: a failed figure's box shows them
        _embed(contents, refs, Embedding(figures, outcome, site), errors)
    global SHOWS_DRAFTS
    SHOWS_DRAFTS = any(is_draft(record) for record in outcome.records.values())
    hashes.save(settings.cache_dir)
    if not frozen:
        discover.DECLARED.save(settings.cache_dir)
        tidy_drafts(settings)
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


def _syntax(content: Any) -> str:
    """The syntax of a content object's source: "rst" for reStructuredText, else "markdown"."""
    from pelican.readers import RstReader

    return "rst" if Path(content.source_path).suffix[1:] in RstReader.file_extensions \
        else "markdown"


def _discover(
    contents: list[Any], settings: FiggenSettings, errors: list[FigureError]
) -> dict[int, list[FigureRef]]:
    """Find the references of every content object, keyed by the object's id."""
    refs = {}
    for content in contents:
        article = _article(content, settings)
        # A stray link is an error of its own: the article's other references still render.
        errors.extend(discover.stray_errors(article, content._content, _syntax(content)))
        refs[id(content)] = discover.find_refs(article, content._content)
    return refs


def resolve_all(
    refs: Iterable[FigureRef], settings: FiggenSettings, errors: list[FigureError],
    hashes: Hashes | None = None,
) -> dict[str, Figure]:
    """Resolve each distinct name among the references, collecting errors.

    With `hashes` (the build's), a script unchanged since the last build is not parsed again.
    """
    names = discover.script_names(settings.scripts)
    figures: dict[str, Figure] = {}
    for ref in refs:
        try:
            figures.setdefault(ref.name, discover.resolve(ref, settings, names, hashes))
        except FigureError as err:
            errors.append(err)
    return figures


def articles_of(refs: Iterable[list[FigureRef]]) -> dict[str, list[str]]:
    """The articles that reference each figure name, sorted."""
    found: dict[str, set[str]] = {}
    for ref in (r for rs in refs for r in rs):
        found.setdefault(ref.name, set()).add(ref.article)
    return {name: sorted(articles) for name, articles in found.items()}


def expected(
    figure: Figure, settings: FiggenSettings, environment: Mapping[str, str],
    installed: Mapping[str, str] | None = None,
) -> Expected:
    """What a figure's record must match to be fresh (installed: versions to compare with)."""
    return Expected(
        cache.params_key(settings.seed, figure.params),
        environment,
        tuple(_rel(p, settings) for p in (figure.script, *figure.data)),
        installed,
    )


def update_figures(
    figures: Mapping[str, Figure],
    settings: FiggenSettings,
    articles: Mapping[str, list[str]],
    force: bool = False,
    hashes: Hashes | None = None,
) -> Outcome:
    """Bring every figure up to date: reuse its record or run its script (always if force)."""
    # `hashes`: the build's memo of file hashes, which the caller saves; None: one of its own.
    memo = hashes if hashes is not None else Hashes(settings.cache_dir / cache.HASH_MEMO,
                                                      settings.python)
    cached = Cache(settings.root, Store(settings.cache_dir), memo)
    installed = cache.installed(settings.python, settings.root)
    environment = run_environment(settings, installed)
    outcome = Outcome(store=cached.store)
    wants = {name: (figure, expected(figure, settings, environment, installed))
             for name, figure in figures.items()}
    stale = _take_fresh(cached, wants, outcome, force)
    if stale and DRAFT and not force:
        _drafts(Stale(stale, cached, environment), settings, articles, outcome)
    elif stale:
        from . import execute  # here: a no-op build never imports the run phase (~6 ms)

        outcome.take_run(execute.run_stale(stale, settings, force, cached, environment),
                         articles)
    if hashes is None:
        memo.save(settings.cache_dir)
    return outcome


def _take_fresh(
    cached: Cache, wants: Mapping[str, tuple[Figure, Expected]], outcome: Outcome,
    force: bool = False,
) -> dict[str, tuple[Figure, Expected, cache.Verdict]]:
    """Take each figure whose record is fresh (unless force) into the outcome; the stale rest."""
    stale = {}
    for name, (figure, want) in wants.items():
        verdict = cached.verdict(name, want)
        if verdict.fresh and verdict.record and not force:
            outcome.take_cached(verdict.record)
        else:
            stale[name] = (figure, want, verdict)
    return stale


@dataclass(frozen=True)
class Stale:
    """The figures a build found stale in its cache, with that cache and the run environment."""

    figures: Mapping[str, tuple[Figure, Expected, cache.Verdict]]
    cache: Cache
    environment: Mapping[str, str]


def drafted(environment: Mapping[str, str]) -> dict[str, str]:
    """A run environment as a draft's key has it: a draft never matches a real record."""
    return {**environment, contract.DRAFTED: "true"}


def _drafts(
    stale: Stale, settings: FiggenSettings, articles: Mapping[str, list[str]], outcome: Outcome
) -> None:
    """Preview: take each stale figure's fresh draft, or run it as a draft, into the outcome."""
    from . import execute  # here: a no-op build never imports the run phase (~6 ms)

    drafts = Cache(settings.root, Store(settings.cache_dir / DRAFTS), stale.cache.hashes)
    outcome.draft_store = drafts.store
    environment = drafted(stale.environment)
    wants = {name: (figure, replace(want, environment=drafted(want.environment)))
             for name, (figure, want, _) in stale.figures.items()}
    to_run = _take_fresh(drafts, wants, outcome)
    if not to_run:
        return
    phase = execute.run_stale(to_run, settings, False, drafts, environment)
    # A failed draft shows the last real image, as a failed run does, not an older draft.
    ends = tuple(replace(end, record=_last_good(stale, end.name)) if end.failure else end
                 for end in phase.ends)
    outcome.take_run(replace(phase, ends=ends), articles)


def tidy_drafts(settings: FiggenSettings) -> None:
    """Drop the drafts that can never show again, then the images no draft names."""
    drafts = Store(settings.cache_dir / DRAFTS)
    if not drafts.path.is_dir():  # never a preview here: nothing to look at
        return
    # Each figure keeps only its latest draft (a new one replaces its record, and a draft is
    # taken only while its key matches): the images of those replaced go. A draft of a figure
    # whose script is gone (removed, renamed) is taken by no build: a draft is taken only for a
    # reference that resolves to a script of its name. Nor one whose figure's real record was
    # made from the same inputs: a preview drafts only a stale figure, and the edit that makes
    # it stale changes the draft's key too. Done once the build's figures are in the output,
    # so its own drafts are copied out first.
    scripts, real = set(discover.script_names(settings.scripts)), Store(settings.cache_dir)

    def obsolete(name: str, draft: Record | None) -> bool:
        return name not in scripts or (draft is not None and made_in_full(draft, real.load(name)))

    dropped = drafts.tidy(obsolete)
    logger.debug("figgen: %d draft image(s) no draft can show dropped", dropped)


def made_in_full(draft: Record, real: Record | None) -> bool:
    """Whether a real record was made from the inputs a draft read, by the same key."""
    # The full run reads what the draft read and more (its dark and narrow renders): the
    # draft's inputs and versions are among the real record's, with the same hashes.
    if real is None or real.params != draft.params:
        return False
    environment = {k: v for k, v in draft.environment.items() if k != contract.DRAFTED}
    return environment.items() <= real.environment.items() \
        and draft.inputs.items() <= real.inputs.items()


def _last_good(stale: Stale, name: str) -> Record | None:
    """A stale figure's last real record, if its images are intact."""
    record = stale.figures[name][2].record
    return record if record and stale.cache.intact(record) else None


def run_environment(settings: FiggenSettings, installed: Mapping[str, str]) -> dict[str, str]:
    """What every figure's bytes depend on: Python, FIGGEN["versions"], the thread count.

    The distributions a figure imported join its record's environment after its run.
    """
    extra = {name: installed.get(name, "absent") for name in map(normalize, settings.versions)}
    return {"python": installed["python"], **extra, "threads": str(settings.threads)}


def take_frozen(
    figures: Mapping[str, Figure], settings: FiggenSettings, articles: Mapping[str, list[str]]
) -> Outcome:
    """Frozen mode: take every figure from the freeze and run nothing."""
    frozen = Cache(settings.root, Store(settings.freeze_dir), Hashes(python=settings.python))
    outcome = Outcome(store=frozen.store)
    for name, figure in figures.items():
        record = frozen.store.load(name)
        cause = "" if record else "missing from the frozen cache (frozen builds run no script)"
        if record and not frozen.intact(record):
            cause = "its frozen image is missing or damaged (frozen builds run no script)"
        if cause:
            hint = (f"`pelican-figgen freeze` where scripts can run writes it into "
                    f"FIGGEN['freeze_dir'] {settings.freeze_dir}")
            outcome.take_failed(name, cause, (FigureError(a, name, cause, hint=hint)
                                              for a in articles.get(name, [])))
            continue
        assert record is not None
        # Library versions may differ here (no torch at all): only the sources must match.
        verdict = frozen.judge(record, expected(figure, settings, {}))
        if not verdict.fresh:
            outcome.stale[name] = f"it was frozen before {verdict.reason}"
            logger.warning("figgen: frozen figure %s is stale: %s", name, verdict.reason)
        outcome.take_cached(record)
    return outcome


@dataclass(frozen=True)
class Embedding:
    """What replacing the references needs: the figures, what the build made, the site."""

    figures: Mapping[str, Figure]
    outcome: Outcome
    site: embed.Site
    published: dict[str, embed.Published] = field(default_factory=dict)  # filled on first use


def _embed(
    contents: list[Any], refs: dict[int, list[FigureRef]], into: Embedding,
    errors: list[FigureError],
) -> None:
    """Replace each reference marker with its figure's HTML, or with its error box."""
    settings = into.site.settings
    # A build killed while copying leaves a half image aside, which would be published.
    cache.drop_orphans(into.site.output_path / settings.output_dir)
    stylesheet = embed.publish_stylesheet(into.site) if any(refs.values()) else ""
    embed.CAPTIONS.load(settings.cache_dir)
    loader = ""
    for content in contents:
        # The page is put together once: each marker is found after the one before it (refs
        # are in the page's order), not replaced in a new copy of the whole page each time.
        html, scripted, parts, at = content._content, False, [], 0
        for index, ref in enumerate(refs.get(id(content), [])):
            try:
                # Only a first figure in the first screen is fetched eagerly.
                lazy = index > 0 or not embed.in_first_screen(html, ref.marker)
                tag = _figure_tag(ref, lazy, into)
            except FigureError as err:
                errors.append(err)
                tag = None
            if tag is None:
                mine = [e for e in errors if (e.article, e.reference) == (ref.article, ref.name)]
                tag = embed.error_html(ref, mine)
            if index == 0:  # the page's first figure brings the plugin's CSS
                tag = embed.with_stylesheet(tag, stylesheet)
            if not scripted and embed.is_interactive(tag):  # and the first interactive one, JS
                loader = loader or embed.publish_loader(into.site)
                tag, scripted = embed.with_loader(tag, loader), True
            found = html.find(ref.marker, at)
            if found >= 0:
                parts += [html[at:found], tag]
                at = found + len(ref.marker)
        html = "".join(parts) + html[at:] if parts else html
        # Every marker is replaced above; one left (changed by another plugin?) is an error.
        html, leftovers = embed.without_markers(html, _article(content, settings))
        errors.extend(leftovers)
        content._content = html
    embed.CAPTIONS.save(settings.cache_dir)


def _figure_tag(ref: FigureRef, lazy: bool, into: Embedding) -> str | None:
    """The <figure> of one reference; None when its figure has no record to show."""
    outcome = into.outcome
    record = outcome.records.get(ref.name)
    if record is None:
        return None
    if ref.name not in into.published:
        store = outcome.draft_store if is_draft(record) and outcome.draft_store else outcome.store
        into.published[ref.name] = embed.publish(into.figures[ref.name], record, store,
                                                 into.site)
    stale = outcome.stale.get(ref.name, "")
    return embed.figure_html(ref, record, into.published[ref.name], lazy, stale)


def _rel(path: Path, settings: FiggenSettings) -> str:
    """A path relative to the project root, as records store it."""
    return importpath.root_name(path.relative_to(settings.root).as_posix())
