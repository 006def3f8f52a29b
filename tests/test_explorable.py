"""Interactive figures as a mechanism, on the tiny site: a script publishes a module and data
beside its image (ctx.save_interactive); they are cached, content-hashed, recorded in the
provenance, named on the <figure>, loaded by one module script per page, and re-run by the
same rules as the image. The two-pixel figures in a browser: tests/test_interactive.py."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from conftest import Site

EXPLORABLE = """\
from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    fig = Figure(figsize=(2, 1))
    ax = fig.add_subplot()
    ax.set_xlim(0, 10)
    ax.set_ylim(-1, 1)
    ax.plot([0, 10], [0, 1])
    ctx.save_interactive(fig, data={"points": [1, 2], "label": "</script><b>"},
                         module="probe.js", ax=ax)


if __name__ == "__main__":
    run(main)
"""
MODULE = "export function enhance(figure, data) { figure.dataset.points = data.points; }\n"
FIGURE = re.compile(r"<figure [^>]*>")


def explorable_site(site: Site) -> Site:
    """The tiny site with a fourth, interactive figure (delta), in its own post too."""
    site.write("figs/delta.py", EXPLORABLE)
    site.write("figs/probe.js", MODULE)
    site.append("content/post.md", '\n![A line to probe]({figure}delta "Delta")\n')
    site.write("content/other.md", "Title: Other\nDate: 2024-01-03\nCategory: Tests\n\n"
               '![A line]({figure}alpha "Alpha")\n\n![Again]({figure}delta "Delta again")\n')
    return site


def opening_tags(html: str) -> dict[str, str]:
    """Each figure's opening tag, by its id."""
    return {re.search(r'id="([^"]*)"', t).group(1): t for t in FIGURE.findall(html)}


def attribute(tag: str, name: str) -> str:
    return re.search(rf'{name}="([^"]*)"', tag).group(1)


def test_module_and_data_are_published_beside_the_image_by_hash(site: Site) -> None:
    explorable_site(site).build()
    html = site.html()
    tags = opening_tags(html)
    assert "data-figgen-module" not in tags["fig-alpha"]  # a plain figure stays plain
    delta = tags["fig-delta"]
    folder = site.root / "output" / "figures"
    module, data = attribute(delta, "data-figgen-module"), attribute(delta, "data-figgen-data")
    assert (folder / module).read_text() == MODULE
    assert module == f"delta-{hashlib.sha256(MODULE.encode()).hexdigest()[:12]}.js"
    payload = (folder / data).read_bytes()
    assert data == f"delta-{hashlib.sha256(payload).hexdigest()[:12]}.data.json"
    exported = json.loads(payload)
    assert exported["points"] == [1, 2] and exported["label"] == "</script><b>"
    assert "</script><b>" not in html  # data never lands in the page
    axes = exported["axes"]  # the plot's box in the image, from its top left, and its limits
    assert axes["xlim"] == [0, 10] and axes["ylim"] == [-1, 1]
    assert 0 < axes["left"] < axes["right"] < 1 and 0 < axes["top"] < axes["bottom"] < 1
    # One module script per page, the loader, named by its hash; no inline code anywhere.
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts == [re.search(r'<script type="module" src="[^"]*figures/figgen-[0-9a-f]{12}'
                                 r'\.js" data-figgen-js>', html).group()]
    loader = site.root / "output" / re.search(r'src="\.?/?([^"]*figgen-[0-9a-f]{12}\.js)"',
                                              html).group(1)
    assert "enhance" in loader.read_text()
    assert len(re.findall(r"<script", site.html("other.html"))) == 1
    # The provenance record names them by hash.
    record = _provenance(folder)
    assert record["assets"] == {"data": hashlib.sha256(payload).hexdigest(),
                                "module": hashlib.sha256(MODULE.encode()).hexdigest()}


def _provenance(folder: Path) -> dict:
    """The provenance JSON of delta (the one beside its image, not its data file)."""
    found = [p for p in folder.glob("delta-*.json") if not p.name.endswith(".data.json")]
    assert len(found) == 1
    return json.loads(found[0].read_text())


def test_a_rebuild_changes_no_byte_and_editing_the_module_reruns_the_figure(site: Site) -> None:
    explorable_site(site).build()
    output = site.root / "output"
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    report = site.build()
    assert report["ran"] == {}
    after = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before
    site.write("figs/probe.js", MODULE + "// edited\n")
    report = site.build()
    assert set(report["ran"]) == {"delta"}
    module = attribute(opening_tags(site.html())["fig-delta"], "data-figgen-module")
    assert (output / "figures" / module).read_text().endswith("// edited\n")


def test_a_damaged_cached_module_reruns_the_figure(site: Site) -> None:
    explorable_site(site).build()
    objects = site.root / ".figgen-cache" / "objects"
    (stored,) = [p for p in objects.glob("*.js")]
    stored.write_text("broken")
    assert set(site.build()["ran"]) == {"delta"}
    assert stored.read_text() == MODULE


def test_feeds_leave_the_loader_and_the_hooks_out(site: Site) -> None:
    explorable_site(site).build(FEED_ALL_ATOM="feeds/all.atom.xml")
    feed = (site.root / "output" / "feeds" / "all.atom.xml").read_text()
    # The static figure stays; nothing a feed reader could not run is named.
    assert "figures/delta-" in feed
    assert "data-figgen" not in feed
    assert "&lt;script" not in feed and "<script" not in feed
