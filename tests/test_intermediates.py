"""The cache of intermediates (pelican_figgen.intermediates); the harness seeding a late torch."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pelican_figgen import contract, intermediates

REPO = Path(__file__).resolve().parents[1]

WORK = """\
import os
import random
import time
from pathlib import Path

import numpy as np

from pelican_figgen.intermediates import cached

CALLS = []


@cached
def draw(n: int = 3, spec=None):
    import torch  # a lazy import: part of the key's files all the same

    from toy import helper

    CALLS.append(n)
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
    if "TOY_LOG" in os.environ:
        with open(os.environ["TOY_LOG"], "a") as log:
            log.write("computed\\n")
    return {"numpy": np.random.rand(n), "random": random.random(),
            "torch": torch.rand(n).numpy(), "helper": helper.VALUE}
"""

FIGURE = """\
import json
import sys

import numpy as np
from matplotlib.figure import Figure

from pelican_figgen.harness import run
from toy.work import draw


def main(ctx):
    values = draw(4)
    import torch  # after the cached call: seeded alike whether it computed or read

    after = [np.random.rand(), float(torch.rand(1))]  # the generators as the call left them
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([*values["numpy"], *values["torch"], values["random"], *after])
    ctx.save(fig)
    print(json.dumps({"helper imported": "toy.helper" in sys.modules}))


if __name__ == "__main__":
    run(main)
