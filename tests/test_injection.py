"""Hostile values and malformed references: what a run records is text wherever it lands, and
no reference, however malformed, costs the article its other figures or leaks its marker.

The pages and feeds are parsed (html.parser, xml.etree) and walked, never grepped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import markdown
import pytest

from conftest import POST, Site
from pelican.plugins.figgen import discover, embed
from pelican.plugins.figgen.discover import FigureRef
from pelican.plugins.figgen.errors import FigureBuildError, FigureError
from pelican.plugins.figgen.markdown_ext import FigureReferenceExtension
from pelican.plugins.figgen.settings import merge
from test_build import figures

ATOM = "{http://www.w3.org/2005/Atom}"
PAYLOADS = {
    "s": "<script>alert(1)</script>",
    "q": '"><img src=x onerror=alert(1)>',
    "m": "[x](javascript:alert(1))",
}
HOSTILE_BETA = f"""\
from pelican_figgen.harness import run
from helpers.common import draw


def main(ctx):
    ctx.fields.update({PAYLOADS!r}, acc=0.1234, u="javascript:alert(1)")
    draw(ctx, "blue")


if __name__ == "__main__":
    run(main)
"""
BETA_REF = '![A blue line]({figure}beta "Beta, with a [link](https://example.org/beta)")'
HOSTILE_REF = ('![Beta says {q} and {s}]({figure}beta "*Mine*, [home](https://example.org/h): '
               '{s} {q} {m} at {acc:.1%}, `{q}`")')
# A name that would close the error box's id attribute and add a handler, were it not escaped.
BREAKOUT_REF = '![Broken]({figure}x&quot; onmouseover=&quot;alert "c")'


class Tree(HTMLParser):
    """Every element of an HTML text, with its attributes, and the text between them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text += data


def tree(html: str) -> Tree:
    parser = Tree()
    parser.feed(html)
    parser.close()
    return parser


def assert_inert(html: str) -> Tree:
    """No element, handler or URL from a payload is live; no reference marker is left."""
    found = tree(html)
    for tag, attrs in found.elements:
        assert tag not in ("script", "figgen-ref"), (tag, attrs)
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        assert not (tag == "img" and attrs.get("src") == "x"), attrs
        for key in ("href", "src", "srcset"):
            url = re.sub(r"[\x00-\x20]", "", attrs.get(key, "")).lower()
            assert not url.startswith(("javascript:", "data:")), (tag, attrs)
        assert re.fullmatch(r"[A-Za-z0-9_-]*", attrs.get("id", "")), (tag, attrs)
    return found


def feed_entries(site: Site, kinds: tuple[str, ...] = ("content", "summary")) -> list[str]:
    """The HTML of every entry's content and summary (or `kinds`) in the Atom feed, as XML."""
    root = ET.parse(site.root / "output/feeds/all.atom.xml").getroot()
    assert {e.tag for e in root.iter()} <= {ATOM + t for t in (
        "feed", "title", "link", "id", "updated", "entry", "published", "author", "name",
        "summary", "content", "category", "subtitle")}  # nothing injected into the XML
    texts = [e.text or "" for e in root.iter() if e.tag in {ATOM + k for k in kinds}]
    assert texts
    return texts


def build_hostile(site: Site, post: str, on_error: str) -> None:
    """Beta records the payloads; build the post with the feed on."""
    site.write("figs/beta.py", HOSTILE_BETA)
    site.write("content/post.md", post)
    site.build(FEED_ALL_ATOM="feeds/all.atom.xml",
               FIGGEN={"scripts": "figs", "on_error": on_error})


def test_values_a_run_records_are_text_in_the_page_and_the_feed(site: Site) -> None:
    post = POST.replace(BETA_REF, HOSTILE_REF) + f"\n{BREAKOUT_REF}\n"
    build_hostile(site, post, "keep-going")
    page = assert_inert(site.html())
    beta = next(f for f in figures(site.html()) if "Beta" in f.get("img", {}).get("alt", ""))
    assert beta["img"]["alt"] == f"Beta says {PAYLOADS['q']} and {PAYLOADS['s']}"
    caption = f"Mine, home: {PAYLOADS['s']} {PAYLOADS['q']} {PAYLOADS['m']} at 12.3%, " \
              f"{PAYLOADS['q']}"
    assert beta["caption"] == caption  # every payload as text, the format spec applied
    assert "https://example.org/h" in beta["links"]  # the author's Markdown still works
    assert ("em", {}) in page.elements and ("code", {}) in page.elements
    # The malformed name is an error box, its id and text harmless.
    boxes = [a for t, a in page.elements if t == "figure" and "figgen-error" in a["class"]]
    assert [b["id"] for b in boxes] == ["fig-x--onmouseover--alert"]
    assert "not a figure name (letters, digits, _ - and /): 'x\" onmouseover=\"alert'" \
        in page.text
    assert len([f for f in figures(site.html()) if "img" in f]) == 3
    for entry in feed_entries(site):
        assert_inert(entry)
    assert any(caption in tree(entry).text for entry in feed_entries(site))


