"""Preview server: build, serve output/, and rebuild whenever a source of the site changes.

Pelican's own `--autoreload` watches only content, theme and settings; figures also depend on
`figgen/` and the plugin. Each rebuild runs Pelican in a fresh process, so edits to the plugin
take effect too, and the figure cache re-runs only the figures whose inputs changed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import watchfiles

logger = logging.getLogger(__name__)
# Never watched: what builds write, and folders too big to watch that no figure reads.
IGNORED = {"output", ".figgen-cache", ".git", "node_modules", "__pycache__"}


def watched_paths(root: Path) -> list[Path]:
    """The project's top-level files and folders, less outputs, caches and virtualenvs."""
    return sorted(
        p for p in root.iterdir()
        if p.name not in IGNORED and not (p / "pyvenv.cfg").exists()
        and not p.name.startswith(".")
    )


def build(settings: str) -> bool:
    """Run one Pelican build; True when it succeeded."""
    command = [sys.executable, "-m", "pelican", "content", "-s", settings]
    ok = subprocess.run(command).returncode == 0
    if not ok:
        logger.error("build failed (see above); still serving the last good output")
    return ok


def serve(output: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the output folder in a background thread."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(output))
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    """Build, serve, and rebuild on every change until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--settings", default="pelicanconf.py")
    parser.add_argument("--output", type=Path, default=Path("output"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.settings)
    args.output.mkdir(exist_ok=True)
    serve(args.output, args.host, args.port)
    logger.info("serving http://%s:%d/ ; every edit rebuilds", args.host, args.port)
    try:
        for changes in watchfiles.watch(*watched_paths(Path.cwd())):
            logger.info("changed: %s", ", ".join(sorted({Path(p).name for _, p in changes})))
            build(args.settings)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
