"""Preview server: build, serve the output, and rebuild whenever a source of the site changes.

Pelican's own `--autoreload` watches only content, theme and settings; figures also depend on
`figgen/` and the plugin. Each rebuild runs Pelican in a fresh process, so edits to the plugin
take effect too, and the figure cache re-runs only the figures whose inputs changed. Builds run
with on_error "keep-going": a failing figure shows its error on the page, the server stays up.
Pages are served with a small script that reloads them after each rebuild (it polls this
server only; nothing is written into output/).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import watchfiles

logger = logging.getLogger(__name__)
# Never watched: folders too big to watch that no figure reads (and what builds write, below).
IGNORED = {".git", "node_modules", "__pycache__"}
VERSION_PATH = "/__figgen_version"  # the build counter the pages poll
RELOAD = (
    "<script>/* figgen serve: reload after a rebuild */(function(){var seen=null;"
    f'setInterval(function(){{fetch("{VERSION_PATH}",{{cache:"no-store"}})'
    ".then(function(r){return r.text()}).then(function(v){"
    "if(seen!==null&&v!==seen)location.reload();seen=v}).catch(function(){})},1000)})();"
    "</script>"
)
VERSION = [0]  # the number of the last finished build, read by the server threads


@dataclass(frozen=True)
class Site:
    """Where the settings file puts the project, its output and its figure cache."""

    settings: Path
    root: Path  # FIGGEN["root"]: the folder watched
    output: Path  # OUTPUT_PATH: served, never watched
    cache: Path  # FIGGEN["cache_dir"]: never watched


def read_site(settings: Path) -> Site:
    """Read the paths a build uses from the Pelican settings file (PATH, OUTPUT_PATH, FIGGEN)."""
    from pelican.settings import read_settings

    from .settings import merge

    conf = read_settings(str(settings))  # relative paths are taken from the file's folder
    figgen = merge(conf.get("FIGGEN"), conf["PATH"])
    return Site(settings, figgen.root, Path(conf["OUTPUT_PATH"]).resolve(), figgen.cache_dir)


def watched_paths(root: Path, written: tuple[Path, ...] = ()) -> list[Path]:
    """The project's top-level files and folders, less what builds write and virtualenvs."""
    skipped = {p.resolve() for p in written}
    return sorted(
        p for p in root.iterdir()
        if p.name not in IGNORED and not (p / "pyvenv.cfg").exists()
        and not p.name.startswith(".") and p.resolve() not in skipped
    )


def build(settings: Path) -> bool:
    """Run one Pelican build (keep-going unless the user said otherwise); True if it worked."""
    # No content path: Pelican takes PATH from the settings, as the paths served and watched.
    command = [sys.executable, "-m", "pelican", "-s", str(settings)]
    env = os.environ | {"FIGGEN_ON_ERROR": os.environ.get("FIGGEN_ON_ERROR", "keep-going")}
    ok = subprocess.run(command, env=env).returncode == 0
    if not ok:
        logger.error("build failed (see above); still serving the last good output")
    VERSION[0] += 1  # open pages reload, to the new site or the same one
    return ok


class ReloadingHandler(SimpleHTTPRequestHandler):
    """Serve files, answer the build counter, and add the reload script to every page."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's API name)
        """Answer the build counter, an HTML page with the reload script, or a plain file."""
        if self.path == VERSION_PATH:
            return self._send(str(VERSION[0]).encode(), "text/plain")
        path = Path(self.translate_path(self.path))
        page = path / "index.html" if path.is_dir() else path
        if page.suffix != ".html" or not page.is_file() or (path.is_dir() and
                                                              not self.path.endswith("/")):
            return super().do_GET()
        html = page.read_text(encoding="utf-8")
        where = html.rfind("</body>")
        html = html[:where] + RELOAD + html[where:] if where >= 0 else html + RELOAD
        return self._send(html.encode(), "text/html; charset=utf-8")

    def _send(self, body: bytes, kind: str) -> None:
        """Send a body that no browser may cache."""
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


def serve(output: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the output folder in a background thread."""
    handler = functools.partial(ReloadingHandler, directory=str(output))
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    """Build, serve, and rebuild on every change until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("-s", "--settings", type=Path, default=Path("pelicanconf.py"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    site = read_site(args.settings)
    build(site.settings)
    site.output.mkdir(parents=True, exist_ok=True)
    serve(site.output, args.host, args.port)
    logger.info("serving %s at http://%s:%d/ ; every edit rebuilds", site.output, args.host,
                args.port)
    try:
        for changes in watchfiles.watch(*watched_paths(site.root, (site.output, site.cache))):
            logger.info("changed: %s", ", ".join(sorted({Path(p).name for _, p in changes})))
            build(site.settings)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
