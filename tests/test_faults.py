"""Fault injection: scripts that misbehave, builds killed or run twice at once, a damaged cache.

Every script here is tiny (no torch): the point is what the build does, not what is drawn.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import STUCK, Site
from pelican.plugins.figgen.errors import FigureBuildError
from pelican_figgen import png
from test_build import ALL, figures


def script(body: str, header: str = "") -> str:
    """A figure script whose main(ctx) runs `body`, then draws a line as alpha does."""
    indented = textwrap.indent(textwrap.dedent(body), "    ")
    return (
        "import os, signal, subprocess, sys, time\n"
        "from pelican_figgen.harness import run\n"
        "from helpers.common import draw\n"
        f"{textwrap.dedent(header)}\n\n"
        f"def main(ctx):\n{indented}\n"
        '    draw(ctx, "green")\n\n\n'
        'if __name__ == "__main__":\n'
        "    run(main)\n"
    )


def failed_cause(site: Site, body: str, header: str = "") -> str:
    """Make beta run `body`; build; return why beta failed (the others must have been made)."""
    site.write("figs/beta.py", script(body, header))
    with pytest.raises(FigureBuildError) as err:
        site.build()
    report = site.report()
    assert report["failed"] == ["beta"]
    assert set(report["ran"]) | set(report["cached"]) == ALL - {"beta"}  # the others were made
    (error,) = err.value.errors
    assert (error.article, error.reference) == ("content/post.md", "beta")
    return error.cause + "\n" + error.detail


def test_strict_failure_exits_non_zero_with_a_summary_and_no_plugin_traceback(site: Site) -> None:
    site.write("figs/beta.py", script("raise ValueError('no beta today')"))
    result = site.build_cli()
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "1 figure error(s)" in out and "content/post.md: figure 'beta'" in out
    assert "ValueError: no beta today" in out
    assert out.count("Traceback") == 1  # the script's own, trimmed; none of the plugin's
    assert not re.search(r'File "[^"]*(pelican|site-packages)', out) and "CRITICAL" not in out


def test_hanging_script_is_killed_with_its_children(site: Site, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # No heavy import: the child's pid is written long before the time-out.
    site.write("figs/beta.py", textwrap.dedent(f"""\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        __figure__ = {{"timeout": 5}}
        time.sleep(300)
    """))
    with pytest.raises(FigureBuildError) as err:
        site.build()
    (error,) = err.value.errors
    assert "timed out after 5 s" in error.cause
    child = int(pid_file.read_text())
    assert _gone(child), "the script's child process survived the time-out"


LINGER = """\
sleeper = subprocess.Popen(["sleep", "30"])  # holds the script's stdout and stderr
open({pid!r}, "w").write(str(sleeper.pid))
"""


def test_a_child_left_running_by_a_good_script_neither_delays_nor_survives_it(
    site: Site, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"
    # Shorter than the sleep: a build that waited for the child's pipes would time out.
    site.write("figs/beta.py", script(LINGER.format(pid=str(pid_file)),
                                      '__figure__ = {"timeout": 20}'))
    assert set(site.build()["ran"]) == ALL
    assert _gone(int(pid_file.read_text())), "the script's child outlived it"


def test_a_raising_script_with_a_child_left_running_reports_its_exception(
    site: Site, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"
    body = LINGER.format(pid=str(pid_file)) + "raise ValueError('beta broke')\n"
    cause = failed_cause(site, body, '__figure__ = {"timeout": 20}')
    assert "exit status 1" in cause and "ValueError: beta broke" in cause
    assert "timed out" not in cause
    assert _gone(int(pid_file.read_text()))


def _gone(pid: int, seconds: float = 5) -> bool:
    """Whether a process has ended (or is a zombie about to be reaped) within a few seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_segfault_is_reported_with_the_scripts_python_stack(site: Site) -> None:
    cause = failed_cause(site, "import ctypes\nctypes.string_at(0)")
    assert "killed by SIGSEGV" in cause and "Segmentation fault" in cause
    assert "beta.py" in cause  # faulthandler names the line that crashed


def test_os_exit_without_output_and_with_a_status(site: Site) -> None:
    assert "without writing its manifest" in failed_cause(site, "os._exit(0)")
    assert "exit status 3" in failed_cause(site, "os._exit(3)")


