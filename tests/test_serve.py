"""`make serve`: the preview server rebuilds on edits and re-runs only what changed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, Site, free_port, line_script
from pelican.plugins.figgen import cache, pipeline, serve
from pelican.plugins.figgen.serve import changed_figures, read_site, watched_paths
from pelican_figgen.contract import locked

DRAFT_MARK = "data-figgen-draft"  # on a draft's note (embed.DRAFT_NOTE)


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


class Served:
    """`make serve` on the tiny site, its log in a file, its build events collected."""

    def __init__(self, site: Site, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/a-tiny-post.html"
        self.log = site.root.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "pelican.plugins.figgen.serve", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=site.root, stdout=log, stderr=log, start_new_session=True,
                env=os.environ | {"PYTHONPATH": str(REPO / "plugins")} | (env or {}))
        self.events: list[dict] = []

    def listen(self) -> None:
        """Collect the build events the pages get, in a background thread."""
        def read() -> None:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/__figgen/events") as stream:
                for line in stream:
                    if line.startswith(b"data: "):
                        self.events.append(json.loads(line[6:]))
        threading.Thread(target=read, daemon=True).start()
        assert _wait_for(lambda: bool(self.events))  # the hello: the build served now

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            self.proc.wait(timeout=30)


@contextlib.contextmanager
def serving(site: Site, env: dict | None = None) -> Iterator[Served]:
    served = Served(site, env)
    try:
        # Served, and its figures' final renders too (the first build is a preview as well).
        assert _wait_for(lambda: "Gamma plots 4 points" in (page := _get(served.url))
                         and DRAFT_MARK not in page), served.text()
        time.sleep(1)  # let the watcher start before an edit
        yield served
    finally:
        served.stop()


def test_serve_rebuilds_after_an_edit_and_reruns_only_that_figure(site: Site) -> None:
    elsewhere(site)  # content, output and cache where the settings say, not the defaults
    with serving(site) as served:
        url = served.url
        assert "/__figgen/events" in _get(url)  # the page follows the builds
        site.write("data/points.txt", "1 2 3 4 5 6")
        assert _wait_for(lambda: "Gamma plots 6 points" in _get(url))
        report = json.loads((site.root / "build-cache/last-build.json").read_text())
        assert set(report["ran"]) == {"gamma"}
        # A failing figure shows on the page; the server keeps serving and rebuilding.
        script = (site.root / "figs/alpha.py").read_text()
        site.append("figs/alpha.py", "\nraise RuntimeError('alpha is broken')\n")
        assert _wait_for(lambda: "could not be updated" in _get(url))
        assert "Gamma plots 6 points" in _get(url) and served.proc.poll() is None
        site.write("figs/alpha.py", script + "\n# fixed\n")  # and recovers once it is fixed
        assert _wait_for(lambda: "could not be updated" not in _get(url))
        assert "Alpha is drawn in red" in _get(url)
    assert served.proc.returncode == 0
    assert not (site.root / "output").exists()
    page = Path(site.root / "public" / "a-tiny-post.html").read_text()
    assert not page.count("{figure}") and "__figgen" not in page  # the script is served only


def test_the_events_name_the_changed_figures_or_ask_for_a_reload(site: Site) -> None:
    with serving(site) as served:
        served.listen()
        site.write("data/points.txt", "1 2 3 4 5 6")  # gamma's image and caption change
        assert _wait_for(lambda: len(served.events) >= 3)  # its draft, then its final render
        assert [e["figures"] for e in served.events[1:]] == [["fig-gamma"], ["fig-gamma"]]
        site.append("content/post.md", "\nA new closing line.\n")  # text: the page reloads
        assert _wait_for(lambda: len(served.events) >= 4)
        assert served.events[-1]["figures"] is None
        assert len({e["build"] for e in served.events}) == 4


def test_changed_figures_tells_figures_from_text() -> None:
    page = '<p>{}</p>\n<figure class="figgen" id="fig-a">\n  <img src="{}">\n</figure>\n'
    old = {"post.html": page.format("text", "a-1.png"), "index.html": "i"}
    assert changed_figures(old, old) == ()
    assert changed_figures(old, old | {"post.html": page.format("text", "a-2.png")}) == ("fig-a",)
    assert changed_figures(old, old | {"post.html": page.format("TEXT", "a-2.png")}) is None
    assert changed_figures(old, {"post.html": old["post.html"]}) is None  # a page went away
    # A new page alone (a restyled script's source page) changes no open page.
    source = {"figures/source/a-2.py.html": "code"}
    assert changed_figures(old, old | source) == ()
    assert changed_figures(old, old | source | {"post.html": page.format("text", "a-2.png")}) \
        == ("fig-a",)


def test_serve_builds_keep_compiled_templates_and_compile_an_edited_one_again(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(REPO / "theme", site.root / "theme")
    site.append("pelicanconf.py", 'THEME = "theme"\n')
    compiled: list[str] = []
    keep = serve.Templates.dump_bytecode
    monkeypatch.setattr(serve.Templates, "dump_bytecode",
                        lambda self, bucket: (compiled.append(bucket.key), keep(self, bucket)))
    settings = site.root / "pelicanconf.py"
    assert serve.build(settings) and compiled  # the first build compiles the theme
    compiled.clear()
    assert serve.build(settings) and compiled == []  # the next one reuses it
    article = site.root / "theme/templates/article.html"
    article.write_text(article.read_text().replace("{% block head %}",
                                                   "{% block head %}<!-- edited template -->"))
    assert serve.build(settings) and len(compiled) == 1
    assert "<!-- edited template -->" in site.html()


FAKELIB = "VERSION = {!r}\n"
LIB_HELPER = "import fakelib  # noqa: F401\n"


def test_the_warm_server_outlives_builds_and_restarts_after_an_upgrade(site: Site) -> None:
    libs = Path(tempfile.mkdtemp(prefix="figgen-libs-"))  # outside the project: a library
    (libs / "fakelib").mkdir()
    (libs / "fakelib" / "__init__.py").write_text(FAKELIB.format("1.0"))
    (libs / "fakelib-1.0.dist-info").mkdir()
    (libs / "fakelib-1.0.dist-info" / "METADATA").write_text("Name: fakelib\nVersion: 1.0\n")
    site.write("helpers/common.py", LIB_HELPER + (site.root / "helpers/common.py").read_text())
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(libs)])}
    with serving(site, env) as served:
        assert served.text().count("warm server 1 started") == 1
        site.write("data/points.txt", "1 2 3 4 5 6")  # a build with a figure to run
        assert _wait_for(lambda: "Gamma plots 6 points" in _get(served.url))
        assert "warm server 2" not in served.text()  # the same server forked it
        (libs / "fakelib-1.0.dist-info").rename(libs / "fakelib-2.0.dist-info")
        site.write("data/points.txt", "1 2 3")
        assert _wait_for(lambda: "Gamma plots 3 points" in _get(served.url))
        assert "warm server 2 started" in served.text(), served.text()
        assert "restarting the warm server" in served.text()


SLOW = """\
import subprocess
import time

