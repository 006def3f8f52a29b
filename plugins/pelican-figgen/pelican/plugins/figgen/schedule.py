"""Run phase, scheduling: the out-of-date figures in a pool, GPU figures in their own queue.

CPU figures run `jobs` at a time. A figure that declares ``"gpu": True`` runs in the GPU
queue, one at a time per GPU with ``CUDA_VISIBLE_DEVICES`` set to it, beside the CPU pool;
on a machine without a GPU it joins the CPU pool. CPU figures see no GPU (``CUDA_VISIBLE_DEVICES``
empty), so an undeclared torch figure cannot crowd the GPU queue.
The slowest figures, known from their last run, start first; figures never run start before
them (they may be the slowest), those that want a GPU first among them. A CPU job waiting
for another's result lends its slot meanwhile (one slot at a time). With a memory budget, a
CPU job starts only when its last run's peak memory fits beside the running ones' (or when
nothing runs); the first in order that fits goes next. Each job is a thread waiting on a
subprocess.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pelican_figgen import contract

T = TypeVar("T")
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver knows
NVIDIA_SMI_TIMEOUT = 10.0  # seconds
CGROUPS = Path("/sys/fs/cgroup")  # where cgroup hierarchies are mounted
PROC_CGROUP = Path("/proc/self/cgroup")  # this process's cgroups
MEMINFO = Path("/proc/meminfo")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A figure to bring up to date, and what scheduling needs to know of it."""

    name: str
    gpu: bool  # declared `"gpu": True`
    last_seconds: float | None  # its last run's time; None: it never ran
    memory: float | None = None  # its last run's peak resident memory, MiB; None: unknown


@dataclass(frozen=True)
class Lane:
    """Where a job runs: the CPU pool or one GPU, and the environment that says so."""

    kind: str  # "cpu" or "gpu"
    device: str  # the GPU's id; "" for the CPU lane, which hides every GPU

    @property
    def env(self) -> Mapping[str, str]:
        """What a figure in this lane is told: the GPU it may see, and its lane."""
        return {"CUDA_VISIBLE_DEVICES": self.device, contract.LANE: self.kind}


def slowest_first(jobs: Iterable[Job]) -> list[Job]:
    """Jobs never run first (those wanting a GPU before the others: a GPU is asked for heavy
    work), then by their last run's time, longest first; ties by name."""
    def key(job: Job) -> tuple[bool, bool, float, str]:
        known = job.last_seconds is not None
        return known, known or not job.gpu, -(job.last_seconds or 0.0), job.name

    return sorted(jobs, key=key)


def detect_gpus() -> tuple[str, ...]:
    """The CUDA devices this build may use, found without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # the user's choice, "" or "-1" meaning none
        return tuple(d for d in visible.split(",") if d.strip() and not d.startswith("-"))
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                    timeout=NVIDIA_SMI_TIMEOUT)
        except subprocess.TimeoutExpired:  # a wedged driver: no GPU for this build
            logger.warning("figgen: nvidia-smi -L did not answer in %g s: no GPU queue",
                           NVIDIA_SMI_TIMEOUT)
            return ()
        lines = [x for x in listed.stdout.splitlines() if x.startswith("GPU ")]
        if listed.returncode == 0:
            return tuple(str(i) for i in range(len(lines)))
    count = len(list(NVIDIA_PROC.iterdir())) if NVIDIA_PROC.is_dir() else 0
    return tuple(str(i) for i in range(count))


def lanes(gpus: Sequence[str]) -> tuple[Lane, list[Lane]]:
    """The CPU pool's lane and one lane per GPU, each with the environment its scripts get."""
    return Lane("cpu", ""), [Lane("gpu", g) for g in gpus]


def cpu_workers(jobs: int | None, threads: int, gpus: Sequence[str]) -> int:
    """The CPU pool's size: the setting, else the cores left by the GPU lanes' host threads."""
    if jobs:
        return jobs
    return max(1, cores() // threads - len(gpus))


def available_memory() -> float | None:
    """MiB this build may use without swapping: MemAvailable, within its cgroup's limit."""
    found = [m for m in (_meminfo_available(), _cgroup_room()) if m is not None]
    return min(found) if found else None


def _meminfo_available() -> float | None:
    """The kernel's estimate of memory available without swapping, in MiB."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _cgroup_room() -> float | None:
    """MiB left below this process's cgroup memory limit (a container's); None: no limit."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if controllers == "":  # cgroup v2
            mount, names = CGROUPS, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            mount, names = CGROUPS / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        # Without a cgroup namespace the group's path is the host's: the mount is then ours.
        for folder in (mount / group.lstrip("/"), mount):
            room = _room(folder, *names)
            if room is not None:
                return room
    return None


