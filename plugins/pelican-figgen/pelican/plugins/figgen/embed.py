"""Embed phase: publish cached images into the output and replace references with <figure>."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import logging
import re
import string
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import markdown
from pygments import __version__ as pygments_version
from pygments import highlight
from pygments.formatters import HtmlFormatter

from . import provenance
from .cache import Hashes, Record, Store, copy_unless_same, write_atomic, write_optional
from .discover import Figure, FigureRef, find_refs
from .errors import FigureError
from .kept import KeptMap
from .markdown_ext import MARKER_TAG
from .outcome import is_draft
from .settings import FiggenSettings

logger = logging.getLogger(__name__)

PARAGRAPH = re.compile(r"^<p>(.*)</p>$", re.S)
DENSITY_MARK = "data-figgen-density="  # on <img> until the page is written, then srcset
DENSITY_IMG = re.compile(r'<img\b[^>]*?\s' + DENSITY_MARK + r'"(\d+)"[^>]*>')
SRC = re.compile(r'\ssrc="([^"]*)"')
# A caption's `{field}` slot while Markdown renders the caption: letters and digits only, so
# Markdown reads nothing in it; the run's value, HTML-escaped, replaces it afterwards.
SLOT = re.compile(r"figgenslot(\d+)e")
SAFE_SCHEMES = {"http", "https", "mailto"}  # and relative URLs, which have no scheme
SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Browsers ignore ASCII white space and control characters inside a URL's scheme.
URL_IGNORED = re.compile(r"[\x00-\x20\x7f]")
ANCHOR_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
STYLESHEET = Path(__file__).with_name("static") / "figgen.css"  # the plugin's own CSS
# The one script of a page with an interactive figure: it loads each figure's own module.
LOADER = Path(__file__).with_name("static") / "figgen.js"
# The loader's tag, and the stylesheet link the first figure of a page carries: feeds drop
# both. No leading `\s*`: a pattern that starts with a literal is found by a fast scan (a
# tenth of the time on this blog's article), the white space before it is cut after.
PAGE_ONLY_TAG = re.compile(r'<(?:script type="module" src="[^"]*" data-figgen-js></script>'
                           r'|link rel="stylesheet" href="[^"]*" data-figgen-css>'
                           r'|p class="figgen-draft-mark" data-figgen-draft>[^<]*</p>)')
PAGE_ONLY_MARKS = (" data-figgen-js>", " data-figgen-css>", " data-figgen-draft>")  # one each
# What a draft's <figure> says to the author (make serve's preview; feeds leave it out).
DRAFT_NOTE = ('  <p class="figgen-draft-mark" data-figgen-draft>Draft render: the final one '
              "follows.</p>\n")
# An interactive figure's module and data, named beside its image: nothing in a feed runs them.
INTERACTIVE_ATTRS = re.compile(r' data-figgen-(?:module|data)="[^"]*"')
# A figure's other renders, each a <source> of its <picture>, by role, in the order a browser
# tries them (the first whose media matches wins); the <img> is the light, wide PNG.
NARROW_MEDIA = "(max-width: 600px)"
DARK_MEDIA = "(prefers-color-scheme: dark)"
RENDER_MEDIA = {"narrow-dark": f"{NARROW_MEDIA} and {DARK_MEDIA}", "narrow": NARROW_MEDIA,
                "dark": DARK_MEDIA, "": ""}
# A <source>'s URL until the page is written: Pelican resolves `{static}` in an attribute
# named *src, never in srcset; the written page gets `srcset="<url> <density>x"`.
SOURCE_MARK = "data-figgen-src="
SOURCE_TAG = re.compile(r'<source\b[^>]*?\s' + SOURCE_MARK + r'"([^"]*)"[^>]*>')
# What a feed keeps of a <picture>: its <img> (the PNG, which every feed reader shows).
PICTURE = re.compile(r"<picture data-figgen-picture>\s*(?:<source\b[^>]*>\s*)*(<img\b[^>]*>)"
                     r"\s*</picture>")
# A phone's first screen shows the site's header, the article's title and about this many
# characters of its text (40 a line at 360 to 412 CSS px): a first figure after more is below
# it, so a paragraph, not the figure, is the page's largest paint there (on a desktop too).
FIRST_SCREEN_TEXT = 500
TEXT_RUN = re.compile(r"(?:^|>)([^<]*)")  # the text between two tags
LEFTOVER = re.compile(rf"<{MARKER_TAG}\b[^>]*>(?:\s*</{MARKER_TAG}\s*>)?|</{MARKER_TAG}\s*>")


@dataclass(frozen=True)
class StaticLink:
    """What Pelican's `{static}` link replacement needs of a file: its URL."""

    url: str


