"""`pelican-figgen`: list, run, clean; provenance; progress reports; the time table."""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Site
from pelican.plugins.figgen import discover, run
from pelican.plugins.figgen.settings import merge
from test_build import ALL

PROGRESS = """\
from matplotlib.figure import Figure

from pelican_figgen.harness import run


def main(ctx):
    total = 0
    for step in ctx.progress(range(5), description="steps"):
        total += step
    ctx.fields["total"] = total
    ctx.save(Figure(figsize=(1, 1)))


if __name__ == "__main__":
    run(main)
"""


def lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """`list` output: the state column of each figure, by name."""
    return {line.split()[0]: line.split(None, 1)[1] for line in result.stdout.splitlines()
            if line and not line.startswith("error")}


def test_list_says_fresh_stale_and_why_failed_and_unreferenced(site: Site) -> None:
    site.write("figs/unused.py", (site.root / "figs/alpha.py").read_text())
    state = lines(site.figgen("list"))
    assert state["alpha"].startswith("stale: never run") and "[content/post.md]" in state["alpha"]
    assert "not referenced" in state["unused"]
    site.build()
    site.append("figs/gamma.py", "\nraise SystemExit(4)\n")
    state = lines(site.figgen("list"))
    assert state["alpha"].startswith("fresh (ran in ")
    assert state["gamma"].startswith("stale: figs/gamma.py changed")
    assert site.figgen("run", "gamma").returncode == 1
    state = lines(site.figgen("list"))
    assert state["gamma"].startswith("failed: the script failed (exit status 4); stale: figs/gamma")
    site.write("figs/beta.py", "__figure__ = {\n")
    result = site.figgen("list")
    assert result.returncode == 1 and state.keys() == lines(result).keys()
    assert "error: content/post.md: figure 'beta': beta.py does not parse" in result.stdout


def test_list_into_a_closed_pipe_exits_quietly(site: Site) -> None:
    for n in range(1000):  # more lines than a pipe holds: `list` is still writing at the close
        site.write(f"figs/unused_{n:04d}_{'x' * 60}.py", "")
    figgen = subprocess.Popen([sys.executable, "-m", "pelican.plugins.figgen", "list"],
                              cwd=site.root, env=site.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    figgen.stdout.readline()
    figgen.stdout.close()  # as `| head` does once it has its lines
    stderr = figgen.stderr.read().decode()
    assert figgen.wait() == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_run_names_force_and_clean(site: Site) -> None:
    result = site.figgen("run", "beta")
    assert result.returncode == 0, result.stderr
    assert set(site.report()["ran"]) == {"beta"}
    assert site.figgen("run").returncode == 0
    assert set(site.report()["ran"]) == {"alpha", "gamma"} and site.report()["cached"] == ["beta"]
    site.figgen("run", "--force")
    assert set(site.report()["ran"]) == ALL
    assert "time per figure, slowest first" in site.figgen("run", "--force").stdout
    result = site.figgen("run", "betta")
    assert result.returncode == 1 and "closest: beta" in result.stdout + result.stderr
    lock = site.root / ".figgen-cache/locks/beta.lock"
    with lock.open("a") as held:  # as a running build holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert site.figgen("clean").returncode == 0
    assert [p.name for p in (site.root / ".figgen-cache").iterdir()] == ["locks"]
    assert lock.exists()


def test_provenance_json_and_disclosure_name_inputs_versions_device_and_commit(
    site: Site,
) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    site.write(".gitignore", ".figgen-cache/\noutput/\n")
    subprocess.run([*git, "init", "-q"], cwd=site.root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=site.root, check=True)
    subprocess.run([*git, "commit", "-qm", "site"], cwd=site.root, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=site.root, capture_output=True,
                          text=True).stdout.strip()
    site.build()
    record = _provenance(site, "alpha")
    for rel in ("figs/alpha.py", "helpers/common.py"):
        assert record["inputs"][rel] == hashlib.sha256((site.root / rel).read_bytes()).hexdigest()
    assert record["versions"]["numpy"] and record["versions"]["python"]
    assert record["device"].startswith("CPU ") and record["seed"] == 0
    assert record["seconds"] > 0  # the run time, which the page leaves out
    assert record["commit"] == head and record["dirty"] is False
    html = site.html()
    assert '<details class="figgen-provenance">' in html
    assert f'<code class="figgen-hash">{head[:12]}</code>' in html
    site.append("figs/alpha.py", "\n# uncommitted\n")
    site.build()
    assert _provenance(site, "alpha")["dirty"] is True
    assert "with uncommitted changes" in site.html()


def _provenance(site: Site, name: str) -> dict:
    (path,) = (site.root / "output/figures").glob(f"{name}-*.json")
    return json.loads(path.read_text())


def test_progress_reports_reach_the_plugin_and_a_plain_line_when_alone(tmp_path: Path) -> None:
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs/count.py").write_text(PROGRESS)
    settings = merge({"scripts": "figs"}, tmp_path / "content")
    figure = discover.load_figure("test", "count", settings, ["count"])
    reports: list[dict] = []
    result = run.run_figure(figure, settings, tmp_path / "out", reports.append)
    assert result.ok, result.cause + result.detail
    assert reports[-1] == {"description": "steps", "completed": 5, "total": 5}
    alone = subprocess.run(
        [sys.executable, "figs/count.py", "--out", str(tmp_path / "alone")], cwd=tmp_path,
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"},
    )
    assert alone.returncode == 0, alone.stderr
    assert alone.stderr.strip().endswith("steps: 5/5")


def test_the_command_line_reads_its_paths_from_the_settings_file(site: Site) -> None:
    # Content elsewhere than content/, the settings file elsewhere than pelicanconf.py.
    (site.root / "content").rename(site.root / "posts")
    (site.root / "pelicanconf.py").rename(site.root / "site.py")
    site.append("site.py", 'PATH = "posts"\nFIGGEN = {"scripts": "figs", "cache_dir": "c"}\n')
    state = lines(site.figgen("-s", "site.py", "list"))
    assert state["alpha"].startswith("stale: never run") and "[posts/post.md]" in state["alpha"]
    assert site.figgen("-s", "site.py", "run", "alpha").returncode == 0
    assert (site.root / "c/records/alpha.json").is_file()
