"""The real site (built once per session by conftest.real_site): figures, math, index, feeds."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import REPO
from test_build import figures, png_size

ARTICLE = "where-do-adversarial-images-come-from.html"
ARTICLE_TITLE = "Where do adversarial images come from?"
NAMES = [
    "opening", "probabilities", "two_dims", "training_data", "unknowable_truth",
    "decision_boundaries", "chaos",
    "plausible", "attacks", "fgsm", "jigsaw", "adversarial_training", "augmentation",
]


def test_every_figure_of_the_article_is_computed_and_embedded(real_site: Path) -> None:
    html = (real_site / "output" / ARTICLE).read_text()
    found = figures(html)
    assert [re.sub(r"-[0-9a-f]{12}\.png$", "", Path(f["img"]["src"]).name) for f in found] == NAMES
    for fig in found:
        img = fig["img"]
        assert img["alt"].strip() and fig["caption"].strip()
        assert "{" not in fig["caption"] and "}" not in fig["caption"]  # every slot was filled
        width, height = png_size((real_site / "output" / img["src"]).read_bytes())
        assert (width, height) == (2 * int(img["width"]), 2 * int(img["height"]))


def test_the_imagenet_captions_state_what_the_run_found(real_site: Path) -> None:
    found = {re.sub(r"-[0-9a-f]{12}\.png$", "", Path(f["img"]["src"]).name): f["caption"]
             for f in figures((real_site / "output" / ARTICLE).read_text())}
    assert "EfficientNet-Lite0" in found["opening"] and "as espresso (94." in found["opening"]
    assert "as daisy (" in found["fgsm"] and "Rachel Michetti" in found["opening"]
    assert "as jigsaw puzzle (" in found["jigsaw"]


def test_the_probabilities_caption_states_the_runs_numbers(real_site: Path) -> None:
    from figgen.figures.imagenet import probabilities
    from figgen.imagenet.experiments import top_classes

    found = {re.sub(r"-[0-9a-f]{12}\.png$", "", Path(f["img"]["src"]).name): f["caption"]
             for f in figures((real_site / "output" / ARTICLE).read_text())}
    out = top_classes(None, probabilities.PHOTO, probabilities.TOP)
    caption = found["probabilities"]
    assert "d = 224 × 224 × 3 = 150,528" in caption and "1,000 probabilities" in caption
    assert f"{out.names[0]} ({out.probabilities[0]:.1%})" in caption
    assert f"add up to {out.probabilities.sum():.1%}" in caption


SECTIONS = [
    "Introduction", "What are adversarial images?", "What are ImageNet classifiers doing?",
    "Where do adversarial images come from?", "What can we do to defend?", "Conclusion",
]


def headings(html: str) -> list[tuple[int, str]]:
    """Each heading of an HTML fragment: its level and its text."""
    return [(int(level), re.sub(r"<[^>]+>", "", text).strip())
            for level, text in re.findall(r"<h([1-6])\b[^>]*>(.*?)</h\1>", html, flags=re.S)]


def test_the_article_has_one_h1_and_its_sections_are_h2(real_site: Path) -> None:
    found = headings((real_site / "output" / ARTICLE).read_text())
    assert [h for h in found if h[0] == 1] == [(1, "Where do adversarial images come from?")]
    assert [h for h in found if h[0] > 1] == [(2, name) for name in SECTIONS]


def test_the_index_summary_has_no_heading_at_the_title_level(real_site: Path) -> None:
    index = (real_site / "output" / "index.html").read_text()
    entries = re.findall(r"<article>(.*?)</article>", index, flags=re.S)
    assert [headings(e)[0] for e in entries] == [(2, ARTICLE_TITLE)]  # the post's title: h2
    summary = re.search(r'<div class="summary">(.*?)</div>', entries[0], flags=re.S)[1]
    assert "intuitive understanding" in summary  # the summary is there...
    assert all(level > 2 for level, _ in headings(summary))  # ...with no heading at h1 or h2


def test_the_feed_entries_carry_the_sections_as_h2(real_site: Path) -> None:
    atom = "{http://www.w3.org/2005/Atom}"
    feed = ET.parse(real_site / "output" / "feeds" / "all.atom.xml").getroot()
    entries = [e for e in feed.iter(f"{atom}entry") if e.findtext(f"{atom}title") == ARTICLE_TITLE]
    entry = entries[0]
    assert headings(entry.findtext(f"{atom}content")) == [(2, name) for name in SECTIONS]
    assert headings(entry.findtext(f"{atom}summary") or "") == []


def test_the_formula_renders_as_math_and_the_text_is_the_authors(real_site: Path) -> None:
    html = (real_site / "output" / ARTICLE).read_text()
    assert re.search(r'<math [^>]*display="block"', html)
    assert "Where do adversarial images come from?" in html
    assert "adversarial training" in html and "{filename}" not in html


def test_the_index_lists_the_article(real_site: Path) -> None:
    assert ARTICLE in (real_site / "output" / "index.html").read_text()


def test_the_article_shows_its_front_matter(real_site: Path) -> None:
    html = (real_site / "output" / ARTICLE).read_text()
    assert "<h1>Where do adversarial images come from?</h1>" in html
    assert '<time datetime="2017-10-29T20:00:00+00:00">29 October 2017</time>' in html
    assert '<a href="./category/adversarial-images.html">Adversarial Images</a>' in html
    assert '<meta property="article:section" content="Adversarial Images">' in html
    descriptions = re.findall(r'<meta name="description" content="([^"]*)"', html)
    assert len(descriptions) == 1 and "adversarial" in descriptions[0]


def test_atom_feeds_list_the_article(real_site: Path) -> None:
    html = (real_site / "output" / ARTICLE).read_text()
    assert '<link href="./feeds/all.atom.xml" type="application/atom+xml"' in html
    for feed in ("all", "adversarial-images"):
        xml = (real_site / "output" / "feeds" / f"{feed}.atom.xml").read_text()
        assert "<title>Where do adversarial images come from?</title>" in xml
        assert f"http://127.0.0.1:8000/{ARTICLE}" in xml  # make serve's address
        assert 'srcset="http://127.0.0.1:8000/figures/' in xml and "data-figgen" not in xml


def test_every_theme_stylesheet_is_linked(real_site: Path) -> None:
    html = (real_site / "output" / ARTICLE).read_text()
    sheets = sorted(p.name for p in (REPO / "theme" / "static" / "css").glob("*.css"))
    assert "style.css" in sheets and "pygments.css" in sheets
    for name in sheets:
        assert f'<link rel="stylesheet" href="./theme/css/{name}">' in html
        assert (real_site / "output" / "theme" / "css" / name).is_file()
