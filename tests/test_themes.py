"""The plugin's own CSS reaches every page with a figure, on any theme, and no feed entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO, Site

LINK = re.compile(r'<link rel="stylesheet" href="([^"]*figgen-[0-9a-f]{12}\.css)"')


def stylesheets(html: str) -> list[str]:
    """The hrefs of the plugin's stylesheet links in a page."""
    return LINK.findall(html)


@pytest.mark.parametrize("theme", ["notmyidea", "simple", str(REPO / "theme")])
def test_every_theme_links_the_plugins_stylesheet(site: Site, theme: str) -> None:
    site.build(THEME=theme, FEED_ALL_ATOM="feeds/all.atom.xml")
    html = site.html()
    [href] = stylesheets(html)  # once, in the first figure, whatever the theme's head says
    assert html.index(href) < html.index('<img src="/figures/alpha-')
    css = (site.root / "output" / href.lstrip("/")).read_text()
    assert ".figgen-stale-mark" in css and "figure.figgen-error" in css
    assert "prefers-color-scheme: dark" in css
    feed = (site.root / "output/feeds/all.atom.xml").read_text()
    assert "figgen-" in feed and "stylesheet" not in feed  # feed readers get no <link>


def test_the_stylesheet_link_resolves_at_any_depth(site: Site) -> None:
    site.build(RELATIVE_URLS=True, ARTICLE_URL="posts/{slug}/",
               ARTICLE_SAVE_AS="posts/{slug}/index.html")
    page = site.root / "output/posts/a-tiny-post/index.html"
    [href] = stylesheets(page.read_text())
    assert href.startswith("../../figures/figgen-")
    assert (page.parent / href).resolve().is_file()


def test_the_blog_theme_no_longer_ships_its_own_copy() -> None:
    # Written once, in the plugin: the theme's head links only the theme's own CSS.
    assert not (REPO / "theme/static/css/figgen.css").exists()
    assert "figgen.css" not in (REPO / "theme/templates/base.html").read_text()


def test_the_stylesheet_ships_in_the_plugins_package() -> None:
    from pelican.plugins.figgen import embed

    assert embed.STYLESHEET.is_file()
    toml = (REPO / "plugins/pelican-figgen/pyproject.toml").read_text()
    assert '"static/*.css"' in toml
    assert Path(embed.__file__).parent / "static" / "figgen.css" == embed.STYLESHEET