def test_killed_script_is_reported_as_killed(site: Site) -> None:
    # What the kernel's OOM killer does: SIGKILL, no traceback, no output.
    cause = failed_cause(site, "os.kill(os.getpid(), signal.SIGKILL)")
    assert "killed by SIGKILL" in cause and "out-of-memory" in cause


def test_no_image_is_a_failure(site: Site) -> None:
    site.write("figs/beta.py", script("pass").replace('    draw(ctx, "green")\n', ""))
    with pytest.raises(FigureBuildError) as err:
        site.build()
    assert "without calling ctx.save" in err.value.errors[0].detail


@pytest.mark.parametrize("damage, expected", [
    ("data[:len(data) // 2]", "truncated or damaged"),
    ("data[:60] + bytes([data[60] ^ 1]) + data[61:]", "truncated or damaged"),
    ("b'GIF89a' + data", "no PNG signature"),
])
def test_unreadable_image_is_a_failure(site: Site, damage: str, expected: str) -> None:
    header = textwrap.dedent(f"""\
        import pelican_figgen.harness as h
        _save = h.Context.save
        def save(ctx, fig):
            path = _save(ctx, fig)
            data = path.read_bytes()
            path.write_bytes({damage})
            return path
        h.Context.save = save
    """)
    cause = failed_cause(site, "pass", header)
    assert "beta.png is not a readable PNG image" in cause and expected in cause


def _chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk with a correct checksum."""
    crc = zlib.crc32(kind + body).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + kind + body + crc


EMPTY_IHDR = png.SIGNATURE + _chunk(b"IHDR", b"") + _chunk(b"IEND", b"")
WRITES_MANIFEST = """\
import sys
from pathlib import Path

