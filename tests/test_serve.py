"""`make serve`: the preview server rebuilds on edits and re-runs only what changed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO, Site
from pelican.plugins.figgen.serve import read_site, watched_paths


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_serve_rebuilds_after_an_edit_and_reruns_only_that_figure(site: Site) -> None:
    elsewhere(site)  # content, output and cache where the settings say, not the defaults
    port = _free_port()
    url = f"http://127.0.0.1:{port}/a-tiny-post.html"
    env = os.environ | {"PYTHONPATH": str(REPO / "plugins")}
    command = [sys.executable, "-m", "pelican.plugins.figgen.serve", "--port", str(port)]
    server = subprocess.Popen(command, cwd=site.root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    version = f"http://127.0.0.1:{port}/__figgen_version"
    try:
        assert _wait_for(lambda: "Gamma plots 4 points" in _get(url))
        assert "/__figgen_version" in _get(url)  # the page reloads itself after a rebuild
        first = _get(version)
        time.sleep(1)  # let the watcher start before the edit
        site.write("data/points.txt", "1 2 3 4 5 6")
        assert _wait_for(lambda: "Gamma plots 6 points" in _get(url))
        report = json.loads((site.root / "build-cache/last-build.json").read_text())
        assert set(report["ran"]) == {"gamma"}
        # The counter moves once the build process has ended, just after it wrote the page.
        assert _wait_for(lambda: int(_get(version) or 0) > int(first))
        # A failing figure shows on the page; the server keeps serving and rebuilding.
        site.append("figs/alpha.py", "\nraise RuntimeError('alpha is broken')\n")
        assert _wait_for(lambda: "could not be updated" in _get(url))
        assert "Gamma plots 6 points" in _get(url) and server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not (site.root / "output").exists()
    assert not Path(site.root / "public" / "a-tiny-post.html").read_text().count("{figure}")