def test_a_javascript_link_in_a_caption_is_refused(site: Site) -> None:
    post = POST.replace(BETA_REF, '![A blue line]({figure}beta "[x]({u}) and [y](https://a.b)")')
    with pytest.raises(FigureBuildError) as err:
        build_hostile(site, post, "strict")
    (error,) = err.value.errors
    assert (error.article, error.reference) == ("content/post.md", "beta")
    assert "the caption links to 'javascript:alert(1)'" in error.cause
    build_hostile(site, post, "keep-going")  # the same, shown in a box
    page = assert_inert(site.html())
    assert [a["id"] for t, a in page.elements if t == "figure"] == [
        "fig-alpha", "fig-beta", "fig-gamma"]
    assert "the caption links to 'javascript:alert(1)'" in page.text
    for entry in feed_entries(site):
        assert_inert(entry)


MALFORMED = POST.replace("![A blue line]({figure}beta", "![A blue line]({figure}be ta")


def test_a_name_with_a_space_is_an_error_quoting_it_in_strict_mode(site: Site) -> None:
    site.write("content/post.md", MALFORMED)
    with pytest.raises(FigureBuildError) as err:
        site.build()
    (error,) = err.value.errors
    assert (error.article, error.reference) == ("content/post.md", "be ta")
    assert "not a figure name" in error.cause and "'be ta'" in error.cause
    assert set(site.report()["ran"]) == {"alpha", "gamma"}  # the others were still made


def test_a_name_with_a_space_is_a_box_and_the_other_figures_render(site: Site) -> None:
    site.write("content/post.md", MALFORMED)
    site.build(FEED_ALL_ATOM="feeds/all.atom.xml",
               FIGGEN={"scripts": "figs", "on_error": "keep-going"})
    found = figures(site.html())
    assert [f["img"]["alt"] for f in found if "img" in f] == ["A red line", "Points from a file"]
    assert ["figgen-error" in f["class"] for f in found] == [False, True, False]
    page = assert_inert(site.html())  # no marker left
    assert "This figure (be ta) could not be made." in page.text
    assert "not a figure name (letters, digits, _ - and /): 'be ta'" in page.text
    for entry in feed_entries(site):
        assert_inert(entry)
    (content,) = feed_entries(site, ("content",))
    assert [t for t, _ in tree(content).elements].count("img") == 2


def test_a_marker_left_in_a_page_becomes_an_error(site: Site, monkeypatch) -> None:
    # As if the references could not be read: every marker would otherwise ship as it is.
    monkeypatch.setattr(discover, "find_refs", lambda article, html: [])
    with pytest.raises(FigureBuildError) as err:
        site.build()
    assert sorted(e.reference for e in err.value.errors) == ["alpha", "beta", "gamma"]
    assert "never replaced by its figure" in err.value.errors[0].cause
    site.build(FEED_ALL_ATOM="feeds/all.atom.xml",
               FIGGEN={"scripts": "figs", "on_error": "keep-going"})
    page = assert_inert(site.html())
    assert [a["id"] for t, a in page.elements if t == "figure"] == [
        "fig-alpha", "fig-beta", "fig-gamma"]
    for entry in feed_entries(site):
        assert_inert(entry)


# Unit tests.

def caption(text: str, **fields: object) -> str:
    return embed.caption_html(FigureRef("post.md", "fig", "alt", text, "<m>"), fields)


@pytest.mark.parametrize("value", [*PAYLOADS.values(), "*x* `y` &amp; figgenslot0e"])
def test_a_field_value_is_escaped_text_however_it_looks(value: str) -> None:
    html = caption("Value: {v}, then {w}", v=value, w="<b>")
    assert tree(html).text == f"Value: {value}, then <b>"
    assert [t for t, _ in tree(html).elements] == []