@dataclass(frozen=True)
class Source:
    """One lossless WebP render of a figure, and the media query under which a browser takes it."""

    url: str  # a `{static}` link
    media: str  # "" for any screen
    width: int  # CSS pixels: a narrow render's shape is its own
    height: int
    density: int


@dataclass(frozen=True)
class Published:
    """Where a figure's files are in the output, as `{static}` links."""

    image: str
    source: str
    width: int
    height: int
    record: str  # the provenance JSON beside the image
    code: str = ""  # the script, highlighted, for the "show the code" disclosure
    density: int = 1  # image pixels per CSS pixel (figure scripts save PNGs at 2x)
    script: str = ""  # the script's path relative to the project root, as the caption names it
    # role ("module", "data") -> file name beside the image: the page resolves it from the
    # image's URL, so it holds at any depth and SITEURL
    assets: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()  # the WebP renders, in the order a browser tries them


@dataclass(frozen=True)
class Site:
    """Where a build publishes its figures: Pelican's output folder and static files."""

    settings: FiggenSettings
    output_path: Path
    static_content: MutableMapping[str, Any]  # Pelican's: each file copied, linked by URL
    hashes: Hashes = field(default_factory=Hashes)  # an unchanged copy in the output: not read


def publish(figure: Figure, record: Record, store: Store, site: Site) -> Published:
    """Copy a figure's image and source page into the output and register them with Pelican."""
    settings, output_path, static_content = site.settings, site.output_path, site.static_content
    image = record.image
    image_url = f"{settings.output_dir}/{figure.name}-{image.sha256[:12]}{image.suffix}"
    copy_unless_same(store.object_path(image), output_path / image_url, image.sha256,
                     site.hashes)
    static_content[image_url] = StaticLink(image_url)
    script = figure.script.relative_to(settings.root).as_posix()
    record_url = image_url.removesuffix(image.suffix) + ".json"
    _write_if_changed(output_path / record_url, provenance.record_json(record, script))
    static_content[record_url] = StaticLink(record_url)
    if settings.source_url:
        source = settings.source_url.format(path=script)
    else:
        # Named by the script's hash, like the image: a no-op build highlights nothing.
        page = f"{settings.output_dir}/source/{figure.name}-{record.inputs[script][:12]}.py.html"
        if not _is_current_source_page(output_path / page):
            _write_source_page(figure.script, script, output_path / page)
        static_content[page] = StaticLink(page)
        source = "{static}/" + page
    record_link = "{static}/" + record_url
    code = _focusable(_highlighted(figure.script, settings.cache_dir, site.hashes(figure.script)),
                      f"The code of {script}")
    return Published(
        "{static}/" + image_url, source, image.width, image.height, record_link, code,
        image.density, script, _publish_assets(figure, record, store, site, image_url),
        _publish_sources(record, store, site, image_url),
    )


def _publish_sources(
    record: Record, store: Store, site: Site, image_url: str
) -> tuple[Source, ...]:
    """Copy each render's WebP beside the image, named by its hash; the <source>s."""
    sources = []
    folder, _, name = image_url.rpartition("/")
    for role, media in RENDER_MEDIA.items():
        render = record.renders.get(role) if role else record.image
        twin = render.for_browsers() if render is not None else None
        if twin is None:
            continue
        url = f"{folder}/{name.rsplit('-', 1)[0]}-{twin.sha256[:12]}{twin.suffix}"
        copy_unless_same(store.object_path(twin), site.output_path / url, twin.sha256,
                         site.hashes)
        site.static_content[url] = StaticLink(url)
        sources.append(Source("{static}/" + url, media, render.width, render.height,
                              render.density))
    return tuple(sources)


