"""Build-time benchmark: the pool, start-up overhead, rebuilds, restyles, memory, PGD.

Every ratio compares two measurements of this one run, so a noisy machine moves both. The
builds run on a copy of the project in a temporary folder (the bench edits scripts there),
each cold build with an empty cache. The previous run's numbers (bench-results.json) are
shown beside, marked better or worse.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from memory import PeakRss

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results.json"
REPEATS = 7
RESTYLES = 3  # re-runs of each ImageNet figure, restyled and cold: medians
GOALS = {  # every measure here is better lower
    "pool_over_serial": 0.65, "cold_over_compute": 1.3, "touched_over_noop_plus_run": 1.1,
    "restyle_over_cold_opening": 0.3, "restyle_over_cold_fgsm": 0.3,
    "restyle_over_cold_jigsaw": 0.3, "peak_rss_gib": 3.0, "noop_over_plain": 1.15,
    "pgd_step_over_bare_b1": 1.10, "pgd_step_over_bare_b8": 1.10, "clone_over_noop": 3.0,
    "dask_over_pool": 1.25,
    # make serve: seconds from a file written to the served page holding the new bytes.
    "serve_text_s": 0.15, "serve_caption_s": 0.15, "serve_restyle_fgsm_s": 0.4,
    "serve_restyle_training_data_s": 0.5,
    # What a desktop page in light mode loads of its figures (their main WebPs) over the
    # 2.16 MB of matplotlib's own PNGs before issue 13.
    "light_page_images_over_before": 0.55,
}
IMAGES_BEFORE_MB = 2.16
# A <picture>'s <source> for any screen: the main render's WebP, what a light desktop loads.
MAIN_SOURCE = re.compile(r'<source type="image/webp" srcset="([^" ]+)[^"]*" width=')
SERVE_REPEATS = 5
ARTICLE_FIGURE = 'id="fig-training_data"'  # how the bench finds the article's page
DRAFT_MARK = b"data-figgen-draft"  # on a figure make serve shows as a draft render
IMAGENET = ("opening", "fgsm", "jigsaw")  # figure scripts under figgen/figures/imagenet/
TOUCHED = "two_dims"  # a quick figure: the build's own overhead weighs most against it
COPIED = ("content", "figgen", "plugins", "theme", "pelicanconf.py")
# Builds run as from a user's shell, which writes bytecode caches: with PYTHONDONTWRITEBYTECODE
# set (as on some CI machines) every build would compile the plugin's source again, a cost
# that no user's second build pays.
BUILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
BUILD_ENV |= {"FIGGEN_REMOTE_KEY": "bench"}  # the remote cache's signing key (the bench's own)
for variable in ("FIGGEN_REMOTE", "FIGGEN_REMOTE_WRITE"):  # each build names its own remote
    BUILD_ENV.pop(variable, None)


class Project:
    """A copy of the site's sources to build and edit, with its caches beside it."""

    def __init__(self, folder: Path) -> None:
        self.root = folder / "project"
        self.remote = (folder / "remote").as_uri()  # a folder remote cache (file://)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, self.root / name,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, self.root / name)

    def build(self, cache: str, out: str = "out", jobs: int | None = None,
              preload: bool = True, plugins: bool = True,
              memory: bool = False, more: dict | None = None) -> tuple[float, dict, int]:
        """Build once; return the wall time, the figure report and (if asked) peak memory.

        Sampling memory costs CPU that a pooled build would miss: timed builds do not sample.
        """
        figgen = {"cache_dir": str(self.root.parent / cache), "preload": preload, **(more or {})}
        if jobs:
            figgen["jobs"] = jobs
        setting = f"FIGGEN={json.dumps(figgen)}" if plugins else 'PLUGINS=["tex_mathml"]'
        command = [str(Path(sys.executable).parent / "pelican"), "content", "-s",
                   "pelicanconf.py", "-o", str(self.root.parent / out), "-q", "-e", setting]
        start = time.perf_counter()
        # stdout is Pelican's "Done:" line.
        build = subprocess.Popen(command, cwd=self.root, env=BUILD_ENV, stdout=subprocess.DEVNULL)
        sampler = PeakRss(build.pid) if memory else None
        if build.wait() != 0:
            raise SystemExit(f"the build {command} failed")
        seconds, peak = time.perf_counter() - start, sampler.stop() if sampler else 0
        report = self.root.parent / cache / "last-build.json"
        return seconds, json.loads(report.read_text()) if plugins else {}, peak

    def edit(self, script: str) -> None:
        """Append a comment to a figure script: it re-runs, its computation unchanged."""
        path = self.root / "figgen" / "figures" / f"{script}.py"
        path.write_text(path.read_text() + f"\n# restyled at {time.time()}\n")


