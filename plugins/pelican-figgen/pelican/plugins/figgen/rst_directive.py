"""reStructuredText syntax for figure references: the directive `.. figgen:: name`.

    .. figgen:: training_data
       :alt: Six points in the plane: three cats and three dogs
       :caption: The training set: {n_cats} cats and {n_dogs} dogs.

It makes the same `<figgen-ref>` marker as the Markdown syntax (a raw HTML node), so the rest
of the build is shared. Like the Markdown extension it never raises (docutils would make
Pelican drop the article, with exit status 0): an unknown option or a body is noted on the
marker and reported by the discover phase, naming the article.
"""

from __future__ import annotations

import html
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive, directives

from .markdown_ext import MARKER_TAG

DIRECTIVE = "figgen"
OPTIONS = ("alt", "caption")


class _AnyOption(dict):
    """An option spec that accepts every name, so a misspelt option reaches our own check."""

    def __missing__(self, key: str) -> Any:
        return directives.unchanged


class FigureDirective(Directive):
    """`.. figgen:: name` with `:alt:` and `:caption:`: a figure reference marker."""

    optional_arguments = 1
    final_argument_whitespace = True  # "a b" stays one (malformed) name, quoted in its error
    option_spec = _AnyOption({key: directives.unchanged for key in OPTIONS})
    has_content = True  # accepted here, refused by the discover phase with a clear cause

    def run(self) -> list[nodes.Node]:
        """Return the marker of this reference as raw HTML."""
        attrs = {"name": self.arguments[0] if self.arguments else ""}
        attrs |= {key: self.options[key] or "" for key in OPTIONS if key in self.options}
        problem = _problem(self.options, bool(self.content))
        if problem:
            attrs["problem"] = problem
        marker = "".join(f' {k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
        return [nodes.raw("", f"<{MARKER_TAG}{marker}></{MARKER_TAG}>", format="html")]


def _problem(options: dict[str, Any], has_body: bool) -> str:
    """What is wrong with the directive's shape, or ''."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        return f"unknown option {', '.join(f':{k}:' for k in unknown)} of .. {DIRECTIVE}:: " \
            f"(known: {', '.join(f':{k}:' for k in OPTIONS)})"
    if has_body:
        return f".. {DIRECTIVE}:: takes no body: write the caption as its :caption: option"
    return ""


def register_directive(_pelican: Any = None) -> None:
    """Teach docutils (Pelican's reStructuredText reader) the figure directive."""
    directives.register_directive(DIRECTIVE, FigureDirective)