def test_format_specs_and_the_authors_markdown_still_work() -> None:
    html = caption("*{acc:.1%}* of {n:d} [in](https://a.org/{n}), `{w:>4}`; {w!r} {x:{width}}",
                   acc=0.5, n=3, w="ab", x=1.5, width=6)
    assert html == ('<em>50.0%</em> of 3 <a href="https://a.org/3">in</a>, '
                    "<code>  ab</code>; &#x27;ab&#x27;    1.5")


def test_raw_html_written_in_a_caption_is_shown_as_text() -> None:
    html = caption('<img src=x onerror="alert(1)"> and <b>bold</b>')
    assert tree(html).elements == [] and tree(html).text.startswith("<img src=x")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JavaScript:alert(1)",
                                 "jav&#x61;script:alert(1)", " java\tscript:x", "data:text/html,x",
                                 "vbscript:x"])
def test_a_caption_link_or_image_that_is_not_http_mailto_or_relative_is_refused(url: str) -> None:
    # From a run, an entity is text: "jav&#x61;script:" is then no scheme at all.
    from_run = [] if "&" in url else ["[x]({u})"]
    for text in (f"[x]({url})", f"![x]({url})", *from_run):
        with pytest.raises(FigureError, match="the caption links to") as err:
            caption(text, u=url)
        assert (err.value.article, err.value.reference) == ("post.md", "fig")


@pytest.mark.parametrize("url", ["https://a.org/x", "http://a.org", "mailto:a@b.org",
                                 "other.html#x", "/abs/path:1", "#top", "?q=a:b"])
def test_safe_links_are_kept(url: str) -> None:
    assert "href=" in caption(f"[x]({url})")


def test_an_unfillable_caption_names_the_reference() -> None:
    with pytest.raises(FigureError, match=r"quotes \{b\}.*it set: a"):
        caption("{b}", a=1)
    with pytest.raises(FigureError, match="cannot be filled"):
        caption("{a:d}", a="text")


def test_error_box_ids_are_safe_and_its_text_escaped() -> None:
    ref = FigureRef("post.md", 'x"><script>', "alt", "c", "<m>")
    box = embed.error_html(ref, [FigureError("post.md", ref.name, "<b>cause</b>")])
    found = tree(box)
    assert [(t, a.get("id")) for t, a in found.elements] == [
        ("figure", "fig-x---script-"), ("figcaption", None), ("code", None), ("pre", None)]
    assert "<b>cause</b>" in found.text


def md(text: str) -> str:
    return markdown.markdown(text, extensions=[FigureReferenceExtension()])


@pytest.mark.parametrize("name", ["a b", 'a"b', "a&quot;b", "", "sub/a b/c"])
def test_a_malformed_name_is_marked_beside_the_other_references(name: str, tmp_path: Path) -> None:
    html = md(f'![one]({{figure}}{name} "c")\n\n![two]({{figure}}ok "d")\n')
    refs = discover.find_refs("post.md", html)
    assert [r.name for r in refs] == [name.replace("&quot;", '"'), "ok"]
    assert discover.stray_errors("post.md", html) == []
    with pytest.raises(FigureError, match=rf"not a figure name .*{re.escape(repr(refs[0].name))}"):
        discover.load_figure("post.md", refs[0].name, merge({}, tmp_path / "content"), ["ok"])


def test_a_stray_reference_is_an_error_and_the_others_still_found() -> None:
    html = md('See ![x]({figure}a "c") inline.\n\n![two]({figure}ok "d")\n')
    assert [r.name for r in discover.find_refs("post.md", html)] == ["ok"]
    (error,) = discover.stray_errors("post.md", html)
    assert error.reference == "a" and "paragraph of its own" in error.cause


def test_leftover_markers_are_boxed_in_written_pages_and_feeds(tmp_path: Path, caplog) -> None:
    marker = md('![x]({figure}a "c")')
    page = tmp_path / "page.html"
    page.write_text(f"<p>before</p>{marker}<p>after</p>")
    embed.add_srcset(str(page), {})
    found = assert_inert(page.read_text())
    assert ("figure", {"class": "figgen figgen-error", "id": "fig-a", "role": "alert"}) \
        in found.elements
    assert "never replaced by its figure" in caplog.text

    class Feed:
        items = [{"content": marker, "description": "<p>" + marker + "</p>", "link": "/p"}]

    embed.add_srcset_to_feed({}, Feed)
    for value in Feed.items[0].values():
        assert_inert(value)


def test_pipeline_boxes_markers_it_did_not_replace() -> None:
    html, errors = embed.without_markers(md('![x]({figure}a "c")') + "</figgen-ref>", "p.md")
    assert [(e.article, e.reference) for e in errors] == [("p.md", "a")]
    assert_inert(html)
