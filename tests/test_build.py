"""End to end: build the tiny site, read the HTML, and check what re-runs after each edit."""

from __future__ import annotations

import re
import struct
from html.parser import HTMLParser

import pytest

from conftest import GAMMA, LONG_POST, Site, line_script
from pelican.plugins.figgen import cache, discover
from pelican.plugins.figgen.errors import FigureBuildError, SettingsError

ALL = {"alpha", "beta", "gamma"}


class Figures(HTMLParser):
    """Collect each <figure>'s img attributes and caption text."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append({"class": attrs.get("class", ""), "caption": "", "links": []})
        elif tag == "img" and self.figures:
            self.figures[-1]["img"] = attrs
        elif tag == "span" and "figgen-caption" in (attrs.get("class") or ""):
            self._in_caption = True
        elif tag == "a" and self.figures:
            self.figures[-1]["links"].append(attrs.get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._in_caption = False

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.figures[-1]["caption"] += data


def figures(html: str) -> list[dict]:
    parser = Figures()
    parser.feed(html)
    return parser.figures


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_build_embeds_every_figure_with_alt_caption_size_and_source(site: Site) -> None:
    report = site.build()
    assert set(report["ran"]) == ALL and report["cached"] == [] and report["failed"] == []
    found = figures(site.html())
    assert [f["img"]["alt"] for f in found] == ["A red line", "A blue line", "Points from a file"]
    assert found[0]["caption"] == "Alpha is drawn in red"  # field from the run
    assert found[1]["caption"] == "Beta, with a link"
    assert "https://example.org/beta" in found[1]["links"]
    assert found[2]["caption"] == "Gamma plots 4 points"
    for fig in found:
        img = fig["img"]
        data = (site.root / "output" / img["src"].lstrip("/")).read_bytes()
        width, height = png_size(data)
        assert (width, height) == (2 * int(img["width"]), 2 * int(img["height"]))
        source = [h for h in fig["links"] if h.endswith(".py.html")]
        assert source and (site.root / "output" / source[0].lstrip("/")).is_file()
    assert "{figure}" not in site.html() and "figgen-ref" not in site.html()


def test_images_are_palette_pngs_without_alpha(site: Site) -> None:
    # The tiny site's plots are anti-aliased lines: a 256-colour palette keeps their look.
    site.build()
    for fig in figures(site.html()):
        data = (site.root / "output" / fig["img"]["src"].lstrip("/")).read_bytes()
        assert data[25] == 3, fig["img"]["src"]  # IHDR colour type 3: palette (6 was RGBA)


def test_math_renders_as_mathml(site: Site) -> None:
    site.build()
    assert re.search(r'<math [^>]*display="block"', site.html())


def test_second_build_runs_nothing_and_survives_a_clean_output(site: Site) -> None:
    site.build()
    assert site.build()["ran"] == {}
    (site.root / "output" / "a-tiny-post.html").unlink()
    report = site.build(DELETE_OUTPUT_DIRECTORY=True)
    assert report["ran"] == {} and sorted(report["cached"]) == sorted(ALL)
    assert len(figures(site.html())) == 3


def test_a_damaged_copy_in_the_output_is_copied_again_though_its_hash_is_kept(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "SETTLED_NS", -1)  # every file's stamp kept, however new
    site.build()
    assert site.build()["ran"] == {}  # the second build kept the output copies' hashes
    (image,) = (site.root / "output" / "figures").glob("alpha-*.png")
    (stored,) = [p for p in (site.root / ".figgen-cache" / "objects").glob("*.png")
                 if p.read_bytes() == image.read_bytes()]
    image.write_bytes(b"not the image")
    assert site.build()["ran"] == {}
    assert image.read_bytes() == stored.read_bytes()


def test_editing_a_script_reruns_only_it(site: Site) -> None:
    site.build()
    site.append("figs/gamma.py", "\n# a comment is an edit too\n")
    assert set(site.build()["ran"]) == {"gamma"}


def test_editing_a_shared_module_reruns_exactly_its_importers(site: Site) -> None:
    site.build()
    site.append("helpers/common.py", "\nTHICKNESS = 2\n")
    assert set(site.build()["ran"]) == {"alpha", "beta"}


def test_a_module_edited_while_its_figure_runs_is_seen_by_the_next_build(site: Site) -> None:
    site.build()
    # alpha's script edits the helper it imported, as an author saving mid-run would.
    helper = (site.root / "helpers/common.py").as_posix()
    site.append("figs/alpha.py", f"\nopen({helper!r}, 'a').write('\\nEDITED = 1\\n')\n")
    assert set(site.build()["ran"]) == {"alpha"}
    assert set(site.build()["ran"]) == {"alpha", "beta"}  # both import the edited helper


def test_editing_a_declared_data_file_reruns_its_figure(site: Site) -> None:
    site.build()
    site.write("data/points.txt", "1 2 3 4 5 6")
    assert set(site.build()["ran"]) == {"gamma"}
    assert "Gamma plots 6 points" in site.html()


def test_a_no_op_build_parses_no_script_and_sees_new_declarations(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.build()
    with monkeypatch.context() as patched:  # a script unchanged: its last build's __figure__
        patched.setattr(discover, "declarations", lambda *a: pytest.fail(f"parsed {a[0]}"))
        assert site.build()["ran"] == {}
    # An edited script is read again: its new declaration is its figure's key from now on.
    site.write("data/more.txt", "7 8")
    site.write("figs/gamma.py", GAMMA.replace('["data/points.txt"]',
                                              '["data/points.txt", "data/more.txt"]'))
    assert set(site.build()["ran"]) == {"gamma"}
    assert site.build()["ran"] == {}
    site.write("data/more.txt", "9")
    assert set(site.build()["ran"]) == {"gamma"}


def test_a_script_opens_only_the_data_files_it_declared(site: Site) -> None:
    # ctx.data names a declared file (GAMMA reads data/points.txt so); any other is refused,
    # so every file a figure reads is in its cache key.
    site.write("data/other.txt", "1 2")
    site.write("figs/gamma.py", GAMMA.replace('ctx.data("data/points.txt")',
                                              'ctx.data("data/other.txt")'))
    with pytest.raises(FigureBuildError) as err:
        site.build()
    assert "data file 'data/other.txt' is not declared (declared: data/points.txt)" in \
        str(err.value.errors[0].detail)


def test_changing_a_figure_parameter_or_the_seed_reruns(site: Site) -> None:
    site.build()
    figgen = {"scripts": "figs", "params": {"beta": {"width": 3}}}
    assert set(site.build(FIGGEN=figgen)["ran"]) == {"beta"}
    assert set(site.build(FIGGEN=figgen | {"seed": 7})["ran"]) == ALL


def test_reference_to_a_missing_figure_names_article_and_closest(site: Site) -> None:
    site.append("content/post.md", '\n![Oops]({figure}alpah "typo")\n')
    with pytest.raises(FigureBuildError) as err:
        site.build()
    message = str(err.value)
    assert "content/post.md" in message and "'alpah'" in message and "closest: alpha" in message


def test_inline_reference_is_an_error_not_a_broken_image(site: Site) -> None:
    site.append("content/post.md", '\nSee ![inline]({figure}alpha "c") here.\n')
    with pytest.raises(FigureBuildError, match="must be a paragraph of its own"):
        site.build()


def test_caption_quoting_an_unknown_field_names_what_the_script_set(site: Site) -> None:
    site.write("content/post.md", site.root.joinpath("content/post.md").read_text().replace(
        "{color}", "{colour}"))
    with pytest.raises(FigureBuildError, match=r"quotes \{colour\}.*it set: color"):
        site.build()


def test_unknown_setting_suggests_the_right_key(site: Site) -> None:
    with pytest.raises(SettingsError, match="did you mean 'timeout'"):
        site.build(FIGGEN={"scripts": "figs", "timout": 5})


FAILING = """\
from pelican_figgen.harness import run