def _publish_assets(
    figure: Figure, record: Record, store: Store, site: Site, image_url: str
) -> dict[str, str]:
    """Copy a figure's assets beside its image, each named by its hash; role -> file name."""
    names = {}
    for role, asset in sorted(record.assets.items()):
        # The figure's name, not the role: a data file and its module differ in suffix and
        # hash, and a page's "network" panel says whose they are.
        stem = figure.name.rsplit("/", 1)[-1]
        name = f"{stem}-{asset.sha256[:12]}{'.data' if role == 'data' else ''}{asset.suffix}"
        copy_unless_same(store.object_path(asset),
                         (site.output_path / image_url).with_name(name), asset.sha256,
                         site.hashes)
        names[role] = name
    return names


def publish_stylesheet(site: Site) -> str:
    """Copy the plugin's CSS into the output, named by its hash; return its `{static}` link."""
    return _publish_own(site, STYLESHEET)


def publish_loader(site: Site) -> str:
    """Copy the plugin's loader of interactive figures, named by its hash; its `{static}` link."""
    return _publish_own(site, LOADER)


def _publish_own(site: Site, source: Path) -> str:
    """Copy one of the plugin's own files into the output, named by its hash; its link."""
    text = source.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    # Named by its hash, like the images: a browser's cached copy is never an old one.
    url = f"{site.settings.output_dir}/figgen-{digest}{source.suffix}"
    _write_if_changed(site.output_path / url, text)
    site.static_content[url] = StaticLink(url)
    return "{static}/" + url


def with_loader(tag: str, loader: str) -> str:
    """A figure that loads the page's one loader script: the first interactive one of a page."""
    # A module script is deferred and runs once per page, whatever number of tags name it;
    # one tag keeps the page tidy. No inline code: a strict Content-Security-Policy allows it.
    script = (f'<script type="module" src="{html.escape(loader, quote=True)}" '
              f"data-figgen-js></script>")
    end = tag.index(">") + 1
    return f"{tag[:end]}\n  {script}{tag[end:]}"


def with_stylesheet(tag: str, stylesheet: str) -> str:
    """A figure (or error box) that loads the plugin's CSS: the first one of each page."""
    # A <link rel="stylesheet"> may stand in <body> (HTML5), so any theme gets the CSS, and
    # Pelican resolves its `{static}` href for the page's depth, as the image's src.
    link = f'<link rel="stylesheet" href="{html.escape(stylesheet, quote=True)}" data-figgen-css>'
    end = tag.index(">") + 1
    return f"{tag[:end]}\n  {link}{tag[end:]}"


def in_first_screen(html_text: str, marker: str) -> bool:
    """Whether little enough of an article's text comes before a marker to show it unscrolled."""
    end, seen = html_text.find(marker), 0
    # Text run by text run, stopping at the threshold: a figure deep in a long article
    # costs no more to judge than one near its top.
    for run in TEXT_RUN.finditer(html_text, 0, end if end >= 0 else len(html_text)):
        seen += len(" ".join(html.unescape(run.group(1)).split()))
        if seen > FIRST_SCREEN_TEXT:
            return False
    return True


def figure_html(
    ref: FigureRef, record: Record, where: Published, lazy: bool, stale: str = ""
) -> str:
    """The <figure> that replaces one reference; `stale` says why it is not fresh, if not."""
    script = where.script
    alt = html.escape(fill(ref.alt, record.fields, ref, "alt text"), quote=True)
    caption = caption_html(ref, record.fields)
    # A figure in the first screen is likely the page's largest paint: fetched first, not
    # after the CSS. Any other waits for layout, at low priority: fetched early, it would
    # share the phone's bandwidth with the CSS and the text that paints first.
    loading = ' loading="lazy"' if lazy else ' fetchpriority="high"'
    anchor = _anchor(ref)
    mark = (f'  <p class="figgen-stale-mark">This figure could not be updated; it shows the '
            f"last good version ({html.escape(stale)}).</p>\n") if stale else ""
    if is_draft(record):  # make serve's preview
        mark += DRAFT_NOTE
    # Pelican resolves one link per tag, so srcset is added once the page is written.
    density = f' {DENSITY_MARK}"{where.density}"' if where.density > 1 else ""
    img = (f'<img src="{html.escape(where.image, quote=True)}" alt="{alt}" '
           f'width="{where.width:d}" height="{where.height:d}"{loading} decoding="async"{density}>')
    return (
        f'<figure class="figgen{" figgen-stale" if stale else ""}" id="{anchor}"'
        f'{_interactive_attributes(where)}>\n{mark}'
        f"{_picture(where, img)}\n"
        f"  <figcaption>\n"
        f'    <span class="figgen-caption">{caption}</span>\n'
        f'    <a class="figgen-source" href="{html.escape(where.source, quote=True)}">'
        f"made by {html.escape(script)}</a>\n"
        f'    <details class="figgen-code"><summary>Show the code</summary>\n{where.code}'
        f"</details>\n"
        # Inside the caption: a <figure> may hold only one, as its first or last child.
        f"{provenance.disclosure_html(record, script, where.record)}"
        f"  </figcaption>\n"
        f"</figure>"
    )