out = Path(sys.argv[sys.argv.index("--out") + 1])
(out / "beta.png").write_bytes({png!r})
(out / "manifest.json").write_text({manifest!r})
"""


@pytest.mark.parametrize("png, manifest, expected", [
    (EMPTY_IHDR, '{"image": {"file": "beta.png", "width": 1, "height": 1}}',
     "beta.png is not a readable PNG image: it is truncated or damaged (Truncated IHDR chunk)"),
    (b"", '[{"file": "beta.png"}]', "a manifest that is a JSON list, not an object"),
    (b"", '{"image": {"width": 1, "height": 1}}', "entry without a file name"),
    (b"", '{"image": {"file": "../beta.png"}}', "entry without a file name"),
    (b"", '{"image": [{"file": "beta.png"}]}', "image is not an object"),
], ids=["empty-IHDR", "list", "no-file", "file-outside", "image-not-an-object"])
def test_malformed_output_is_a_failure_not_a_crash(
    site: Site, png: bytes, manifest: str, expected: str
) -> None:
    site.write("figs/beta.py", WRITES_MANIFEST.format(png=png, manifest=manifest))
    with pytest.raises(FigureBuildError) as err:
        site.build()
    (error,) = err.value.errors
    assert expected in error.cause
    assert site.report()["failed"] == ["beta"]


def test_keep_going_shows_the_last_good_figure_marked_stale(site: Site) -> None:
    site.build()
    good = _img(site, "A blue line")
    site.write("figs/beta.py", script("raise ValueError('broken beta')"))
    result = site.build_cli(env={"FIGGEN_ON_ERROR": "keep-going"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken beta" in result.stdout + result.stderr  # still told in the terminal
    beta = next(f for f in figures(site.html()) if f["img"]["alt"] == "A blue line")
    assert "figgen-stale" in beta["class"] and _img(site, "A blue line") == good
    assert "the last good version (its last run failed: the script failed (exit status 1))" \
        in site.html()
    assert len(figures(site.html())) == 3
    assert "broken beta" in (site.root / ".figgen-cache/failures/beta.json").read_text()


def test_a_known_failure_is_retried_by_strict_builds_and_replayed_by_keep_going(
    site: Site,
) -> None:
    log = site.root / "runs.log"
    site.write("figs/beta.py", script(f"""\
        open({str(log)!r}, 'a').write('beta\\n')
        raise ValueError('broken beta')
    """))
    for _ in range(2):
        with pytest.raises(FigureBuildError):
            site.build()
    assert log.read_text().split() == ["beta", "beta"]  # strict: tried each time
    site.build(FIGGEN={"scripts": "figs", "on_error": "keep-going"})
    assert log.read_text().split() == ["beta", "beta"]  # nothing changed: not run again
    assert "in its last run; nothing it reads changed since" in site.report()["causes"]["beta"]
    assert "ValueError: broken beta" in site.html()
    # The reader sees the cause; the command that retries it is for the developer's log.
    assert "--force" not in site.html() and "pelican-figgen run" not in site.html()


def test_keep_going_without_a_last_good_figure_shows_the_error(site: Site) -> None:
    site.write("figs/beta.py", script("raise ValueError('broken beta')"))
    site.build(FIGGEN={"scripts": "figs", "on_error": "keep-going"})
    html = site.html()
    assert '<figure class="figgen figgen-error" id="fig-beta"' in html
    assert "This figure (<code>beta</code>) could not be made." in html
    assert "the script failed (exit status 1)\nTraceback" in html
    assert "ValueError: broken beta" in html
    assert {f["img"]["alt"] for f in figures(html) if "img" in f} == {"A red line",
                                                                      "Points from a file"}


def _img(site: Site, alt: str) -> bytes:
    img = next(f["img"] for f in figures(site.html()) if f.get("img", {}).get("alt") == alt)
    return (site.root / "output" / img["src"].lstrip("/")).read_bytes()


def test_a_build_killed_with_minus_9_leaves_a_cache_the_next_build_uses(site: Site) -> None:
    site.build()
    started, pid_file = site.root / "started", site.root / "script.pid"
    child_pid = site.root / "child.pid"
    body = f"""\
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        if not os.path.exists({str(started)!r}):
            child = subprocess.Popen(["sleep", "300"])
            open({str(child_pid)!r}, "w").write(str(child.pid))
            open({str(started)!r}, "w").close()
            time.sleep(300)
    """
    site.write("figs/beta.py", script(body))
    site.append("figs/gamma.py", "\n# edited\n")
    build = subprocess.Popen([str(Path(os.sys.executable).parent / "pelican"), "content", "-s",
                              "pelicanconf.py"], cwd=site.root, env=site.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists()
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert _gone(int(pid_file.read_text())), "the figure script outlived the killed build"
    child = int(child_pid.read_text())
    # Its supervisor, told by PDEATHSIG that the build died, killed what the script started.
    assert _gone(child), "the script's own child outlived the killed build"
    # What a kill between writing aside and renaming leaves; the next build drops it.
    halves = [site.root / f".figgen-cache/objects/.{'0' * 64}.png.{build.pid}.tmp",
              site.root / f".figgen-cache/records/sub/.fig.json.{build.pid}.tmp",
              site.root / f"output/figures/.alpha-{'0' * 12}.png.{build.pid}.tmp"]
    for half in halves:
        half.parent.mkdir(parents=True, exist_ok=True)
        half.write_bytes(b"\x89PNG half")
    report = site.build()
    # gamma ran beside beta in the pool, so the killed build may have recorded it already.
    assert "beta" in report["ran"] and set(report["ran"]) <= {"beta", "gamma"}
    assert "gamma" in report["ran"] or "gamma" in report["cached"]
    assert len(figures(site.html())) == 3
    assert not [p for p in (site.root / ".figgen-cache/tmp").iterdir() if p.name.startswith(
        f"{build.pid}-")]  # the killed build's scratch folder was dropped
    assert not [half for half in halves if half.exists()]


def test_two_concurrent_builds_share_the_cache_and_run_each_figure_once(site: Site) -> None:
    log, release = site.root / "runs.log", site.root / "release"
    for name, color in (("alpha", "red"), ("beta", "blue")):
        site.write(f"figs/{name}.py", script(f"""\
            open({str(log)!r}, 'a').write({name!r} + '\\n')
            while not os.path.exists({str(release)!r}):  # the test lets it finish
                time.sleep(0.05)
        """).replace('"green"', repr(color)))
    first = _pelican(site, "out1")  # its pool runs alpha and beta at once
    _wait_for(lambda: log.exists() and len(log.read_text().split()) == 2,
              "the first build to start alpha and beta")
    second = _pelican(site, "out2")
    _wait_for(lambda: "waiting for another build that is making" in _log(site, "out2"),
              "the second build to wait for a figure's lock")
    assert sorted(log.read_text().split()) == ["alpha", "beta"]  # the second ran neither
    release.touch()
    for out, build in (("out1", first), ("out2", second)):
        assert build.wait(timeout=120) == 0, _log(site, out)
    assert sorted(log.read_text().split()) == ["alpha", "beta"]  # each ran once, not twice
    one, two = (site.root / "out1", site.root / "out2")
    assert (one / "a-tiny-post.html").read_text() == (two / "a-tiny-post.html").read_text()
    assert len(figures((one / "a-tiny-post.html").read_text())) == 3
    for path in (one / "figures").glob("*.png"):
        assert path.read_bytes() == (two / "figures" / path.name).read_bytes()


def _pelican(site: Site, out: str) -> subprocess.Popen:
    """Start a build into `out`, its output going to `out`.log."""
    with (site.root / f"{out}.log").open("w") as log:
        return subprocess.Popen(
            [str(Path(os.sys.executable).parent / "pelican"), "content", "-s", "pelicanconf.py",
             "-o", out], cwd=site.root, env=site.env(), stdout=log, stderr=subprocess.STDOUT)


def _log(site: Site, out: str) -> str:
    return (site.root / f"{out}.log").read_text()


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Poll until `condition` holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cached_image_is_detected_and_rerun(site: Site, damage: str) -> None:
    site.build()
    record = (site.root / ".figgen-cache/records/alpha.json").read_text()
    digest = record.split('"sha256": "')[1][:64]
    (obj,) = (site.root / ".figgen-cache/objects").glob(f"{digest}*")
    data = obj.read_bytes()
    obj.write_bytes(data[:100] if damage == "truncate" else data[:-20] + bytes(20))
    assert set(site.build()["ran"]) == {"alpha"}
    assert obj.read_bytes() == data  # re-made, byte for byte


def test_an_altered_record_is_detected_and_rerun(site: Site) -> None:
    site.build()
    path = site.root / ".figgen-cache/records/gamma.json"
    path.write_text(path.read_text().replace('"n": 4', '"n": 5'))
    assert set(site.build()["ran"]) == {"gamma"}
    assert "Gamma plots 4 points" in site.html()


def test_a_damaged_published_image_is_replaced(site: Site) -> None:
    site.build()
    img = next(f["img"] for f in figures(site.html()))
    path = site.root / "output" / img["src"].lstrip("/")
    good = path.read_bytes()
    path.write_bytes(bytes(len(good)))  # same size, other bytes
    site.build()
    assert path.read_bytes() == good


def test_a_script_linked_from_outside_the_scripts_folder_is_refused(site: Site,
                                                                   tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text((site.root / "figs/alpha.py").read_text())
    (site.root / "figs/alpha.py").unlink()
    (site.root / "figs/alpha.py").symlink_to(outside)
    with pytest.raises(FigureBuildError) as err:
        site.build()
    (error,) = err.value.errors
    assert error.reference == "alpha" and "outside" in error.cause and "refused" in error.cause
    assert not (site.root / ".figgen-cache/records/alpha.json").exists()


def test_data_linked_from_outside_the_project_is_refused(site: Site, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-points.txt"
    outside.write_text("1 2")
    (site.root / "data/points.txt").unlink()
    (site.root / "data/points.txt").symlink_to(outside)
    with pytest.raises(FigureBuildError, match="data file data/points.txt is outside"):
        site.build()


# A child that leaves the script's session, and a grandchild with an empty environment in a
# session of its own, orphaned by its shell: neither a process group kill nor the FIGGEN_RUN
# marker finds them; only the run's subreaper does.
ESCAPES = """\
child = subprocess.Popen([sys.executable, "-c",
                          "import os, time; os.setsid(); time.sleep(300)"])
