"""The Dask executor: a real scheduler and two workers on localhost, away from the checkout.

Skipped without `distributed` (the dev extra brings it) unless FIGGEN_REQUIRE_CLUSTER is set,
as in CI.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import STUCK, Site, free_port, line_script
from pelican.plugins.figgen import cluster, progress
from pelican.plugins.figgen.errors import SettingsError
from pelican.plugins.figgen.settings import merge
from pelican_figgen import contract
from pelican_figgen.worker import TaskError, write_files

HAVE_DISTRIBUTED = importlib.util.find_spec("distributed") is not None
SCHEDULER_ENV = {
    # One death is enough to fail a task: a figure that kills its worker kills no other.
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
}

KILLER = """\
import os
import signal
import time

from pelican_figgen.harness import run


def main(ctx):
    # Up from the script: its supervisor, the worker's warm server (when forked), the Dask
    # worker: kill that.
    worker = os.getppid()
    while b"pelican_figgen." in open(f"/proc/{worker}/cmdline", "rb").read():
        with open(f"/proc/{worker}/stat") as stat:
            worker = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGKILL)
    time.sleep(60)


if __name__ == "__main__":
    run(main)
"""

SLEEPER = """\
import time

from pelican_figgen.harness import run

__figure__ = {"timeout": 1}


def main(ctx):
    time.sleep(60)


if __name__ == "__main__":
    run(main)
"""


def _start(argv: list[str], folder: Path, env: dict[str, str]) -> subprocess.Popen:
    """A cluster process in its own session (its children die with it at teardown)."""
    return subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=(folder / f"{argv[1]}-{len(list(folder.iterdir()))}.log")
                            .open("wb"), start_new_session=True)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two one-thread workers on localhost; the scheduler's address."""
    if not HAVE_DISTRIBUTED:
        if os.environ.get("FIGGEN_REQUIRE_CLUSTER"):
            pytest.fail("FIGGEN_REQUIRE_CLUSTER is set but distributed is not installed")
        pytest.skip("distributed is not installed (pip install -e '.[dev]')")
    from distributed import Client

    folder = tmp_path_factory.mktemp("cluster")  # no checkout here, and none on their path
    # Their temporary folder (the workers' cached intermediates) is this one.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | SCHEDULER_ENV | {
        "TMPDIR": str(folder)}
    dask = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    procs = [_start([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":")[-1],
                     "--no-dashboard"], folder, env)]
    try:
        for _ in range(2):
            procs.append(_start([dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                 "--no-dashboard", "--host", "127.0.0.1",
                                 "--local-directory", str(folder)], folder, env))
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                proc.wait()


def _images(root: Path) -> dict[str, bytes]:
    """The site's published images by figure name (the hash in the name left out)."""
    return {p.name.rsplit("-", 1)[0]: p.read_bytes()
            for p in (root / "output" / "figures").glob("*.png")}


def test_cluster_builds_the_same_images_as_the_pool(site: Site, scheduler: str,
                                                    tmp_path_factory: pytest.TempPathFactory
                                                    ) -> None:
    local = Site(tmp_path_factory.mktemp("local"))
    shutil.copytree(site.root, local.root, dirs_exist_ok=True)
    local.build()
    report = site.build(FIGGEN={"scripts": "figs", "executor": scheduler.replace("tcp", "dask")})
    assert set(report["ran"]) == {"alpha", "beta", "gamma"} and report["failed"] == []
    # gamma read its declared data file there, alpha and beta the site's helper module
    assert "Gamma plots 4 points" in site.html()
    assert "Alpha is drawn in red" in site.html()
    assert _images(site.root) == _images(local.root) and len(_images(site.root)) == 3
    # The records are a local run's: a second build runs nothing, on the cluster or not
    assert site.build()["ran"] == {}
    assert {"figgen-alpha", "figgen-beta", "figgen-gamma"} <= _ran_on(scheduler)
    # Forked from each worker's warm server, which preloaded what the scripts import
    assert "matplotlib.figure" in set().union(*_warm_on(scheduler).values())


