"""The explorable two-pixel figures in headless Chromium: the page's module computes what the
build's PyTorch model computes (P(cat) at 500 points, PGD from 50 starts), its probe lands on
the PNG's markers at desktop and phone sizes, arrow keys move it and the live region says so.

The real attacks and chaos scripts run in a small site of their own, once per module. Needs
Debian's chromium and chromium-driver, as tests/test_browser.py (which skips the same way).
"""

from __future__ import annotations

import base64
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
  // A figure is enhanced once it comes near the viewport: scroll to each in turn.
  const figs = Array.from(document.querySelectorAll("figure[data-figgen-module]"));
  const waiting = figs.find((f) => !f.dataset.figgenReady);
  if (figs.length && !waiting) {
    window.scrollTo(0, 0);
    done(figs.map((f) => [f.id, f.dataset.figgenReady]));
  } else {
    if (waiting) waiting.scrollIntoView();
    setTimeout(wait, 50);
  }
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


def vote_table(site: Site) -> np.ndarray:
    """The chaos figure's exported cat votes [256, 256], rows pixel 2, run-length decoded."""
    votes = json.loads(asset(site, "chaos", "data").read_text())["votes"]
    runs = base64.b64decode(votes["runs"])
    counts = np.repeat(np.frombuffer(runs[1::2], np.uint8), np.frombuffer(runs[0::2], np.uint8))
    return counts.reshape(votes["n"], votes["n"]).astype(int)


def test_chaos_counts_are_the_trained_ensembles_at_500_images(
    browser: object, page: str, explore_site: Site  # noqa: F811
) -> None:
    import torch

    from figgen.twopixel.ensemble import train_ensemble
    from figgen.twopixel.models import cat_probability

    torch.set_num_threads(1)
    open_page(browser, page)
    # Whole grey levels (the images there are) and fractions, which the probe rounds to them.
    points = np.random.default_rng(13).integers(0, 256, size=(500, 2)).astype(float)
    points[250:] += np.random.default_rng(31).uniform(-0.45, 0.45, size=(250, 2))
    points = points.clip(0, 255)
    said = browser.execute_script("""
        const f = document.getElementById("fig-chaos");
        return arguments[0].map(([a, b]) => { f.figgen.set(a, b); return f.figgen.state().text; });
        """, points.tolist())
    got = np.array([int(re.search(r"; (\d+) of 72 models call it a cat", t).group(1))
                    for t in said])
    images = np.rint(points)
    want = sum((cat_probability(m.model, images) > 0.5).astype(int) for m in train_ensemble())
    assert (got == want).all(), np.nonzero(got != want)
    assert ((want > 0) & (want < 72)).sum() >= 20  # the sample reaches where they disagree
    assert (vote_table(explore_site)[images[:, 1].astype(int), images[:, 0].astype(int)]
            == want).all()


def grey_at(data: dict, box: dict, client: tuple[int, int]) -> np.ndarray:
    """The grey-level point under a viewport position over the overlay (as explore.js maps it)."""
    axes = data["axes"]
    fx, fy = (client[0] - box["left"]) / box["width"], (client[1] - box["top"]) / box["height"]
    (x0, x1), (y0, y1) = axes["xlim"], axes["ylim"]
    p1 = x0 + (fx - axes["left"]) / (axes["right"] - axes["left"]) * (x1 - x0)
    p2 = y0 + (axes["bottom"] - fy) / (axes["bottom"] - axes["top"]) * (y1 - y0)
    return np.array([min(x1, max(x0, p1)), min(y1, max(y0, p2))])


def client_at(data: dict, box: dict, point: np.ndarray) -> tuple[int, int]:
    """The whole viewport pixel nearest a grey-level point on the overlay."""
    axes = data["axes"]
    (x0, x1), (y0, y1) = axes["xlim"], axes["ylim"]
    fx = axes["left"] + (point[0] - x0) / (x1 - x0) * (axes["right"] - axes["left"])
    fy = axes["bottom"] - (point[1] - y0) / (y1 - y0) * (axes["bottom"] - axes["top"])
    return round(box["left"] + fx * box["width"]), round(box["top"] + fy * box["height"])


