"""The article's text keeps its promises: computed numbers, the colours drawn, figure names."""

from __future__ import annotations

import colorsys
import re

from conftest import REPO
from figgen.twopixel.plot import COLOURS
from figgen.twopixel.world import CAT, DOG
from pelican.plugins.figgen.markdown_ext import REFERENCE

ARTICLE = REPO / "content" / "where-do-adversarial-images-come-from.md"
# Hue bounds in degrees: a colour is named by the first bound above its hue.
HUES = [(15, "red"), (45, "orange"), (70, "yellow"), (170, "green"), (260, "blue"),
        (330, "purple"), (360, "red")]


def body() -> str:
    """The article's Markdown without its front matter and figure references."""
    text = ARTICLE.read_text().split("\n---\n", 1)[1]
    return REFERENCE.sub("", text)


def hue_name(colour: str) -> str:
    """The everyday name of a saturated colour given as #RRGGBB, by its hue."""
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    hue = colorsys.rgb_to_hls(*rgb)[0] * 360
    return next(name for bound, name in HUES if hue < bound)


def test_the_colours_the_text_names_are_the_colours_drawn() -> None:
    named = re.findall(r"(\w+) or (\w+) areas", body())
    assert named == [(hue_name(COLOURS[CAT]), hue_name(COLOURS[DOG]))] == [("orange", "blue")]


def test_the_text_states_no_image_size_or_dimension_count_by_hand() -> None:
    # Those numbers are the model's: only a figure's caption, filled from its run, states them.
    text = body()
    assert not re.findall(r"\d[\d,]*-dimensional|\d+\s*(?:x|×|\*|\\times)\s*\d+", text)
    assert not re.findall(r"\b(?:299|224|268,?203|260,?203|150,?528)\b", text)


def test_sections_are_second_level_headings_under_the_title() -> None:
    headings = re.findall(r"^(#+) ", body(), flags=re.M)
    assert headings and set(headings) <= {"##", "###"} and headings[0] == "##"


def test_no_code_or_comment_names_a_figure_by_number() -> None:
    # The article numbers no figure: code names a figure by its script instead.
    number = re.compile(r"\b[Ff]ig(?:ure)?s?\.? \d")
    files = [REPO / "README.md", *(REPO / "figgen").rglob("*.py"), *(REPO / "tests").glob("*.py"),
             *(REPO / "plugins").rglob("*.py")]
    found = [f"{f.relative_to(REPO)}:{n}" for f in files
             for n, line in enumerate(f.read_text().splitlines(), 1) if number.search(line)]
    assert found == []