def divide(x):
    return x / 0


def main(ctx):
    divide(1)


if __name__ == "__main__":
    run(main)
"""


def test_raising_script_fails_the_build_with_a_trimmed_traceback(site: Site) -> None:
    site.write("figs/beta.py", FAILING)
    result = site.build_cli()
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "content/post.md" in out and "figure 'beta'" in out
    assert "ZeroDivisionError" in out and "in divide" in out and "return x / 0" in out
    assert "harness.py" not in out  # the runner's frames are trimmed away
    # The failure is not cached, and it did not stop the other figures.
    assert not (site.root / ".figgen-cache/records/beta.json").exists()
    assert set(site.report()["ran"]) == {"alpha", "gamma"}
    assert site.report()["failed"] == ["beta"]


def test_failed_figure_reruns_once_fixed(site: Site) -> None:
    site.write("figs/beta.py", FAILING)
    with pytest.raises(FigureBuildError) as err:
        site.build()
    assert "ZeroDivisionError" in err.value.errors[0].detail
    site.write("figs/beta.py", FAILING.replace("x / 0", "x"))
    with pytest.raises(FigureBuildError) as err:
        site.build()
    assert "without calling ctx.save" in err.value.errors[0].detail
    site.write("figs/beta.py", (site.root / "figs/alpha.py").read_text())
    assert set(site.build()["ran"]) == {"beta"}


def test_keep_going_does_not_rerun_a_failed_figure_until_something_it_reads_changes(
    site: Site,
) -> None:
    log, keep_going = site.root / "runs.log", {"scripts": "figs", "on_error": "keep-going"}
    failing = line_script("blue").replace(
        "def main(ctx):\n", f"def main(ctx):\n    open({str(log)!r}, 'a').write('run\\n')\n"
        "    raise ValueError('broken')\n")
    site.write("figs/beta.py", failing)
    for _ in range(2):
        site.build(FIGGEN=keep_going)
    assert log.read_text().count("run") == 1  # the second build did not run it again
    assert "nothing it reads changed since" in site.report()["causes"]["beta"]
    assert "ValueError: broken" in site.html()
    site.append("helpers/common.py", "\n# an edit to a module the failed run imported\n")
    site.build(FIGGEN=keep_going)
    assert log.read_text().count("run") == 2


def test_images_declare_their_density_and_load_lazily_after_the_first(site: Site) -> None:
    site.build(RELATIVE_URLS=True)
    found = figures(site.html())
    assert "loading" not in found[0]["img"]
    assert [f["img"].get("loading") for f in found[1:]] == ["lazy", "lazy"]
    # The first is fetched early (it may be the page's largest paint), the others as usual.
    assert [f["img"].get("fetchpriority") for f in found] == ["high", None, None]
    for fig in found:
        assert fig["img"]["srcset"] == fig["img"]["src"] + " 2x"  # the PNG is at twice its size
        assert "data-figgen-density" not in fig["img"]
    # The first figure after a long text is below a phone's first screen: a paragraph is the
    # largest paint, and the figure waits for layout like the others.
    site.write("content/long.md", LONG_POST)
    site.build(RELATIVE_URLS=True)
    found = figures(site.html("a-long-read.html"))
    assert [f["img"].get("loading") for f in found] == ["lazy", "lazy"]
    assert [f["img"].get("fetchpriority") for f in found] == [None, None]
    # The summary on a page one folder down: srcset follows src's relative path there too.
    for fig in figures((site.root / "output" / "category" / "tests.html").read_text()):
        assert fig["img"]["src"].startswith("../") and fig["img"]["srcset"].startswith("../")
        assert fig["img"]["srcset"] == fig["img"]["src"] + " 2x"


CODE = re.compile(
    r'<details class="figgen-code"><summary>Show the code</summary>\n(.*?)</details>', re.S
)


def test_show_the_code_holds_the_highlighted_script_as_it_is_now(site: Site) -> None:
    site.build()
    blocks = CODE.findall(site.html())
    assert len(blocks) == 3
    definition = '<span class="k">def</span><span class="w"> </span><span class="nf">main</span>'
    assert definition in blocks[0]  # highlighted by Pygments, classes styled by pygments.css
    assert "points.txt" in blocks[2] and "points.txt" not in blocks[0]
    site.append("figs/gamma.py", "\n# gamma, edited\n")
    site.build()
    assert "gamma, edited" in CODE.findall(site.html())[2]