def _warm_on(address: str) -> dict[str, list[str]]:
    """What each worker's warm server was asked to preload (nothing: it has none)."""
    from distributed import Client

    def asked() -> list[str]:
        from pelican_figgen import worker

        return sorted(worker._SERVER.asked) if worker._SERVER and not worker._SERVER.gone() else []

    with Client(address, timeout=30, set_as_default=False) as client:
        return client.run(asked)


def _ran_on(address: str) -> set[str]:
    """The kinds of task the scheduler has seen (a figure's task: figgen-NAME)."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return set(client.run_on_scheduler(lambda dask_scheduler: [*dask_scheduler.task_prefixes]))


def test_a_client_made_in_the_settings_is_used_and_left_open(site: Site, scheduler: str) -> None:
    from distributed import Client

    site.write("figs/viaclient.py", line_script("green"))  # a task name no other test sends
    site.append("content/post.md", "\n![Green]({figure}viaclient \"Drawn in {color}\")\n")
    with Client(scheduler, timeout=30, set_as_default=False) as client:
        report = site.build(FIGGEN={"scripts": "figs", "executor": client})
        assert set(report["ran"]) == {"alpha", "beta", "gamma", "viaclient"}
        assert client.status == "running"  # its owner closes it
        prefixes = client.run_on_scheduler(lambda dask_scheduler: [*dask_scheduler.task_prefixes])
    assert "figgen-viaclient" in prefixes


def test_a_killed_worker_and_a_timeout_fail_their_figures(site: Site, scheduler: str) -> None:
    site.write("figs/killer.py", KILLER)
    site.write("figs/sleeper.py", SLEEPER)
    site.append("content/post.md", "\n![Kills]({figure}killer \"K\")\n\n"
                "![Sleeps]({figure}sleeper \"S\")\n")
    report = site.build(FIGGEN={"scripts": "figs", "executor": scheduler,
                                "on_error": "keep-going"})
    failed = report["causes"]
    assert set(report["failed"]) == {"killer", "sleeper"}
    assert "Dask worker running it died" in failed["killer"]
    assert "timed out after 1 s" in failed["sleeper"]
    html = site.html()
    assert "Gamma plots 4 points" in html  # the others were made
    # Its stack, printed on the worker before the kill, is on the page as a local run's is.
    assert "Where it was when it timed out:" in html and "in main" in html


COUNTER = """\
import time

from pelican_figgen.harness import run


def main(ctx):
    for _ in ctx.progress(range(3), description="steps"):
        time.sleep(0.3)
    from matplotlib.figure import Figure

    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""


class Display:
    """Stands for rich's Progress: records what the bars were told."""

    def __init__(self) -> None:
        self.tasks: dict[int, str] = {}
        self.completed: dict[str, int] = {}

    def add_task(self, description: str, total: object = None) -> int:
        self.tasks[len(self.tasks)] = description
        return len(self.tasks) - 1

    def update(self, task: int, completed: int = 0, total: object = None) -> None:
        self.completed[self.tasks[task]] = completed

    def remove_task(self, task: int) -> None:
        pass