def _room(folder: Path, limit_file: str, usage_file: str) -> float | None:
    """MiB between a cgroup's memory use and its limit; None if unreadable or unlimited."""
    try:
        limit = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if not limit.isdigit() or int(limit) >= 2**60:  # "max" (v2) or a page-rounded 2**63 (v1)
        return None
    return (int(limit) - usage) / 2**20


def cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Pool:
    """The CPU pool's shared state, under one lock: free and lent slots, running jobs, memory.

    One slot at most is lent at a time, so the pool runs at most one job over its size:
    figures waiting for one shared result would otherwise all let new ones start.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._changed = threading.Condition()
        self.free, self.lent, self.running, self.memory = budget.slots, 0, 0, 0.0
        self._said: set[str] = set()  # jobs logged as waiting for memory, once each

    def fits(self, need: float) -> bool:
        """Whether a job needing `need` MiB may start beside those running (always, if none)."""
        cap = self.budget.memory
        return cap is None or not self.running or self.memory + need <= cap

    def next(self, left: Sequence[Job]) -> Job | None:
        """The first job in order whose memory fits now, if a slot is free; else None."""
        if self.free <= 0:
            return None
        return next((job for job in left if self.fits(self.budget.need(job))), None)

    def take(self, left: list[Job], stop: Callable[[], bool]) -> Job | None:
        """Wait for a job of `left` that may start, start it and return it; None if `stop()`."""
        with self._changed:
            while not stop() and (job := self.next(left)) is None:
                if self.free > 0 and left[0].name not in self._said:  # memory, not slots
                    self._said.add(_say_memory_binds(left[0], self))
                self._changed.wait()
            if stop():
                return None
            left.remove(job)
            self.free -= 1
            self.running += 1
            self.memory += self.budget.need(job)
            return job

    def lend(self) -> bool:
        """Lend a running job's slot to the next job; False if a slot is lent already."""
        with self._changed:
            if self.lent >= 1:  # another waiter lent its slot already
                return False
            self._shift(1)
            return True

    def reclaim(self) -> None:
        """Take a lent slot back, at once even if the pool is full: the script runs on."""
        with self._changed:
            self._shift(-1)

    def finish(self, need: float, lent: bool) -> None:
        """A job that needed `need` MiB has ended: its slot (or its loan) and memory return."""
        with self._changed:
            if lent:  # its slot went to another job already: the loan ends here
                self.lent -= 1
            else:
                self.free += 1
            self.running -= 1
            self.memory -= need
            self._changed.notify()

    def _shift(self, step: int) -> None:
        """Move `step` slots between lent and free, and wake the pool."""
        self.lent += step
        self.free += step
        self._changed.notify()


class Seat:
    """A job's slot in the CPU pool, lent to the next job while the job waits for another."""

    def __init__(self, pool: Pool, memory: float) -> None:
        self._pool, self._lent, self._left = pool, False, False
        self._memory = memory  # held until the job ends, waiting or not
        self._lock = threading.Lock()  # one job's idle() and leave() may race

    def idle(self, waiting: bool) -> None:
        """Lend the slot (waiting for another figure's result) or take it back."""
        with self._lock:
            if self._left or waiting == self._lent:
                return
            if waiting:
                self._lent = self._pool.lend()
            else:
                self._pool.reclaim()
                self._lent = False

    def leave(self) -> None:
        """Give the slot back for good: the job has ended."""
        with self._lock:
            if self._left:
                return
            self._left = True
            self._pool.finish(self._memory, self._lent)


Work = Callable[[Job, Lane, Callable[[bool], None]], T]