from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    subprocess.Popen(["sleep", "300"], start_new_session=True)  # escapes its session too
    time.sleep(300)
    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""


def _descendants(pid: int) -> set[int]:
    """The processes below `pid`, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = {p for p, pp in parents.items() if pp == parent}
        todo.extend(children - found)
        found |= children
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_leaves_no_process_behind(site: Site) -> None:
    with serving(site) as served:
        site.write("figs/slow.py", SLOW)
        site.append("content/post.md", '\n![Slow]({figure}slow "Slow")\n')

        def sleeping() -> bool:
            return any(_cmdline(p).startswith(b"sleep\x00300")
                       for p in _descendants(served.proc.pid) if _alive(p))

        assert _wait_for(sleeping), served.text()
        below = _descendants(served.proc.pid)
        assert len(below) >= 4  # the warm server, the run's supervisor, the script, its sleep
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=30)
    assert _wait_for(lambda: not any(_alive(p) for p in below), 10)


# A figure whose full run (not its draft) waits while the test holds the gate, after noting
# its process id and starting a child in a session of its own.
GATED = """\
import os
import subprocess
import time
from pathlib import Path

from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    gate = Path(os.environ["FIGGEN_TEST_GATE"])
    if os.environ.get("FIGGEN_DRAFT") != "1":
        (gate / f"full-{os.getpid()}").write_text("")
        subprocess.Popen(["sleep", "300"], start_new_session=True)
        while (gate / "hold").exists():
            time.sleep(0.05)
    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 2, 1, 3], color=%r, linewidth=3)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""


def _gated_site(site: Site) -> Path:
    """Add the gated figure to the tiny site; return its gate folder (open)."""
    gate = Path(tempfile.mkdtemp(prefix="figgen-gate-"))  # outside the watched project
    site.write("figs/gated.py", GATED % "tab:orange")
    site.append("content/post.md", '\n![An orange line]({figure}gated "Gated")\n')
    return gate