def _picture(where: Published, img: str) -> str:
    """The figure's <img>, inside a <picture> of its WebP renders when it has any."""
    if not where.sources:
        return f"  {img}"
    # width and height on each <source>: a narrow render has its own shape, and the page
    # must not jump as it loads (the HTML standard allows them in a <picture>).
    sources = "".join(
        f'    <source type="image/webp"{_media(s.media)} '
        f'{SOURCE_MARK}"{html.escape(s.url, quote=True)}" {DENSITY_MARK}"{s.density}" '
        f'width="{s.width:d}" height="{s.height:d}">\n' for s in where.sources)
    return f"  <picture data-figgen-picture>\n{sources}    {img}\n  </picture>"


def _media(query: str) -> str:
    """A <source>'s media attribute, or '' for one any screen takes."""
    return f' media="{html.escape(query, quote=True)}"' if query else ""


def is_interactive(tag: str) -> bool:
    """Whether a figure's HTML names a module for the loader."""
    return tag.startswith("<figure") and " data-figgen-module=" in tag[:tag.index(">")]


def _interactive_attributes(where: Published) -> str:
    """The attributes naming a figure's module and data, for the loader; '' for a plain one."""
    if not {"module", "data"} <= set(where.assets):
        return ""
    return "".join(f' data-figgen-{role}="{html.escape(where.assets[role], quote=True)}"'
                   for role in ("module", "data"))


def _anchor(ref: FigureRef) -> str:
    """The id of a reference's figure: its error box, standing in for it, keeps the same."""
    # Only [A-Za-z0-9_-]: a malformed name (quotes, spaces) cannot leave the attribute.
    return "fig-" + ANCHOR_UNSAFE.sub("-", ref.name)


def error_html(ref: FigureRef, errors: list[FigureError]) -> str:
    """The box that stands in for a figure that could not be made (keep-going builds)."""
    anchor = _anchor(ref)
    # What a reader may see: no commands or settings (they went to the build's log).
    text = "\n\n".join(e.shown() for e in errors)
    return (
        f'<figure class="figgen figgen-error" id="{anchor}" role="alert">\n'
        f"  <figcaption>This figure (<code>{html.escape(ref.name)}</code>) could not be "
        f"made.</figcaption>\n"
        f"  <pre>{html.escape(text)}</pre>\n"
        f"</figure>"
    )


def fill(template: str, fields: Mapping[str, Any], ref: FigureRef, what: str) -> str:
    """Put the run's values into `{field}` slots of an alt text or caption."""
    return _filled(lambda: template.format_map(fields), fields, ref, what)


def _filled(
    format_: Callable[[], str], fields: Mapping[str, Any], ref: FigureRef, what: str
) -> str:
    """Call `format_`, turning a slot it cannot fill into an error naming the reference."""
    try:
        return format_()
    except KeyError as err:
        known = ", ".join(sorted(fields)) or "none"
        raise FigureError(
            ref.article, ref.name, f"the {what} quotes {{{err.args[0]}}}, which the script "
            f"did not set (it set: {known})"
        ) from None
    except (ValueError, IndexError, AttributeError, TypeError) as err:
        raise FigureError(ref.article, ref.name, f"the {what} cannot be filled: {err}") from None


