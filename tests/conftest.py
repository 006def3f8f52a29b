"""Sites to test: a tiny one in a temporary folder (three figure scripts, a shared helper, a data
file), and the real one, built once per session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))  # the plugin package, as Pelican's PLUGIN_PATHS does

CONF = f"""
PATH = "content"
OUTPUT_PATH = "output"
THEME = {str(REPO / "theme")!r}
PLUGIN_PATHS = [{str(REPO / "plugins")!r}]
PLUGINS = ["pelican.plugins.figgen", "tex_mathml"]
FIGGEN = {{"scripts": "figs"}}
TIMEZONE = "UTC"
FEED_ALL_ATOM = None
CATEGORY_FEED_ATOM = None
"""

POST = """\
Title: A tiny post
Date: 2024-01-02
Category: Tests

The formula $$ a^2 + b^2 = c^2 $$ is display math.

![A red line]({figure}alpha "Alpha is drawn in {color}")

![A blue line]({figure}beta "Beta, with a [link](https://example.org/beta)")

![Points from a file]({figure}gamma "Gamma plots {n} points")
"""

# An article whose first figure comes after a few screens of a phone's text (2,000 characters).
LONG_POST = """\
Title: A long read
Date: 2024-01-03
Category: Tests

""" + "".join(f"Paragraph {i}. " + "Words that fill the screen before any figure. " * 8 + "\n\n"
              for i in range(5)) + """\
![A red line]({figure}alpha "Alpha, after the text")

![A blue line]({figure}beta "Beta, after it")
"""

HELPER = """\
from matplotlib.figure import Figure


def draw(ctx, color):
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1], [0, 1], color=color)
    ctx.fields["color"] = color
    ctx.save(fig)
"""


def line_script(color: str) -> str:
    """A figure script that draws through the shared helper."""
    return textwrap.dedent(f"""\
        from pelican_figgen.harness import run
        from helpers.common import draw


        def main(ctx):
            draw(ctx, {color!r})


        if __name__ == "__main__":
            run(main)
        """)


# A figure stuck past its 2 s time-out, in a function of its own: where it was shows in its stack.
# No plotting library to import: under load, a 2 s time-out could strike mid-import.
STUCK = """\
import time

from pelican_figgen.harness import run

__figure__ = {"timeout": 2}


def wait_forever():
    time.sleep(300)


def main(ctx):
    wait_forever()


if __name__ == "__main__":
    run(main)
"""

GAMMA = """\
from matplotlib.figure import Figure

from pelican_figgen.harness import run

__figure__ = {"data": ["data/points.txt"]}


def main(ctx):
    values = [float(v) for v in ctx.data("data/points.txt").read_text().split()]
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot(values)
    ctx.fields["n"] = len(values)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""


@dataclass
class Site:
    """A tiny Pelican site on disk, with helpers to edit and build it."""

    root: Path

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def append(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.write_text(path.read_text() + text)

    def build(self, **overrides: object) -> dict:
        """Build in-process; return the figure report of this build."""
        from pelican import Pelican
        from pelican.settings import read_settings

        settings = read_settings(str(self.root / "pelicanconf.py"), override=overrides)
        Pelican(settings).run()
        return self.report()

    def build_cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Build with the pelican command, as a user does."""
        pelican = Path(sys.executable).parent / "pelican"
        return self.command([str(pelican), "content", "-s", "pelicanconf.py", *args], env)

    def figgen(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the figure command line, `python -m pelican.plugins.figgen ARGS`."""
        return self.command([sys.executable, "-m", "pelican.plugins.figgen", *args], env)

    def command(self, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a command in the site's folder, the plugin importable, output captured."""
        return subprocess.run(argv, cwd=self.root, capture_output=True, text=True,
                              env=self.env(env))

    def env(self, extra: dict | None = None) -> dict:
        """The environment of a command run in the site's folder."""
        # rich wraps logs at 80 columns otherwise; figgen is this checkout's, not the one the
        # virtualenv's editable install names
        path = os.pathsep.join([str(REPO / "plugins"), str(REPO)])
        return os.environ | {"COLUMNS": "200", "PYTHONPATH": path} | (extra or {})

    def report(self) -> dict:
        return json.loads((self.root / ".figgen-cache" / "last-build.json").read_text())

    def html(self, name: str = "a-tiny-post.html") -> str:
        return (self.root / "output" / name).read_text()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A fresh tiny site whose scripts have never run."""
    s = Site(tmp_path)
    s.write("pelicanconf.py", CONF)
    s.write("content/post.md", POST)
    s.write("helpers/__init__.py", "")
    s.write("helpers/common.py", HELPER)
    s.write("figs/alpha.py", line_script("red"))
    s.write("figs/beta.py", line_script("blue"))
    s.write("figs/gamma.py", GAMMA)
    s.write("data/points.txt", "1 3 2 5")
    return s


@pytest.fixture(scope="session")
def real_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the real site once per session, with a fresh cache, so every figure really runs."""
    from pelican import Pelican
    from pelican.settings import read_settings

    tmp = tmp_path_factory.mktemp("site")
    settings = read_settings(
        str(REPO / "pelicanconf.py"),
        override={"OUTPUT_PATH": str(tmp / "output"), "FIGGEN": {"cache_dir": str(tmp / "cache")}},
    )
    Pelican(settings).run()
    return tmp


def free_port() -> int:
    """A TCP port free now on localhost, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
