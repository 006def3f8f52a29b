"""The warm server: what it preloads, and that a forked script behaves as if started alone."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pelican.plugins.figgen import launch
from pelican.plugins.figgen.launch import Request, ServerGone, WarmServer
from pelican_figgen.forkclient import Run
from pelican_figgen.forkserver import SAVE_IMPORTS, shared_libraries

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(REPO), "FIGGEN_ROOT": str(REPO), "MARK": "server"}

pytestmark = pytest.mark.skipif(not launch.available(), reason="the warm server needs Linux")

PROBE = """\
import sys
warm = "numpy" in sys.modules  # before this script imports anything
import json, os
import numpy
json.dump({
    "warm": warm, "argv": sys.argv[1:], "cwd": os.getcwd(), "mark": os.environ.get("MARK"),
    "own_session": os.getsid(0) == os.getpid(), "stdin": sys.stdin.read(),
    "path0": sys.path[0], "name": __name__,
    "figgen": sorted(m for m in sys.modules if m == "figgen" or m.startswith("figgen.")),
}, open(sys.argv[1], "w"))
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WarmServer]:
    """A warm server for two scripts that share numpy."""
    probe = write(tmp_path, "probe.py", PROBE)
    other = write(tmp_path, "other.py", "import numpy\nimport json\n")
    warm = WarmServer(sys.executable, [probe, other], REPO, ENV, tmp_path / "server.log")
    yield warm
    warm.close()


def start(server: WarmServer, script: Path, *args: str, **env: str) -> Run:
    """Fork a script from the server, its stderr beside it."""
    return server.start(Request((str(script), *args), ENV | env, REPO,
                                script.with_suffix(".err"), script.with_suffix(".reaper.json")))


def test_what_two_scripts_import_is_preloaded_and_what_one_imports_is_not(tmp_path: Path) -> None:
    a = write(tmp_path, "a.py",
              "import json\nimport numpy\nimport torch\nfrom scipy import ndimage\n")
    b = write(tmp_path, "b.py", "import os\nimport numpy as np\nimport torch.nn\n\ndef f():\n"
                                "    import torch\n")
    # Read, not imported: nothing of torch is loaded to decide.
    assert shared_libraries([a, b], tmp_path) == ["numpy", "torch"]
    assert shared_libraries([a], tmp_path) == []


def test_scripts_that_draw_with_matplotlib_get_what_saving_imports_preloaded(
    tmp_path: Path,
) -> None:
    # No script names the Agg canvas or Pillow's plugins: ctx.save's savefig imports them.
    scripts = [write(tmp_path, f"{n}.py", "from matplotlib.figure import Figure\n")
               for n in ("a", "b")]
    found = set(shared_libraries(scripts, tmp_path))
    assert found == {"matplotlib.figure", "matplotlib.figure.Figure", *SAVE_IMPORTS}


def test_a_forked_script_starts_like_a_fresh_interpreter(
    server: WarmServer, tmp_path: Path
) -> None:
    assert server.ready["preloaded"] == ["numpy"]
    out = tmp_path / "probe.json"
    process = start(server, tmp_path / "probe.py", str(out), MARK="script")
    assert process.wait(timeout=60) == 0, (tmp_path / "probe.err").read_text()
    seen = json.loads(out.read_text())
    assert seen == {
        "warm": True, "argv": [str(out)], "cwd": str(REPO), "mark": "script",
        "own_session": False, "stdin": "", "path0": str(tmp_path), "name": "__main__",
        # own_session False: it shares its supervisor's session (pelican_figgen.reaper)
        "figgen": [],  # the server's own modules are not the script's: it imports its own
    }