class _Slots(string.Formatter):
    """Format each `{field}` of a caption, leaving a slot Markdown cannot read in its place."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []

    def format_field(self, value: Any, format_spec: str) -> str:
        # A nested spec ({x:{width}}) was slotted first: it needs its plain value back.
        self.values.append(format(value, self.put(format_spec, str)))
        return f"figgenslot{len(self.values) - 1}e"

    def put(self, text: str, escape: Callable[[str], str]) -> str:
        """Replace each slot in text by its value, through `escape`, in one pass."""
        def value(slot: re.Match) -> str:
            index = int(slot.group(1))
            return escape(self.values[index]) if index < len(self.values) else slot.group()

        return SLOT.sub(value, text)


def caption_html(ref: FigureRef, fields: Mapping[str, Any]) -> str:
    """A caption as HTML: the author's Markdown rendered, the run's values as escaped text."""
    slots = _Slots()
    template = _filled(lambda: slots.vformat(ref.caption, (), fields), fields, ref, "caption")
    rendered = render_caption(template)
    # One pass: a value that looks like a slot is not expanded again.
    caption = slots.put(rendered, lambda value: html.escape(value, quote=True))
    for url in _urls(caption):
        if not safe_url(url):
            raise FigureError(
                ref.article, ref.name, f"the caption links to {url!r}: only http, https, "
                "mailto and relative links are allowed"
            )
    return caption


def safe_url(url: str) -> bool:
    """Whether a link or image URL is http, https, mailto or relative (no scheme)."""
    scheme = SCHEME.match(URL_IGNORED.sub("", url))
    return scheme is None or scheme.group(1).lower() in SAFE_SCHEMES


class _Urls(HTMLParser):
    """Collect every URL-valued attribute of an HTML fragment, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v or "" for k, v in attrs if k in ("href", "src", "srcset", "action")]


def _urls(fragment: str) -> list[str]:
    """The URLs an HTML fragment links to or loads."""
    if not any(name in fragment.lower() for name in ("href", "src", "action")):
        return []  # no attribute that holds one: nothing to parse
    parser = _Urls()
    parser.feed(fragment)
    parser.close()
    return parser.urls


class _EscapeRawHtml(markdown.Extension):
    """Show raw HTML in a caption as text: a caption is Markdown, never markup."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Markdown's API)
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


@functools.cache
def _caption_converter() -> markdown.Markdown:
    """The one converter of every caption, reset per caption: making one costs."""
    return markdown.Markdown(output_format="html", extensions=[_EscapeRawHtml()])


def render_caption(text: str) -> str:
    """Render a caption's inline Markdown (links, emphasis, code) to HTML."""
    # Rendered by a build before: Markdown costs ~0.5 ms a caption.
    return CAPTIONS.get(text, functools.partial(_rendered, text))


def _rendered(text: str) -> str:
    """render_caption(), not kept."""
    rendered = _caption_converter().reset().convert(text).strip()
    match = PARAGRAPH.match(rendered)
    return match.group(1) if match else rendered


# Captions as rendered (Markdown -> HTML): a no-op build renders none.
CAPTIONS = KeptMap(f"captions-markdown-{markdown.__version__}", __file__)


def without_markers(text: str, where: str) -> tuple[str, list[FigureError]]:
    """Replace every reference marker left in a page by an error box: none reaches a reader."""
    errors: list[FigureError] = []
    if MARKER_TAG not in text:  # the pattern starts at any `<`: a long page is not scanned
        return text, errors

    def box(match: re.Match) -> str:
        if match.group().startswith("</"):  # the end tag of a marker already boxed
            return ""
        found = find_refs(where, match.group() + f"</{MARKER_TAG}>")
        ref = found[0] if found else FigureRef(where, "", "", "", match.group())
        errors.append(FigureError(where, ref.name, "this reference was never replaced by its "
                                  "figure (is another plugin changing the page?)"))
        return error_html(ref, errors[-1:])

    return LEFTOVER.sub(box, text), errors


def _write_if_changed(target: Path, text: str) -> None:
    """Write a text file unless it already holds exactly this text."""
    try:
        if target.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    write_atomic(target, text)


def add_srcset(path: str, context: Mapping[str, Any]) -> None:
    """Give each figure image in a written page a srcset naming its pixel density."""
    page = Path(path)
    if page.suffix == ".html":
        text = page.read_text(encoding="utf-8")
        if DENSITY_MARK in text or SOURCE_MARK in text or MARKER_TAG in text:
            write_atomic(page, with_srcset(_guarded(text, path)))


