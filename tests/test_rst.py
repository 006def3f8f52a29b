"""reStructuredText articles: the `.. figgen::` directive, with the Markdown syntax's errors."""

from __future__ import annotations

import re

import pytest

from conftest import Site
from pelican.plugins.figgen.errors import FigureBuildError

RST = """\
A reST post
###########

:date: 2024-01-03
:category: Tests

Some text.

.. figgen:: alpha
   :alt: A red line
   :caption: Alpha, from *reST*, is drawn in {color}

Code may show ``{figure}alpha`` freely.
"""


def rst_site(site: Site, directive: str = "") -> Site:
    """The tiny site with its Markdown post and a reST post (plus `directive`, if given)."""
    site.write("content/rst.rst", RST + (f"\n{directive}\n" if directive else ""))
    return site


def build_error(site: Site) -> str:
    """Build and return the failure's message."""
    with pytest.raises(FigureBuildError) as err:
        site.build()
    return str(err.value)


def test_rst_directive_embeds_the_figure_shared_with_markdown(site: Site) -> None:
    report = rst_site(site).build()
    assert set(report["ran"]) == {"alpha", "beta", "gamma"}  # alpha runs once for both
    page = site.html("a-rest-post.html")
    figure = re.search(r"<figure\b.*?</figure>", page, re.S).group()
    assert 'alt="A red line"' in figure and "figures/alpha-" in figure
    assert "Alpha, from <em>reST</em>, is drawn in red" in figure
    assert "figgen-ref" not in page and "<tt" in page and "{figure}alpha" in page
    assert site.build()["ran"] == {}


@pytest.mark.parametrize(("directive", "cause"), [
    (".. figgen:: alpha\n   :caption: c", "alt text is empty"),
    (".. figgen:: alpha\n   :alt: a", "no caption"),
    (".. figgen:: alpah\n   :alt: a\n   :caption: c", "'alpah'.*closest: alpha"),
    (".. figgen:: a b\n   :alt: a\n   :caption: c", "not a figure name.*'a b'"),
    (".. figgen:: alpha\n   :alt: a\n   :captoin: c", r"unknown option :captoin:.*:caption:"),
    (".. figgen:: alpha\n   :alt: a\n\n   A body", "takes no body"),
])
def test_rst_directive_errors_name_the_article_as_markdown_ones_do(
    site: Site, directive: str, cause: str
) -> None:
    message = build_error(rst_site(site, directive))
    assert re.search(rf"content/rst\.rst.*{cause}", message, re.S), message


@pytest.mark.parametrize("stray", [
    ".. image:: {figure}alpha", "A reference {figure}alpha in the text.",
    "![a]({figure}alpha \"c\")",
])
def test_a_figure_reference_rst_cannot_read_points_to_the_directive(
    site: Site, stray: str
) -> None:
    message = build_error(rst_site(site, stray))
    assert "content/rst.rst" in message and "'alpha'" in message
    assert ".. figgen:: name" in message