@pytest.mark.parametrize(("body", "status", "stderr"), [
    ("import sys\nsys.exit(3)\n", 3, ""),
    ("import sys\nsys.exit('no data')\n", 1, "no data"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", -signal.SIGKILL, ""),
    ("def f():\n    raise ValueError('broken')\n\nf()\n", 1, "ValueError: broken"),
])
def test_a_forked_script_ends_as_it_would_alone(
    server: WarmServer, tmp_path: Path, body: str, status: int, stderr: str
) -> None:
    script = write(tmp_path, "ending.py", body)
    start(server, script).wait(timeout=60)
    # The script's status, as its supervisor (pelican_figgen.reaper) reports it.
    assert json.loads(script.with_suffix(".reaper.json").read_text())["status"] == status
    err = script.with_suffix(".err").read_text()
    assert stderr in err
    if "Traceback" in err:  # from the script's first frame, as `python ending.py` prints it
        frames = [line for line in err.splitlines() if line.startswith("  File ")]
        assert all(str(script) in frame for frame in frames), err
        assert len(frames) == 2


def test_the_scripts_die_with_the_server(server: WarmServer, tmp_path: Path) -> None:
    script = write(tmp_path, "sleeper.py", "import time\ntime.sleep(300)\n")
    process = start(server, script)
    server._proc.kill()
    with pytest.raises(ServerGone, match="died"):
        process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(process.pid)
    with pytest.raises(ServerGone):
        start(server, script)


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    (tmp_path / "pelican_figgen").mkdir()
    write(tmp_path, "pelican_figgen/__init__.py", "")
    write(tmp_path, "pelican_figgen/forkserver.py", "raise ImportError('torch is broken here')\n")
    env = ENV | {"PYTHONPATH": str(tmp_path)}  # this pelican_figgen comes first
    with pytest.raises(ServerGone, match="(?s)did not start: .*torch is broken here"):
        WarmServer(sys.executable, [], tmp_path, env, tmp_path / "server.log")


def test_a_server_whose_interpreter_is_missing_says_which(tmp_path: Path) -> None:
    missing = tmp_path / "no-python"
    with pytest.raises(ServerGone, match=f"did not start: cannot start {missing}"):
        WarmServer(str(missing), [], tmp_path, ENV, tmp_path / "server.log")


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_a_library_printing_while_preloaded_goes_to_the_log_not_the_protocol(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    write(lib, "noisy.py", "print('hello from noisy')\n")
    scripts = [write(tmp_path, f"{n}.py", "import noisy\n") for n in ("a", "b")]
    env = ENV | {"PYTHONPATH": os.pathsep.join([str(REPO), str(lib)])}
    warm = WarmServer(sys.executable, scripts, REPO, env, tmp_path / "server.log")
    try:
        assert warm.ready["preloaded"] == ["noisy"]
        assert start(warm, scripts[0]).wait(timeout=60) == 0
    finally:
        warm.close()
    assert "hello from noisy" in (tmp_path / "server.log").read_text()


def test_a_child_runs_its_own_finalizers_at_exit_never_the_preloaded_libraries(
    tmp_path: Path,
) -> None:
    lib, out = tmp_path / "lib", tmp_path / "finalized"
    lib.mkdir()
    # A library that, when imported, leaves a finalizer for exit (torch drops its operator
    # libraries so; tempfile removes a folder so): the server's object, not a child's.
    write(lib, "tidy.py", f"""\
        import weakref
        class Held: pass
        HELD = Held()
        weakref.finalize(HELD, open, {str(out)!r} + ".library", "w")
    """)
    scripts = [write(tmp_path, f"{n}.py", f"""\
        import weakref, tidy
        class Own: pass
        OWN = Own()
        weakref.finalize(OWN, open, {str(out)!r} + ".script", "w")
    """) for n in ("a", "b")]
    env = ENV | {"PYTHONPATH": os.pathsep.join([str(REPO), str(lib)])}
    warm = WarmServer(sys.executable, scripts, REPO, env, tmp_path / "server.log")
    try:
        assert warm.ready["preloaded"] == ["tidy"]
        assert start(warm, scripts[0]).wait(timeout=60) == 0
        assert Path(f"{out}.script").exists()  # its own finalizer ran, as at any exit
        assert not Path(f"{out}.library").exists()  # the server's is left to the server
    finally:
        warm.close()


def test_a_child_imports_a_project_module_as_it_is_now_not_as_the_server_compiled_it(
    tmp_path: Path,
) -> None:
    helper = write(tmp_path, "helper.py", "VALUE = 1\n")
    scripts = [write(tmp_path, f"{n}.py", f"""\
        import helper, numpy
        open({str(tmp_path / n)!r} + ".out", "w").write(str(helper.VALUE))
    """) for n in ("a", "b")]
    warm = WarmServer(sys.executable, scripts, REPO, ENV, tmp_path / "server.log")
    try:
        assert start(warm, scripts[0]).wait(timeout=60) == 0
        assert (tmp_path / "a.out").read_text() == "1"
        before = helper.stat().st_mtime_ns
        helper.write_text("VALUE = 2\n")  # edited while the server runs: the same size
        os.utime(helper, ns=(before + 10**7, before + 10**7))  # later, whatever the clock's step
        assert start(warm, scripts[1]).wait(timeout=60) == 0
        assert (tmp_path / "b.out").read_text() == "2", scripts[1].with_suffix(".err").read_text()
    finally:
        warm.close()


def test_a_forked_script_exits_as_python_does(server: WarmServer, tmp_path: Path) -> None:
    out = tmp_path / "exit.txt"
    script = write(tmp_path, "exits.py", f"""\
        import atexit, threading, time
        log = open({str(out)!r}, "w")  # never closed: exiting flushes it
        log.write("buffered ")
        atexit.register(lambda: open({str(out)!r} + ".atexit", "w").write("ran"))
        threading.Thread(target=lambda: (time.sleep(0.3), log.write("thread"))).start()
    """)
    assert start(server, script).wait(timeout=60) == 0, script.with_suffix(".err").read_text()
    assert out.read_text() == "buffered thread"  # the thread was joined, the file flushed
    assert Path(f"{out}.atexit").read_text() == "ran"


def test_gpu_figures_are_not_forked_from_a_server_that_started_cuda(
    server: WarmServer, tmp_path: Path
) -> None:
    assert server.ready["cuda_initialized"] is False  # torch was not even loaded here
    server.ready = {**server.ready, "cuda_initialized": True}
    with pytest.raises(ServerGone, match="started CUDA"):
        server.start(Request((str(tmp_path / "probe.py"),), ENV | {"FIGGEN_LANE": "gpu"}, REPO,
                             tmp_path / "gpu.err", tmp_path / "gpu.json"))
    assert start(server, write(tmp_path, "cpu.py", "pass\n")).wait(timeout=60) == 0


def test_a_forked_script_ends_its_executor_and_flushes_a_module_s_open_file(
    server: WarmServer, tmp_path: Path
) -> None:
    out = tmp_path / "kept.txt"
    write(tmp_path, "keeper.py", f"LOG = open({str(out)!r}, 'w')\n")  # kept by sys.modules
    script = write(tmp_path, "pooled.py", """\
        import sys
        from concurrent.futures import ThreadPoolExecutor

        sys.path.insert(0, sys.argv[1])
        import keeper

        POOL = ThreadPoolExecutor(2)  # its workers end only when Python's exit wakes them
        POOL.submit(keeper.LOG.write, "from a worker")
    """)
    assert start(server, script, str(tmp_path)).wait(timeout=60) == 0, \
        script.with_suffix(".err").read_text()
    assert out.read_text() == "from a worker"
