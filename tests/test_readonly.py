"""A read-only checkout and cache: a build with nothing to write succeeds, else one clear error.

Root ignores file permissions, and CI runs as root, so chmod cannot make a checkout read-only:
each command here runs in a mount namespace of its own (`unshare -rm`, which needs no privilege
where user namespaces are allowed) in which the site's folder is bind-mounted read-only. Only
the output folder, outside it, can be written, as in a read-only container with an output volume.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Site
from pelican.plugins.figgen import cache, embed

READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'
CANNOT_WRITE = "cannot write in FIGGEN['cache_dir']"


def read_only(folder: Path, argv: list[str]) -> list[str]:
    """A command line that runs argv with folder mounted read-only, for argv alone."""
    return ["unshare", "-rm", "sh", "-c", READ_ONLY, "sh", str(folder), *argv]


@pytest.fixture
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable output folder outside the site; skips where read-only mounts are refused."""
    probe = tmp_path_factory.mktemp("probe")
    try:
        refused = subprocess.run(read_only(probe, ["touch", str(probe / "x")]),
                                 capture_output=True).returncode == 0 or \
            subprocess.run(read_only(probe, ["true"]), capture_output=True).returncode != 0
    except FileNotFoundError:  # no unshare
        refused = True
    if refused:
        pytest.skip("needs a mount namespace (unshare -rm) to make a folder read-only: root, "
                    "as in CI, ignores file permissions")
    return tmp_path_factory.mktemp("output")


def build_read_only(site: Site, output: Path, env: dict | None = None) -> str:
    """Build with pelican, the site's folder read-only; its log (the build must succeed)."""
    pelican = str(Path(sys.executable).parent / "pelican")
    argv = [pelican, "content", "-s", "pelicanconf.py", "-o", str(output)]
    result = site.command(read_only(site.root, argv), env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return log


def failed_read_only(site: Site, command: str) -> str:
    """Run a pelican-figgen command with the site's folder read-only; its log (it must fail)."""
    argv = [sys.executable, "-m", "pelican.plugins.figgen", command]
    result = site.command(read_only(site.root, argv))
    log = result.stdout + result.stderr
    assert result.returncode == 1, log
    return log


def test_a_no_op_build_succeeds_on_a_read_only_checkout(site: Site, output: Path) -> None:
    site.build()
    shutil.rmtree(site.root / ".figgen-cache" / "code")  # the code cache cannot be filled now
    log = build_read_only(site, output)
    assert log.count(CANNOT_WRITE) == 1 and "Traceback" not in log  # one warning, no more
    page = (output / "a-tiny-post.html").read_text()
    assert page.count('<figure class="figgen"') == 3 and "figgen-error" not in page
    assert 'class="highlight"' in page  # the code was highlighted in memory
    assert not (site.root / ".figgen-cache" / "code").exists()


def test_a_frozen_build_succeeds_on_a_read_only_checkout_with_no_cache(
    site: Site, output: Path
) -> None:
    site.build()
    assert site.figgen("freeze").returncode == 0
    shutil.rmtree(site.root / ".figgen-cache")  # a fresh clone: the freeze, no cache
    log = build_read_only(site, output, env={"FIGGEN_MODE": "frozen"})
    assert log.count(CANNOT_WRITE) == 1 and "Traceback" not in log
    page = (output / "a-tiny-post.html").read_text()
    assert page.count('<figure class="figgen"') == 3 and 'class="highlight"' in page
    assert not (site.root / ".figgen-cache").exists()


def test_a_stale_figure_on_a_read_only_cache_fails_once_naming_the_setting(
    site: Site, output: Path
) -> None:
    site.build()
    site.append("figs/beta.py", "# edited\n")
    pelican = str(Path(sys.executable).parent / "pelican")
    commands = {"build": [pelican, "content", "-s", "pelicanconf.py", "-o", str(output)],
                "run": [sys.executable, "-m", "pelican.plugins.figgen", "run"]}
    cache_dir = site.root.resolve() / ".figgen-cache"
    for what, argv in commands.items():
        result = site.command(read_only(site.root, argv))
        log = result.stdout + result.stderr
        assert result.returncode == 1, what
        message = (f"FIGGEN['cache_dir'] is {cache_dir}, which cannot be written (Read-only file "
                   "system), and 1 figure(s) must run: beta.")
        assert log.count(message) == 1, (what, log)
        assert "Traceback" not in log and "PermissionError" not in log and "CRITICAL" not in log


def test_freezing_into_a_read_only_checkout_names_the_setting(site: Site, output: Path) -> None:
    site.build()  # every figure fresh: only the freeze has to be written
    log = failed_read_only(site, "freeze")
    assert f"FIGGEN['freeze_dir'] is {site.root.resolve() / '_freeze'}, which cannot be " \
        "written (Read-only file system): make it writable to freeze" in log
    assert "Traceback" not in log


def test_cleaning_a_read_only_cache_names_the_setting_and_what_stays(
    site: Site, output: Path
) -> None:
    site.build()
    log = failed_read_only(site, "clean")
    assert f"FIGGEN['cache_dir'] is {site.root.resolve() / '.figgen-cache'}, which could not " \
        "be emptied" in log
    assert "Read-only file system" in log and "removed" not in log
    assert "Traceback" not in log


# The same, one function at a time (a file in place of a folder refuses writes, even to root).

def test_an_optional_write_that_fails_warns_once_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        cache.write_optional(blocked / "last-build.json", "{}", blocked)
        cache.write_optional(blocked / "code" / "x.html", "<pre>", blocked)
    assert [r.getMessage().count(CANNOT_WRITE) for r in caplog.records] == [1]
    assert str(blocked) in caplog.records[0].getMessage()


def test_code_is_highlighted_without_a_writable_cache(tmp_path: Path) -> None:
    script = tmp_path / "f.py"
    script.write_text("print('hi')\n")
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    assert 'class="highlight"' in embed._highlighted(script, blocked)
    writable = tmp_path / "writable"
    code = embed._highlighted(script, writable)
    assert [p.read_text() for p in (writable / "code").iterdir()] == [code]  # kept for next time
