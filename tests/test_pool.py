"""The pool, end to end on the tiny site: same bytes as a serial build, lanes, order, threads."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import GAMMA, Site

POOL = {"scripts": "figs", "jobs": 2}
SERIAL = {"scripts": "figs", "jobs": 1, "preload": False}


def script(body: str, gpu: bool = False) -> str:
    """A figure script that runs `body` in main(ctx), then draws a line."""
    figure = '__figure__ = {"gpu": True}\n\n' if gpu else ""
    return textwrap.dedent("""\
        import os
        import time
        from pathlib import Path

        from matplotlib.figure import Figure

        from pelican_figgen.harness import run

        {figure}
        def main(ctx):
        {body}
            ctx.fields.update(color="black", n=2)  # what the tiny post's captions quote
            fig = Figure(figsize=(1, 1))
            fig.add_subplot().plot([0, 1], [1, 0])
            ctx.save(fig)


        if __name__ == "__main__":
            run(main)
        """).format(figure=figure, body=textwrap.indent(textwrap.dedent(body), "    "))


def fields(site: Site, name: str) -> dict:
    """What a figure's last successful run recorded, besides what the captions quote."""
    record = json.loads((site.root / ".figgen-cache/records" / f"{name}.json").read_text())
    return {k: v for k, v in record["fields"].items() if k not in ("color", "n")}


def rendezvous(me: str, other: str, root: Path) -> str:
    """A body that says it started, then waits (up to 60 s) for another figure to start."""
    return f"""\
        Path({str(root / me)!r}).touch()
        deadline = time.monotonic() + 60
        while not Path({str(root / other)!r}).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("{other} never ran at the same time as {me}")
            time.sleep(0.02)
    """