def drag(driver: object, kind: str, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Press at start, move to end and release there: real pointer input (mouse or touch)."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pointer = PointerInput(interaction.POINTER_TOUCH if kind == "touch" else
                           interaction.POINTER_MOUSE, kind)
    actions = ActionBuilder(driver, mouse=pointer)
    actions.pointer_action.move_to_location(*start).pointer_down()
    for step in (1, 2, 3):  # through the way, as a hand drags
        actions.pointer_action.move_to_location(
            round(start[0] + (end[0] - start[0]) * step / 3),
            round(start[1] + (end[1] - start[1]) * step / 3))
    actions.pointer_action.pointer_up()
    actions.perform()


def dragged_readout(driver: object, site: Site, figure: str, target: np.ndarray,
                    kind: str) -> tuple:
    """Drag the probe from a training image to near target; the readout and where it dropped."""
    from selenium.webdriver.common.by import By

    from figgen.twopixel.world import training_set

    element = driver.find_element(By.ID, f"fig-{figure}")
    svg = element.find_element(By.CSS_SELECTOR, "svg[tabindex]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", svg)
    box = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", svg)
    data = json.loads(asset(site, figure, "data").read_text())
    start = client_at(data, box, training_set()[0][0])
    end = client_at(data, box, target)
    drag(driver, kind, start, end)
    readout = element.find_element(By.CSS_SELECTOR, "[aria-live]").text
    return readout, grey_at(data, box, end), element


@pytest.mark.parametrize("kind", ["mouse", "touch"])
def test_dragging_the_probe_with_a_real_pointer_reads_the_dropped_point(
    browser: object, page: str, explore_site: Site, plausible: object, kind: str  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from figgen.twopixel.models import cat_probability

    open_page(browser, page, phone=kind == "touch")
    # Attacks: P(cat) of the build's model where the pointer let go (not where it pressed).
    middle = np.array([150.0, 150.0])
    text, point, _ = dragged_readout(browser, explore_site, "attacks", middle, kind)
    want = 100 * cat_probability(plausible, point[None])[0]
    said = float(re.search(r"P\(cat\) = ([\d.]+)%", text).group(1))
    assert abs(said - want) <= 0.05 + 1e-4, (text, point, want)
    assert f"Probe at ({point[0]:.0f}, {point[1]:.0f})" in text
    # Chaos: the count of the exported table at the whole grey levels it dropped on.
    table = vote_table(explore_site)
    disputed = np.argwhere((table > 10) & (table < 62))  # [k, 2] rows (pixel 2, pixel 1)
    target = disputed[len(disputed) // 2][::-1].astype(float)
    text, point, figure = dragged_readout(browser, explore_site, "chaos", target, kind)
    image = np.rint(point).astype(int)
    assert f"({image[0]}, {image[1]}), " in text
    # The probe stands on that image, whole grey levels, not between two.
    assert browser.execute_script("return arguments[0].figgen.state().p", figure) == image.tolist()
    assert f"; {table[image[1], image[0]]} of 72 models call it a cat." in text
    # The arrow keys move it on from there, one grey level a press.
    figure.find_element(By.CSS_SELECTOR, "svg[tabindex]").send_keys(Keys.ARROW_LEFT,
                                                                    Keys.ARROW_DOWN)
    moved = image - 1
    text = figure.find_element(By.CSS_SELECTOR, "[aria-live]").text
    assert f"({moved[0]}, {moved[1]}), " in text
    assert f"; {table[moved[1], moved[0]]} of 72 models call it a cat." in text


def test_a_figure_below_the_fold_is_enhanced_only_when_scrolled_to(
    browser: object, page: str  # noqa: F811
) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 300, "deviceScaleFactor": 1, "mobile": True})
    browser.get_log("performance")
    browser.get(page)
    ready = "return document.getElementById(arguments[0]).dataset.figgenReady || null"
    wait = """const done = arguments[arguments.length - 1];
              const f = document.getElementById(arguments[0]);
              const poll = () => f.dataset.figgenReady ? done(f.dataset.figgenReady)
                                                       : setTimeout(poll, 50);
              poll();"""
    assert browser.execute_async_script(wait, "fig-attacks") == "true"
    assert browser.execute_script(ready, "fig-chaos") is None
    urls, _ = requests_and_errors(browser)
    assert not any("/chaos-" in u and u.endswith(".data.json") for u in urls)
    browser.execute_script("document.getElementById('fig-chaos').scrollIntoView()")
    assert browser.execute_async_script(wait, "fig-chaos") == "true"