def add_srcset_to_feed(context: Mapping[str, Any], feed: Any) -> None:
    """The same for the entries of a feed, before it is written."""
    for item in feed.items:
        for key in ("content", "description"):
            text = _guarded(item.get(key) or "", item.get("link") or "a feed entry")
            # Feed readers ignore a page's CSS and scripts; some show a <link> as an error.
            item[key] = _feed_entry(text) if text else item.get(key)


@functools.lru_cache(maxsize=8)
def _feed_entry(text: str) -> str:
    """A page's HTML as a feed entry: every feed holding an article gets the same text."""
    if DENSITY_MARK in text or SOURCE_MARK in text:
        text = with_srcset(text)
    return _for_feeds(text)


def _for_feeds(text: str) -> str:
    """An entry without the page's stylesheet, its loader, interactive hooks and WebP renders."""
    if "data-figgen" not in text:  # each pattern names it: an entry without it is not scanned
        return text
    # The PNG alone: not every feed reader shows WebP.
    text = _substituted(text, PICTURE, ("<picture data-figgen-picture>",), lambda m: m[1])
    parts, end = [], 0
    for match in _found(text, PAGE_ONLY_TAG, PAGE_ONLY_MARKS):
        parts.append(text[end:match.start()].rstrip())  # with the white space before the tag
        end = match.end()
    text = "".join(parts) + text[end:]
    return _substituted(text, INTERACTIVE_ATTRS, (" data-figgen-module=", " data-figgen-data="),
                        lambda m: "")


def _found(text: str, pattern: re.Pattern, marks: tuple[str, ...]) -> Iterator[re.Match]:
    """pattern.finditer(text) for a pattern whose every match holds one of marks.

    Each mark is found by str.find, several times faster over a long page than re's scan for
    a tag's `<`: a match starts at the mark, or at the last `<` before it (its tag).
    """
    end = 0
    while True:
        at = min((i for i in (text.find(mark, end) for mark in marks) if i >= 0), default=-1)
        if at < 0:
            return
        match = pattern.match(text, at)
        if match is None and (start := text.rfind("<", end, at)) >= 0:
            match = pattern.match(text, start)
        if match is not None and match.end() > at:
            yield match
            end = match.end()
        else:
            end = at + 1


def _substituted(
    text: str, pattern: re.Pattern, marks: tuple[str, ...], replace: Callable[[re.Match], str]
) -> str:
    """pattern.sub(replace, text), each match found from a mark it holds (_found)."""
    parts, end = [], 0
    for match in _found(text, pattern, marks):
        parts += [text[end:match.start()], replace(match)]
        end = match.end()
    return "".join(parts) + text[end:] if parts else text


def _guarded(text: str, where: str) -> str:
    """A page or feed entry without reference markers; each one left is logged as an error."""
    if MARKER_TAG not in text:
        return text
    text, errors = without_markers(text, where)
    for error in errors:
        logger.error("figgen: %s", error.describe())
    return text


def with_srcset(html_text: str) -> str:
    """Replace each <img>'s density marker by `srcset="<its resolved src> <density>x"`.

    Each <source>'s URL and density marker become its `srcset` the same way.
    """
    if SOURCE_MARK in html_text:
        html_text = _substituted(html_text, SOURCE_TAG, (SOURCE_MARK,), _source_srcset)
    return _substituted(html_text, DENSITY_IMG, (DENSITY_MARK,), _with_srcset)


def _source_srcset(match: re.Match) -> str:
    """One <source> with its URL and density marker made into its srcset."""
    tag, url = match.group(0), match.group(1)
    density = re.search(DENSITY_MARK + r'"(\d+)"', tag)
    descriptor = f" {density.group(1)}x" if density and density.group(1) != "1" else ""
    tag = re.sub(r"\s" + DENSITY_MARK + r'"\d+"', "", tag, count=1)
    return tag.replace(f'{SOURCE_MARK}"{url}"', f'srcset="{url}{descriptor}"', 1)


def _with_srcset(match: re.Match) -> str:
    """One <img> with its density marker replaced by its srcset."""
    tag, density = match.group(0), match.group(1)
    src = SRC.search(tag)
    srcset = f' srcset="{src.group(1)} {density}x"' if src else ""
    return tag.replace(f' {DENSITY_MARK}"{density}"', srcset, 1)