def test_progress_on_the_workers_reaches_the_bars(site: Site, scheduler: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    display = Display()

    @contextlib.contextmanager
    def board() -> Iterator[progress.Board]:
        yield progress.Board(display)

    monkeypatch.setattr(cluster.progress, "board", board)
    site.write("figs/counter.py", COUNTER)
    site.append("content/post.md", "\n![Counts]({figure}counter \"C\")\n")
    report = site.build(FIGGEN={"scripts": "figs", "executor": scheduler})
    assert report["failed"] == [] and "counter" in report["ran"]
    assert display.completed.get("[bold]counter[/] steps", 0) >= 1


def test_an_executor_without_distributed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # an import of it fails
    with pytest.raises(SettingsError, match=r"pelican-figgen\[dask\]"), \
            cluster.connect("tcp://127.0.0.1:1"):
        pass


def test_executor_setting_and_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    assert merge({}, tmp_path / "content").executor == "local"
    assert merge({"executor": "dask://sched:8786"}, tmp_path / "c").executor == "tcp://sched:8786"
    monkeypatch.setenv("FIGGEN_EXECUTOR", "tls://10.0.0.1:8786")
    assert merge({}, tmp_path / "content").executor == "tls://10.0.0.1:8786"
    monkeypatch.setenv("FIGGEN_EXECUTOR", "dask")
    with pytest.raises(SettingsError, match=r"FIGGEN_EXECUTOR .*'dask://host:8786'"):
        merge({}, tmp_path / "content")


def test_a_worker_checks_each_file_of_its_task(tmp_path: Path) -> None:
    data = b"1 2 3"
    good = "a" * 64
    with pytest.raises(TaskError, match="do not match"):
        write_files(tmp_path, {"data/x.txt": good}, {good: data})
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(TaskError, match="outside"):
        write_files(tmp_path, {"../x.txt": digest}, {digest: data})
    write_files(tmp_path, {"data/x.txt": digest}, {digest: data})
    assert (tmp_path / "data" / "x.txt").read_bytes() == data


def test_a_tampered_answer_is_refused() -> None:
    answer = {"status": 0, "killed": 0, "files": {"../../evil.png": b"x"}}
    with pytest.raises(ValueError, match="outside the run's folder"):
        cluster.reply_of(answer)
    with pytest.raises(ValueError, match="exit status"):
        cluster.reply_of({"status": "0", "killed": 0, "files": {}})
    assert cluster.reply_of({"status": None, "killed": 1, "files": {"a.png": b"x"}}).status is None


def test_a_task_carries_script_helper_and_data_not_the_rest(site: Site) -> None:
    site.write("figs/unused.py", "x = 1\n")
    settings = merge({"scripts": "figs"}, site.root / "content")
    from pelican.plugins.figgen import discover, execute
    from pelican.plugins.figgen.cache import Expected

    gamma = discover.Figure("gamma", settings.scripts / "gamma.py", (), 600.0, {})
    job = execute.Pending(gamma, Expected("{}", {}, ("figs/gamma.py", "data/points.txt")), None,
                          "new")
    assert set(cluster.task_files(settings, job)) == {"figs/gamma.py", "data/points.txt"}
    alpha = discover.Figure("alpha", settings.scripts / "alpha.py", (), 600.0, {})
    job = execute.Pending(alpha, Expected("{}", {}, ("figs/alpha.py",)), None, "new")
    assert set(cluster.task_files(settings, job)) >= {"figs/alpha.py", "helpers/common.py"}
    # A module outside the root, named portably by its last run, is the worker's own to have,
    # even where the root holds a file of that name.
    site.write("sys.path:outlib/shapes.py", "SLOPE = 2\n")
    from pelican.plugins.figgen.cache import Image, Record

    last = Record("alpha", {"sys.path:outlib/shapes.py": "0" * 64}, "{}", {},
                  Image("0" * 64, ".png", 1, 1))
    job = execute.Pending(alpha, Expected("{}", {}, ("figs/alpha.py",)), last, "changed")
    assert "sys.path:outlib/shapes.py" not in cluster.task_files(settings, job)


def test_a_package_s_folder_is_listed_once_for_all_its_modules(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from pelican.plugins.figgen import discover, execute
    from pelican.plugins.figgen.cache import Expected

    modules = [f"m{i}" for i in range(5)]
    site.write("pkg/__init__.py", "")
    for module in modules:
        site.write(f"pkg/{module}.py", "VALUE = 1\n")
    site.write("pkg/table.csv", "a,b\n")  # read beside the modules: shipped
    site.write("pkg/.secret", "no\n")  # hidden: not shipped
    site.write("figs/many.py", "".join(f"import pkg.{m}\n" for m in modules))
    settings = merge({"scripts": "figs"}, site.root / "content")
    figure = discover.Figure("many", settings.scripts / "many.py", (), 600.0, {})
    job = execute.Pending(figure, Expected("{}", {}, ("figs/many.py",)), None, "new")
    listed: list[Path] = []
    iterdir = Path.iterdir

    def counted(folder: Path) -> Iterator[Path]:
        listed.append(folder)
        return iterdir(folder)

    monkeypatch.setattr(Path, "iterdir", counted)
    files = cluster.task_files(settings, job)
    assert set(files) == {"figs/many.py", "pkg/__init__.py", "pkg/table.csv",
                          *(f"pkg/{m}.py" for m in modules)}
    assert files["pkg/table.csv"] == b"a,b\n"
    assert listed.count(site.root / "pkg") == 1


def test_a_worker_gives_the_script_the_arguments_of_a_local_run(site: Site, tmp_path: Path
                                                                ) -> None:
    from pelican.plugins.figgen import discover, execute, run
    from pelican.plugins.figgen.cache import Expected
    from pelican_figgen import worker

    settings = merge({"scripts": "figs", "seed": 7, "params": {"gamma": {"n": 3, "k": "a"}}},
                     site.root / "content")
    figure = discover.load_figure("post.md", "gamma", settings, ["gamma"])
    job = execute.Pending(figure, Expected("{}", {}, ("figs/gamma.py",)), None, "new")
    task = cluster.task_of(settings, job, {}, False)
    # The worker's copy of the project is rooted elsewhere; the script's arguments are the same.
    local = run.arguments(figure, settings, tmp_path)
    assert worker._script_argv(task, settings.root, tmp_path) == local
    assert "7" in local and '{"k": "a", "n": 3}' in local


class Future:
    """A task that never answers in time."""

    cancelled = False

    def result(self, timeout: float) -> None:
        self.waited = timeout
        raise TimeoutError

    def cancel(self) -> None:
        self.cancelled = True


class FakeClient:
    """Stands for a distributed Client: two workers, one with a GPU; records what is sent."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.future = Future()

    def submit(self, function: object, task: dict, **options: object) -> Future:
        self.sent.append({"task": task, **options})
        return self.future

    def scheduler_info(self, n_workers: int = 0) -> dict:
        return {"workers": {"a": {"nthreads": 2, "resources": {"GPU": 1}},
                            "b": {"nthreads": 1, "resources": {}}}}


def test_a_gpu_figure_asks_for_a_gpu_and_no_answer_is_a_timeout(site: Site, tmp_path: Path
                                                                 ) -> None:
    from pelican.plugins.figgen import discover, execute, run
    from pelican.plugins.figgen.cache import Expected

    client = FakeClient()
    assert cluster.capacity(client) == (3, ("0",))
    settings = merge({"scripts": "figs"}, site.root / "content")
    figure = discover.Figure("gamma", settings.scripts / "gamma.py", (), 5.0, {}, gpu=True)
    job = execute.Pending(figure, Expected("{}", {}, ("figs/gamma.py", "data/points.txt")), None,
                          "new")
    runner = cluster.Runner(client, settings, False)
    result = runner(job, tmp_path, run.Placement({"FIGGEN_LANE": "gpu"}), print)
    assert client.sent[0]["resources"] == {"GPU": 1}
    assert "CUDA_VISIBLE_DEVICES" not in client.sent[0]["task"]["env"]  # the worker's own GPU
    assert not result.ok and "timed out on the Dask cluster" in result.cause
    assert client.future.cancelled and client.future.waited == 5.0 + cluster.REPLY_GRACE
    runner(job, tmp_path, run.Placement({"FIGGEN_LANE": "cpu", "CUDA_VISIBLE_DEVICES": ""}),
           print)
    assert client.sent[1]["resources"] is None
    assert client.sent[1]["task"]["env"]["CUDA_VISIBLE_DEVICES"] == ""


class ListeningClient(FakeClient):
    """A FakeClient the build also listens to for progress, as to a real one."""

    class scheduler:  # noqa: N801 (a Client's attribute)
        address = "tcp://fake:8786"

    def __init__(self) -> None:
        super().__init__()
        self.topics: list[str] = []

    def subscribe_topic(self, topic: str, handler: object) -> None:
        self.topics.append(topic)

    def unsubscribe_topic(self, topic: str) -> None:
        self.topics.remove(topic)


def test_the_cluster_runs_the_figures_in_the_builds_one_outline(site: Site) -> None:
    from pelican.plugins.figgen import discover, execute
    from pelican.plugins.figgen.cache import Cache, Expected, Store

    client = ListeningClient()
    settings = merge({"scripts": "figs", "executor": client}, site.root / "content")
    figure = discover.Figure("gamma", settings.scripts / "gamma.py", (), 5.0, {})
    want = Expected("{}", {}, ("figs/gamma.py", "data/points.txt"))
    cached = Cache(settings.root, Store(settings.cache_dir))
    done, preloaded = execute._pool({"gamma": execute.Pending(figure, want, None, "new")},
                                    settings, cached, False, {})
    # Sent to the cluster (not run here), with the build's variables, and its end is the
    # pool's: the failure kept under the figure's name, the cluster's listener gone after.
    result = done["gamma"].result
    assert result is not None and "timed out on the Dask cluster" in result.cause
    assert client.sent[0]["task"]["name"] == "gamma" and preloaded == ()
    assert "FIGGEN_ENVIRONMENT" in client.sent[0]["task"]["env"]
    assert cached.store.load_failure("gamma") is not None
    assert client.topics == []


WARM = """\
import os
import sys

preloaded = "matplotlib" in sys.modules  # before this script imports it: the server did
import matplotlib  # noqa: E402

from helpers.common import VALUE  # noqa: E402

out = sys.argv[sys.argv.index("--out") + 1]
supervisor = os.getppid()
with open(f"/proc/{supervisor}/stat") as stat:
    server = int(stat.read().rsplit(")", 1)[1].split()[1])
with open(os.path.join(out, "said.txt"), "w") as said:
    said.write(f"{VALUE} {preloaded} {server} {os.getcwd()}")
for name in ("fig.png", "fig.dark.webp", "fig.webp"):  # renders beside the image
    with open(os.path.join(out, name), "wb") as file:
        file.write(name.encode())
"""


def _task(name: str, files: dict[str, str], timeout: float = 60.0) -> dict:
    """A worker's task of these files (the first one the script)."""
    blobs = {hashlib.sha256(t.encode()).hexdigest(): t.encode() for t in files.values()}
    return {"name": name, "script": next(iter(files)), "seed": 0, "params": {}, "env": {},
            "timeout": timeout, "blobs": blobs, "runtime": contract.runtime_digest(),
            "files": {rel: hashlib.sha256(t.encode()).hexdigest() for rel, t in files.items()}}


def test_a_worker_refuses_a_task_from_a_build_with_another_runtime() -> None:
    from pelican_figgen import worker

    task = _task("old", {"figs/warm.py": WARM, "helpers/common.py": "VALUE = 'old'\n"})
    for other in ({**task, "runtime": "0" * 64}, {k: v for k, v in task.items()
                                                  if k != "runtime"}):  # an older build's
        with pytest.raises(TaskError, match="another pelican-figgen than the build"):
            worker.run_task(other)
    assert worker.run_task(task)["status"] == 0  # the same runtime: it runs


def test_the_runtime_is_hashed_again_only_when_a_file_of_it_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Path(contract.__file__).parent
    for module in runtime.glob("*.py"):  # a copy: an upgrade of pelican-figgen, in place
        shutil.copy2(module, tmp_path / module.name)
    hashed: list[str] = []
    sha256 = contract._sha256
    monkeypatch.setattr(contract, "_sha256", lambda path: hashed.append(path.name) or
                        sha256(path))
    first = contract.runtime_digest(tmp_path)
    assert sorted(hashed) == sorted(p.name for p in runtime.glob("*.py"))  # each file, once
    assert first == contract.runtime_digest(runtime)  # the same bytes, the same digest
    hashed.clear()
    assert contract.runtime_digest(tmp_path) == first and hashed == []  # unchanged: no rehash
    # The same size, inode and mtime: taken for the same file (a real edit moves its mtime).
    harness = tmp_path / "harness.py"
    stat = harness.stat()
    data = harness.read_bytes()
    harness.write_bytes(data.replace(b"def ", b"def_", 1))
    os.utime(harness, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert contract.runtime_digest(tmp_path) == first and hashed == []
    later = stat.st_mtime_ns + 10**9
    os.utime(harness, ns=(stat.st_atime_ns, later))  # touched: hashed again
    second = contract.runtime_digest(tmp_path)
    assert second != first and hashed == ["harness.py"]
    # A new file in its place (pip replaces files), same size and mtime: a new inode
    hashed.clear()
    (tmp_path / "new.tmp").write_bytes(data)
    os.utime(tmp_path / "new.tmp", ns=(stat.st_atime_ns, later))
    (tmp_path / "new.tmp").replace(harness)
    assert contract.runtime_digest(tmp_path) == first and hashed == ["harness.py"]


def test_a_worker_hashes_the_runtime_once_not_per_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from pelican_figgen import worker

    hashed: list[str] = []
    sha256 = contract._sha256
    monkeypatch.setattr(contract, "_sha256", lambda path: hashed.append(path.name) or
                        sha256(path))
    monkeypatch.setattr(contract, "_HASHED", {})  # as in a worker's first task
    task = _task("once", {"figs/warm.py": WARM, "helpers/common.py": "VALUE = 'once'\n"})
    assert worker.run_task(task)["status"] == 0
    # The runtime check and the warm server's key (its start, its preloads) share one hash.
    assert sorted(hashed) == sorted(contract.runtime_files())
    hashed.clear()
    assert worker.run_task(task)["status"] == 0 and hashed == []  # the next task: none


def test_a_worker_forks_each_task_from_one_warm_server_with_its_own_files() -> None:
    from pelican_figgen import worker

    said = []
    for value in ("one", "two"):  # the same module name, another task's content
        reply = worker.run_task(_task(value, {"figs/warm.py": WARM,
                                              "helpers/common.py": f"VALUE = {value!r}\n"}))
        assert reply["status"] == 0, reply["stderr"]
        assert {"fig.png", "fig.dark.webp", "fig.webp"} <= set(reply["files"])
        said.append(reply["files"]["said.txt"].decode().split())
    assert worker._SERVER is not None and not worker._SERVER.gone()
    assert [s[:3] for s in said] == [["one", "True", str(worker._SERVER.pid)],
                                     ["two", "True", str(worker._SERVER.pid)]]
    assert said[1][3] == reply["root"] != said[0][3]  # each in its own folder


def test_a_forked_task_past_its_timeout_is_killed() -> None:
    from pelican_figgen import worker

    sleeper = "import time\nimport matplotlib\n\ntime.sleep(60)\n"
    reply = worker.run_task(_task("sleeper", {"figs/sleeper.py": sleeper}, timeout=1.0))
    assert reply["status"] is None and worker._SERVER is not None
    assert "matplotlib" in worker._SERVER.asked  # it ran forked


@pytest.mark.parametrize("warm", [True, False], ids=["warm-server", "own-interpreter"])
def test_a_task_past_its_timeout_prints_its_stack_then_is_killed(warm: bool) -> None:
    from pelican_figgen import worker

    reply = worker.run_task(_task("stuck", {"figs/stuck.py": STUCK}, timeout=2.0)
                            | {"warm": warm})
    assert reply["status"] is None
    assert "(most recent call first):" in reply["stderr"], reply["stderr"]
    assert "in wait_forever" in reply["stderr"]


def test_a_task_without_preload_runs_in_its_own_interpreter() -> None:
    from pelican_figgen import worker

    task = _task("cold", {"figs/warm.py": WARM, "helpers/common.py": "VALUE = 'cold'\n"})
    reply = worker.run_task(task | {"warm": False})
    assert reply["status"] == 0, reply["stderr"]
    # Its supervisor's parent is this process (the worker), and nothing was imported for it
    assert reply["files"]["said.txt"].decode().split()[:3] == ["cold", "False", str(os.getpid())]


LEND_HELPER = """\
import time
from pathlib import Path

from pelican_figgen.intermediates import cached

MARKER = Path({marker!r})


@cached
def shared(n: int) -> int:
    for _ in range(600):  # the figure that writes the marker must get a thread meanwhile
        if MARKER.exists():
            return n * 2
        time.sleep(0.05)
    raise RuntimeError("nobody wrote the marker: the waiting figure lent no thread")
"""

LENDER = """\
from matplotlib.figure import Figure

from helpers.lend import shared
from pelican_figgen.harness import run


def main(ctx):
    ctx.fields["n"] = shared(21)
    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""

MARKER_WRITER = """\
from pathlib import Path

from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    Path({marker!r}).write_text("done")
    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""


def test_a_figure_waiting_for_anothers_intermediate_lends_its_thread(
        site: Site, scheduler: str, tmp_path: Path) -> None:
    # a0 and a1 want one intermediate, which waits for a2: on two one-thread workers a2 runs
    # only if the figure waiting for the other's result lends its thread, as in the pool.
    marker = str(tmp_path / "marker")
    site.write("helpers/lend.py", LEND_HELPER.format(marker=marker))
    site.write("figs/a0.py", LENDER)
    site.write("figs/a1.py", LENDER)
    site.write("figs/a2.py", MARKER_WRITER.format(marker=marker))
    site.append("content/post.md", "".join(f"\n![A]({{figure}}a{n} \"A\")\n" for n in range(3)))
    report = site.build(FIGGEN={"scripts": "figs", "executor": scheduler})
    assert report["failed"] == [], report.get("causes")
    assert {"a0", "a1", "a2"} <= set(report["ran"])


def test_the_warm_server_is_replaced_when_a_preloaded_library_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pelican_figgen import worker

    task = _task("same", {"figs/warm.py": WARM, "helpers/common.py": "VALUE = 'same'\n"})
    assert worker.run_task(task)["status"] == 0
    first = worker._SERVER
    assert first is not None and worker.run_task(task)["status"] == 0
    assert worker._SERVER is first  # nothing changed: kept
    # An upgrade: the installed distributions change, and with them matplotlib's version.
    versions, installed = worker.dists.versions_of, worker.dists.installed
    monkeypatch.setattr(worker.dists, "installed",
                        lambda entries: {**installed(entries), "matplotlib": "upgraded"})
    monkeypatch.setattr(worker.dists, "versions_of", lambda tops, fresh=False:
                        {**versions(tops, fresh), "matplotlib": "upgraded"})
    reply = worker.run_task(task)
    assert reply["status"] == 0 and worker._SERVER is not first
    first.owner.join(timeout=60)  # the old one ends, its runs done
    assert first.gone()
    assert reply["files"]["said.txt"].decode().split()[2] == str(worker._SERVER.pid)


def test_a_script_on_a_worker_runs_without_the_nannys_malloc_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pelican_figgen import worker

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as a Dask nanny sets it
    script = ("import os\nimport sys\n\nout = sys.argv[sys.argv.index('--out') + 1]\n"
              "with open(os.path.join(out, 'env.txt'), 'w') as file:\n"
              "    file.write(os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset'))\n")
    for warm in (True, False):
        reply = worker.run_task(_task("env", {"figs/env.py": script}) | {"warm": warm})
        assert reply["files"]["env.txt"] == b"unset", reply["stderr"]
    assert worker._SERVER is not None  # forked: the server has not it either
    server = _environ_of(worker._SERVER.pid)
    assert "MALLOC_TRIM_THRESHOLD_" not in server
    # A build that sets it ships its own value
    task = _task("env", {"figs/env.py": script})
    task["env"] = {"MALLOC_TRIM_THRESHOLD_": "131072"}
    assert worker.run_task(task)["files"]["env.txt"] == b"131072"


def _environ_of(pid: int) -> set[str]:
    """The names of a process's environment variables, as it started."""
    return {entry.split(b"=", 1)[0].decode()
            for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if entry}
