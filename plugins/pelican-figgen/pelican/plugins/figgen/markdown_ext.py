"""Markdown syntax for figure references: a paragraph of its own, `![alt]({figure}name "caption")`.

The extension only marks references (a `<figgen-ref>` element carrying name, alt and the raw
caption); it never raises, because Pelican drops an article whose reader raised. Checking
happens later, in the discover phase, where an error can stop the build properly.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as etree

from markdown import Extension
from markdown.blockprocessors import BlockProcessor

MARKER_TAG = "figgen-ref"
REFERENCE = re.compile(
    r"""!\[(?P<alt>[^\]]*)\]            # ![alt text]
        # ({figure}name: anything up to the caption or the ")", so a malformed name (a space,
        # a quote) is still marked, and the discover phase can quote it in its error.
        \(\{figure\}(?P<name>[^)\n]*?)
        (?:\s+"(?P<caption>(?:[^"\\]|\\.)*)")?  # optional "caption", \" escapes a quote
        \s*\)""",
    re.X,
)
# A paragraph made only of figure references (one or more, separated by white space).
REFERENCE_BLOCK = re.compile(rf"\s*(?:{REFERENCE.pattern}\s*)+", re.X)


class FigureReferenceProcessor(BlockProcessor):
    """Turn a paragraph of figure references into marker elements."""

    def test(self, parent: etree.Element, block: str) -> bool:
        return REFERENCE_BLOCK.fullmatch(block) is not None

    def run(self, parent: etree.Element, blocks: list[str]) -> None:
        for match in REFERENCE.finditer(blocks.pop(0)):
            marker = etree.SubElement(parent, MARKER_TAG)
            marker.set("name", match["name"])
            marker.set("alt", match["alt"])
            if match["caption"] is not None:
                marker.set("caption", match["caption"].replace('\\"', '"'))


class FigureReferenceExtension(Extension):
    """Register the figure-reference block processor, ahead of plain paragraphs."""

    def extendMarkdown(self, md) -> None:  # noqa: N802 (Markdown's API name)
        # 12: after link-reference definitions (15), before paragraphs (10).
        md.parser.blockprocessors.register(FigureReferenceProcessor(md.parser), "figgen", 12)
