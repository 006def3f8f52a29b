"""The built article in headless Chromium, served from 127.0.0.1: images, math, no console
errors, no request off localhost, the code disclosure, dark mode and a phone-sized screen.

Screenshots go to test-output/ at the repository root. Needs Debian's chromium and
chromium-driver (`.ci/run` installs them); without them the tests skip, unless
FIGGEN_REQUIRE_BROWSER is set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import POST, REPO, Site, line_script
from test_serve import serving
from test_site import ARTICLE, NAMES

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-output"
# No background traffic: this machine's network is closed, and none of it is the page's.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900", "--hide-scrollbars",
]
# Schemes no request leaves the browser for: Chromium's start-up new tab page may still be
# loading chrome:// and chrome-untrusted:// files when the first visit begins.
IN_BROWSER = {"data", "blob", "about", "chrome", "chrome-untrusted", "devtools"}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}

# Count the images not loaded yet (lazy, below the fold), then scroll each into view, wait
# until it is decoded, and report on all.
LOAD_IMAGES = """
const done = arguments[arguments.length - 1];
const pending = Array.from(document.images).filter((img) => !img.complete).length;
(async () => {
  for (const img of document.images) {
    img.scrollIntoView({block: "center"});
    try { await img.decode(); } catch (e) {}
  }
  window.scrollTo(0, 0);
  done({pending, images: Array.from(document.images, (img) => {
    const want = chosen(img);
    const src = want.getAttribute(want === img ? "src" : "srcset").split(" ")[0];
    return {
      src, srcset: want.getAttribute("srcset"), media: want.getAttribute("media") || "",
      shown: img.currentSrc === new URL(src, document.baseURI).href,
      complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
      attrs: [Number(want.getAttribute("width")), Number(want.getAttribute("height"))],
      box: img.getBoundingClientRect().width, drawn: parseFloat(getComputedStyle(img).width),
    };
  })});
})();
// The render a browser must take: the first <source> of its <picture> whose media match
// (the page's dark, narrow renders), else the <img> itself.
function chosen(img) {
  const picture = img.parentElement.tagName === "PICTURE" ? img.parentElement : null;
  for (const source of picture ? picture.querySelectorAll("source") : []) {
    if (!source.media || matchMedia(source.media).matches) return source;
  }
  return img;
}
"""
# The narrow renders' labels are 10-point text at 200 dpi, drawn at half its pixels: 13.9 CSS px.
NARROW_LABEL_PX = 10 / 72 * 200 / 2


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files without logging every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base class name)
        pass


@pytest.fixture(scope="module")
def server(real_site: Path) -> Iterator[str]:
    """The built site on an ephemeral port of 127.0.0.1; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(real_site / "output"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Debian's headless Chromium through its chromedriver (never Selenium Manager)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        message = f"no {' or '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("FIGGEN_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(60)
    # Every visit fetches again, so each one's requests are all in its log.
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    driver.get("about:blank")  # leave any start-up page before the first visit drops the logs
    yield driver
    driver.quit()


def visit(driver: object, url: str) -> dict:
    """Open a page and load every image: {"pending": not loaded at first, "images": [...]}."""
    driver.get_log("browser"), driver.get_log("performance")  # drop what came before
    driver.get(url)
    return driver.execute_async_script(LOAD_IMAGES)


def requests_and_errors(driver: object) -> tuple[list[str], list[str]]:
    """URLs the page requested, and its console errors, since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return urls, errors


def screenshot(driver: object, name: str, disclosure: bool = True) -> Path:
    """Save a full-page PNG under test-output/, the first code disclosure open, and say where."""
    if disclosure:
        driver.execute_script("document.querySelector('details.figgen-code').open = true")
    # Capturing beyond the viewport resizes it for a moment (to 1 x 1 px in headless Chromium),
    # where each <picture> would take its narrow render and lay it out unloaded: blank boxes.
    driver.execute_script(KEEP_RENDERS)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path


# Each <picture> keeps the render it shows now: its other <source>s go, the chosen one's media too.
KEEP_RENDERS = """
for (const picture of document.querySelectorAll("picture")) {
  const shown = picture.querySelector("img").currentSrc;
  for (const source of picture.querySelectorAll("source")) {
    const url = new URL(source.srcset.split(" ")[0], document.baseURI).href;
    if (url === shown) source.removeAttribute("media"); else source.remove();
  }
}
"""


def color_scheme(driver: object, scheme: str) -> None:
    """Emulate the system's light or dark setting."""
    feature = {"name": "prefers-color-scheme", "value": scheme}
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [feature]})


