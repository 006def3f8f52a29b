"""Scheduling: the pool's size and order, the GPU queue, GPU detection, the pool's settings."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pelican.plugins.figgen import schedule, settings
from pelican.plugins.figgen.errors import SettingsError
from pelican.plugins.figgen.schedule import Job, Lane


def test_figures_never_run_go_first_gpu_ones_first_then_the_slowest() -> None:
    jobs = [Job("quick", False, 0.5), Job("new", False, None), Job("slow", False, 9.0),
            Job("z-new-gpu", True, None), Job("mid", False, 3.0), Job("fast-gpu", True, 0.1)]
    assert [j.name for j in schedule.slowest_first(jobs)] == [
        "z-new-gpu", "new", "slow", "mid", "quick", "fast-gpu"]


def test_the_pool_runs_as_many_at_once_as_it_has_workers() -> None:
    together = threading.Barrier(2, timeout=30)  # passes only when two run at the same time
    lock, running, most = threading.Lock(), [0], [0]

    def work(job: Job, lane: Lane, idle: object) -> str:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        together.wait()
        with lock:
            running[0] -= 1
        return job.name.upper()

    jobs = [Job(f"f{i}", False, None) for i in range(6)]
    results = schedule.run_all(jobs, 2, (), work)
    assert results == {f"f{i}": f"F{i}" for i in range(6)}
    assert most[0] == 2


def test_a_job_waiting_for_another_lends_its_slot_and_takes_it_back() -> None:
    started = {name: threading.Event() for name in ("a", "b", "c")}
    lock, running, most = threading.Lock(), [0], [0]

    def work(job: Job, lane: Lane, idle: Callable[[bool], None]) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        started[job.name].set()
        if job.name == "a":  # waits for c's result: c must start on a's core
            idle(True)
            assert started["c"].wait(timeout=30), "c did not start while a waited"
            idle(False)
        if job.name == "c":
            assert started["a"].is_set()
        with lock:
            running[0] -= 1

    schedule.run_all([Job("a", False, 3.0), Job("b", False, 2.0), Job("c", False, 1.0)], 1, (),
                     work)
    assert all(e.is_set() for e in started.values())
    assert most[0] == 2  # one over the pool's size only while a waited


def test_one_slot_at_most_is_lent_however_many_jobs_wait() -> None:
    lock, running, most = threading.Lock(), [0], [0]
    ready = threading.Event()  # the shared result every job waits for
    timer = threading.Timer(0.5, ready.set)  # ready half a second after the first job starts

    def work(job: Job, lane: Lane, idle: Callable[[bool], None]) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            if not timer.is_alive() and not ready.is_set():
                timer.start()
        idle(True)
        assert ready.wait(timeout=30)
        idle(False)
        with lock:
            running[0] -= 1

    schedule.run_all([Job(f"j{i}", False, None) for i in range(8)], 2, (), work)
    assert most[0] == 3  # the pool's two, and one on a lent slot: not all eight at once


def test_gpu_figures_take_turns_per_gpu_and_cpu_figures_see_no_gpu() -> None:
    lock = threading.Lock()
    active: Counter[str] = Counter()
    overlap: list[str] = []
    seen: dict[str, Lane] = {}

    def work(job: Job, lane: Lane, idle: object) -> None:
        device = lane.env["CUDA_VISIBLE_DEVICES"]
        with lock:
            seen[job.name] = lane
            active[device] += 1
            if device and active[device] > 1:
                overlap.append(job.name)
        threading.Event().wait(0.02)
        with lock:
            active[device] -= 1

    jobs = [Job(f"g{i}", True, None) for i in range(6)] + [Job("c0", False, 1.0),
                                                           Job("c1", False, 2.0)]
    schedule.run_all(jobs, 1, ("0", "1"), work)
    assert overlap == []  # never two figures on one GPU
    gpu = {seen[f"g{i}"].env["CUDA_VISIBLE_DEVICES"] for i in range(6)}
    assert gpu == {"0", "1"} and all(seen[f"g{i}"].kind == "gpu" for i in range(6))
    for name in ("c0", "c1"):
        assert seen[name].env == {"CUDA_VISIBLE_DEVICES": "", "FIGGEN_LANE": "cpu"}


def test_without_a_gpu_gpu_figures_join_the_cpu_pool() -> None:
    seen: dict[str, Lane] = {}
    schedule.run_all([Job("g", True, None), Job("c", False, None)], 2, (),
                     lambda job, lane, idle: seen.setdefault(job.name, lane))
    assert seen["g"] == seen["c"] == Lane("cpu", "")
    assert Lane("cpu", "").env == {"CUDA_VISIBLE_DEVICES": "", "FIGGEN_LANE": "cpu"}


def test_an_error_in_the_build_itself_stops_the_pool_and_is_raised() -> None:
    ran: list[str] = []

    def work(job: Job, lane: Lane, idle: object) -> None:
        ran.append(job.name)
        if job.name == "a":
            raise OSError("disk full")

    jobs = [Job("a", False, 5.0), Job("b", False, 1.0), Job("c", False, 0.5)]
    with pytest.raises(OSError, match="disk full") as raised:
        schedule.run_all(jobs, 1, (), work)
    assert ran == ["a"]  # nothing started after it
    assert "while the build was making figure 'a'" in str(raised.value.__notes__)


@pytest.mark.parametrize(("visible", "found"), [
    ("1,3", ("1", "3")), ("", ()), ("-1", ()), ("GPU-8f2a", ("GPU-8f2a",)),
])
def test_cuda_visible_devices_says_which_gpus(
    monkeypatch: pytest.MonkeyPatch, visible: str, found: tuple[str, ...]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert schedule.detect_gpus() == found


def test_gpus_are_counted_by_nvidia_smi_else_by_the_driver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: a)'\n"
                    "echo 'GPU 1: NVIDIA A100 (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert schedule.detect_gpus() == ("0", "1")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    driver = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (driver / bus).mkdir(parents=True)
    monkeypatch.setattr(schedule, "NVIDIA_PROC", driver)
    assert schedule.detect_gpus() == ("0", "1", "2")
    monkeypatch.setattr(schedule, "NVIDIA_PROC", tmp_path / "no-driver")
    assert schedule.detect_gpus() == ()


def test_the_pool_defaults_to_the_cores_shared_by_each_figure_s_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FIGGEN_JOBS", raising=False)
    monkeypatch.setattr(schedule, "cores", lambda: 8)
    assert settings.merge({}, "content").jobs is None  # as the cores allow
    assert schedule.cpu_workers(None, 1, ()) == 8
    assert schedule.cpu_workers(None, 2, ()) == 4
    assert schedule.cpu_workers(None, 16, ()) == 1
    assert schedule.cpu_workers(None, 1, ("0", "1")) == 6  # a core for each GPU's figure
    assert schedule.cpu_workers(5, 1, ("0",)) == 5  # the setting wins
    monkeypatch.setenv("FIGGEN_JOBS", "3")
    assert settings.merge({"jobs": 5}, "content").jobs == 3


def overlaps(jobs: list[Job], memory: float | None) -> set[frozenset[str]]:
    """Run jobs in a pool of four with a memory budget; the pairs that ran at the same time."""
    lock, running, pairs = threading.Lock(), set(), set()
    started = {job.name: threading.Event() for job in jobs}

    def work(job: Job, lane: Lane, idle: object) -> None:
        with lock:
            pairs.update(frozenset((job.name, other)) for other in running)
            running.add(job.name)
        started[job.name].set()
        # Long enough for a job the pool wrongly let start to start meanwhile.
        for other in started.values():
            other.wait(timeout=1.0 if other is not started[job.name] else 0)
        with lock:
            running.discard(job.name)

    schedule.run_all(jobs, 4, (), work, memory)
    return pairs


def test_a_job_starts_only_when_its_memory_fits_beside_the_running_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    two = [Job("a", False, 2.0, 600.0), Job("b", False, 1.0, 600.0)]
    assert overlaps(two, None) == {frozenset("ab")}  # no cap: the slots allow both
    assert overlaps(two, 1300.0) == {frozenset("ab")}
    with caplog.at_level("INFO", logger="pelican.plugins.figgen.schedule"):
        assert overlaps(two, 1000.0) == set()  # 1200 MiB do not fit in 1000
    assert "b waits for memory (its last run took 600 MiB; the running figures hold 600" \
        in caplog.text
    # One larger than the whole budget still runs, alone; one never measured counts as the
    # largest measured.
    assert overlaps([Job("huge", False, 2.0, 5000.0), Job("c", False, 1.0, 10.0)], 1000.0) == set()
    assert overlaps([Job("new", False, None), Job("d", False, 1.0, 600.0)], 1000.0) == set()
    assert overlaps([Job("new", False, None), Job("e", False, 1.0, 400.0)], 1000.0) != set()


def test_the_gpu_lanes_largest_jobs_are_taken_off_the_cpu_pool_s_memory() -> None:
    gpu = [Job("g1", True, 1.0, 300.0), Job("g2", True, 1.0, 100.0)]
    assert schedule._beside_gpus(1000.0, gpu, 1) == 700  # one lane: one GPU job at a time
    assert schedule._beside_gpus(1000.0, gpu, 2) == 400
    assert schedule._beside_gpus(1000.0, gpu[:1], 2) == 700  # one job: one lane busy at most
    assert schedule._beside_gpus(1000.0, [], 2) == 1000
    assert schedule._beside_gpus(None, gpu, 1) is None


def test_the_memory_budget_is_what_the_kernel_says_is_available_or_the_setting() -> None:
    assert settings.merge({}, "content").memory_mb == "auto"
    assert settings.merge({"memory_mb": None}, "content").memory_mb is None
    assert settings.merge({"memory_mb": 4096}, "content").memory_mb == 4096
    available = schedule.available_memory()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20  # MiB
    assert available is not None and 0 < available <= total


def test_the_pool_starts_the_first_job_that_fits_and_a_lent_slot_keeps_the_memory() -> None:
    # c needs too much beside a; d, behind it, fits: it goes first.
    order = [Job("a", False, 9.0, 600.0), Job("c", False, 5.0, 600.0), Job("d", False, 1.0, 100.0)]
    pairs = overlaps(order, 1000.0)
    assert frozenset("ad") in pairs and frozenset("ac") not in pairs  # (c may meet d, after a)
    # a waits for another figure's result and lends its slot: its memory stays taken.
    lock, running, pairs = threading.Lock(), set(), set()
    c_started = threading.Event()

    def work(job: Job, lane: Lane, idle: Callable[[bool], None]) -> None:
        with lock:
            pairs.update(frozenset((job.name, other)) for other in running)
            running.add(job.name)
        if job.name == "a":
            idle(True)
            c_started.wait(timeout=1.0)  # c must not start on a's lent slot: no room
            idle(False)
        if job.name == "c":
            c_started.set()
        with lock:
            running.discard(job.name)

    jobs = [Job("a", False, 9.0, 600.0), Job("c", False, 5.0, 600.0)]
    schedule.run_all(jobs, 1, (), work, 1000.0)
    assert pairs == set()


def test_available_memory_is_within_the_cgroup_s_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n")
    monkeypatch.setattr(schedule, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(schedule, "CGROUPS", tmp_path / "cgroup")
    monkeypatch.setattr(schedule, "PROC_CGROUP", tmp_path / "self-cgroup")
    assert schedule.available_memory() == 4096  # no cgroup file: MemAvailable alone
    (tmp_path / "self-cgroup").write_text("0::/ci/job\n")  # v2, a 2 GiB limit, 1 GiB used
    group = tmp_path / "cgroup/ci/job"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("2147483648\n")
    (group / "memory.current").write_text("1073741824\n")
    assert schedule.available_memory() == 1024
    (group / "memory.max").write_text("max\n")
    assert schedule.available_memory() == 4096
    # v1 in a container without a cgroup namespace: the group's path is the host's.
    (tmp_path / "self-cgroup").write_text("4:memory:/docker/abc\n1:cpu:/docker/abc\n")
    (tmp_path / "cgroup/memory").mkdir()
    (tmp_path / "cgroup/memory/memory.limit_in_bytes").write_text("536870912\n")
    (tmp_path / "cgroup/memory/memory.usage_in_bytes").write_text("268435456\n")
    assert schedule.available_memory() == 256


@pytest.mark.parametrize(("key", "value"), [
    ("jobs", 0), ("jobs", "two"), ("threads", 1.5), ("threads", -1), ("gpus", "all"),
    ("gpus", [0.5]), ("preload", "no"), ("memory_mb", 0), ("memory_mb", "8G"),
])
def test_bad_pool_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, key: str, value: object
) -> None:
    monkeypatch.delenv("FIGGEN_JOBS", raising=False)
    with pytest.raises(SettingsError, match=f"FIGGEN\\['{key}'\\]"):
        settings.merge({key: value}, "content")


def test_a_bad_figgen_jobs_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIGGEN_JOBS", "0")
    with pytest.raises(SettingsError, match=r"FIGGEN_JOBS \(FIGGEN\['jobs'\]\) is '0'"):
        settings.merge({}, "content")


def test_the_pool_lends_one_slot_at_a_time_and_a_finished_loan_frees_none() -> None:
    pool = schedule.Pool(schedule.Budget(1, 1000.0, 0.0))
    left = [Job("a", False, 1.0, 600.0), Job("b", False, 1.0, 100.0), Job("c", False, 1.0, 100.0)]
    assert pool.take(left, lambda: False) == Job("a", False, 1.0, 600.0)
    assert pool.next(left) is None  # no slot free
    assert pool.lend() and not pool.lend()  # a second waiter keeps its slot
    assert pool.take(left, lambda: False).name == "b"  # on a's lent slot
    assert (pool.free, pool.lent, pool.running, pool.memory) == (0, 1, 2, 700.0)
    assert not pool.fits(400.0) and pool.fits(300.0)
    pool.finish(600.0, lent=True)  # a ends while lent: b keeps the slot
    assert (pool.free, pool.lent, pool.running, pool.memory) == (0, 0, 1, 100.0)
    pool.finish(100.0, lent=False)
    assert (pool.free, pool.running) == (1, 0) and pool.fits(5000.0)  # nothing runs: any fits