shell = subprocess.Popen(["/bin/sh", "-c", "sleep 300 & echo $! > {pids}.orphan"], env={{}},
                         start_new_session=True)
shell.wait()  # the shell is gone, its sleep re-parented
open({pids!r}, "w").write(f"{{os.getpid()}} {{child.pid}} " + open({pids!r} + ".orphan").read())
"""


def _escapes(pid_file: Path) -> list[int]:
    """The pids the ESCAPES script wrote: its own, its setsid child, the orphaned sleep."""
    return [int(p) for p in pid_file.read_text().split()]


def _alive(pids: list[int]) -> list[int]:
    """Those of `pids` that still exist, even as zombies: right now, no waiting."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@pytest.mark.parametrize("preload", [True, False], ids=["warm-server", "own-interpreter"])
def test_no_process_a_good_script_started_survives_its_build(
    site: Site, tmp_path: Path, preload: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from pelican.log import LimitFilter

    LimitFilter._raised_messages.clear()  # Pelican logs a warning once per process
    pids = tmp_path / "pids"
    site.write("figs/beta.py", script(ESCAPES.format(pids=str(pids))))
    assert set(site.build(FIGGEN={"scripts": "figs", "preload": preload})["ran"]) == ALL
    assert _alive(_escapes(pids)) == [], "a process the script started outlived the build"
    assert "beta: killed 2 process(es) the script left running" in caplog.text


@pytest.mark.parametrize("preload", [True, False], ids=["warm-server", "own-interpreter"])
def test_a_timed_out_script_is_killed_with_all_it_started(
    site: Site, tmp_path: Path, preload: bool
) -> None:
    pids = tmp_path / "pids"
    site.write("figs/beta.py", script(ESCAPES.format(pids=str(pids)) + "time.sleep(300)\n",
                                      '__figure__ = {"timeout": 3}'))
    with pytest.raises(FigureBuildError) as err:
        site.build(FIGGEN={"scripts": "figs", "preload": preload})
    assert _alive(_escapes(pids)) == [], "a process the script started outlived its time-out"
    (error,) = err.value.errors
    assert error.cause == "timed out after 3 s; killed it and 2 other process(es) it started"


@pytest.mark.parametrize("preload", [True, False], ids=["warm-server", "own-interpreter"])
def test_a_timed_out_script_shows_where_it_was(site: Site, preload: bool) -> None:
    site.write("figs/beta.py", STUCK)
    with pytest.raises(FigureBuildError) as err:
        site.build(FIGGEN={"scripts": "figs", "preload": preload})
    (error,) = err.value.errors
    # Its Python stack, taken before the kill, trimmed to the script's own frames.
    assert error.detail.startswith("Where it was when it timed out:\n"), error.detail
    assert re.search(r'File ".*beta\.py", line \d+ in wait_forever\n.*beta\.py", line \d+ in '
                     r"main\n", error.detail)
    assert "harness.py" not in error.detail and "library code hidden" in error.detail


def test_ctrl_c_stops_the_build_kills_its_figures_and_leaves_a_usable_cache(site: Site) -> None:
    site.build()
    pids, runs, release = site.root / "pids", site.root / "runs.log", site.root / "release"
    body = (f"open({str(runs)!r}, 'a').write('beta\\n')\n"
            f"if not os.path.exists({str(release)!r}):\n"
            + textwrap.indent(ESCAPES.format(pids=str(pids)) + "time.sleep(300)\n", "    "))
    site.write("figs/beta.py", script(body))
    site.append("figs/gamma.py", "\n# edited\n")  # two stale figures: the warm server runs them
    build = _pelican(site, "out")
    _wait_for(pids.exists, "beta to start its children")
    build.send_signal(signal.SIGINT)
    assert build.wait(timeout=30) == 130, _log(site, "out")
    assert _alive(_escapes(pids)) == [], "a figure's process outlived the interrupted build"
    assert runs.read_text() == "beta\n"  # not started again in an interpreter of its own
    assert "interpreter of its own" not in _log(site, "out")
    assert "figgen: build interrupted; killed the" in _log(site, "out")
    release.touch()
    report = site.build()
    assert "beta" in report["ran"] and "alpha" in report["cached"]
    assert len(figures(site.html())) == 3


def test_a_run_whose_stderr_file_vanished_fails_with_its_cause(site: Site) -> None:
    # What a child killed before it opened its stderr file leaves: no file to read.
    body = 'os.unlink(os.path.join(os.environ["FIGGEN_RUN"], ".figgen-stderr.txt"))\nos._exit(3)'
    assert "exit status 3" in failed_cause(site, body)


def test_tiny_time_outs_fail_each_figure_and_never_the_build(site: Site) -> None:
    # Killed before (or while) the run starts: its stderr file may not exist yet.
    for name in ("alpha", "beta"):
        site.write(f"figs/{name}.py", '__figure__ = {"timeout": 0.001}\n' +
                   (site.root / f"figs/{name}.py").read_text())
    for _ in range(3):
        with pytest.raises(FigureBuildError) as err:
            site.build()
        causes = {e.reference: e.cause for e in err.value.errors}
        assert set(causes) == {"alpha", "beta"}
        assert all(c.startswith("timed out after 0.001 s") for c in causes.values()), causes