"""


@dataclass(frozen=True)
class Spec:
    """A frozen dataclass argument."""

    width: int


@dataclass
class Loose:
    """A dataclass that is not frozen."""

    width: int


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project root with a small package whose cached function uses every generator."""
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "__init__.py").write_text("")
    (tmp_path / "toy" / "work.py").write_text(WORK)
    (tmp_path / "toy" / "helper.py").write_text("VALUE = 1\n")
    (tmp_path / "toy" / "plotting.py").write_text("from toy.work import draw\n")
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "fig.py").write_text(FIGURE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FIGGEN_ROOT", str(tmp_path))
    monkeypatch.setenv(contract.INTERMEDIATES, str(tmp_path / "store"))
    monkeypatch.setattr(intermediates, "_MEMO", {})
    monkeypatch.setattr(intermediates, "_STATS", {"hits": 0, "misses": 0, "waited": 0.0,
                                                 "warnings": []})
    yield tmp_path
    for name in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
        del sys.modules[name]


def work() -> Any:
    """The toy package's work module, freshly imported."""
    import toy.work

    return toy.work


def forget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop the in-process memo, as a new process starts without it."""
    monkeypatch.setattr(intermediates, "_MEMO", {})


def generators() -> bytes:
    """The states of Python's, NumPy's and torch's global generators, as bytes."""
    return pickle.dumps((random.getstate(), np.random.get_state(), torch.get_rng_state().numpy()))


def same(a: dict, b: dict) -> bool:
    """Whether two results of toy's draw are equal."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a script run in the toy project, figgen importable."""
    path = os.pathsep.join([str(REPO), str(root)])
    base = {k: v for k, v in os.environ.items() if k != contract.INTERMEDIATES}
    return base | {"PYTHONPATH": path, "FIGGEN_ROOT": str(root)} | extra


def test_a_hit_equals_a_miss_and_neither_moves_the_generators(
    toy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random.seed(5), np.random.seed(6), torch.manual_seed(7)
    before = generators()
    computed = work().draw()
    assert generators() == before
    forget(monkeypatch)
    read = work().draw()
    assert generators() == before and same(read, computed) and read is not computed
    assert work().CALLS == [3]  # the second call read the disk
    assert intermediates.stats() == {"hits": 1, "misses": 1, "waited": 0.0, "warnings": []}
    assert work().draw() is read  # a third call in this process: from memory
    # Uncached, it is computed from the run's seed alike: a figure cannot tell the difference.
    monkeypatch.delenv(contract.INTERMEDIATES)
    forget(monkeypatch)
    assert same(work().draw(), computed) and work().CALLS == [3, 3]
    assert generators() == before


def test_editing_a_file_it_imports_recomputes_and_editing_another_does_not(
    toy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work().draw()
    (toy / "toy" / "plotting.py").write_text("from toy.work import draw\nSTYLE = 'bold'\n")
    forget(monkeypatch)
    work().draw()
    assert work().CALLS == [3]
    (toy / "toy" / "helper.py").write_text("VALUE = 1  # edited, lazily imported\n")
    forget(monkeypatch)
    work().draw()
    assert work().CALLS == [3, 3]
    forget(monkeypatch)
    work().draw(n=3, spec={"a": [1, 2.5, None, True]})  # other arguments: another key
    work().draw(3, {"a": [1, 2.5, None, True]})  # the same, bound alike
    work().draw(spec=Spec(2))
    assert work().CALLS == [3, 3, 3, 3]


def test_an_argument_that_is_not_plain_data_is_a_type_error_naming_it(toy: Path) -> None:
    with pytest.raises(TypeError, match=r"toy\.work\.draw: argument 'spec' is a object"):
        work().draw(spec=object())
    with pytest.raises(TypeError, match=r"argument 'spec'\['x'\]\[1\] is a ndarray"):
        work().draw(spec={"x": [1, np.zeros(2)]})
    with pytest.raises(TypeError, match="argument 'spec' is a Loose, a dataclass that is not"):
        work().draw(spec=Loose(2))
    assert work().CALLS == []


def test_a_damaged_file_is_reported_and_computed_again(
    toy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    computed = work().draw()
    (stored,) = (toy / "store").glob("*/*.pickle")
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside the pickle
    stored.write_bytes(bytes(data))
    forget(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="pelican_figgen.intermediates"):
        assert same(work().draw(), computed)
    assert "is damaged: computing it again" in caplog.text and work().CALLS == [3, 3]
    assert any("is damaged" in w for w in intermediates.stats()["warnings"])  # for the build
    stored.write_bytes(b"")  # an empty file, as a full disk leaves
    forget(monkeypatch)
    work().draw()
    forget(monkeypatch)
    work().draw()  # the recomputed file is whole again: read
    assert work().CALLS == [3, 3, 3]


def test_a_hit_marks_the_result_as_just_used(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work().draw()
    (stored,) = (toy / "store").glob("*/*.pickle")
    os.utime(stored, (1e9, 1e9))  # used long ago
    forget(monkeypatch)
    work().draw()
    assert work().CALLS == [3] and stored.stat().st_mtime > 1e9  # read, and its time set: the
    # build trims the least recently used first (pelican.plugins.figgen.cache.trim_intermediates)


def test_a_figure_waiting_for_a_lock_says_so_and_then_holds_the_file_the_next_one_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key.lock"
    held = path.open("a")
    fcntl.flock(held, fcntl.LOCK_EX)  # a figure computing the result
    got, release, blocked, said = threading.Event(), threading.Event(), threading.Event(), []

    def note(waiting: bool) -> None:
        said.append(waiting)
        blocked.set()

    def waiter() -> None:
        with contract.locked(path, note) as ours:
            assert ours
            got.set()
            release.wait(10)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert blocked.wait(10) and not got.is_set()  # it waits for the figure holding the lock
    held.close()
    assert got.wait(10) and said == [True, False]  # its core was lent, then taken back
    with contract.locked(path, block=False) as newcomer:
        assert not newcomer  # the waiter holds the one file there: lock files are never deleted
    release.set()
    thread.join()
    with contract.locked(path, block=False) as free:
        assert free and path.exists()


def test_a_result_read_back_names_the_device_that_computed_it(
    toy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pelican_figgen import harness

    monkeypatch.setattr(harness, "_READ_FROM", set())
    work().draw()
    (stored,) = (toy / "store").glob("*/*.pickle")
    assert harness.device().startswith("CPU ")
    body = pickle.loads(stored.read_bytes()[32:])
    assert body["device"] == harness.device()  # what computed it
    body["device"] = "GPU NVIDIA H100"  # as if a GPU run had stored it
    data = pickle.dumps(body)
    stored.write_bytes(hashlib.sha256(data).digest() + data)
    forget(monkeypatch)
    work().draw()
    assert harness.device() == "GPU NVIDIA H100"  # the restyle's provenance still names it


def test_two_processes_wanting_one_result_compute_it_once(toy: Path) -> None:
    code = "import json; from pelican_figgen import intermediates; from toy.work import draw; " \
           "draw(); print(json.dumps(intermediates.stats()))"
    log = toy / "computed.log"
    extra = {contract.INTERMEDIATES: str(toy / "store"), "TOY_SLEEP": "2", "TOY_LOG": str(log)}
    racers = [subprocess.Popen([sys.executable, "-c", code], env=env(toy, **extra),
                               stdout=subprocess.PIPE, text=True) for _ in range(2)]
    stats = [json.loads(r.communicate(timeout=60)[0]) for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert log.read_text() == "computed\n"
    waiter = min(stats, key=lambda s: s["misses"])
    assert waiter["hits"] == 1 and waiter["misses"] == 0 and waiter["waited"] > 0.5


def test_a_figure_is_byte_identical_uncached_cold_and_warm_and_lists_the_files_on_a_hit(
    toy: Path,
) -> None:
    store = {contract.INTERMEDIATES: str(toy / "store")}
    images, manifests, printed = [], [], []
    for i, extra in enumerate(({}, store, store)):
        out = toy / f"out{i}"
        argv = [sys.executable, "figs/fig.py", "--out", str(out), "--seed", "3",
                "--manifest", str(out / "manifest.json")]
        done = subprocess.run(argv, cwd=toy, env=env(toy, **extra), capture_output=True,
                              text=True, check=True)
        images.append((out / "fig.png").read_bytes())
        manifests.append(json.loads((out / "manifest.json").read_text()))
        printed.append(json.loads(done.stdout))
    assert images[0] == images[1] == images[2]
    assert [m["intermediates"]["misses"] for m in manifests] == [1, 1, 0]
    assert manifests[2]["intermediates"]["hits"] == 1
    assert printed[2] == {"helper imported": False}  # the hit skipped the import...
    assert "toy/helper.py" in manifests[2]["modules"]  # ...and the figure still depends on it


WATCH = """\
import atexit, runpy, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_an_imagenet_figure_restyled_with_a_warm_cache_is_identical_without_torch(
    tmp_path: Path,
) -> None:
    script = str(REPO / "figgen" / "figures" / "imagenet" / "opening.py")
    store = {contract.INTERMEDIATES: str(tmp_path / "store")}
    images, said = [], []
    for i, extra in enumerate(({}, store, store)):
        argv = [sys.executable, "-c", WATCH, script, "--out", str(tmp_path / str(i))]
        done = subprocess.run(argv, cwd=REPO, env=env(REPO, **extra), capture_output=True,
                              text=True, check=True)
        images.append((tmp_path / str(i) / "opening.png").read_bytes())
        said.append(done.stdout.splitlines()[-1])
    assert images[0] == images[1] == images[2]
    assert said == ["torch imported: True"] * 2 + ["torch imported: False"]


SEEDED = """\
{top}
import importlib.util
import sys

from pelican_figgen.harness import run


def main(ctx):
    importlib.util.find_spec("torch")  # a library asking whether torch is there
    import torch

    rand = torch.rand(3).tolist()
    compiler = "torch._inductor.config" in sys.modules  # not imported to set its flag
    import torch._inductor.config  # as torch.compile would

    print(json.dumps({{"rand": rand, "compiler imported": compiler,
                      "deterministic": torch.are_deterministic_algorithms_enabled(),
                      "compiler deterministic": torch._inductor.config.deterministic}}))
    from matplotlib.figure import Figure

    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""


def test_torch_imported_late_is_seeded_as_if_it_had_been_imported_first(tmp_path: Path) -> None:
    said = []
    for top in ("import json", "import json\nimport torch"):
        script = tmp_path / "seeded.py"
        script.write_text(textwrap.dedent(SEEDED.format(top=top)))
        argv = [sys.executable, str(script), "--out", str(tmp_path), "--seed", "11"]
        done = subprocess.run(argv, env=env(tmp_path), capture_output=True, text=True, check=True)
        said.append(json.loads(done.stdout.splitlines()[0]))
    expected = torch.rand(3, generator=torch.Generator().manual_seed(11)).tolist()
    assert said == [{"rand": expected, "compiler imported": False, "deterministic": True,
                      "compiler deterministic": True}] * 2
