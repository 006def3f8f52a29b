"""A figure's key holds every source of its bytes: the distributions its run imported, with
their versions, and every imported file in no installed distribution, wherever it lives."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from conftest import Site

POST = """\
Title: Libraries
Date: 2024-01-03
Category: Tests

![Uses toylib]({figure}delta "Delta")

![Uses editlib]({figure}epsilon "Epsilon")

![Uses a checkout]({figure}zeta "Zeta")
"""


def script(module: str) -> str:
    """A figure script that draws with matplotlib and imports `module`."""
    return textwrap.dedent(f"""\
        from matplotlib.figure import Figure

        import {module}
        from pelican_figgen.harness import run


        def main(ctx):
            fig = Figure(figsize=(1, 1))
            fig.add_subplot().plot([0, {module}.VALUE])
            ctx.save(fig)


        if __name__ == "__main__":
            run(main)
        """)


def dist_info(folder: Path, name: str, version: str, editable: bool = False) -> None:
    """An installed distribution's metadata folder, as pip leaves it."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,,\n")
    if editable:
        url = {"url": f"file://{folder}", "dir_info": {"editable": True}}
        (info / "direct_url.json").write_text(json.dumps(url))


@pytest.fixture
def libs(site: Site, tmp_path_factory: pytest.TempPathFactory,
         monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Three figures: one per kind of library, each library outside the site, on PYTHONPATH."""
    outside = tmp_path_factory.mktemp("outside")
    installed, checkout = outside / "installed", outside / "checkout"
    for folder, name in ((installed, "toylib"), (installed, "editlib"), (checkout, "plainlib")):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("VALUE = 1\n")
    dist_info(installed, "toylib", "1.0")
    dist_info(installed, "editlib", "0.1", editable=True)  # its files are source: hashed
    for name, module in (("delta", "toylib"), ("epsilon", "editlib"), ("zeta", "plainlib")):
        site.write(f"figs/{name}.py", script(module))
    site.write("content/libraries.md", POST)
    path = os.pathsep.join(filter(None, [str(installed), str(checkout),
                                         os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    return {"installed": installed, "checkout": checkout}


def record(site: Site, name: str) -> dict:
    return json.loads((site.root / ".figgen-cache/records" / f"{name}.json").read_text())


def test_a_matplotlib_figure_has_no_torch_in_its_key_or_provenance(site: Site) -> None:
    site.build()
    environment = record(site, "gamma")["environment"]
    assert "matplotlib" in environment and "numpy" in environment
    assert "torch" not in environment and "scikit-image" not in environment
    assert "torch" not in site.html() and "matplotlib " in site.html()


def test_a_distribution_version_change_reruns_exactly_its_importers(
    site: Site, libs: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    site.build()
    assert record(site, "delta")["environment"]["toylib"] == "1.0"
    assert "toylib" not in record(site, "epsilon")["environment"]
    assert not any("toylib" in key for key in record(site, "delta")["inputs"])  # a version
    assert site.build()["ran"] == {}
    info = libs["installed"] / "toylib-1.0.dist-info"
    info.rename(info.with_name("toylib-1.1.dist-info"))
    assert set(site.build()["ran"]) == {"delta"}
    assert "toylib 1.0 -> 1.1" in caplog.text
    assert record(site, "delta")["environment"]["toylib"] == "1.1"


def test_a_module_outside_the_root_on_pythonpath_is_an_input(
    site: Site, libs: dict[str, Path]
) -> None:
    site.build()
    plain = libs["checkout"] / "plainlib/__init__.py"
    assert "sys.path:plainlib/__init__.py" in record(site, "zeta")["inputs"]  # outside the root
    plain.write_text("VALUE = 2\n")
    assert set(site.build()["ran"]) == {"zeta"}


def test_an_editable_distribution_s_files_are_inputs(site: Site, libs: dict[str, Path]) -> None:
    site.build()
    assert "editlib" not in record(site, "epsilon")["environment"]
    (libs["installed"] / "editlib/__init__.py").write_text("VALUE = 3\n")
    assert set(site.build()["ran"]) == {"epsilon"}