LAZY = """\
from pelican_figgen.harness import run


def main(ctx):
    import numpy as np  # only here: forked from the warm server it is already imported
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot(np.random.rand(8))  # seeded alike either way, or the bytes differ
    ctx.fields.update(color="black", n=8)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""


def test_the_pool_makes_the_bytes_of_a_serial_build(site: Site) -> None:
    site.write("figs/alpha.py", LAZY)
    site.write("figs/beta.py", LAZY.replace("rand(8)", "rand(9)"))
    pooled = site.build(FIGGEN=POOL)
    assert sorted(pooled["ran"]) == ["alpha", "beta", "gamma"]
    assert "matplotlib.figure" in pooled["preloaded"]  # all three import it
    first = {p.name: p.read_bytes() for p in (site.root / "output").rglob("*")
             if p.is_file() and p.suffix != ".json"}
    shutil.rmtree(site.root / "output")
    shutil.rmtree(site.root / ".figgen-cache")
    serial = site.build(FIGGEN=SERIAL)
    assert sorted(serial["ran"]) == ["alpha", "beta", "gamma"] and serial["preloaded"] == []
    second = {p.name: p.read_bytes() for p in (site.root / "output").rglob("*")
              if p.is_file() and p.suffix != ".json"}
    assert len(first) > 5 and first == second
    assert all(seconds >= 0 for seconds in serial["compute"].values())


def test_figures_of_the_pool_run_at_the_same_time(site: Site) -> None:
    site.write("figs/alpha.py", script(rendezvous("alpha-started", "beta-started", site.root)))
    site.write("figs/beta.py", script(rendezvous("beta-started", "alpha-started", site.root)))
    assert sorted(site.build(FIGGEN=POOL)["ran"]) == ["alpha", "beta", "gamma"]


def test_gpu_figures_take_turns_on_their_gpu_beside_the_cpu_figures(site: Site) -> None:
    started = f"Path({str(site.root)!r}, ctx.name + '-started').touch()\n"
    record = textwrap.dedent("""\
        ctx.fields.update(device=os.environ.get("CUDA_VISIBLE_DEVICES"),
                          lane=os.environ["FIGGEN_LANE"], start=time.time())
        time.sleep(0.3)
        ctx.fields["end"] = time.time()
    """)
    site.write("figs/alpha.py", script(started + record, gpu=True))
    site.write("figs/beta.py", script(started + record, gpu=True))
    # gamma, the only CPU figure, waits for a GPU figure to be running: the lanes run at once
    # (the CPU pool has one worker, the GPU queue its own).
    waits = textwrap.dedent(f"""\
        deadline = time.monotonic() + 60
        while not any(Path({str(site.root)!r}, n + "-started").exists() for n in ("alpha", "beta")):
            if time.monotonic() > deadline:
                raise TimeoutError("no GPU figure ran beside the CPU pool")
            time.sleep(0.02)
    """)
    site.write("figs/gamma.py", script(waits + record))
    site.build(FIGGEN={"scripts": "figs", "jobs": 1, "gpus": ["7"]})
    a, b, c = (fields(site, n) for n in ("alpha", "beta", "gamma"))
    assert (a["device"], a["lane"], b["device"], b["lane"]) == ("7", "gpu", "7", "gpu")
    assert (c["device"], c["lane"]) == ("", "cpu")  # CPU figures see no GPU
    assert a["end"] <= b["start"] or b["end"] <= a["start"]  # one at a time on GPU 7


def test_without_a_gpu_a_gpu_figure_runs_in_the_cpu_pool(site: Site) -> None:
    site.write("figs/alpha.py", script("""\
        ctx.fields.update(device=os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
                          lane=os.environ["FIGGEN_LANE"])
    """, gpu=True))
    site.build(FIGGEN={"scripts": "figs", "gpus": []})
    assert fields(site, "alpha") == {"device": "", "lane": "cpu"}  # and it sees no GPU


def test_the_slowest_figure_of_the_last_build_starts_first(site: Site) -> None:
    order = site.root / "order.log"
    log = f"open({str(order)!r}, 'a').write(ctx.name + '\\n')\n"
    site.write("figs/beta.py", script(log + "time.sleep(1.5)\n"))
    site.write("figs/alpha.py", script(log))
    site.write("figs/gamma.py", script(log))
    site.build(FIGGEN=SERIAL)  # never run: by name
    assert order.read_text().split() == ["alpha", "beta", "gamma"]
    order.unlink()
    for name in ("alpha", "beta", "gamma"):
        site.append(f"figs/{name}.py", "\n# touched\n")
    site.build(FIGGEN=SERIAL)
    assert order.read_text().split()[0] == "beta"
    # A fresh clone has no cache: the committed freeze says how long each figure took.
    assert site.figgen("freeze").returncode == 0
    shutil.rmtree(site.root / ".figgen-cache")
    order.unlink()
    site.build(FIGGEN=SERIAL)
    assert order.read_text().split()[0] == "beta"


def test_a_run_records_its_peak_memory_and_the_next_build_schedules_by_it(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.write("figs/beta.py", script("ballast = b'x' * (300 * 2**20)  # written: resident\n"))
    site.build(FIGGEN=POOL)
    records = {n: json.loads((site.root / f".figgen-cache/records/{n}.json").read_text())
               for n in ("alpha", "beta")}
    assert records["beta"]["memory"] > records["alpha"]["memory"] + 250  # MiB
    site.append("figs/beta.py", "\n# touched\n")
    site.append("figs/alpha.py", "\n# touched\n")
    budget = records["beta"]["memory"] + records["alpha"]["memory"] / 2  # not both at once
    with caplog.at_level(logging.INFO, logger="pelican.plugins.figgen.schedule"):
        site.build(FIGGEN=POOL | {"memory_mb": int(budget)})
    assert re.search(r"(alpha|beta) waits for memory", caplog.text)  # whichever came second


def test_a_failing_figure_in_the_pool_shows_its_own_frames_only(site: Site) -> None:
    site.write("figs/beta.py", script("def load():\n    raise ValueError('no beta')\nload()\n"))
    report = site.build(FIGGEN=POOL | {"on_error": "keep-going"})
    assert report["failed"] == ["beta"] and sorted(report["ran"]) == ["alpha", "gamma"]
    assert report["preloaded"]  # beta was forked from the warm server
    box = html.unescape(re.search(r'id="fig-beta".*?</figure>', site.html(), re.S).group())
    assert "ValueError: no beta" in box and "figs/beta.py" in box
    assert "forkserver" not in box and "runpy" not in box and "harness" not in box


def test_the_thread_count_is_part_of_the_key_and_reaches_torch(site: Site) -> None:
    site.write("figs/alpha.py", script("import torch\nctx.fields['threads'] = "
                                       "torch.get_num_threads()\n"))
    site.build(FIGGEN=POOL)
    assert fields(site, "alpha") == {"threads": 1}
    again = site.build(FIGGEN=POOL | {"threads": 2})
    assert sorted(again["ran"]) == ["alpha", "beta", "gamma"]  # "threads 1 -> 2"
    assert fields(site, "alpha") == {"threads": 2}


CACHED = """\
import os

from pelican_figgen.intermediates import cached


@cached
def value():
    with open(os.path.join(os.environ["FIGGEN_ROOT"], "computed.log"), "a") as log:
        log.write("computed\\n")
    return 3
