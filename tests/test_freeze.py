"""Byte-identical builds, the freeze (a build that runs no script) and verify."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from conftest import Site
from test_build import figures

HIDE_TORCH = {  # importing either fails, as on a machine without them
    "torch.py": "raise ImportError('torch is not installed here')\n",
    "matplotlib/__init__.py": "raise ImportError('matplotlib is not installed here')\n",
}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below a folder, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_clean_builds_are_byte_identical(site: Site) -> None:
    site.build()
    first = snapshot(site.root / "output")
    shutil.rmtree(site.root / "output")
    shutil.rmtree(site.root / ".figgen-cache")
    assert len(site.build()["ran"]) == 3
    second = snapshot(site.root / "output")
    assert first.keys() == second.keys()
    records = [k for k in first if k.endswith(".json")]
    # Every image, page and feed byte for byte; the provenance records too, but for the run
    # time, which they state (and which two runs never share).
    assert [k for k in first if k not in records and first[k] != second[k]] == []
    for key in records:
        old, new = json.loads(first[key]), json.loads(second[key])
        assert old.pop("seconds") > 0 and new.pop("seconds") > 0
        assert old == new, key
    assert {k.rpartition(".")[2] for k in first} >= {"png", "json", "html"}


def test_a_frozen_build_runs_no_script_and_needs_no_torch(site: Site) -> None:
    frozen = site.figgen("freeze")
    assert frozen.returncode == 0, frozen.stderr
    images = {p.name for p in (site.root / "_freeze/objects").iterdir()}
    shutil.rmtree(site.root / ".figgen-cache")
    fake = site.root / "no-torch"
    for rel, text in HIDE_TORCH.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    env = {"FIGGEN_MODE": "frozen", "PYTHONPATH": f"{fake}:{site.env()['PYTHONPATH']}"}
    check = site.command([sys.executable, "-c", "import torch"], env)
    assert "torch is not installed here" in check.stderr  # the fake really hides torch
    result = site.build_cli(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (site.root / ".figgen-cache/records").exists()  # nothing ran
    found = figures(site.html())
    assert len(found) == 3 and "Alpha is drawn in red" in site.html()
    published = {Path(f["img"]["src"]).name.rpartition("-")[2] for f in found}
    # Each figure's light render (a PNG and its WebP) and dark one (a WebP); the PNGs among them.
    assert published <= {name[:12] + Path(name).suffix for name in images} and len(images) == 9

    site.append("figs/alpha.py", "\n# edited after the freeze\n")
    result = site.build_cli(env=env)
    assert result.returncode == 0
    assert "the last good version (it was frozen before figs/alpha.py changed)" in site.html()

    (site.root / "_freeze/records/gamma.json").unlink()
    result = site.build_cli(env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "figure 'gamma': missing from the frozen cache" in out
    assert "`pelican-figgen freeze` where scripts can run" in out  # the log says what to do


def test_a_damaged_freeze_is_reported_by_verify_and_repaired_by_freeze(site: Site) -> None:
    assert site.figgen("freeze").returncode == 0
    objects = {p: p.read_bytes() for p in (site.root / "_freeze/objects").iterdir()}
    alpha, beta = (_frozen_image(site, name) for name in ("alpha", "beta"))
    alpha.unlink()
    beta.write_bytes(objects[beta][:-20] + bytes(20))
    result = site.figgen("verify")
    assert result.returncode == 1
    assert "alpha: damaged (its frozen image" in result.stdout
    assert "beta: damaged (its frozen image" in result.stdout
    assert "gamma: identical" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert site.figgen("freeze").returncode == 0
    assert {p: p.read_bytes() for p in (site.root / "_freeze/objects").iterdir()} == objects
    assert site.build_cli(env={"FIGGEN_MODE": "frozen"}).returncode == 0


def _frozen_image(site: Site, name: str) -> Path:
    """The frozen image of a figure, from its frozen record."""
    record = json.loads((site.root / f"_freeze/records/{name}.json").read_text())
    image = record["image"]
    return site.root / "_freeze/objects" / f"{image['sha256']}{image['suffix']}"


def test_verify_names_the_article_cause_and_traceback_of_a_failure_and_a_bad_reference(
    site: Site,
) -> None:
    assert site.figgen("freeze").returncode == 0
    site.append("figs/beta.py", "\nraise ValueError('no beta today')\n")
    result = site.figgen("verify")
    out = result.stdout + result.stderr
    assert result.returncode == 1 and "beta: failed (the script failed (exit status 1))" in out
    assert "content/post.md: figure 'beta'" in out and "ValueError: no beta today" in out
    site.write("figs/beta.py", (site.root / "figs/alpha.py").read_text())
    site.append("content/post.md", "\n![Typo]({figure}betta \"A typo\")\n")
    result = site.figgen("verify")
    assert result.returncode == 1
    assert "content/post.md: figure 'betta': no script betta.py" in result.stdout + result.stderr


def test_verify_reports_identical_close_and_drifted(site: Site) -> None:
    assert site.figgen("freeze").returncode == 0
    result = site.figgen("verify")
    assert result.returncode == 0, result.stderr
    assert "alpha: identical" in result.stdout and "gamma: identical" in result.stdout

    helper = (site.root / "helpers/common.py").read_text()
    nearly = "color=('#fe0000' if color == 'red' else color)"  # one step less red
    site.write("helpers/common.py", helper.replace("color=color", nearly))
    result = site.figgen("verify")
    assert result.returncode == 0, result.stdout
    assert "alpha: close (RMS difference 0.0" in result.stdout
    assert "frozen before helpers/common.py changed" in result.stdout
    assert "beta: identical" in result.stdout

    site.write("helpers/common.py", helper.replace("color=color", "color='green'"))
    result = site.figgen("verify")
    assert result.returncode == 1 and "alpha: drifted (RMS difference" in result.stdout


SHADED = """\
from matplotlib.figure import Figure

from helpers.shade import KEEP
from pelican_figgen.dark import keep
from pelican_figgen.harness import run


def main(ctx):
    fig = Figure(figsize=(2, 1.5))
    ax = fig.add_axes((0, 0, 1, 1), xlim=(-0.5, 0.5), ylim=(0, 1))
    bar = ax.bar([0], [1], width=1, color="0.9")[0]  # a light grey that may be data, all over
    if KEEP:
        keep(bar)
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""


def test_verify_compares_every_render_not_only_the_main_one(site: Site) -> None:
    site.write("helpers/shade.py", "KEEP = False\n")
    site.write("figs/shaded.py", SHADED)
    site.append("content/post.md", '\n![A grey bar]({figure}shaded "Shaded")\n')
    assert site.figgen("freeze").returncode == 0
    site.write("helpers/shade.py", "KEEP = True\n")  # the dark render keeps the grey now
    result = site.figgen("verify")
    assert result.returncode == 1, result.stdout
    # The main render is the same bytes: only the dark one tells the drift.
    assert "shaded: drifted (its dark render: RMS difference" in result.stdout
    assert "alpha: identical" in result.stdout