def luminance(driver: object, selector: str, prop: str = "background-color") -> float:
    """Mean of the R, G, B channels (0 to 1) of an element's computed colour."""
    rgb = driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]]",
        selector, prop,
    )
    channels = [float(c) for c in rgb[rgb.index("(") + 1:-1].split(",")[:3]]
    return sum(channels) / 3 / 255


def test_every_image_loads_sharp_and_only_from_localhost(browser: object, server: str) -> None:
    page = visit(browser, f"{server}/{ARTICLE}")
    assert page["pending"] > 0, "figures below the fold wait until scrolled to (loading=lazy)"
    images = page["images"]
    assert len(images) == len(NAMES)
    for img in images:
        assert img["complete"] and min(img["natural"]) > 0, img
        assert img["srcset"] == f"{img['src']} 2x" and img["shown"]
        # On a 1x screen the browser may take src as the 1x candidate or the srcset's 2x one:
        # the same PNG, with twice the pixels of the box (test_build checks the file itself).
        assert img["natural"] in (img["attrs"], [2 * n for n in img["attrs"]]), img
        # Drawn at exactly its CSS size, even when wider than the text: no resampling blur.
        assert img["drawn"] == img["attrs"][0], img
    urls, errors = requests_and_errors(browser)
    assert errors == []
    assert len(urls) >= 1 + len(NAMES)  # the page and its figures at least: the check is real
    remote = [urlparse(u) for u in urls if urlparse(u).scheme not in IN_BROWSER]
    assert {u.hostname for u in remote} == {"127.0.0.1"}, urls
    screenshot(browser, "article-light.png")


def test_math_is_rendered_as_mathml(browser: object, server: str) -> None:
    visit(browser, f"{server}/{ARTICLE}")
    found = browser.execute_script("""
        return Array.from(document.querySelectorAll("math"), (m) => ({
            mathml: m instanceof MathMLElement, display: m.getAttribute("display"),
            height: m.getBoundingClientRect().height,
        }));
    """)
    assert found and all(m["mathml"] and m["height"] > 0 for m in found), found
    assert any(m["display"] == "block" and m["height"] > 20 for m in found), found
    assert browser.execute_script("return document.querySelectorAll('.math-error').length") == 0
    assert requests_and_errors(browser)[1] == []


def test_show_the_code_opens_the_highlighted_script(browser: object, server: str) -> None:
    visit(browser, f"{server}/{ARTICLE}")
    state = """
        const d = document.querySelector("figure.figgen details.figgen-code");
        const pre = d.querySelector("pre");
        return {open: d.open, visible: pre.checkVisibility(), text: pre.textContent,
                height: pre.getBoundingClientRect().height,
                keyword: getComputedStyle(d.querySelector(".k")).color,
                plain: getComputedStyle(pre).color};
    """
    closed = browser.execute_script(state)
    assert not closed["open"] and not closed["visible"]
    browser.execute_script("document.querySelector('details.figgen-code summary').click()")
    opened = browser.execute_script(state)
    assert opened["open"] and opened["visible"] and opened["height"] > 100
    assert "def main(ctx" in opened["text"] and opened["keyword"] != opened["plain"]