"""
USES_VALUE = "from helpers.slow import value\nctx.fields['v'] = value()\n"


def test_intermediates_are_shared_and_a_forced_run_computes_them_again(site: Site) -> None:
    computed = site.root / "computed.log"
    site.write("helpers/slow.py", CACHED)
    site.write("figs/alpha.py", script(USES_VALUE))
    site.write("figs/beta.py", script(USES_VALUE))
    site.build(FIGGEN=POOL)
    assert computed.read_text().split() == ["computed"]  # once, for both figures
    site.append("figs/alpha.py", "\n# restyled\n")
    assert site.build(FIGGEN=POOL)["ran"].keys() == {"alpha"}
    assert computed.read_text().split() == ["computed"]  # a restyle reads it
    assert fields(site, "alpha")["v"] == 3
    result = site.figgen("run", "--force", "alpha", "beta")
    assert result.returncode == 0, result.stderr
    assert computed.read_text().split() == ["computed"] * 2  # forced: made again, once


def test_a_build_trims_intermediates_it_did_not_use_to_their_limit(site: Site) -> None:
    site.write("helpers/slow.py", CACHED)
    site.write("figs/alpha.py", script(USES_VALUE))
    site.build(FIGGEN=POOL)
    folder = site.root / ".figgen-cache/intermediates"
    (used,) = folder.glob("*/*.pickle")
    old = folder / "00" / f"00{'0' * 62}.pickle"  # a result no figure has used in a long time
    old.parent.mkdir()
    old.write_bytes(bytes(2 * 2**20))
    os.utime(old, (1e9 + 1, 1e9 + 1))
    os.utime(used, (1e9, 1e9))  # the oldest of all, dropped first unless the build's hit marks it
    site.append("figs/alpha.py", "\n# restyled\n")
    assert site.build(FIGGEN=POOL | {"intermediates_max_mb": 1})["ran"].keys() == {"alpha"}
    assert not old.exists() and used.exists()
    assert (site.root / "computed.log").read_text().split() == ["computed"]  # the restyle read it


def test_a_no_op_build_never_loads_the_run_phase(site: Site) -> None:
    site.build()
    code = ("import sys\nfrom pelican import main\nsys.argv = ['pelican', 'content', '-s', "
            "'pelicanconf.py', '-q']\nmain()\n"
            "print(sorted(m for m in sys.modules if m.startswith('pelican.plugins.figgen.')))")
    result = site.command([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip().splitlines()[-1]
    assert "pelican.plugins.figgen.pipeline" in loaded  # the plugin did its part
    for module in ("execute", "run", "launch", "schedule"):
        assert f"pelican.plugins.figgen.{module}'" not in loaded


def test_prctl_is_looked_up_before_any_fork_and_never_by_a_no_op_build() -> None:
    # Looking up a library in a forked child could deadlock: each module that calls prctl
    # there looks it up at its import. The no-op build imports contract alone, without ctypes.
    code = ("import sys\nfrom pelican_figgen import contract\nprint('ctypes' in sys.modules)\n"
            "import pelican.plugins.figgen.launch, pelican_figgen.reaper\n"
            "print(bool(contract._PRCTL))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_when_the_warm_server_dies_its_figures_run_in_their_own_interpreters(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.write("figs/alpha.py", script("""\
        # The script's parent is its supervisor (pelican_figgen.reaper); the server is above it.
        stat = Path(f"/proc/{os.getppid()}/stat").read_text()
        server = int(stat.rsplit(")", 1)[1].split()[1])
        if b"pelican_figgen.forkserver" in Path(f"/proc/{server}/cmdline").read_bytes():
            os.kill(server, 9)  # forked from the warm server: kill it (and so this script)
            time.sleep(30)
    """))
    with caplog.at_level(logging.WARNING):
        report = site.build(FIGGEN=POOL)
    assert report["preloaded"] and report["failed"] == []
    assert sorted(report["ran"]) == ["alpha", "beta", "gamma"]
    assert "alpha: the warm server died while the script ran" in caplog.text
    assert "it runs in an interpreter of its own" in caplog.text


def test_a_script_that_does_not_parse_fails_with_python_s_message(site: Site) -> None:
    site.write("figs/beta.py", "from pelican_figgen.harness import run\n\ndef main(ctx:\n")
    report = site.build(FIGGEN=POOL | {"on_error": "keep-going"})  # forked with the others
    assert report["failed"] == ["beta"] and report["preloaded"]
    box = html.unescape(re.search(r'id="fig-beta".*?</figure>', site.html(), re.S).group())
    assert "figs/beta.py" in box and "SyntaxError" in box and "forkserver" not in box


GATED = """\
import os
import time
from pathlib import Path

from pelican_figgen.intermediates import cached


@cached
def gated():
    # Finishes only once gamma, the third figure, has started: with a pool of two, gamma can
    # start only if beta, waiting for this result, lent it its core.
    gate = Path(os.environ["FIGGEN_ROOT"], "gamma-started")
    deadline = time.monotonic() + 60
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("gamma never started while beta waited")
        time.sleep(0.02)
    return 5
