"""Pelican plugin: `$$ ... $$` (display) and `$ ... $` (inline) TeX rendered to MathML.

Rendered at build time; browsers show MathML natively, so math needs no script and no network.
A formula that cannot be converted never drops its article (Pelican would): it is marked in
the HTML, and the build then fails naming the article and the formula.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from latex2mathml.converter import convert
from markdown import Extension
from markdown.inlinepatterns import InlineProcessor
from pelican import signals

logger = logging.getLogger(__name__)
ERROR_MARK = re.compile(r'<code class="math-error" title="([^"]*)">')


class MathProcessor(InlineProcessor):
    """Replace one TeX formula with its MathML, kept away from further Markdown processing."""

    def __init__(self, pattern: str, md: Any, display: str) -> None:
        super().__init__(pattern, md)
        self.display = display

    def handleMatch(self, m: re.Match, data: str) -> tuple[str, int, int]:  # noqa: N802
        tex = m.group(1).strip()
        try:
            mathml = convert(tex, display=self.display)
        except Exception as err:  # latex2mathml raises many types; the build reports it below
            reason = html.escape(f"{type(err).__name__}: {err}", quote=True)
            mathml = f'<code class="math-error" title="{reason}">{html.escape(tex)}</code>'
        return self.md.htmlStash.store(mathml), m.start(0), m.end(0)


class MathExtension(Extension):
    """Register the display and inline math patterns."""

    def extendMarkdown(self, md: Any) -> None:  # noqa: N802 (Markdown's API name)
        # 186/185: after code spans (190), so `$` in code stays code; before escapes (180),
        # so TeX backslashes reach the converter untouched.
        display = MathProcessor(r"\$\$(.+?)\$\$", md, "block")
        inline = MathProcessor(r"(?<![\\$])\$(?!\$)(.+?)(?<![\\$])\$", md, "inline")
        md.inlinePatterns.register(display, "tex_display", 186)
        md.inlinePatterns.register(inline, "tex_inline", 185)


def add_extension(pelican: Any) -> None:
    """Add the math extension to Pelican's Markdown settings (on a copy: defaults are shared)."""
    md = dict(pelican.settings["MARKDOWN"])
    extensions = list(md.get("extensions", []))
    if not any(isinstance(e, MathExtension) for e in extensions):
        extensions.append(MathExtension())
    pelican.settings["MARKDOWN"] = md | {"extensions": extensions}


def check_math(generators: list[Any]) -> None:
    """Fail the build if any formula could not be converted."""
    bad = []
    for generator in generators:
        for content in getattr(generator, "articles", []) + getattr(generator, "pages", []):
            bad += [f"{content.source_path}: {m}" for m in ERROR_MARK.findall(content._content)]
    if bad:
        raise ValueError("TeX that could not be rendered:\n" + "\n".join(bad))


def register() -> None:
    """Connect the plugin to Pelican's signals."""
    signals.initialized.connect(add_extension)
    signals.all_generators_finalized.connect(check_math)
