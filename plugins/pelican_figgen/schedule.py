"""Run phase, scheduling: the out-of-date figures in a pool, GPU figures in their own queue.

CPU figures run `jobs` at a time. A figure that declares ``"gpu": True`` runs in the GPU
queue, one at a time per GPU with ``CUDA_VISIBLE_DEVICES`` set to it, beside the CPU pool;
on a machine without a GPU it joins the CPU pool. CPU figures see no GPU (``CUDA_VISIBLE_DEVICES``
empty), so an undeclared torch figure cannot crowd the GPU queue.
The slowest figures, known from their last run, start first; figures never run start before
them (they may be the slowest). Each worker is a thread waiting on a subprocess.
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
from typing import TypeVar

T = TypeVar("T")
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver knows
NVIDIA_SMI_TIMEOUT = 10.0  # seconds
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A figure to bring up to date, and what scheduling needs to know of it."""

    name: str
    gpu: bool  # declared `"gpu": True`
    last_seconds: float | None  # its last run's time; None: it never ran


@dataclass(frozen=True)
class Lane:
    """Where a job runs: the CPU pool or one GPU, and the environment that says so."""

    kind: str  # "cpu" or "gpu"
    env: Mapping[str, str]


def slowest_first(jobs: Iterable[Job]) -> list[Job]:
    """Jobs never run first, then by their last run's time, longest first; ties by name."""
    return sorted(jobs, key=lambda j: (j.last_seconds is not None, -(j.last_seconds or 0.0),
                                       j.name))


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


def lanes(cpu_workers: int, gpus: Sequence[str]) -> tuple[list[Lane], list[Lane]]:
    """The CPU lanes and one lane per GPU, each with the environment its scripts get."""
    cpu = [Lane("cpu", {"CUDA_VISIBLE_DEVICES": "", "FIGGEN_LANE": "cpu"})
           for _ in range(cpu_workers)]
    gpu = [Lane("gpu", {"CUDA_VISIBLE_DEVICES": g, "FIGGEN_LANE": "gpu"}) for g in gpus]
    return cpu, gpu


def cpu_workers(jobs: int | None, threads: int, gpus: Sequence[str]) -> int:
    """The CPU pool's size: the setting, else the cores left by the GPU lanes' host threads."""
    if jobs:
        return jobs
    return max(1, cores() // threads - len(gpus))


def cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_all(
    jobs: Sequence[Job], cpu_workers: int, gpus: Sequence[str], work: Callable[[Job, Lane], T]
) -> dict[str, T]:
    """Run `work` on every job in its lanes, slowest first; results by job name."""
    cpu_lanes, gpu_lanes = lanes(cpu_workers, gpus)
    cpu_queue: queue.Queue[Job] = queue.Queue()
    gpu_queue: queue.Queue[Job] = queue.Queue()
    for job in slowest_first(jobs):
        (gpu_queue if job.gpu and gpu_lanes else cpu_queue).put(job)
    results: dict[str, T] = {}
    failures: list[BaseException] = []

    def worker(lane: Lane, todo: queue.Queue[Job]) -> None:
        while not failures:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[job.name] = work(job, lane)
            except BaseException as err:  # a bug in the build itself: stop, then raise it
                err.add_note(f"(while the build was making figure {job.name!r})")
                failures.append(err)

    threads = [threading.Thread(target=worker, args=(lane, cpu_queue), daemon=True)
               for lane in cpu_lanes[: max(1, min(cpu_queue.qsize(), cpu_workers))]]
    threads += [threading.Thread(target=worker, args=(lane, gpu_queue), daemon=True)
                for lane in gpu_lanes]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as err:  # Ctrl-C: no worker takes another job; running ones die
        failures.append(err)  # with the build (PDEATHSIG)
        raise
    if failures:
        raise failures[0]
    return results