def same_images(one: Path, two: Path) -> bool:
    """Whether two outputs hold the same images and pages, byte for byte (provenance aside)."""
    files = [{p.relative_to(top) for p in top.rglob("*") if p.is_file() and p.suffix != ".json"}
             for top in (one, two)]
    return bool(files[0]) and files[0] == files[1] and all(
        filecmp.cmp(one / f, two / f, shallow=False) for f in files[0])


def cold_builds(project: Project) -> dict:
    """The pool against the same build serial, and against its figures' own compute."""
    print("cold build, pool of the default size, its memory sampled (not timed)...", flush=True)
    # It also fills the remote cache that fresh_clones reads (a shared folder here).
    peak = project.build("cache-memory", "out-memory", memory=True,
                         more={"remote": project.remote, "remote_write": True})[2]
    print("cold build, pool of the default size...", flush=True)
    pool_s, pool, _ = project.build("cache-pool", "out-pool")
    print("cold build, serial (one figure at a time)...", flush=True)
    serial_s, serial, _ = project.build("cache-serial", "out-serial", jobs=1)
    print("cold build, serial, each figure its own interpreter (no warm server)...", flush=True)
    _, direct, _ = project.build("cache-direct", "out-direct", jobs=1, preload=False)
    compute = sum(pool["compute"].values())
    root = project.root.parent
    return {
        "cold_pool_s": round(pool_s, 2), "cold_serial_s": round(serial_s, 2),
        "pool_over_serial": round(pool_s / serial_s, 3),
        "compute_sum_s": round(compute, 2),
        "cold_over_compute": round(pool_s / compute, 3),
        # The same without the pool's help: what start-up and imports still add, figure by figure.
        "serial_over_compute": round(serial_s / sum(serial["compute"].values()), 3),
        "startup_per_figure_warm_s": _startup(pool),
        "startup_per_figure_direct_s": _startup(direct),
        "peak_rss_gib": round(peak / 2**30, 3),
        "pool_same_bytes_as_serial": same_images(root / "out-pool", root / "out-serial")
        and same_images(root / "out-pool", root / "out-direct"),
        **page_images(root / "out-pool"),
    }


def page_images(output: Path) -> dict:
    """The MB of figures the article's page loads on a desktop in light mode, and the ratio."""
    page = next(p for p in output.glob("*.html") if ARTICLE_FIGURE in p.read_text())
    urls = MAIN_SOURCE.findall(page.read_text())
    mb = sum((output / url.lstrip("/")).stat().st_size for url in urls) / 1e6
    return {"light_page_images_mb": round(mb, 3),
            "light_page_images_over_before": round(mb / IMAGES_BEFORE_MB, 3)}


def cluster_build(project: Project, pool_s: float) -> dict:
    """A cold build on a local Dask cluster of two one-thread workers, over the pool's."""
    print("cold build on a local Dask cluster (a scheduler, two workers)...", flush=True)
    root = project.root.parent
    with local_cluster(root / "cluster") as address:
        seconds, report, _ = project.build("cache-dask", "out-dask", more={"executor": address})
    if report.get("failed"):
        raise SystemExit(f"the cluster build failed figures: {report.get('causes')}")
    # The images only: a record's provenance lists what the run imported, which a fork of
    # the warm server counts differently from an interpreter of its own (as on the workers).
    images = [{p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}
              for out in (root / "out-dask", root / "out-pool")]
    return {"cold_dask_s": round(seconds, 2), "dask_over_pool": round(seconds / pool_s, 3),
            "dask_same_images_as_pool": bool(images[0]) and images[0] == images[1]}


@contextlib.contextmanager
def local_cluster(folder: Path, workers: int = 2) -> Iterator[str]:
    """A Dask scheduler and one-thread workers on localhost, in a folder away from the
    project (no checkout on their path); the scheduler's address. All stop at the end."""
    folder.mkdir()
    dask = str(Path(sys.executable).parent / "dask")
    # Their temporary folder (cached intermediates) is the cluster's own: a cold build's.
    env = {k: v for k, v in BUILD_ENV.items() if k != "PYTHONPATH"} | {"TMPDIR": str(folder)}
    address = f"tcp://127.0.0.1:{_free_port()}"
    commands = [[dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":")[-1],
                 "--no-dashboard"]] + [
        [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
         "--host", "127.0.0.1", "--local-directory", str(folder)]] * workers
    procs = []
    try:
        for n, command in enumerate(commands):
            with (folder / f"{n}.log").open("wb") as log:
                procs.append(subprocess.Popen(command, cwd=folder, env=env, stdout=log,
                                              stderr=log, start_new_session=True))
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _startup(report: dict) -> float:
    """Mean start-up and imports per figure of a build: each run's time less its compute."""
    return round(statistics.mean(report["ran"][n] - report["compute"][n] for n in report["ran"]), 3)