def test_dark_mode_follows_the_system_and_figures_take_their_dark_render(
    browser: object, server: str
) -> None:
    visit(browser, f"{server}/{ARTICLE}")
    light = luminance(browser, "body"), luminance(browser, ".highlight")
    color_scheme(browser, "dark")
    try:
        images = visit(browser, f"{server}/{ARTICLE}")["images"]
        assert luminance(browser, "body") < 0.2 < 0.8 < light[0]
        assert luminance(browser, "body", "color") > 0.8  # light text on the dark page
        # Each figure shows its dark render (a WebP), on a card of the page's own colour.
        assert len(images) == len(NAMES) and all(
            img["shown"] and img["media"] == "(prefers-color-scheme: dark)"
            and img["src"].endswith(".webp") and min(img["natural"]) > 0 for img in images)
        assert luminance(browser, "figure.figgen img") == luminance(browser, "body")
        assert luminance(browser, ".highlight") < 0.3 < light[1]  # code follows the scheme
        screenshot(browser, "article-dark.png")
    finally:
        color_scheme(browser, "light")
    assert requests_and_errors(browser)[1] == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_layout_fits_the_screen(browser: object, server: str, scheme: str) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    color_scheme(browser, scheme)
    try:
        images = visit(browser, f"{server}/{ARTICLE}")["images"]
        browser.execute_script("document.querySelectorAll('details').forEach((d) => d.open = true)")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, "the page scrolls sideways on a phone (code scrolls in its box)"
        assert all(0 < img["box"] <= PHONE["width"] for img in images)
        # A 2x screen takes the srcset's 2x candidate: its natural size is then its CSS size.
        assert all(img["shown"] and img["natural"] == img["attrs"] for img in images), images
        # The ImageNet figures take their narrow render: their labels stay 12 CSS px or more.
        narrow = [img for img in images if "max-width" in img["media"]]
        assert len(narrow) == 4 and all(img["src"].endswith(".webp") for img in narrow)
        assert all(NARROW_LABEL_PX * img["drawn"] / img["attrs"][0] >= 12 for img in narrow)
        font = browser.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
        assert font >= 16  # readable without zooming
        screenshot(browser, f"article-phone-{scheme}.png")
    finally:
        color_scheme(browser, "light")
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert requests_and_errors(browser)[1] == []


# On a phone, with every disclosure open: what the provenance and the code listings look like.
PHONE_CHECKS = """
const root = document.documentElement;
const hashes = Array.from(document.querySelectorAll("figure.figgen .figgen-hash"), (c) => ({
  text: c.textContent, lines: c.getClientRects().length,
  height: c.getBoundingClientRect().height, font: parseFloat(getComputedStyle(c).fontSize),
}));
const values = Array.from(document.querySelectorAll(".figgen-provenance dd"),
                          (dd) => dd.getBoundingClientRect().width / dd.parentElement.clientWidth);
const targets = Array.from(
  document.querySelectorAll("figure.figgen a, figure.figgen summary, figure.figgen button"),
  (el) => {
    const r = el.getBoundingClientRect();
    return {text: el.textContent.slice(0, 40), width: r.width, height: r.height};
  });
const scrollers = Array.from(document.querySelectorAll("body *"), (el) => {
  const style = getComputedStyle(el);
  const scrolls = ["auto", "scroll"].includes(style.overflowX) && el.scrollWidth > el.clientWidth
    || ["auto", "scroll"].includes(style.overflowY) && el.scrollHeight > el.clientHeight;
  return scrolls && {tag: el.tagName, tabindex: el.getAttribute("tabindex"),
                     role: el.getAttribute("role"), label: el.getAttribute("aria-label")};
}).filter(Boolean);
return {sideways: root.scrollWidth - window.innerWidth, hashes, values, targets, scrollers};
"""


@pytest.mark.parametrize("width", [360, 390])
def test_on_a_phone_the_provenance_reads_well_and_every_control_is_reachable(
    browser: object, server: str, width: int
) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "width": width})
    try:
        visit(browser, f"{server}/{ARTICLE}")
        browser.execute_script("document.querySelectorAll('details').forEach((d) => d.open = true)")
        page = browser.execute_script(PHONE_CHECKS)
        screenshot(browser, f"article-phone-{width}-open.png")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert page["sideways"] <= 0, "the page scrolls sideways: a listing must scroll in its box"
    # Each hash is one line of text, never broken (its first 12 digits, whole).
    assert len(page["hashes"]) > len(NAMES), page["hashes"]
    broken = [h for h in page["hashes"]
              if h["lines"] != 1 or h["height"] > 2 * h["font"] or len(h["text"]) != 12]
    assert broken == []
    # Labels stand above their values, which get the box's full width.
    assert page["values"] and min(page["values"]) > 0.95, page["values"]
    small = [t for t in page["targets"] if t["width"] < 24 or t["height"] < 24]
    assert len(page["targets"]) >= 4 * len(NAMES) and small == []
    # Every listing scrolls (in its box) and a keyboard reaches each: axe's rule, and a name.
    listings = [s for s in page["scrollers"] if s["tag"] == "PRE"]
    assert len(listings) >= len(NAMES), page["scrollers"]
    unreachable = [s for s in page["scrollers"]
                   if s["tabindex"] != "0" or s["role"] != "region" or not s["label"]]
    assert unreachable == []
    assert requests_and_errors(browser)[1] == []


