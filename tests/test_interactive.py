"""The explorable two-pixel figures in headless Chromium: the page's module computes what the
build's PyTorch model computes (P(cat) at 500 points, PGD from 50 starts), its probe lands on
the PNG's markers at desktop and phone sizes, arrow keys move it and the live region says so.

The real attacks and chaos scripts run in a small site of their own, once per module. Needs
Debian's chromium and chromium-driver, as tests/test_browser.py (which skips the same way).
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import CONF, REPO, Site
from test_browser import QuietHandler, browser, requests_and_errors  # noqa: F401 (fixture)

POST = """\
Title: Probe
Date: 2024-01-02
Category: Tests

![The plausible classifier and three attacks]({figure}attacks "Attacks: {attack}")

![The share of models that say cat]({figure}chaos "Chaos over {n_models} models")
"""
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
ENHANCED = """
const done = arguments[arguments.length - 1];
const wait = () => {
  const figs = Array.from(document.querySelectorAll("figure[data-figgen-module]"));
  if (figs.length && figs.every((f) => f.dataset.figgenReady)) {
    done(figs.map((f) => [f.id, f.dataset.figgenReady]));
  } else setTimeout(wait, 50);
};
wait();
"""


@pytest.fixture(scope="module")
def explore_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A site whose two figures are the real attacks and chaos scripts, and their module."""
    site = Site(tmp_path_factory.mktemp("explore"))
    site.write("pelicanconf.py", CONF)
    site.write("content/post.md", POST)
    for name in ("attacks", "chaos"):
        site.write(f"figs/{name}.py", (REPO / "figgen" / "figures" / f"{name}.py").read_text())
    # Where the scripts find it: ../twopixel/explore.js from their folder.
    site.write("twopixel/explore.js", (REPO / "figgen" / "twopixel" / "explore.js").read_text())
    report = site.build()
    assert report["failed"] == [], report["causes"]
    return site


