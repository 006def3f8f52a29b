"""Preview server: build, serve the output, and rebuild whenever a source of the site changes.

One long-lived process: each rebuild runs Pelican in-process (settings read anew, as `pelican
--autoreload` does), and the figures fork from one warm server kept across builds
(execute.KeptServer). Pelican's own `--autoreload` watches only content, theme and settings;
figures also depend on `figgen/` and the plugin, so the whole project is watched; an edit of
the plugin's own code restarts this process (its modules are loaded once). Builds run with
on_error "keep-going": a failing figure shows its error on the page, the server stays up.
Each rebuild is first a preview: a stale figure runs as a draft (its main render alone, a
fast PNG; pipeline.DRAFT), and once that page is served the same figures run in full in the
background (Finisher), swapped in when done; a new edit cancels that full build.
Served pages get a small script (never written into output/) that listens to this server's
events (`/__figgen/events`, Server-Sent Events): after a build that changed only figures it
swaps those `<figure>` elements in place, after any other change it reloads the page.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import watchfiles
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket

from .settings import FiggenSettings

logger = logging.getLogger(__name__)
# Never watched: folders too big to watch that no figure reads (and what builds write, below).
IGNORED = {".git", "node_modules", "__pycache__"}
EVENTS_PATH = "/__figgen/events"  # Server-Sent Events: one per finished build
KEEPALIVE = 15.0  # seconds between two comments on an idle event stream (proxies close it)
FIGURE = re.compile(r'<figure\b[^>]*\bid="(fig-[^"]+)"[^>]*>.*?</figure>', re.S)
# The page's listener: swap the figures a build changed, reload for anything else. On
# reconnecting (this process restarted, or the connection dropped) the first event names the
# build now served: a page that saw another one reloads.
SCRIPT = (
    "<script>/* figgen serve: follow rebuilds */(function(){var seen=null;"
    f'var events=new EventSource("{EVENTS_PATH}");'
    "function reload(){location.reload()}"
    "function swap(ids){fetch(location.href,{cache:'no-store'}).then(function(r){"
    "return r.text()}).then(function(text){"
    "var doc=new DOMParser().parseFromString(text,'text/html');"
    "for(var i=0;i<ids.length;i++){var old=document.getElementById(ids[i]),"
    "now=doc.getElementById(ids[i]);if(!old&&!now)continue;"
    # A missing figure, or an explorable one (its module enhances it once, on load): reload.
    "if(!old||!now||now.hasAttribute('data-figgen-module'))return reload();"
    "if(old.outerHTML!==now.outerHTML)old.replaceWith(document.importNode(now,true))}"
    "}).catch(reload)}"
    "events.onmessage=function(m){var e=JSON.parse(m.data);"
    "if(seen===null||e.hello){if(seen!==null&&e.build!==seen)reload();seen=e.build;return}"
    "seen=e.build;if(e.figures===null)reload();else if(e.figures.length)swap(e.figures)}"
    "})();</script>"
)


class Templates(BytecodeCache):
    """Compiled Jinja templates kept in memory across this process's builds."""

    # Pelican compiles its theme anew for every build: about half of a text edit's rebuild.
    # A template whose source changed is compiled again (Jinja compares its checksum).

    def __init__(self) -> None:
        self._compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        """Fill the bucket from memory, if this template was compiled before."""
        if bucket.key in self._compiled:
            bucket.bytecode_from_string(self._compiled[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        """Keep a template just compiled."""
        self._compiled[bucket.key] = bucket.bytecode_to_string()


# One per set of Jinja options (its extensions and syntax change the compiled code).
TEMPLATES: dict[str, Templates] = {}


def with_templates_kept(conf: dict[str, Any]) -> dict[str, Any]:
    """Pelican settings whose Jinja environments share this process's compiled templates."""
    options = {k: v for k, v in conf["JINJA_ENVIRONMENT"].items() if k != "bytecode_cache"}
    kept = TEMPLATES.setdefault(repr(sorted(options.items())), Templates())
    # A new dict: Pelican's default one is shared by every settings object.
    return conf | {"JINJA_ENVIRONMENT": options | {"bytecode_cache": kept}}


@dataclass(frozen=True)
class Site:
    """Where the settings file puts the project, its output and its figure cache."""

    settings: Path
    output: Path  # OUTPUT_PATH: served, never watched
    figgen: FiggenSettings  # FIGGEN as make serve started (each build reads it anew)

    @property
    def root(self) -> Path:
        """FIGGEN["root"]: the folder watched."""
        return self.figgen.root

    @property
    def cache(self) -> Path:
        """FIGGEN["cache_dir"]: never watched."""
        return self.figgen.cache_dir


@dataclass(frozen=True)
class Build:
    """A finished build as the pages learn of it."""

    number: int
    token: str  # this process and build: a page that reconnects knows whether it missed one
    figures: tuple[str, ...] | None  # the ids of the figures it changed; None: reload


class Announcer:
    """The last finished build, and a way for event streams to wait for the next one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.last = Build(0, f"{os.getpid()}-{time.time_ns()}-0", ())
        # The HTML pages as that build left them, served instead of the files: a build writes
        # a page in place, and a reader must never get one half written.
        self.pages: Mapping[str, str] = {}

    def announce(self, figures: tuple[str, ...] | None, pages: Mapping[str, str]) -> Build:
        """Record a finished build and the pages it left, and wake every stream."""
        with self._changed:
            number = self.last.number + 1
            token = f"{self.last.token.rpartition('-')[0]}-{number}"
            self.last, self.pages = Build(number, token, figures), pages
            self._changed.notify_all()
            return self.last

    def after(self, number: int, timeout: float) -> Build | None:
        """The first build after `number` (one that folds any missed: reload), or None."""
        with self._changed:
            self._changed.wait_for(lambda: self.last.number > number, timeout)
            last = self.last
        if last.number <= number:
            return None
        return last if last.number == number + 1 else Build(last.number, last.token, None)


BUILDS = Announcer()


def read_site(settings: Path) -> Site:
    """Read the paths a build uses from the Pelican settings file (PATH, OUTPUT_PATH, FIGGEN)."""
    from pelican.settings import read_settings

    from .settings import merge

    conf = read_settings(str(settings))  # relative paths are taken from the file's folder
    figgen = merge(conf.get("FIGGEN"), conf["PATH"])
    return Site(settings, Path(conf["OUTPUT_PATH"]).resolve(), figgen)


def watched_paths(root: Path, written: tuple[Path, ...] = ()) -> list[Path]:
    """The project's top-level files and folders, less what builds write and virtualenvs."""
    skipped = {p.resolve() for p in written}
    return sorted(
        p for p in root.iterdir()
        if p.name not in IGNORED and not (p / "pyvenv.cfg").exists()
        and not p.name.startswith(".") and p.resolve() not in skipped
    )


def pages(output: Path) -> dict[str, str]:
    """Every HTML page of the output, by its path below it."""
    found = {}
    for page in output.rglob("*.html"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found[page.relative_to(output).as_posix()] = page.read_text(encoding="utf-8")
    return found


def changed_figures(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str, ...] | None:
    """The ids of the figures that differ between two builds' pages; None if anything else does."""
    # A new page changes no open one (an edited script's source page is new: it is named by
    # the script's hash, and the figure linking to it is swapped); a page gone may be open.
    if not before or not before.keys() <= after.keys():
        return None
    changed: set[str] = set()
    for name, old in before.items():
        new = after[name]
        if new == old:
            continue
        old_figures, new_figures = _figures(old), _figures(new)
        # The same page once every figure is cut out: only figures changed on it.
        if FIGURE.sub("", old) != FIGURE.sub("", new) or old_figures.keys() != new_figures.keys():
            return None
        changed.update(i for i in new_figures if new_figures[i] != old_figures[i])
    return tuple(sorted(changed))


def _figures(html: str) -> dict[str, str]:
    """A page's figures by id."""
    return {match[1]: match[0] for match in FIGURE.finditer(html)}


def build(settings: Path, draft: bool = False) -> bool:
    """Run one Pelican build in this process (a preview if draft); True if it worked."""
    from pelican.settings import read_settings

    from . import pipeline, run

    # Builds never overlap: the full one ends before the next preview.
    pipeline.DRAFT, pipeline.SHOWS_DRAFTS = draft, False
    try:
        # Read anew each build: an edit of the settings file takes effect, as --autoreload does.
        conf = with_templates_kept(read_settings(str(settings)))
        cls = conf["PELICAN_CLASS"]
        if isinstance(cls, str):
            module, _, name = cls.rpartition(".")
            cls = getattr(__import__(module, fromlist=[name]), name)
        cls(conf).run()
        return True
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or the figures' BuildInterrupted
        raise KeyboardInterrupt from stop
    except run.Interrupted:  # a full build cancelled by a new edit: rebuild() says so
        raise
    except Exception:  # noqa: BLE001 (any failure of a build: log it, keep serving)
        logger.exception("build failed; still serving the last good output")
        return False


def rebuild(site: Site, before: dict[str, str], draft: bool = False) -> dict[str, str]:
    """Build (a preview if draft), announce what changed on the pages, return the pages served."""
    from . import run

    start = time.perf_counter()
    try:
        build(site.settings, draft)
    except run.Interrupted:  # cancelled by a new edit: its figures killed, no page written
        logger.info("figgen serve: full build cancelled by a new edit")
        return before
    after = pages(site.output)
    event = BUILDS.announce(changed_figures(before, after), after)
    logger.info("figgen serve: %sbuild %d in %.2f s (%s)", "preview " if draft else "",
                event.number, time.perf_counter() - start,
                "reload" if event.figures is None else f"figures {', '.join(event.figures)}"
                if event.figures else "no page changed")
    return after


class Finisher:
    """The background work of make serve: the full build that follows a preview, until done or
    cancelled, or the warm server's start; the next preview waits for either."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self._thread: threading.Thread | None = None
        self._served: dict[str, str] = {}

    def start(self, served: dict[str, str]) -> None:
        """Build in full in the background, from the pages the preview served."""
        self._served = served
        self._begin(self._finish)

    def started(self) -> bool:
        """Whether it was given work since it was last stopped."""
        return self._thread is not None

    def warm(self) -> None:
        """Start the warm server in the background: the watcher starts meanwhile."""
        self._begin(functools.partial(warm_up, self._site))

    def _begin(self, work: Callable[[], None]) -> None:
        """Run work in a thread of its own."""
        self._thread = threading.Thread(target=work, name="figgen-background", daemon=True)
        self._thread.start()

    def _finish(self) -> None:
        """Build in full and announce the final figures."""
        self._served = rebuild(self._site, self._served)

    def stop(self) -> dict[str, str]:
        """Cancel the full build if it runs (its figures killed, nothing stored).

        Returns the pages it served, once; {} when none since the last call.
        """
        from . import run

        if self._thread is not None and self._thread.is_alive():
            run.stop_all()  # its runs raise Interrupted: the build ends before writing a page
            self._thread.join()
        # The one place make serve clears the stop (only this sets it, Ctrl-C aside): once the
        # stopped build has ended, so that the next build runs; never when a build starts
        # (execute._local clears it only without make serve), so a stop() right after start()
        # counts.
        run.STOPPING.clear()
        served, self._thread, self._served = self._served, None, {}
        return served


def warm_up(site: Site) -> None:
    """Start the kept warm server now: the first edit's figure must not wait for it."""
    from . import execute
    from .cache import Store

    settings = site.figgen
    kept = execute.kept_server(settings)
    if kept is None:
        return
    try:
        scratch = Store(settings.cache_dir).scratch()
    except OSError as err:  # a read-only cache: the build that needs to run a figure says so
        logger.warning("figgen serve: no warm server started (%s)", err)
        return
    kept.server(settings, scratch)


def preview(site: Site, served: dict[str, str], finisher: Finisher) -> dict[str, str]:
    """Cancel the running full build, build a preview, then finish it in the background."""
    from . import pipeline

    served = finisher.stop() or served  # and its stop cleared: it must not stop this build
    served = rebuild(site, served, draft=True)
    if pipeline.SHOWS_DRAFTS:  # read before the full build starts: each build sets it anew
        finisher.start(served)
    return served


class ReloadingHandler(SimpleHTTPRequestHandler):
    """Serve files, the build events, and add the listening script to every page."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's API name)
        """Answer the event stream, an HTML page with the script, or a plain file."""
        if self.path == EVENTS_PATH:
            return self._events()
        path = Path(self.translate_path(self.path))
        page = path / "index.html" if path.is_dir() else path
        if page.suffix != ".html" or not page.is_file() or (path.is_dir() and
                                                              not self.path.endswith("/")):
            return super().do_GET()
        html = BUILDS.pages.get(page.relative_to(self.directory).as_posix()) \
            or page.read_text(encoding="utf-8")
        where = html.rfind("</body>")
        html = html[:where] + SCRIPT + html[where:] if where >= 0 else html + SCRIPT
        return self._send(html.encode(), "text/html; charset=utf-8")

    def _events(self) -> None:
        """Stream one event per finished build, first the one served now, until disconnected."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        last = BUILDS.last
        with contextlib.suppress(OSError):
            self._event({"hello": True, "build": last.token})
            while True:
                event = BUILDS.after(last.number, KEEPALIVE)
                if event is None:
                    self.wfile.write(b": idle\n\n")
                    self.wfile.flush()
                    continue
                last = event
                self._event({"build": event.token, "number": event.number,
                             "figures": None if event.figures is None else list(event.figures)})

    def _event(self, data: Mapping[str, Any]) -> None:
        """Send one Server-Sent Event."""
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _send(self, body: bytes, kind: str) -> None:
        """Send a body that no browser may cache."""
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        """Requests are not logged: the build's lines stay readable."""


def serve(output: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the output folder in a background thread."""
    handler = functools.partial(ReloadingHandler, directory=str(output))
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def own_code() -> tuple[Path, ...]:
    """The folders of the plugin's own code, loaded once by this process."""
    import pelican_figgen

    return (Path(__file__).parent.resolve(), Path(pelican_figgen.__file__).parent.resolve())


def edits_own_code(changes: Iterable[str]) -> bool:
    """Whether a changed file is the plugin's own Python code."""
    folders = own_code()
    return any(Path(p).suffix == ".py" and Path(p).resolve().is_relative_to(f)
               for p in changes for f in folders)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the server as Ctrl-C does: the warm server and running figures stop too."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> None:
    """Build, serve, and rebuild on every change until interrupted."""
    from . import execute

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("-s", "--settings", type=Path, default=Path("pelicanconf.py"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _stop_on_sigterm()
    os.environ.setdefault("FIGGEN_ON_ERROR", "keep-going")
    site = read_site(args.settings)
    execute.KEEP_WARM = execute.KeptServer()
    server, finisher = None, Finisher(site)
    try:
        served = preview(site, {}, finisher)
        site.output.mkdir(parents=True, exist_ok=True)
        server = serve(site.output, args.host, args.port)
        logger.info("serving %s at http://%s:%d/ ; every edit rebuilds", site.output, args.host,
                    args.port)
        if not finisher.started():  # else the full build starts the warm server
            finisher.warm()
        watched = watched_paths(site.root, (site.output, site.cache))
        for changes in watchfiles.watch(*watched, debounce=400, step=10):
            changed = {p for _, p in changes}
            logger.info("changed: %s", ", ".join(sorted({Path(p).name for p in changed})))
            if edits_own_code(changed):
                finisher.stop()
                _restart(server, execute.KEEP_WARM)
            served = preview(site, served, finisher)
    except KeyboardInterrupt:
        logger.info("figgen serve: stopped")
    finally:
        finisher.stop()  # before the warm server goes: its runs are killed, not orphaned
        execute.KEEP_WARM.close()
        if server is not None:
            server.server_close()


def _restart(server: ThreadingHTTPServer, kept: Any) -> None:
    """Start this server anew (the plugin's code changed): same arguments, same process id."""
    logger.info("figgen serve: the plugin's code changed; restarting")
    kept.close()
    server.server_close()  # the new process binds the port again (open pages reconnect)
    os.execv(sys.executable, [sys.executable, "-m", __spec__.name, *sys.argv[1:]])


if __name__ == "__main__":
    main()