def _highlighted(script: Path, cache_dir: Path, digest: str | None = None) -> str:
    """The script as highlighted HTML, kept by content hash: a no-op build highlights nothing.

    `digest`: the sha256 of the script's bytes, as the build's hash memo knows it (the script
    is then not read when its highlighted code is kept).
    """
    digest = digest or hashlib.sha256(script.read_bytes()).hexdigest()
    cached = cache_dir / "code" / f"{digest}-pygments-{pygments_version}.html"
    with contextlib.suppress(OSError):  # none kept (or no cache folder): highlighted now
        return cached.read_text(encoding="utf-8")
    from pygments.lexers.python import PythonLexer  # here: a no-op build never needs it

    code = highlight(script.read_text(encoding="utf-8"), PythonLexer(), HtmlFormatter())
    write_optional(cached, code, cache_dir)  # a read-only cache: highlighted again next build
    return code


def _focusable(code: str, label: str) -> str:
    """Highlighted code whose <pre> a keyboard can reach: a listing that scrolls must be."""
    attrs = f' tabindex="0" role="region" aria-label="{html.escape(label, quote=True)}"'
    return code.replace("<pre>", f"<pre{attrs}>", 1)


# A source page is never rewritten once there (named by its script's hash), unless it was
# written in an older format: this line, after the doctype, says which one it has.
SOURCE_PAGE_FORMAT = "<!-- pelican-figgen source page, format 2 -->"
# No icon: a browser would ask the server for /favicon.ico, which a blog may not have.
SOURCE_PAGE = """<!DOCTYPE html>
{format}
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,">
<title>{label}</title>
<style>
{css}
</style>
</head>
<body>
<main>
<h1><code>{label}</code></h1>
<div class="listing" tabindex="0" role="region" aria-label="The code of {label}">
{table}</div>
</main>
</body>
</html>
"""


@functools.cache
def _source_page_css() -> str:
    """A source page's own CSS: readable on a phone, light or dark as the system is."""
    light = HtmlFormatter(style="default").get_style_defs(".highlight")
    dark = HtmlFormatter(style="monokai").get_style_defs(".highlight")
    return (
        ":root { color-scheme: light dark; --bg: #fdfdfc; --fg: #1f2328; }\n"
        "@media (prefers-color-scheme: dark) { :root { --bg: #16181c; --fg: #e3e5e8; } }\n"
        "body { margin: 0 auto; max-width: 60rem; padding: 0 1rem 2rem; background: var(--bg);"
        " color: var(--fg); font: 1rem/1.5 system-ui, sans-serif; }\n"
        "h1 { font-size: 1.1rem; margin: 1.25rem 0; overflow-wrap: anywhere; }\n"
        ".listing { overflow: auto; border-radius: 6px; }\n"
        ".listing pre { margin: 0; font: 0.85rem/1.45 ui-monospace, Menlo, Consolas, monospace; }\n"
        ".highlighttable { border-collapse: collapse; }\n"
        ".highlighttable td { padding: 0.5rem; vertical-align: top; }\n"
        "td.linenos { user-select: none; text-align: right; opacity: 0.7; }\n"
        f"{light}\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}"
    )


def _is_current_source_page(target: Path) -> bool:
    """Whether a source page is there, written in this version's format."""
    try:
        with target.open(encoding="utf-8") as f:
            return f.read(200).splitlines()[1:2] == [SOURCE_PAGE_FORMAT]
    except (OSError, UnicodeDecodeError):
        return False


def _write_source_page(script: Path, label: str, target: Path) -> None:
    """Write a page with the highlighted source of a figure script, its lines numbered."""
    from pygments.lexers.python import PythonLexer  # here: a no-op build never needs it

    formatter = HtmlFormatter(linenos="table", cssclass="highlight")
    table = highlight(script.read_text(encoding="utf-8"), PythonLexer(), formatter)
    page = SOURCE_PAGE.format(format=SOURCE_PAGE_FORMAT, label=html.escape(label),
                              css=_source_page_css(), table=table)
    # Atomic: the page is never rewritten once there, so a half-written one would stay.
    write_atomic(target, page)