def _store_image(site: Site, store: str, name: str) -> tuple[dict, Path]:
    """A figure's record in a store below the cache, and its main image's file."""
    record = json.loads((site.root / ".figgen-cache" / store / f"{name}.json").read_text())
    image = record["image"]
    folder = (site.root / ".figgen-cache" / store).parent / "objects"
    return record, folder / f"{image['sha256']}{image['suffix']}"


def _share_near(png: Path | bytes, rgb: tuple[int, int, int]) -> float:
    """The share of an image's pixels (a file's, or bytes') within a few levels of a colour."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(png) if isinstance(png, bytes) else png)
    pixels = np.asarray(image.convert("RGB"), dtype=int)
    return float((np.abs(pixels - rgb).max(axis=2) <= 8).mean())


def _running(gate: Path) -> set[int]:
    """The process ids of the gated figure's full runs alive now."""
    return {int(f.name[5:]) for f in gate.glob("full-*") if _alive(int(f.name[5:]))}


def test_a_restyle_shows_a_draft_then_the_final_render(site: Site) -> None:
    gate = _gated_site(site)
    with serving(site, {"FIGGEN_TEST_GATE": str(gate)}) as served:
        served.listen()
        (gate / "hold").write_text("")  # the full run waits: the draft stays on the page
        site.write("figs/gated.py", GATED % "tab:green")
        assert _wait_for(lambda: DRAFT_MARK in _get(served.url)), served.text()
        page = _get(served.url)
        assert 'class="figgen-draft-mark"' in page and "Draft render" in page
        draft, draft_png = _store_image(site, "drafts/records", "gated")
        assert draft["environment"]["draft"] == "true" and not draft["renders"]
        assert f"gated-{draft['image']['sha256'][:12]}.png" in page
        assert "<picture" not in page.split('id="fig-gated"')[1].split("</figure>")[0]
        assert _wait_for(lambda: bool(_running(gate)))  # the full run has started
        shown = draft_png.read_bytes()  # the final one retires it (below)
        (gate / "hold").unlink()
        assert _wait_for(lambda: DRAFT_MARK not in _get(served.url)), served.text()
        final, final_png = _store_image(site, "records", "gated")
        # Made in full from the inputs it read, the draft can never show again: it went.
        assert not (site.root / ".figgen-cache/drafts/records/gated.json").exists()
        assert not draft_png.exists()
        assert "draft" not in final["environment"] and final["renders"]
        assert f"gated-{final['image']['sha256'][:12]}.png" in _get(served.url)
        # The draft is the final render at one pixel per CSS pixel: the same size on the page.
        assert draft["image"]["density"] == 1 and final["image"]["density"] == 2
        assert [draft["image"][k] for k in ("width", "height")] == \
            [final["image"][k] for k in ("width", "height")]
        # Both show the restyle (a green line now), and not the orange one it replaced.
        for png in (shown, final_png):
            assert _share_near(png, (44, 160, 44)) > 0.01 and not _share_near(png, (255, 127, 14))
        # The draft swapped in, then the final render: two builds that changed only it.
        assert [e["figures"] for e in served.events[-2:]] == [["fig-gated"], ["fig-gated"]]


def test_a_new_edit_cancels_the_running_full_build(site: Site) -> None:
    gate = _gated_site(site)
    with serving(site, {"FIGGEN_TEST_GATE": str(gate)}) as served:
        before = (site.root / ".figgen-cache/records/gated.json").read_text()
        (gate / "hold").write_text("")
        site.write("figs/gated.py", GATED % "tab:green")
        assert _wait_for(lambda: bool(_running(gate))), served.text()
        first = _running(gate)
        site.write("figs/gated.py", GATED % "tab:purple")  # while the full build runs
        assert _wait_for(lambda: "full build cancelled" in served.text()), served.text()
        assert _wait_for(lambda: not first & _running(gate), 10)  # its run was killed
        # Nothing stored of it: neither a record nor a failure; the new draft is on the page.
        assert (site.root / ".figgen-cache/records/gated.json").read_text() == before
        assert not (site.root / ".figgen-cache/failures/gated.json").exists()
        assert _wait_for(lambda: _running(gate) - first), served.text()  # the new full run
        draft, _ = _store_image(site, "drafts/records", "gated")
        assert f"gated-{draft['image']['sha256'][:12]}.png" in _get(served.url)
        (gate / "hold").unlink()
        assert _wait_for(lambda: DRAFT_MARK not in _get(served.url)), served.text()
        final = json.loads((site.root / ".figgen-cache/records/gated.json").read_text())
        script = hashlib.sha256((site.root / "figs/gated.py").read_bytes()).hexdigest()
        assert final["inputs"]["figs/gated.py"] == script  # the last edit's, in full
    assert not (site.root / ".figgen-cache/failures/gated.json").exists()


