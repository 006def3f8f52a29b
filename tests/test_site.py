"""The real site: build the article with all its figures into a temporary folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pelican import Pelican
from pelican.settings import read_settings

from conftest import REPO
from test_build import figures, png_size

ARTICLE = "where-do-adversarial-images-come-from.html"
NAMES = [
    "opening", "two_dims", "training_data", "unknowable_truth", "decision_boundaries", "chaos",
    "plausible", "attacks", "fgsm", "jigsaw", "adversarial_training", "augmentation",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the site once, with a fresh cache, so every figure script really runs."""
    tmp = tmp_path_factory.mktemp("site")
    settings = read_settings(
        str(REPO / "pelicanconf.py"),
        override={"OUTPUT_PATH": str(tmp / "output"), "FIGGEN": {"cache_dir": str(tmp / "cache")}},
    )
    Pelican(settings).run()
    return tmp


def test_every_figure_of_the_article_is_computed_and_embedded(built: Path) -> None:
    html = (built / "output" / ARTICLE).read_text()
    found = figures(html)
    assert [re.sub(r"-[0-9a-f]{12}\.png$", "", Path(f["img"]["src"]).name) for f in found] == NAMES
    for fig in found:
        img = fig["img"]
        assert img["alt"].strip() and fig["caption"].strip()
        assert "{" not in fig["caption"] and "}" not in fig["caption"]  # every slot was filled
        width, height = png_size((built / "output" / img["src"]).read_bytes())
        assert (width, height) == (2 * int(img["width"]), 2 * int(img["height"]))


def test_the_imagenet_captions_state_what_the_run_found(built: Path) -> None:
    found = {re.sub(r"-[0-9a-f]{12}\.png$", "", Path(f["img"]["src"]).name): f["caption"]
             for f in figures((built / "output" / ARTICLE).read_text())}
    assert "EfficientNet-Lite0" in found["opening"] and "as espresso (94." in found["opening"]
    assert "as daisy (" in found["fgsm"] and "Rachel Michetti" in found["opening"]
    assert "as jigsaw puzzle (" in found["jigsaw"]


def test_the_formula_renders_as_math_and_the_text_is_the_authors(built: Path) -> None:
    html = (built / "output" / ARTICLE).read_text()
    assert re.search(r'<math [^>]*display="block"', html)
    assert "Where do adversarial images come from?" in html
    assert "adversarial training" in html and "{filename}" not in html


def test_the_index_lists_the_article(built: Path) -> None:
    assert ARTICLE in (built / "output" / "index.html").read_text()