"""


def test_a_figure_waiting_for_another_s_intermediate_lends_its_core(site: Site) -> None:
    site.write("helpers/gated.py", GATED)
    site.write("figs/alpha.py", script("from helpers.gated import gated\ngated()\n"))
    site.write("figs/beta.py", script("time.sleep(0.5)  # alpha takes the lock first\n"
                                      "from helpers.gated import gated\ngated()\n"))
    site.write("figs/gamma.py", script(
        "Path(os.environ['FIGGEN_ROOT'], 'gamma-started').touch()\n"))
    report = site.build(FIGGEN=POOL)
    assert sorted(report["ran"]) == ["alpha", "beta", "gamma"], report["causes"]


HEAVY = """\
from pelican_figgen.intermediates import cached


@cached
def values(n):
    import sympy  # only when computed (it brings mpmath): a hit imports neither

    return [float(sympy.Integer(i) ** 2) for i in range(n)]
"""

SCHEMA = """\
import joblib  # its multiprocessing names the warm server's __main__ __mp_main__
import jsonschema  # at its top: the warm server first imports referencing inside it

SCHEMA = {"type": "number"}
"""

LIBRARIES = """\
from matplotlib.figure import Figure

from helpers.heavy import values
from helpers.schema import SCHEMA  # noqa: F401
from pelican_figgen.harness import run


def never_called():
    import jinja2  # static, never run: forked, the warm server has it (and markupsafe) loaded

    return jinja2


def main(ctx):
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot(values(4), color=COLOR)
    ctx.fields["color"] = COLOR
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""


def libraries(site: Site) -> dict[str, dict[str, str]]:
    """Each figure's recorded distributions (its "Libraries"), Python and settings aside."""
    records = {n: json.loads((site.root / ".figgen-cache/records" / f"{n}.json").read_text())
               for n in ("alpha", "beta", "gamma")}
    return {n: {k: v for k, v in r["environment"].items() if k != "python"}
            for n, r in records.items()}


def test_pooled_and_serial_runs_record_the_same_libraries_whatever_the_store_holds(
    site: Site,
) -> None:
    site.write("helpers/heavy.py", HEAVY)
    site.write("helpers/schema.py", SCHEMA)
    # gamma imports referencing only: alone, that loads attrs (which jsonschema imported
    # first, in the server), rpds-py and typing-extensions, none of which gamma names.
    gamma = GAMMA.replace("from matplotlib", "import referencing  # noqa\nfrom matplotlib", 1)
    site.write("figs/gamma.py", gamma)
    site.write("figs/alpha.py", LIBRARIES.replace("COLOR", "'red'"))
    site.write("figs/beta.py", LIBRARIES.replace("COLOR", "'blue'"))
    pages, listed = [], []

    def build(figgen: dict, keep_intermediates: bool) -> None:
        for folder in ("output", ".figgen-cache"):
            if (site.root / folder).exists():
                keep = site.root / ".kept"
                if keep_intermediates and folder == ".figgen-cache":
                    shutil.move(site.root / folder / "intermediates", keep)
                shutil.rmtree(site.root / folder)
                if keep.exists():
                    (site.root / folder).mkdir()
                    shutil.move(keep, site.root / folder / "intermediates")
        report = site.build(FIGGEN=figgen)
        assert sorted(report["ran"]) == ["alpha", "beta", "gamma"]
        if figgen is POOL:
            assert {"jinja2", "sympy", "jsonschema", "joblib"} <= set(report["preloaded"])
        pages.append({p.name: p.read_bytes() for p in (site.root / "output").rglob("*")
                      if p.is_file() and p.suffix != ".json"})
        listed.append(libraries(site))

    build(POOL, keep_intermediates=False)  # computed once, read by the other figure
    build(SERIAL, keep_intermediates=False)
    build(SERIAL, keep_intermediates=True)  # a restyle: both read it, neither imports sympy
    build(POOL, keep_intermediates=True)
    alpha = listed[0]["alpha"]
    # sympy and mpmath: computing imported them; jinja2: a static import, though never run;
    # markupsafe: what jinja2 imports, which no run here imported.
    assert {"sympy", "mpmath", "jinja2", "matplotlib"} <= alpha.keys()
    assert "markupsafe" not in alpha
    assert {"referencing", "attrs", "rpds-py", "typing-extensions"} <= listed[0]["gamma"].keys()
    assert "jsonschema" not in listed[0]["gamma"]
    assert all(one == listed[0] for one in listed), listed
    assert len(pages[0]) > 5 and all(page == pages[0] for page in pages)