def test_a_source_page_is_utf8_numbered_and_follows_the_system_scheme(
    browser: object, server: str
) -> None:
    visit(browser, f"{server}/{ARTICLE}")
    source = browser.execute_script(
        "return document.querySelector('#fig-imagenet-opening a.figgen-source').href"
    )
    # The test server names no charset, as many don't: the page itself must say UTF-8.
    visit(browser, source)
    page = browser.execute_script("""
        const viewport = document.querySelector('meta[name=viewport]');
        return {doctype: document.doctype && document.doctype.name,
                public: document.doctype && document.doctype.publicId,
                charset: document.characterSet, viewport: viewport && viewport.content,
                numbers: document.querySelector('td.linenos').textContent.trim().split(/\\s+/),
                text: document.body.textContent};
    """)
    assert (page["doctype"], page["public"], page["charset"]) == ("html", "", "UTF-8")
    assert "width=device-width" in page["viewport"]
    assert page["numbers"][:3] == ["1", "2", "3"] and "sign(∇" in page["text"]
    light = luminance(browser, "body"), luminance(browser, ".highlight")
    color_scheme(browser, "dark")
    try:
        assert luminance(browser, "body") < 0.2 < 0.8 < light[0]
        assert luminance(browser, ".highlight") < 0.3 < light[1]
        assert luminance(browser, "body", "color") > 0.8
        screenshot(browser, "source-dark.png", disclosure=False)
    finally:
        color_scheme(browser, "light")
    assert requests_and_errors(browser)[1] == []


def until(driver: object, script: str, seconds: float = 120) -> object:
    """Wait for a script's value in the page to be truthy; return it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(
        lambda d: d.execute_script(script))


BETA_SRC = "return document.querySelector('#fig-beta img').getAttribute('src')"
# Notes whether a draft's <figure> was ever swapped into the page, however briefly.
SEE_DRAFTS = """new MutationObserver(function(records) {
  for (const r of records) for (const n of r.addedNodes)
    if (n.querySelector && n.querySelector('[data-figgen-draft]')) window.figgenSawDraft = true;
}).observe(document.body, {childList: true, subtree: true});"""
LONG_POST = "\n\n".join(f"Paragraph {i} of a post long enough to scroll." for i in range(60))


def test_serve_swaps_a_changed_figure_in_place_and_reloads_for_text(
    browser: object, site: Site
) -> None:
    # Text above the figures: the page scrolls, and beta is below the fold.
    site.write("content/post.md", POST.replace("is display math.", f"is display math.\n\n"
                                               f"{LONG_POST}\n"))
    with serving(site) as served:
        browser.get(served.url)
        until(browser, "return window.scrollY === 0 && document.readyState === 'complete'")
        browser.execute_script("document.getElementById('fig-beta').scrollIntoView();"
                               "window.figgenMarker = 'not reloaded'")
        scrolled, src = browser.execute_script("return window.scrollY"), browser.execute_script(
            BETA_SRC)
        assert scrolled > 0
        gamma = browser.execute_script("return document.getElementById('fig-gamma').outerHTML")
        browser.execute_script(SEE_DRAFTS)
        site.write("figs/beta.py", line_script("green"))  # only beta's image changes
        # Its draft render first, swapped in, then its final renders.
        new = until(browser, f"const s = {BETA_SRC[7:]}; return s !== {src!r} && !document"
                             ".querySelector('#fig-beta [data-figgen-draft]') && s")
        assert browser.execute_script("return window.figgenSawDraft") is True
        state = browser.execute_script("""return {marker: window.figgenMarker, y: window.scrollY,
            gamma: document.getElementById('fig-gamma').outerHTML}""")
        # Swapped in place: no reload (the marker is there), the reader stays where they were.
        assert state == {"marker": "not reloaded", "y": scrolled, "gamma": gamma}
        assert "figures/beta-" in new and f'src="{new}"' in served_page(served)
        assert browser.execute_script(
            "const img = document.querySelector('#fig-beta img');"
            "return img.getAttribute('srcset') === img.getAttribute('src') + ' 2x'")
        site.append("content/post.md", "\nA new closing line.\n")  # text: the page reloads
        until(browser, "return document.body.textContent.includes('A new closing line.')")
        assert browser.execute_script("return window.figgenMarker") is None
        assert browser.execute_script(BETA_SRC) == new


def served_page(served: object) -> str:
    """The page as the serve loop serves it now."""
    from test_serve import _get

    return _get(served.url)