def test_ctrl_c_during_a_full_build_leaves_no_process_behind(site: Site) -> None:
    gate = _gated_site(site)
    with serving(site, {"FIGGEN_TEST_GATE": str(gate)}) as served:
        (gate / "hold").write_text("")
        site.write("figs/gated.py", GATED % "tab:green")

        def sleeping() -> bool:
            return any(_cmdline(p).startswith(b"sleep\x00300")
                       for p in _descendants(served.proc.pid) if _alive(p))

        assert _wait_for(sleeping), served.text()
        below = _descendants(served.proc.pid)
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=30)
    assert _wait_for(lambda: not any(_alive(p) for p in below), 10)
    assert not _running(gate)


def test_drafts_never_land_in_the_normal_cache_a_remote_or_a_feed(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FIGGEN_REMOTE_KEY", "a test key")
    for variable in ("FIGGEN_REMOTE", "FIGGEN_REMOTE_WRITE", "FIGGEN_REMOTE_OPTIONS"):
        monkeypatch.delenv(variable, raising=False)
    bucket = tmp_path.parent / f"{tmp_path.name}-bucket"  # a folder remote CI would write
    figgen = {"scripts": "figs", "remote": bucket.as_uri(), "remote_write": True}
    feeds = {"FEED_ALL_ATOM": "feeds/all.atom.xml", "FIGGEN": figgen}
    cache = site.root / ".figgen-cache"
    monkeypatch.setattr(pipeline, "DRAFT", True)  # what make serve's previews set
    assert set(site.build(**feeds)["ran"]) == {"alpha", "beta", "gamma"}
    assert site.html().count('class="figgen-draft-mark" data-figgen-draft>Draft render') == 3
    # The provenance lists the runtime's files by path: a checkout's folder may say "draft".
    feed = (site.root / "output/feeds/all.atom.xml").read_text().replace(str(REPO), "REPO")
    assert "figgen-draft" in site.html() and "draft" not in feed.lower()
    assert not list(cache.glob("records/*")) and not list(cache.glob("objects/*"))
    assert not bucket.exists() or not list(bucket.rglob("*.json"))  # nothing sent
    drafted = [json.loads(p.read_text()) for p in cache.glob("drafts/records/*.json")]
    assert len(drafted) == 3 and all(r["environment"]["draft"] == "true" for r in drafted)
    assert {p.suffix for p in cache.glob("drafts/objects/*")} == {".png"}  # no WebP, no dark
    assert set(site.build(**feeds)["ran"]) == set()  # the next preview takes the drafts
    # A normal build (make html, freeze, verify read the same records) never takes a draft.
    monkeypatch.setattr(pipeline, "DRAFT", False)
    assert set(site.build(**feeds)["ran"]) == {"alpha", "beta", "gamma"}
    assert "figgen-draft" not in site.html()
    assert len(list(bucket.glob("records/*/*.json"))) == 3  # the full runs are sent
    # Once the full records are there, a preview takes them and drafts nothing.
    monkeypatch.setattr(pipeline, "DRAFT", True)
    assert set(site.build(**feeds)["ran"]) == set() and "figgen-draft" not in site.html()


def test_previews_keep_only_each_figures_latest_draft_and_its_images(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    drafts = site.root / ".figgen-cache" / "drafts"
    monkeypatch.setattr(pipeline, "DRAFT", True)  # what make serve's previews set
    assert set(site.build()["ran"]) == {"alpha", "beta", "gamma"}
    def image(name: str) -> str:
        return json.loads((drafts / "records" / f"{name}.json").read_text())["image"]["sha256"]

    # An author restyling alpha, preview by preview; blue is beta's image too, which stays.
    for color in ("green", "blue", "purple", "orange"):
        site.write("figs/alpha.py", line_script(color))
        assert set(site.build()["ran"]) == {"alpha"}
        assert (image("alpha") == image("beta")) == (color == "blue")
    records = {p.stem: cache.record_from({k: v for k, v in json.loads(p.read_text()).items()
                                          if k not in ("format", "sha256")})
               for p in drafts.glob("records/*.json")}
    assert records.keys() == {"alpha", "beta", "gamma"}
    kept = {f"{o.sha256}{o.suffix}" for r in records.values() for o in r.objects()}
    assert {p.name for p in drafts.glob("objects/*")} == kept  # no older alpha left
    # The next preview still takes every kept draft, alpha's latest (orange) on the page.
    assert set(site.build()["ran"]) == set()
    assert records["alpha"].fields["color"] == "orange"
    assert f"alpha-{records['alpha'].image.sha256[:12]}.png" in site.html()
    assert not list(site.root.glob(".figgen-cache/objects/*"))  # the real store untouched


def _drafts_kept(site: Site) -> tuple[dict[str, cache.Record], set[str]]:
    """The drafts' store: its records by name, and the names of its objects."""
    drafts = site.root / ".figgen-cache" / "drafts"
    records = {p.relative_to(drafts / "records").with_suffix("").as_posix():
               cache.record_from({k: v for k, v in json.loads(p.read_text()).items()
                                  if k not in ("format", "sha256")})
               for p in drafts.glob("records/**/*.json")}
    return records, {p.name for p in drafts.glob("objects/*")}


def _files(records: dict[str, cache.Record]) -> set[str]:
    """The object file names a set of records names."""
    return {f"{o.sha256}{o.suffix}" for r in records.values() for o in r.objects()}


def test_a_removed_or_renamed_figures_draft_and_its_image_go(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "DRAFT", True)  # what make serve's previews set
    assert set(site.build()["ran"]) == {"alpha", "beta", "gamma"}
    first, _ = _drafts_kept(site)
    # beta removed (script and reference): a preview that drafts nothing drops its draft.
    (site.root / "figs/beta.py").unlink()
    post = site.root / "content/post.md"
    post.write_text("\n".join(line for line in post.read_text().splitlines()
                              if "{figure}beta" not in line) + "\n")
    assert site.build()["ran"] == {}
    records, objects = _drafts_kept(site)
    assert records.keys() == {"alpha", "gamma"} and objects == _files(records)
    assert first["beta"].image.sha256 not in "".join(objects)
    # gamma renamed delta: delta drafts, gamma's draft goes (its image is now delta's).
    (site.root / "figs/gamma.py").rename(site.root / "figs/delta.py")
    post.write_text(post.read_text().replace("{figure}gamma", "{figure}delta"))
    assert set(site.build()["ran"]) == {"delta"}
    records, objects = _drafts_kept(site)
    assert records.keys() == {"alpha", "delta"} and objects == _files(records)
    assert records["delta"].image.sha256 == first["gamma"].image.sha256  # the same drawing
    assert f"delta-{records['delta'].image.sha256[:12]}.png" in site.html()
    assert records["alpha"] == first["alpha"]  # the others' drafts stay, still taken
    assert set(site.build()["ran"]) == set()


def test_a_draft_goes_once_its_figure_is_made_in_full_from_the_same_inputs(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    def preview(draft: bool) -> set[str]:
        monkeypatch.setattr(pipeline, "DRAFT", draft)  # True: what make serve's previews set
        return set(site.build()["ran"])

    assert preview(True) == {"alpha", "beta", "gamma"}
    assert preview(False) == {"alpha", "beta", "gamma"}  # the full build that follows
    assert _drafts_kept(site) == ({}, set())
    # An edit: its preview still drafts it (and only it), then the full build retires it.
    site.write("figs/alpha.py", line_script("green"))
    assert preview(True) == {"alpha"}
    records, objects = _drafts_kept(site)
    assert records.keys() == {"alpha"} and objects == _files(records)
    assert records["alpha"].fields["color"] == "green" and "figgen-draft" in site.html()
    assert f"alpha-{records['alpha'].image.sha256[:12]}.png" in site.html()
    assert preview(False) == {"alpha"} and "figgen-draft" not in site.html()
    assert _drafts_kept(site) == ({}, set())
    # A draft of other inputs than the real record's stays: a revert would show it again.
    site.write("figs/alpha.py", line_script("purple"))
    assert preview(True) == {"alpha"}
    site.write("figs/alpha.py", line_script("orange"))
    assert preview(False) == {"alpha"}
    site.write("figs/alpha.py", line_script("purple"))
    assert preview(True) == set() and "figgen-draft" in site.html()
    assert list(_drafts_kept(site)[0]) == ["alpha"]
    assert len(list(site.root.glob(".figgen-cache/records/*.json"))) == 3  # real ones stay


def test_a_draft_is_stored_under_the_lock_its_store_is_trimmed_under(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[tuple[str, bool]] = []
    save = cache.Store.save

    def saving(store: cache.Store, record: cache.Record) -> None:
        with locked(store.path / "locks" / cache.OBJECTS_LOCK, block=False) as free:
            held.append((store.path.name, not free))
        save(store, record)

    monkeypatch.setattr(cache.Store, "save", saving)
    monkeypatch.setattr(pipeline, "DRAFT", True)
    site.build()
    assert held == [("drafts", True)] * 3  # else a trim could drop an image not yet recorded
    monkeypatch.setattr(pipeline, "DRAFT", False)
    site.build()
    assert held[3:] == [(".figgen-cache", False)] * 3  # a real record takes no such lock


PREVIEW = ("import sys; from pathlib import Path; from pelican.plugins.figgen import serve; "
           "sys.exit(0 if serve.build(Path('pelicanconf.py'), draft=True) else 1)")


def test_a_draft_a_build_took_keeps_its_image_until_copied_whatever_another_trims(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pelican.plugins.figgen import embed

    monkeypatch.setattr(pipeline, "DRAFT", True)  # what make serve's previews set
    assert set(site.build()["ran"]) == {"alpha", "beta", "gamma"}
    took, _ = _drafts_kept(site)
    publish, others = embed.publish, []

    def interleaved(figure, record, store, into):  # noqa: ANN001, ANN202 (embed.publish's)
        # Build 2 took alpha's draft and is about to copy it: now build 1, a preview sharing
        # the cache (another make serve), drafts an edit of alpha and trims the drafts.
        if figure.name == "alpha" and not others:
            site.write("figs/alpha.py", line_script("green"))
            others.append(site.command([sys.executable, "-c", PREVIEW]))
            assert others[0].returncode == 0, others[0].stderr
        return publish(figure, record, store, into)

    monkeypatch.setattr(embed, "publish", interleaved)
    shutil.rmtree(site.root / "output")  # build 2 has its own output: nothing copied there yet
    assert set(site.build()["ran"]) == set()  # build 2: it takes every draft
    replaced, objects = _drafts_kept(site)
    assert replaced["alpha"].fields["color"] == "green"  # build 1's draft replaced alpha's
    # Build 2 still copied the image it took: its page shows the draft it took, intact.
    image = took["alpha"].image
    copied = site.root / "output" / "figures" / f"alpha-{image.sha256[:12]}.png"
    assert f"alpha-{image.sha256[:12]}.png" in site.html()
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == image.sha256
    # Kept only while in use: the next build, alone, trims it.
    monkeypatch.setattr(embed, "publish", publish)
    assert set(site.build()["ran"]) == set()
    replaced, objects = _drafts_kept(site)
    assert objects == _files(replaced) and f"{image.sha256}.png" not in objects


def test_a_store_in_use_is_trimmed_by_no_one_until_it_is_let_go(tmp_path: Path) -> None:
    store = cache.Store(tmp_path / "drafts")
    unnamed = store.path / "objects" / f"{'0' * 64}.png"
    unnamed.parent.mkdir(parents=True)
    unnamed.write_bytes(b"an image no record names")
    with store.in_use(), store.in_use():  # two builds at once: neither waits
        assert store.tidy(lambda name, record: True) == 0 and unnamed.exists()
    assert store.tidy(lambda name, record: True) == 1 and not unnamed.exists()


def test_a_page_is_served_as_the_last_build_left_it_never_half_written(tmp_path: Path) -> None:
    (tmp_path / "post.html").write_text("<html><body><p>whole page</p></body></html>")
    port = free_port()
    httpd = serve.serve(tmp_path, "127.0.0.1", port)
    try:
        serve.BUILDS.announce((), serve.pages(tmp_path))
        (tmp_path / "post.html").write_text("<html><bo")  # a build writing it meanwhile
        page = _get(f"http://127.0.0.1:{port}/post.html")
        assert "<p>whole page</p>" in page and serve.EVENTS_PATH in page
        (tmp_path / "other.html").write_text("<p>new</p>")  # not built yet: read from disk
        assert "<p>new</p>" in _get(f"http://127.0.0.1:{port}/other.html")
    finally:
        httpd.shutdown()
        httpd.server_close()
