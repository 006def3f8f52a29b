"""The built site is valid and accessible: the Nu HTML checker finds no error in the article,
the index or any source page, and axe-core finds no violation in headless Chromium, with every
disclosure open, light and dark, at desktop and phone widths.

Both checkers come from npm into .ci/npm/node_modules (`npm ci --prefix .ci/npm`, as `.ci/run`
does); the Nu checker runs on Java. Without them the tests skip, unless FIGGEN_REQUIRE_CHECKERS
is set (CI sets it), in which case they fail. Nothing is fetched at test time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from test_browser import PHONE, browser, color_scheme, server, visit  # noqa: F401 (fixtures)
from test_site import ARTICLE, NAMES

CHECKERS = REPO / ".ci" / "npm" / "node_modules"
VNU = CHECKERS / "vnu-jar" / "build" / "dist" / "vnu.jar"
AXE = CHECKERS / "axe-core" / "axe.min.js"
# An HTML 4.01 page that names no charset, as the source pages once were: the checker must
# find its errors, or a check that finds none proves nothing.
OBSOLETE = """<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN"
   "http://www.w3.org/TR/html4/strict.dtd">
<html><head><meta http-equiv="content-type" content="text/html; charset=None">
<title>x</title></head><body><p>x</p></body></html>
"""
# The explorable figures are enhanced as they come near the viewport: scroll to each until it
# is, so axe checks their controls too; then back to the top.
ENHANCE_ALL = """
const done = arguments[arguments.length - 1];
const wait = () => {
  const figs = Array.from(document.querySelectorAll("figure[data-figgen-module]"));
  const waiting = figs.find((f) => !f.dataset.figgenReady);
  if (!waiting) {
    window.scrollTo(0, 0);
    done(figs.map((f) => f.dataset.figgenReady));
  } else {
    waiting.scrollIntoView();
    setTimeout(wait, 50);
  }
};
wait();
"""
RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document).then((r) => done({
  violations: r.violations.map((v) => ({id: v.id, help: v.help,
                                       nodes: v.nodes.map((n) => n.target.join(" "))})),
  passes: r.passes.map((p) => p.id),
}), (e) => done({error: String(e)}));
"""


def need(path: Path, what: str) -> Path:
    """A checker's file, or skip (fail in CI) saying how to install it."""
    java = shutil.which("java")
    missing = [] if path.is_file() else [f"{what} ({path})"]
    if path == VNU and not java:
        missing.append("java (apt-get install default-jre-headless)")
    if missing:
        message = f"no {' or '.join(missing)}: npm ci --prefix .ci/npm"
        if os.environ.get("FIGGEN_REQUIRE_CHECKERS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_nu_checker_finds_no_error_in_the_article_index_and_source_pages(
    real_site: Path, tmp_path: Path
) -> None:
    output = real_site / "output"
    sources = sorted((output / "figures" / "source").rglob("*.py.html"))
    pages = [output / ARTICLE, output / "index.html", *sources]
    (tmp_path / "obsolete.html").write_text(OBSOLETE)
    run = subprocess.run(
        ["java", "-jar", str(need(VNU, "the Nu HTML checker")), "--format", "json", "--stdout",
         *map(str, pages), str(tmp_path / "obsolete.html")],
        capture_output=True, text=True, timeout=300,
    )
    messages = json.loads(run.stdout)["messages"]
    for m in messages:  # warnings are allowed, but shown (pytest -s) to be read
        print(f"{m['type']} {m.get('subType', '')} {m['url']}:{m.get('lastLine')}: {m['message']}")
    errors = [m for m in messages if m["type"] == "error"]
    assert len(sources) == len(NAMES) and {Path(m["url"]).name for m in errors} == {"obsolete.html"}


@pytest.mark.parametrize("width", [None, PHONE["width"]])  # the window's 1280 px, a phone
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violation_with_every_disclosure_open(
    browser: object, server: str, scheme: str, width: int | None  # noqa: F811 (the fixtures)
) -> None:
    axe = need(AXE, "axe-core").read_text(encoding="utf-8")
    if width:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "width": width})
    color_scheme(browser, scheme)
    try:
        visit(browser, f"{server}/{ARTICLE}")
        source = browser.execute_script("return document.querySelector('a.figgen-source').href")
        results = {}
        for url in (f"{server}/{ARTICLE}", f"{server}/index.html", source):
            visit(browser, url)
            enhanced = browser.execute_async_script(ENHANCE_ALL)
            assert set(enhanced) <= {"true"}, (url, enhanced)
            browser.execute_script(
                "document.querySelectorAll('details').forEach((d) => d.open = true)"
            )
            browser.execute_script(axe)
            results[url] = browser.execute_async_script(RUN_AXE)
    finally:
        color_scheme(browser, "light")
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert {url: r.get("violations", r) for url, r in results.items()} == dict.fromkeys(results, [])
    # The rules that this page needed were run, and passed: the check is real.
    article = results[f"{server}/{ARTICLE}"]["passes"]
    assert {"scrollable-region-focusable", "color-contrast", "image-alt"} <= set(article)
    assert {"label", "select-name"} <= set(article)  # the explorables' slider and menu