def run_all(
    jobs: Sequence[Job], cpu_workers: int, gpus: Sequence[str], work: Work,
    memory: float | None = None,
) -> dict[str, T]:
    """Run `work` on every job in its lanes, slowest first; results by job name.

    `work(job, lane, idle)` may call `idle(True)` while it waits for another job's result,
    so that the CPU pool starts one more job meanwhile, and `idle(False)` when it goes on.
    `memory` (MiB) caps what the CPU pool's jobs may need together, by their last runs.
    """
    cpu_lane, gpu_lanes = lanes(gpus)
    order = slowest_first(jobs)
    on_gpu = [j for j in order if j.gpu and gpu_lanes]
    on_cpu = [j for j in order if j not in on_gpu]
    results: dict[str, T] = {}
    failures: list[BaseException] = []

    def attempt(job: Job, lane: Lane, idle: Callable[[bool], None]) -> None:
        try:
            results[job.name] = work(job, lane, idle)
        except BaseException as err:  # a bug in the build itself: stop, then raise it
            err.add_note(f"(while the build was making figure {job.name!r})")
            failures.append(err)

    gpu_queue: queue.Queue[Job] = queue.Queue()
    for job in on_gpu:
        gpu_queue.put(job)
    threads = [_start(_gpu_worker, gpu_queue, lane, attempt, failures) for lane in gpu_lanes]
    try:
        budget = Budget(cpu_workers, _beside_gpus(memory, on_gpu, len(gpu_lanes)), _guess(jobs))
        threads += _cpu_pool(on_cpu, budget, cpu_lane, attempt, failures)
        for thread in threads:
            thread.join()
    except BaseException as err:  # Ctrl-C: no job starts any more; running ones die
        failures.append(err)  # with the build (PDEATHSIG)
        raise
    if failures:
        raise failures[0]
    return results


@dataclass(frozen=True)
class Budget:
    """What the CPU pool may use at once: slots, and memory (MiB) if capped."""

    slots: int
    memory: float | None  # None: no cap
    guess: float  # MiB assumed for a job whose memory is unknown

    def need(self, job: Job) -> float:
        """The memory a job is expected to take: its last run's, else the guess."""
        return job.memory if job.memory is not None else self.guess


def _beside_gpus(memory: float | None, on_gpu: Sequence[Job], lanes: int) -> float | None:
    """The CPU pool's memory: what is left once each GPU lane's largest job has its share."""
    if memory is None or not on_gpu:
        return memory
    largest = max((j.memory or 0.0) for j in on_gpu)  # their host side: model, images
    return max(0.0, memory - largest * min(lanes, len(on_gpu)))


def _guess(jobs: Sequence[Job]) -> float:
    """The memory assumed for a job never measured: the largest measured one's, else none."""
    return max((j.memory for j in jobs if j.memory is not None), default=0.0)


def _cpu_pool(
    jobs: list[Job], budget: Budget, lane: Lane, attempt: Callable[..., None],
    failures: list[BaseException],
) -> list[threading.Thread]:
    """Start the CPU jobs, each once a slot is free and its memory fits; return the threads."""
    pool, threads, left = Pool(budget), [], list(jobs)
    while left and (job := pool.take(left, lambda: bool(failures))) is not None:
        threads.append(_start(_seated, job, lane, Seat(pool, budget.need(job)), attempt))
    return threads


def _say_memory_binds(job: Job, pool: Pool) -> str:
    """Log that a job waits for memory, not for a slot; return its name."""
    known = "its last run took" if job.memory is not None else "never measured, assumed"
    logger.info("figgen: %s waits for memory (%s %.0f MiB; the running figures hold %.0f MiB "
                "of the %.0f MiB the pool may use, FIGGEN['memory_mb'])",
                job.name, known, pool.budget.need(job), pool.memory, pool.budget.memory)
    return job.name


def _seated(job: Job, lane: Lane, seat: Seat, attempt: Callable[..., None]) -> None:
    """Run one CPU job in its seat, leaving it when the job ends."""
    try:
        attempt(job, lane, seat.idle)
    finally:
        seat.leave()


def _gpu_worker(
    todo: queue.Queue[Job], lane: Lane, attempt: Callable[..., None],
    failures: list[BaseException],
) -> None:
    """Run the GPU jobs one after the other on this lane's GPU."""
    while not failures:
        try:
            job = todo.get_nowait()
        except queue.Empty:
            return
        attempt(job, lane, lambda waiting: None)  # a GPU is not lent: it is one at a time


def _start(target: Callable[..., None], *args: Any) -> threading.Thread:
    """A started daemon thread: it waits on a script, which dies with the build if it must."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
