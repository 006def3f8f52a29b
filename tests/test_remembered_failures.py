"""Keep-going builds remember every failure, however the run ended, until something it read
changes; strict builds try it every time.

Every script here is tiny (no torch): the point is what the build does, not what is drawn.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import Site
from pelican.plugins.figgen import execute, run
from pelican.plugins.figgen.errors import FigureBuildError
from pelican.plugins.figgen.settings import merge

KEEP_GOING = {"scripts": "figs", "on_error": "keep-going"}
REPLAYED = "nothing it reads changed since"

# beta: counts its runs (first thing: a 1 s time-out may strike while it imports matplotlib),
# imports a helper lazily (which a run that dies cannot report), then fails.
FAILING = """\
with open({log!r}, "a") as log:
    log.write("run\\n")

import ctypes, os, signal, sys, time

from pelican_figgen.harness import run
from helpers.common import draw
{header}


def main(ctx):
    from helpers import extra  # inside main: read from the source, it still counts
{body}


if __name__ == "__main__":
    run(main)
"""

FAILURES = {  # id: (header, body of main after the import, part of the cause)
    "time-out": ('__figure__ = {"timeout": 1}', "time.sleep(60)", "timed out after 1 s"),
    "segfault": ("", "ctypes.string_at(0)", "killed by SIGSEGV"),
    "os-exit": ("", "os._exit(3)", "exit status 3"),
    "killed": ("", "os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
    "no-image": ("", "pass", "exit status 1"),  # the harness: main() saved nothing
    "exit-0-no-image": ("", "sys.exit(0)", "produced no image"),
    "unreadable-image": ("", 'draw(ctx, "green")\n(ctx.out_dir / "beta.png").write_bytes(b"no")',
                         "beta.png is not a readable PNG image"),
}


def failing(site: Site, kind: str, header: str = "") -> None:
    """Make beta fail in the given way, counting its runs in runs.log."""
    extra_header, body, _ = FAILURES[kind]
    site.write("helpers/extra.py", "VALUE = 1\n")
    site.write("figs/beta.py", FAILING.format(
        header="\n".join(filter(None, [extra_header, header])),
        log=str(site.root / "runs.log"), body=textwrap.indent(body, "    ")))


def runs(site: Site) -> int:
    """How many times beta has run."""
    log = site.root / "runs.log"
    return log.read_text().count("run") if log.exists() else 0


@pytest.mark.parametrize("kind", list(FAILURES))
def test_keep_going_does_not_rerun_any_kind_of_failure_until_a_module_it_imports_changes(
    site: Site, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGGEN_ON_ERROR", "keep-going")
    failing(site, kind)
    report = site.build()
    assert report["failed"] == ["beta"] and runs(site) == 1
    assert FAILURES[kind][2] in report["causes"]["beta"]
    report = site.build()
    assert runs(site) == 1, "a known failure ran again with nothing it reads changed"
    assert report["failed"] == ["beta"] and REPLAYED in report["causes"]["beta"]
    assert FAILURES[kind][2] in report["causes"]["beta"]
    assert '<figure class="figgen figgen-error" id="fig-beta"' in site.html()  # its box
    site.append("helpers/extra.py", "# edited: the failed run imported it inside main()\n")
    site.build()
    assert runs(site) == 2


def test_every_input_of_a_crashed_run_runs_it_again_and_strict_builds_always_do(
    site: Site,
) -> None:
    site.build()  # a good beta first: then the failure shows its last image, marked stale
    failing(site, "os-exit", header='__figure__ = {"data": ["data/points.txt"]}')
    edits = [
        lambda: None,  # the first failure
        lambda: site.append("figs/beta.py", "# the script edited\n"),
        lambda: site.append("helpers/common.py", "# a module it imports at the top edited\n"),
        lambda: site.append("helpers/extra.py", "# a module it imports in main() edited\n"),
        lambda: site.append("data/points.txt", " 7"),
    ]
    for count, edit in enumerate(edits, start=1):
        edit()
        site.build(FIGGEN=KEEP_GOING)
        site.build(FIGGEN=KEEP_GOING)  # nothing changed in between: replayed
        assert runs(site) == count
    assert "version (its last run failed: the script failed (exit status 3) (in its last run" \
        in site.html()
    assert "run --force" not in site.html()  # the retry command goes to the log only
    for count, setting in enumerate([{"seed": 1}, {"params": {"beta": {"n": 2}}}], start=6):
        site.build(FIGGEN=KEEP_GOING | setting)
        site.build(FIGGEN=KEEP_GOING | setting)
        assert runs(site) == count
    for count in (8, 9):  # strict: tried every time, known or not
        with pytest.raises(FigureBuildError):
            site.build()
        assert runs(site) == count


def test_a_module_the_run_listed_but_the_source_does_not_name_counts_too(site: Site) -> None:
    # importlib: no import statement names it; the finished run's manifest does.
    site.write("helpers/hidden.py", "VALUE = 1\n")
    failing(site, "unreadable-image")
    site.write("figs/beta.py", (site.root / "figs/beta.py").read_text().replace(
        "    from helpers import extra", "    __import__('importlib').import_module("
        "'helpers.' + 'hidden')"))
    for _ in range(2):
        site.build(FIGGEN=KEEP_GOING)
    assert runs(site) == 1
    site.append("helpers/hidden.py", "# edited\n")
    site.build(FIGGEN=KEEP_GOING)
    assert runs(site) == 2


def test_a_failure_lists_what_the_script_imports_read_from_its_source(site: Site) -> None:
    site.write("helpers/extra.py", "import json\nfrom . import broken\n")
    site.write("helpers/broken.py", "def oops(:\n")  # listed, though it cannot be followed
    site.write("figs/beta.py", "import numpy\n\n\ndef later():\n    from helpers import extra\n")
    settings = merge({"scripts": "figs"}, site.root / "content")
    assert execute.static_imports(settings, site.root / "figs/beta.py") == (
        "figs/beta.py", "helpers/__init__.py", "helpers/extra.py", "helpers/broken.py")


def test_a_script_that_cannot_be_read_lists_nothing_and_says_so(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    settings = merge({"scripts": "figs"}, site.root / "content")
    assert execute.static_imports(settings, site.root / "figs/missing.py") == ()
    assert "cannot read what" in caplog.text and "missing.py" in caplog.text


def test_a_finished_run_with_a_bad_image_says_what_it_imported(tmp_path: Path) -> None:
    (tmp_path / "beta.png").write_bytes(b"not a png")
    manifest = {"image": {"file": "beta.png", "width": 1, "height": 1},
                "modules": ["helpers/common.py"]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    result = run._check_outputs(tmp_path, 0.5)
    assert not result.ok and result.modules == ("helpers/common.py",)
