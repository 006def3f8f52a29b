"""The plugin as a user installs it: its wheel in a fresh venv, on a small site of their own.

The venv holds only the wheel built from plugins/pelican-figgen and what it declares, installed
offline from `.wheelhouse/` (`make wheelhouse`, which `make test` runs). Without it these tests
skip, unless FIGGEN_REQUIRE_PACKAGE is set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / ".wheelhouse"

CONF = """\
PATH = "content"
OUTPUT_PATH = "output"
PLUGINS = ["figgen"]
FIGGEN = {"scripts": "figures"}
TIMEZONE = "UTC"
FEED_ALL_ATOM = None
CATEGORY_FEED_ATOM = None
"""

HELPER = """\
def style(ax):
    ax.set_xticks([])
    ax.set_yticks([])
"""

SCATTER = """\
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pelican_figgen.harness import run
from plotstyle import style

__figure__ = {"data": ["data/points.txt"]}


def main(ctx):
    points = np.loadtxt(Path("data/points.txt"))
    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1])
    style(ax)
    ctx.fields["n"] = len(points)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""

WAVE = """\
import numpy as np
from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    x = np.linspace(0, 2 * np.pi, 50)
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot(x, np.sin(x))
    ctx.fields["peak"] = f"{np.sin(x).max():.2f}"
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""

MARKDOWN = """\
Title: Points
Date: 2024-01-02

![Four points in the plane]({figure}scatter "The {n} points of the file")
"""

RST = """\
A wave
######

:date: 2024-01-03

.. figgen:: wave
   :alt: One period of a sine wave
   :caption: A sine wave, at most {peak}
"""


@dataclass(frozen=True)
class UserSite:
    """A small blog of a user's own, built with the `pelican` of a fresh venv."""

    root: Path
    venv: Path

    def build(self) -> subprocess.CompletedProcess:
        """Run the venv's `pelican` on the site, as its user would."""
        return subprocess.run(
            [str(self.venv / "bin/pelican"), "content", "-s", "pelicanconf.py"],
            cwd=self.root, capture_output=True, text=True, env=clean_env(self.venv),
        )

    def ran(self) -> dict:
        """Build, check it succeeded, and return the figures that ran."""
        done = self.build()
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads((self.root / ".figgen-cache/last-build.json").read_text())["ran"]


def clean_env(venv: Path) -> dict[str, str]:
    """An environment holding nothing of this repository: no PYTHONPATH, no venv of ours."""
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    path = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])
    return keep | {"PATH": path, "COLUMNS": "200", "PIP_CONFIG_FILE": os.devnull}


def run(argv: list[str], **kwargs: object) -> None:
    """Run a set-up command; fail with its output if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the plugin's wheel and its declared dependencies only."""
    if not (WHEELHOUSE / ".complete").is_file():
        message = f"no wheelhouse at {WHEELHOUSE} (make wheelhouse)"
        if os.environ.get("FIGGEN_REQUIRE_PACKAGE"):
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("package")
    # A copy: building in place would leave build/ and egg-info in the plugin's folder.
    source = tmp / "src"
    shutil.copytree(REPO / "plugins/pelican-figgen", source,
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    offline = ["--no-index", "--find-links", str(WHEELHOUSE), "--quiet"]
    env = clean_env(Path(sys.executable).parent)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "-w", str(tmp / "dist"),
         str(source)], env=env)
    run([sys.executable, "-m", "venv", str(tmp / "venv")], env=env)
    run([str(tmp / "venv/bin/python"), "-m", "pip", "install", *offline, "--find-links",
         str(tmp / "dist"), "pelican-figgen"], env=env)
    return tmp / "venv"


@pytest.fixture(scope="module")
def user_site(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> UserSite:
    """The user's site, built once."""
    root = tmp_path_factory.mktemp("blog")
    for rel, text in {
        "pelicanconf.py": CONF, "plotstyle.py": HELPER, "figures/scatter.py": SCATTER,
        "figures/wave.py": WAVE, "data/points.txt": "0 0\n1 1\n2 0\n3 1\n",
        "content/points.md": MARKDOWN, "content/wave.rst": RST,
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    site = UserSite(root, venv)
    assert set(site.ran()) == {"scatter", "wave"}
    return site


class _Figures(HTMLParser):
    """Collect each <figure>'s image (src, alt) and its caption's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.figures: list[dict[str, str]] = []
        self.in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self.figures.append({"caption": ""})
        elif self.figures and tag == "img" and "src" not in self.figures[-1]:
            self.figures[-1] |= {"src": a.get("src", ""), "alt": a.get("alt", "")}
        self.in_caption = self.in_caption or tag == "figcaption"

    def handle_endtag(self, tag: str) -> None:
        self.in_caption = self.in_caption and tag != "figcaption"

    def handle_data(self, data: str) -> None:
        if self.in_caption:
            self.figures[-1]["caption"] += data


def figures_of(page: Path) -> list[dict[str, str]]:
    """The figures of a written page."""
    parser = _Figures()
    parser.feed(page.read_text())
    return parser.figures


def test_the_venv_has_neither_torch_nor_this_blogs_science(venv: Path, tmp_path: Path) -> None:
    for module in ("torch", "figgen", "sklearn"):
        done = subprocess.run([str(venv / "bin/python"), "-c", f"import {module}"],
                              cwd=tmp_path, capture_output=True, text=True, env=clean_env(venv))
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    run([str(venv / "bin/python"), "-c", "import pelican, matplotlib, numpy, pelican_figgen"],
        cwd=tmp_path, env=clean_env(venv))


def test_markdown_and_rst_articles_get_their_figures_on_the_default_theme(
    user_site: UserSite,
) -> None:
    output = user_site.root / "output"
    for page, alt, caption in [
        ("points.html", "Four points in the plane", "The 4 points of the file"),
        ("a-wave.html", "One period of a sine wave", "A sine wave, at most 1.00"),
    ]:
        html = (output / page).read_text()
        assert "/theme/css/main.css" in html  # Pelican's default theme, notmyidea
        [figure] = figures_of(output / page)
        assert figure["alt"] == alt and caption in figure["caption"]
        assert (output / figure["src"].lstrip("/")).read_bytes().startswith(b"\x89PNG")


def test_a_second_build_runs_nothing(user_site: UserSite) -> None:
    assert user_site.ran() == {}


def test_editing_the_helper_reruns_exactly_the_figure_importing_it(user_site: UserSite) -> None:
    helper = user_site.root / "plotstyle.py"
    helper.write_text(helper.read_text() + "    ax.set_title('points')\n")
    assert set(user_site.ran()) == {"scatter"}


def test_a_typo_names_the_closest_figure(user_site: UserSite) -> None:
    article = user_site.root / "content/wave.rst"
    text = article.read_text()
    article.write_text(text.replace(".. figgen:: wave", ".. figgen:: wav"))
    try:
        done = user_site.build()
    finally:
        article.write_text(text)
    assert done.returncode != 0
    assert "content/wave.rst" in done.stdout + done.stderr
    assert "closest: wave" in done.stdout + done.stderr