def rebuilds(project: Project) -> dict:
    """No-op rebuilds against plain Pelican; a rebuild after touching one figure script."""
    print("no-op rebuilds and plain Pelican, interleaved...", flush=True)
    noop, bare = [], []
    for _ in range(REPEATS):  # interleaved, so drift on the machine hits both alike
        noop.append(project.build("cache-pool", "out-pool")[0])
        bare.append(project.build("cache-plain", "out-plain", plugins=False)[0])
    print(f"touching {TOUCHED}...", flush=True)
    project.edit(TOUCHED)
    touched_s, report, _ = project.build("cache-pool", "out-pool")
    assert list(report["ran"]) == [TOUCHED], report
    noop_s = statistics.median(noop)
    return {
        "noop_rebuild_s": round(noop_s, 3), "plain_pelican_s": round(statistics.median(bare), 3),
        "noop_over_plain": round(noop_s / statistics.median(bare), 3),
        "touched_rebuild_s": round(touched_s, 3),
        "touched_over_noop_plus_run": round(touched_s / (noop_s + report["ran"][TOUCHED]), 3),
    }


def fresh_clones(project: Project) -> dict:
    """A fresh clone (empty local cache) whose figures all are in the remote cache: no run."""
    print("fresh clones reading every figure from a full remote cache...", flush=True)
    times = []
    for i in range(REPEATS):
        seconds, report, _ = project.build(f"cache-clone-{i}", f"out-clone-{i}",
                                           more={"remote": project.remote})
        assert report["ran"] == {} and report["failed"] == [], report
        times.append(seconds)
    root = project.root.parent
    return {"clone_from_remote_s": round(statistics.median(times), 3),
            "clone_same_bytes": same_images(root / "out-memory", root / "out-clone-0")}


def restyles(project: Project) -> dict:
    """Each ImageNet figure re-run with its intermediates cached, and with none (medians)."""
    results = {}
    for name in IMAGENET:
        print(f"restyling imagenet/{name}, then re-running it with no intermediates "
              f"({RESTYLES} times each)...", flush=True)
        warm, cold = [], []
        for _ in range(RESTYLES):  # alternated, so drift on the machine hits both alike
            warm.append(_rerun(project, name))
            cold.append(_rerun(project, name, intermediates=False))
        results[f"restyle_over_cold_{name}"] = round(statistics.median(warm)
                                                     / statistics.median(cold), 3)
        results[f"imagenet_{name}_cold_s"] = round(statistics.median(cold), 2)
    return results


def _rerun(project: Project, name: str, intermediates: bool = True) -> float:
    """Edit one ImageNet figure's script and rebuild; return that figure's run time."""
    kept = project.root.parent / "cache-pool" / "intermediates"
    aside = kept.with_name("intermediates-aside")
    if not intermediates:
        kept.rename(aside)
    try:
        project.edit(f"imagenet/{name}")
        return project.build("cache-pool", "out-pool")[1]["ran"][f"imagenet/{name}"]
    finally:
        if not intermediates:
            shutil.rmtree(kept, ignore_errors=True)  # a failed build may not have made it
            aside.rename(kept)


def serve_edits(project: Project) -> dict[str, Callable[[int], None]]:
    """The author's four edits: the article's text, a caption, two restyles."""
    article = next(p for p in (project.root / "content").glob("*.md")
                   if "{figure}training_data" in p.read_text())

    def text(n: int) -> None:
        article.write_text(article.read_text() + f"\n\nEdited text {n}.\n")

    def caption(n: int) -> None:
        article.write_text(re.sub(r'"The training set(?: \(v\d+\))?:',
                                  f'"The training set (v{n}):', article.read_text(), count=1))

    return {"text": text, "caption": caption,
            "restyle_fgsm": lambda n: project.edit("imagenet/fgsm"),
            "restyle_training_data": lambda n: project.edit("training_data")}


