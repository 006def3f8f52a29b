"""`make serve`: the preview server rebuilds on edits and re-runs only what changed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Site, free_port
from pelican.plugins.figgen import serve
from pelican.plugins.figgen.serve import changed_figures, read_site, watched_paths


def elsewhere(site: Site) -> None:
    """Move the tiny site's content, output and cache to folders the settings name."""
    (site.root / "content").rename(site.root / "posts")
    site.append("pelicanconf.py", 'PATH = "posts"\nOUTPUT_PATH = "public"\n'
                'FIGGEN = {"scripts": "figs", "cache_dir": "build-cache"}\n')


def test_serve_reads_every_path_from_the_settings(site: Site) -> None:
    elsewhere(site)
    found = read_site(site.root / "pelicanconf.py")
    assert (found.root, found.output, found.cache) == \
        (site.root, site.root / "public", site.root / "build-cache")
    for folder in ("public", "build-cache", "output", "venv"):
        (site.root / folder).mkdir()
    (site.root / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    names = {p.name for p in watched_paths(found.root, (found.output, found.cache))}
    assert {"posts", "figs", "helpers", "data", "pelicanconf.py", "output"} <= names
    assert not names & {"public", "build-cache", "venv"}


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _wait_for(predicate, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


class Served:
    """`make serve` on the tiny site, its log in a file, its build events collected."""

    def __init__(self, site: Site, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/a-tiny-post.html"
        self.log = site.root.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "pelican.plugins.figgen.serve", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=site.root, stdout=log, stderr=log, start_new_session=True,
                env=os.environ | {"PYTHONPATH": str(REPO / "plugins")} | (env or {}))
        self.events: list[dict] = []

    def listen(self) -> None:
        """Collect the build events the pages get, in a background thread."""
        def read() -> None:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/__figgen/events") as stream:
                for line in stream:
                    if line.startswith(b"data: "):
                        self.events.append(json.loads(line[6:]))
        threading.Thread(target=read, daemon=True).start()
        assert _wait_for(lambda: bool(self.events))  # the hello: the build served now

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            self.proc.wait(timeout=30)


@contextlib.contextmanager
def serving(site: Site, env: dict | None = None) -> Iterator[Served]:
    served = Served(site, env)
    try:
        assert _wait_for(lambda: "Gamma plots 4 points" in _get(served.url)), served.text()
        time.sleep(1)  # let the watcher start before an edit
        yield served
    finally:
        served.stop()


def test_serve_rebuilds_after_an_edit_and_reruns_only_that_figure(site: Site) -> None:
    elsewhere(site)  # content, output and cache where the settings say, not the defaults
    with serving(site) as served:
        url = served.url
        assert "/__figgen/events" in _get(url)  # the page follows the builds
        site.write("data/points.txt", "1 2 3 4 5 6")
        assert _wait_for(lambda: "Gamma plots 6 points" in _get(url))
        report = json.loads((site.root / "build-cache/last-build.json").read_text())
        assert set(report["ran"]) == {"gamma"}
        # A failing figure shows on the page; the server keeps serving and rebuilding.
        script = (site.root / "figs/alpha.py").read_text()
        site.append("figs/alpha.py", "\nraise RuntimeError('alpha is broken')\n")
        assert _wait_for(lambda: "could not be updated" in _get(url))
        assert "Gamma plots 6 points" in _get(url) and served.proc.poll() is None
        site.write("figs/alpha.py", script + "\n# fixed\n")  # and recovers once it is fixed
        assert _wait_for(lambda: "could not be updated" not in _get(url))
        assert "Alpha is drawn in red" in _get(url)
    assert served.proc.returncode == 0
    assert not (site.root / "output").exists()
    page = Path(site.root / "public" / "a-tiny-post.html").read_text()
    assert not page.count("{figure}") and "__figgen" not in page  # the script is served only


def test_the_events_name_the_changed_figures_or_ask_for_a_reload(site: Site) -> None:
    with serving(site) as served:
        served.listen()
        site.write("data/points.txt", "1 2 3 4 5 6")  # gamma's image and caption change
        assert _wait_for(lambda: len(served.events) >= 2)
        assert served.events[-1]["figures"] == ["fig-gamma"]
        site.append("content/post.md", "\nA new closing line.\n")  # text: the page reloads
        assert _wait_for(lambda: len(served.events) >= 3)
        assert served.events[-1]["figures"] is None
        assert len({e["build"] for e in served.events}) == 3


def test_changed_figures_tells_figures_from_text() -> None:
    page = '<p>{}</p>\n<figure class="figgen" id="fig-a">\n  <img src="{}">\n</figure>\n'
    old = {"post.html": page.format("text", "a-1.png"), "index.html": "i"}
    assert changed_figures(old, old) == ()
    assert changed_figures(old, old | {"post.html": page.format("text", "a-2.png")}) == ("fig-a",)
    assert changed_figures(old, old | {"post.html": page.format("TEXT", "a-2.png")}) is None
    assert changed_figures(old, {"post.html": old["post.html"]}) is None  # a page went away
    # A new page alone (a restyled script's source page) changes no open page.
    source = {"figures/source/a-2.py.html": "code"}
    assert changed_figures(old, old | source) == ()
    assert changed_figures(old, old | source | {"post.html": page.format("text", "a-2.png")}) \
        == ("fig-a",)


def test_serve_builds_keep_compiled_templates_and_compile_an_edited_one_again(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(REPO / "theme", site.root / "theme")
    site.append("pelicanconf.py", 'THEME = "theme"\n')
    compiled: list[str] = []
    keep = serve.Templates.dump_bytecode
    monkeypatch.setattr(serve.Templates, "dump_bytecode",
                        lambda self, bucket: (compiled.append(bucket.key), keep(self, bucket)))
    settings = site.root / "pelicanconf.py"
    assert serve.build(settings) and compiled  # the first build compiles the theme
    compiled.clear()
    assert serve.build(settings) and compiled == []  # the next one reuses it
    article = site.root / "theme/templates/article.html"
    article.write_text(article.read_text().replace("{% block head %}",
                                                   "{% block head %}<!-- edited template -->"))
    assert serve.build(settings) and len(compiled) == 1
    assert "<!-- edited template -->" in site.html()


FAKELIB = "VERSION = {!r}\n"
LIB_HELPER = "import fakelib  # noqa: F401\n"


def test_the_warm_server_outlives_builds_and_restarts_after_an_upgrade(site: Site) -> None:
    libs = Path(tempfile.mkdtemp(prefix="figgen-libs-"))  # outside the project: a library
    (libs / "fakelib").mkdir()
    (libs / "fakelib" / "__init__.py").write_text(FAKELIB.format("1.0"))
    (libs / "fakelib-1.0.dist-info").mkdir()
    (libs / "fakelib-1.0.dist-info" / "METADATA").write_text("Name: fakelib\nVersion: 1.0\n")
    site.write("helpers/common.py", LIB_HELPER + (site.root / "helpers/common.py").read_text())
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(libs)])}
    with serving(site, env) as served:
        assert served.text().count("warm server 1 started") == 1
        site.write("data/points.txt", "1 2 3 4 5 6")  # a build with a figure to run
        assert _wait_for(lambda: "Gamma plots 6 points" in _get(served.url))
        assert "warm server 2" not in served.text()  # the same server forked it
        (libs / "fakelib-1.0.dist-info").rename(libs / "fakelib-2.0.dist-info")
        site.write("data/points.txt", "1 2 3")
        assert _wait_for(lambda: "Gamma plots 3 points" in _get(served.url))
        assert "warm server 2 started" in served.text(), served.text()
        assert "restarting the warm server" in served.text()


SLOW = """\
import subprocess
import time

from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    subprocess.Popen(["sleep", "300"], start_new_session=True)  # escapes its session too
    time.sleep(300)
    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""


def _descendants(pid: int) -> set[int]:
    """The processes below `pid`, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, pp in parents.items() if pp == parent}
        todo.extend(children - found)
        found |= children
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_leaves_no_process_behind(site: Site) -> None:
    with serving(site) as served:
        site.write("figs/slow.py", SLOW)
        site.append("content/post.md", '\n![Slow]({figure}slow "Slow")\n')

        def sleeping() -> bool:
            return any(_cmdline(p).startswith(b"sleep\x00300")
                       for p in _descendants(served.proc.pid) if _alive(p))

        assert _wait_for(sleeping), served.text()
        below = _descendants(served.proc.pid)
        assert len(below) >= 4  # the warm server, the run's supervisor, the script, its sleep
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=30)
    assert _wait_for(lambda: not any(_alive(p) for p in below), 10)