@pytest.fixture(scope="module")
def page(explore_site: Site) -> Iterator[str]:
    """The post's URL, served from 127.0.0.1."""
    handler = functools.partial(QuietHandler, directory=str(explore_site.root / "output"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/probe.html"
    httpd.shutdown()
    httpd.server_close()


def open_page(driver: object, url: str, phone: bool = False) -> None:
    """Open the post (desktop or phone sized) and wait until both figures are enhanced."""
    if phone:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.get_log("browser"), driver.get_log("performance")
    driver.get(url)
    assert driver.execute_async_script(ENHANCED) == [["fig-attacks", "true"],
                                                     ["fig-chaos", "true"]]


def asset(site: Site, figure: str, role: str) -> Path:
    """The published module or data file of a figure, as its <figure> names it."""
    tag = re.search(rf'<figure [^>]*id="fig-{figure}"[^>]*>', site.html("probe.html")).group()
    name = re.search(rf'data-figgen-{role}="([^"]*)"', tag).group(1)
    return site.root / "output" / "figures" / name


def run_in_page(driver: object, site: Site, call: str, *args: object) -> object:
    """Import the attacks figure's module in the page and run `call` (a function body)."""
    module, data = asset(site, "attacks", "module").name, asset(site, "attacks", "data").name
    script = f"""
    const done = arguments[arguments.length - 1];
    const args = arguments;
    (async () => {{
      const m = await import("./figures/{module}");
      const data = await (await fetch("./figures/{data}")).json();
      const model = m.loadModel(data.model);
      {call}
    }})().then(done, (e) => done({{error: String(e)}}));
    """
    return driver.execute_async_script(script, *args)


@pytest.fixture(scope="module")
def plausible(explore_site: Site) -> object:
    """The build's plausible classifier, in PyTorch (its cached result, or computed again)."""
    import torch

    from figgen.twopixel.search import find_plausible

    torch.set_num_threads(1)
    return find_plausible().model


def test_p_cat_agrees_with_pytorch_at_500_points(
    browser: object, page: str, explore_site: Site, plausible: object  # noqa: F811
) -> None:
    from figgen.twopixel.models import cat_probability

    open_page(browser, page)
    points = np.random.default_rng(14).uniform(0, 255, size=(500, 2))
    got = run_in_page(browser, explore_site,
                      "return args[0].map(([a, b]) => m.pCat(model, m.toInput(a, b)));",
                      points.tolist())
    assert not isinstance(got, dict), got
    want = cat_probability(plausible, points)
    assert np.abs(np.array(got) - want).max() < 1e-5
    # Not a flat model: the points span both answers.
    assert (want > 0.5).any() and (want < 0.5).any()


def test_pgd_end_points_agree_with_pytorch_within_half_a_grey_level(
    browser: object, page: str, explore_site: Site, plausible: object  # noqa: F811
) -> None:
    import torch

    from figgen.attacks import pgd
    from figgen.twopixel.adversarial import ALPHA_GREY, EPS_GREY, STEPS
    from figgen.twopixel.models import predict, to_input

    open_page(browser, page)
    starts = np.random.default_rng(41).uniform(0, 255, size=(50, 2))
    labels = predict(plausible, starts)
    x, y = to_input(starts), torch.as_tensor(labels, dtype=torch.long)
    want = pgd(plausible, x, y, EPS_GREY / 255, ALPHA_GREY / 255, STEPS).double().numpy() * 255
    got = run_in_page(browser, explore_site, f"""
        return args[0].map(([a, b], i) => m.pgd(model, m.toInput(a, b), args[1][i],
                                                {EPS_GREY} / 255, {ALPHA_GREY} / 255, {STEPS})
                                          .map((v) => v * 255));""",
                      starts.tolist(), labels.tolist())
    assert not isinstance(got, dict), got
    assert np.abs(np.array(got) - want).max() < 0.5
    assert np.abs(want - starts).max() > 10  # the attacks moved: a real comparison


def marker_centre(png: np.ndarray, colour: tuple[int, int, int], guess: np.ndarray) -> np.ndarray:
    """The centre of the marker of this colour nearest guess, in PNG pixels (mean shift)."""
    near = np.abs(png[:, :, :3].astype(int) - colour).sum(axis=2) < 60  # [H, W]
    ys, xs = np.nonzero(near)
    centre = guess.astype(float)
    for _ in range(20):  # a disc of 11 px around the centre: inside the marker's white rim
        inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 < 11**2
        assert inside.sum() > 30, f"no marker of {colour} near {guess}"
        centre = np.array([xs[inside].mean(), ys[inside].mean()])
    return centre


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_a_training_image_lands_on_its_marker(
    browser: object, page: str, explore_site: Site, phone: bool  # noqa: F811
) -> None:
    from PIL import Image

    from figgen.twopixel.plot import COLOURS
    from figgen.twopixel.world import training_set

    open_page(browser, page, phone)
    points, labels = training_set()
    for figure in ("attacks", "chaos"):
        png = Image.open(asset(explore_site, figure, "data").with_name(
            re.search(rf'<img src="[^"]*/({figure}-[0-9a-f]{{12}}\.png)"',
                      explore_site.html("probe.html")).group(1)))
        pixels = np.asarray(png.convert("RGB"))
        data = json.loads(asset(explore_site, figure, "data").read_text())
        drawn_over = [np.array(a[k]) for a in data.get("attacks", []) for k in ("start", "end")]
        checked = 0
        for point, label in zip(points, labels, strict=True):
            if any(np.abs(point - q).max() < 20 for q in drawn_over):
                continue  # an attack's own marker or arrow covers this one
            checked += 1
            # The probe moved onto the training image: where the page draws it, in the image.
            at = browser.execute_script("""
                const f = document.getElementById(arguments[0]);
                f.figgen.set(arguments[1], arguments[2]);
                const img = f.querySelector("img"), box = img.getBoundingClientRect();
                const cs = getComputedStyle(img), px = (k) => parseFloat(cs[k]);
                const left = box.left + px("borderLeftWidth") + px("paddingLeft");
                const top = box.top + px("borderTopWidth") + px("paddingTop");
                const width = box.width - px("borderLeftWidth") - px("paddingLeft")
                  - px("paddingRight") - px("borderRightWidth");
                const dot = f.figgen.probe.getBoundingClientRect();
                return [(dot.left + dot.right) / 2 - left, (dot.top + dot.bottom) / 2 - top, width];
                """, f"fig-{figure}", *point.tolist())
            scale = pixels.shape[1] / at[2]  # PNG pixels per CSS pixel as laid out
            drawn = np.array(at[:2]) * scale
            hex_ = COLOURS[int(label)].lstrip("#")
            colour = tuple(int(hex_[i:i + 2], 16) for i in (0, 2, 4))
            centre = marker_centre(pixels, colour, drawn)
            assert np.abs(centre - drawn).max() / scale <= 1.0, (figure, point, centre, drawn)
        assert checked >= 4


def test_arrow_keys_move_the_probe_and_the_live_region_says_what_changed(
    browser: object, page: str  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, page)
    figure = browser.find_element(By.ID, "fig-attacks")
    readout = figure.find_element(By.CSS_SELECTOR, "[aria-live]")
    assert readout.get_attribute("aria-live") == "polite"
    before_text = readout.text
    before = browser.execute_script("return arguments[0].figgen.state().p", figure)
    svg = figure.find_element(By.CSS_SELECTOR, "svg[tabindex]")
    svg.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.SHIFT + Keys.ARROW_UP)
    after = browser.execute_script("return arguments[0].figgen.state().p", figure)
    assert after == [before[0] + 2, before[1] + 10]
    assert readout.text != before_text and f"({after[0]:.0f}, {after[1]:.0f})" in readout.text
    assert "PGD with epsilon 24" in readout.text and "P(cat)" in readout.text
    # The static image is still there, with its alt text; the chaos readout counts models.
    img = figure.find_element(By.TAG_NAME, "img")
    assert img.get_attribute("alt") == "The plausible classifier and three attacks"
    chaos = browser.find_element(By.CSS_SELECTOR, "#fig-chaos [aria-live]").text
    assert re.search(r"\d+ of 72 models call it a cat", chaos)
    urls, errors = requests_and_errors(browser)
    assert errors == [] and all(u.startswith("http://127.0.0.1:") for u in urls
                                if not u.startswith(("data:", "about:", "chrome")))


def test_module_and_data_fit_in_30_kb_gzipped(explore_site: Site) -> None:
    for figure in ("attacks", "chaos"):
        size = sum(len(gzip.compress(asset(explore_site, figure, role).read_bytes(), 9))
                   for role in ("module", "data"))
        assert size <= 30 * 1024, (figure, size)
    data = json.loads(asset(explore_site, "attacks", "data").read_text())
    assert data["model"]["activation"] == "sin" and data["steps"] == 40
