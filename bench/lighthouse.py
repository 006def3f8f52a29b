"""Lighthouse on the built site: the four category scores and CLS, mobile and desktop.

    .venv/bin/python bench/lighthouse.py                 # build output/ (as make site), measure
    .venv/bin/python bench/lighthouse.py --output DIR    # measure a site already built
    .venv/bin/python bench/lighthouse.py --json out.json # also keep the numbers
    .venv/bin/python bench/lighthouse.py --runs 5        # medians of five runs

It serves the folder from 127.0.0.1 with a static server and runs Lighthouse 12 (npm, pinned
in .ci/npm; `make checkers` installs it) in Debian's Chromium, the mobile default and
`--preset=desktop`, on every article page (the pages beside index.html other than Pelican's
lists). Nothing leaves the machine: Chromium resolves no host name but 127.0.0.1 and does no
background networking, and Lighthouse sends no error reports. Issue 13's goal: mobile
performance >= 98, accessibility, best practices and SEO 100, cumulative layout shift 0.
Performance is a measurement (simulated throttling on a shared machine), not a test.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIGHTHOUSE = ROOT / ".ci" / "npm" / "node_modules" / ".bin" / "lighthouse"
CHROMIUM = Path(os.environ.get("CHROME_PATH", "/usr/bin/chromium"))
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
LISTS = {"index.html", "archives.html", "authors.html", "categories.html", "tags.html"}
# No host but loopback resolves, and Chromium's own background traffic is off: a page or
# Lighthouse asking for anything external fails here instead of reaching the network.
CHROME_FLAGS = ("--headless=new --no-sandbox --disable-background-networking "
                "--disable-component-update --disable-domain-reliability --disable-sync "
                "--no-first-run --no-default-browser-check "
                '--host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"')
TEXT = {"text/html", "text/css", "text/javascript", "application/javascript",
        "application/json", "image/svg+xml", "application/atom+xml"}
GOALS = {"mobile": {"performance": 98}, "any": {"accessibility": 100, "best-practices": 100,
                                                "seo": 100}}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files without logging every request; text gzipped when asked, as GitHub Pages does."""

    gzip = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base class name)
        pass

    def do_GET(self) -> None:  # noqa: N802 (base class name)
        """Send a text file gzipped to a client that accepts it, anything else as it is."""
        path = Path(self.translate_path(self.path))
        kind = self.guess_type(str(path))
        accepts = "gzip" in self.headers.get("Accept-Encoding", "")
        if not (self.gzip and accepts and path.is_file() and kind in TEXT):
            return super().do_GET()
        body = gzip.compress(path.read_bytes(), 6)
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None


class QuietServer(http.server.ThreadingHTTPServer):
    """A threaded server that takes a client hanging up for what it is, not an error."""

    def handle_error(self, request: object, client_address: tuple) -> None:
        """Print the traceback of a failed request, unless the client closed the connection."""
        # Lighthouse ends a run while a lazy image may still be coming: a broken pipe.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve(folder: Path, compress: bool = True) -> Iterator[str]:
    """Serve a folder on an ephemeral port of 127.0.0.1; yield its base URL."""
    handler_class = type("Handler", (QuietHandler,), {"gzip": compress})
    handler = functools.partial(handler_class, directory=str(folder))
    httpd = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def build() -> Path:
    """Build the real site into output/ as `make site` does (its figure cache reused)."""
    pelican = Path(sys.executable).with_name("pelican")
    subprocess.run([str(pelican), "content", "-s", "pelicanconf.py"], cwd=ROOT, check=True)
    return ROOT / "output"


def articles(output: Path) -> list[str]:
    """The article pages of a built site: the top-level pages that are not Pelican's lists."""
    return sorted(p.name for p in output.glob("*.html") if p.name not in LISTS)


def lighthouse(url: str, desktop: bool) -> dict:
    """Run Lighthouse on one URL and return its report (JSON, parsed)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        argv = [str(LIGHTHOUSE), url, "--output=json", f"--output-path={report}", "--quiet",
                f"--chrome-flags={CHROME_FLAGS}", "--no-enable-error-reporting",
                "--disable-full-page-screenshot"]
        argv += ["--preset=desktop"] if desktop else []
        env = os.environ | {"CHROME_PATH": str(CHROMIUM), "CI": "1"}
        subprocess.run(argv, check=True, env=env, cwd=tmp)
        return json.loads(report.read_text())


def summary(report: dict) -> dict[str, float]:
    """The four category scores (0 to 100) and the cumulative layout shift of a report."""
    scores = {c: round(100 * report["categories"][c]["score"]) for c in CATEGORIES}
    scores["cls"] = report["audits"]["cumulative-layout-shift"]["numericValue"]
    return scores


def failing(report: dict) -> list[str]:
    """The audits that lose points, weighted ones first: what to fix."""
    weights = {ref["id"]: ref["weight"] for c in CATEGORIES
               for ref in report["categories"][c]["auditRefs"]}
    bad = [(weights.get(a["id"], 0), a["id"], a.get("displayValue", ""))
           for a in report["audits"].values()
           if a.get("score") is not None and a["score"] < 1
           and a.get("scoreDisplayMode") in ("binary", "numeric", "metricSavings")]
    return [f"{aid} {shown}".strip() for _, aid, shown in sorted(bad, reverse=True)]


def met(form: str, scores: dict[str, float]) -> bool:
    """Whether the scores of one form factor meet issue 13's goals."""
    goals = GOALS["any"] | (GOALS["mobile"] if form == "mobile" else {})
    return all(scores[k] >= v for k, v in goals.items()) and scores["cls"] == 0


def main() -> int:
    """Measure every article of the site, mobile and desktop; exit 1 if a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="a built site (default: build output/)")
    parser.add_argument("--json", type=Path, help="write the scores here too")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs per page and form factor; each score is their median")
    parser.add_argument("--no-gzip", action="store_true",
                        help="serve text uncompressed (python -m http.server's way)")
    args = parser.parse_args()
    for need in (LIGHTHOUSE, CHROMIUM):
        if not need.exists():
            sys.exit(f"{need} is missing: `make checkers` (Lighthouse), "
                     "`apt-get install chromium` (Chromium)")
    output = args.output or build()
    results, ok = {}, True
    with serve(output, compress=not args.no_gzip) as base:
        for page in articles(output):
            for form in ("mobile", "desktop"):
                reports = [lighthouse(base + page, desktop=form == "desktop")
                           for _ in range(args.runs)]
                # The median run's audits; each score the median of the runs' (noise).
                report = sorted(reports, key=lambda r: summary(r)["performance"])[len(reports) // 2]
                scores = {k: statistics.median(summary(r)[k] for r in reports)
                          for k in summary(report)}
                results[f"{page} {form}"] = scores
                ok &= met(form, scores)
                shown = "  ".join(f"{k} {v:g}" for k, v in scores.items())
                print(f"{page} {form:8} {shown}  {'ok' if met(form, scores) else 'MISSED'}")
                for line in failing(report):
                    print(f"    {line}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