def serve_loop(project: Project) -> dict:
    """Edit to served bytes through make serve, beside the same edits through a fresh build."""
    shutil.copytree(project.root.parent / "cache-pool", project.root / ".figgen-cache",
                    dirs_exist_ok=True)  # the serve starts from a built site, as an author does
    port = _free_port()
    command = [sys.executable, "-m", "pelican.plugins.figgen.serve", "--port", str(port)]
    print("make serve: four edits to served bytes, then each through a fresh build...", flush=True)
    server = subprocess.Popen(command, cwd=project.root, env=BUILD_ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results, edits, counter = {}, serve_edits(project), [0]
    try:
        page = _article_url(project, port)
        time.sleep(1)  # the watcher starts
        for kind, edit in edits.items():
            times, finals = [], []
            for _ in range(SERVE_REPEATS):
                counter[0] += 1
                first, final = _edit_to_bytes(page, edit, counter[0])
                times.append(first)
                finals.append(final)
                time.sleep(0.5)  # the build's page written: the next edit is a build of its own
            results[f"serve_{kind}_s"] = round(statistics.median(times), 3)
            if kind.startswith("restyle"):  # a draft first: the final renders follow
                results[f"serve_final_{kind}_s"] = round(statistics.median(finals), 3)
    finally:
        server.terminate()
        server.wait()
    for kind, edit in edits.items():  # the same edits, each followed by `pelican content`
        times = []
        for _ in range(SERVE_REPEATS):
            counter[0] += 1
            edit(counter[0])
            times.append(project.build("cache-pool", "out-pool")[0])
        results[f"fresh_build_{kind}_s"] = round(statistics.median(times), 3)
    return results


def _free_port() -> int:
    """A TCP port free now on localhost."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str) -> bytes:
    """A served page, or b'' while the server is not up."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except OSError:
        return b""


def _article_url(project: Project, port: int) -> str:
    """The served URL of the article holding the figures the bench edits, once served."""
    output = project.root / "output"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for page in output.glob("*.html"):
            if page.name != "index.html" and ARTICLE_FIGURE in page.read_text():
                url = f"http://127.0.0.1:{port}/{page.name}"
                body = _fetch(url)
                if body and DRAFT_MARK not in body:  # served, its final renders too
                    return url
        time.sleep(0.2)
    raise SystemExit("make serve did not serve the article in 10 minutes")


def _edit_to_bytes(url: str, edit: Callable[[int], None], n: int) -> tuple[float, float]:
    """Seconds from an edit to the served page differing from before, and to its final renders.

    A restyled figure shows a draft render first (marked on the page), then its final ones.
    """
    before, first = _fetch(url), 0.0
    start = time.perf_counter()
    edit(n)
    while time.perf_counter() - start < 120:
        now = _fetch(url)
        if now and now != before:
            first = first or time.perf_counter() - start
            if DRAFT_MARK not in now:
                return first, time.perf_counter() - start
        time.sleep(0.01)
    raise SystemExit(f"the served page {url} did not show its final renders within 2 minutes "
                     "of an edit")


def main() -> None:
    """Measure, print with goals and the previous run, and save the results."""
    # Untimed: the libraries' files into the page cache, so the first build is not the loser.
    subprocess.run([sys.executable, "-c", "import torch, matplotlib.figure, scipy"], check=True)
    only_serve = sys.argv[1:] == ["serve"]  # `python bench/bench.py serve`: the author's loop
    only_cluster = sys.argv[1:] == ["cluster"]  # `... cluster`: the pool against Dask alone
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        if only_serve:
            print("cold build (not timed), for the serve loop...", flush=True)
            project.build("cache-pool", "out-pool")
            results = serve_loop(project)
        elif only_cluster:
            print("cold build, pool of the default size...", flush=True)
            pool_s = project.build("cache-pool", "out-pool")[0]
            results = {"cold_pool_s": round(pool_s, 2)} | cluster_build(project, pool_s)
        else:
            # The clones before any edit: the remote holds every figure as the sources are.
            results = cold_builds(project) | fresh_clones(project) | rebuilds(project)
            results["clone_over_noop"] = round(
                results["clone_from_remote_s"] / results["noop_rebuild_s"], 3)
            results |= cluster_build(project, results["cold_pool_s"])
            results |= restyles(project) | serve_loop(project)
    if not (only_serve or only_cluster):
        print("PGD step against a bare forward and backward pass...", flush=True)
        from pgd_step import measure  # here: it imports torch, which the timings must not

        results |= measure()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key, value in results.items():
        print(f"{key:>30}: {value}{_goal(key, value)}{_versus(key, value, previous)}")
    partial = only_serve or only_cluster
    RESULTS.write_text(json.dumps(previous | results if partial else results, indent=1))


def _goal(key: str, value: object) -> str:
    """The goal of a measure and whether this run met it."""
    if key not in GOALS:
        return ""
    met = "met" if isinstance(value, float) and value <= GOALS[key] else "MISSED"
    return f"  (goal <= {GOALS[key]}: {met})"


def _versus(key: str, value: object, previous: dict) -> str:
    """The previous run's value, and whether this one is better (lower) or worse."""
    if key not in previous:
        return ""
    was = previous[key]
    if key in GOALS and isinstance(value, float) and isinstance(was, (int, float)):
        trend = "better" if value < was else "worse" if value > was else "same"
        return f"  previous: {was} ({trend})"
    return f"  previous: {was}"


if __name__ == "__main__":
    main()
