"""The remote cache: CI signs and writes, a clone with an empty cache reads and runs nothing.

The logic on a `file://` remote (a shared folder); one end to end against moto's standalone S3
server on localhost, as s3fs's own tests do.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Site, free_port
from test_build import figures

ALL = {"alpha", "beta", "gamma"}
KEY = "a key only CI and the authors hold"


def build(site: Site, url: str, write: bool = False) -> dict:
    """Build a site with a remote cache."""
    return site.build(FIGGEN={"scripts": "figs", "remote": url, "remote_write": write})


def clone(site: Site, where: Path) -> Site:
    """A fresh clone of the site's sources: no local cache, no output."""
    shutil.copytree(site.root, where, ignore=shutil.ignore_patterns(".figgen-cache", "output"))
    return Site(where)


def images(site: Site, page: str = "a-tiny-post.html") -> dict[str, bytes]:
    """Each figure's alt text -> the bytes of its image in the output."""
    return {f["img"]["alt"]: (site.root / "output" / f["img"]["src"].lstrip("/")).read_bytes()
            for f in figures(site.html(page))}


def remote_files(folder: Path) -> list[str]:
    """Every file in a folder remote, relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signing key in the environment, and no override of the settings under test."""
    monkeypatch.setenv("FIGGEN_REMOTE_KEY", KEY)
    for variable in ("FIGGEN_REMOTE", "FIGGEN_REMOTE_WRITE", "FIGGEN_REMOTE_OPTIONS"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def filled(site: Site, tmp_path: Path, keyed: None) -> tuple[Site, Path, str]:
    """The tiny site built once by "CI", which wrote a folder remote; its URL."""
    folder = tmp_path / "bucket"
    url = folder.as_uri()
    assert set(build(site, url, write=True)["ran"]) == ALL
    return site, folder, url


def test_a_clone_takes_every_figure_from_the_remote_and_runs_nothing(
    filled: tuple[Site, Path, str], tmp_path: Path
) -> None:
    ci, folder, url = filled
    stored = remote_files(folder)
    assert len([f for f in stored if f.startswith("records/")]) == 3
    assert all(f.startswith(("records/", "objects/")) for f in stored)
    assert not any(f.endswith((".pickle", ".tmp")) for f in stored)  # no pickle crosses
    laptop = clone(ci, tmp_path / "laptop")
    report = build(laptop, url)
    assert report["ran"] == {} and set(report["cached"]) == ALL and report["failed"] == []
    assert images(laptop) == images(ci)  # byte for byte
    assert "Alpha is drawn in red" in laptop.html()  # the fields came along
    assert not list((laptop.root / ".figgen-cache").rglob("*.pickle"))
    assert build(laptop, url)["ran"] == {}  # then from its own cache


def test_a_reader_does_not_write_and_runs_what_the_remote_lacks(
    filled: tuple[Site, Path, str], tmp_path: Path
) -> None:
    ci, folder, url = filled
    before = remote_files(folder)
    laptop = clone(ci, tmp_path / "laptop")
    laptop.write("figs/beta.py", laptop.root.joinpath("figs/beta.py").read_text()
                 .replace("'blue'", "'green'"))
    report = build(laptop, url)
    assert set(report["ran"]) == {"beta"} and set(report["cached"]) == {"alpha", "gamma"}
    assert remote_files(folder) == before  # laptops read by default


def test_a_remote_record_is_judged_by_every_input_it_names(
    filled: tuple[Site, Path, str], tmp_path: Path
) -> None:
    # The script is unchanged (the record is found) but a module it imports is not.
    ci, _, url = filled
    laptop = clone(ci, tmp_path / "laptop")
    laptop.append("helpers/common.py", "\n# edited\n")
    report = build(laptop, url)
    assert set(report["ran"]) == {"alpha", "beta"} and report["cached"] == ["gamma"]


OUTSIDE_POST = """\
Title: A checkout
Date: 2024-01-04
Category: Tests

![A line of a checkout's slope]({figure}delta "Delta's slope comes from a checkout")
"""

DELTA = """\
from matplotlib.figure import Figure

from outlib.shapes import SLOPE
from pelican_figgen.harness import run


def main(ctx):
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, SLOPE])
    ctx.save(fig)


if __name__ == "__main__":
    run(main)
"""


def checkout(folder: Path) -> Path:
    """A helper package in a folder outside any site, as a checkout on PYTHONPATH."""
    (folder / "outlib").mkdir()
    (folder / "outlib/__init__.py").write_text("")
    (folder / "outlib/shapes.py").write_text("SLOPE = 2\n")
    return folder


def test_a_checkout_outside_the_root_is_the_same_input_wherever_it_lives(
    site: Site, tmp_path_factory: pytest.TempPathFactory, keyed: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two machines: each has the site and the helper checkout at paths of its own.
    site.write("figs/delta.py", DELTA)
    site.write("content/checkout.md", OUTSIDE_POST)
    laptop = clone(site, tmp_path_factory.mktemp("laptop") / "blog")
    url = tmp_path_factory.mktemp("bucket").as_uri()
    ci_lib, laptop_lib = (checkout(tmp_path_factory.mktemp(n)) for n in ("ci-src", "home-src"))
    before = os.environ.get("PYTHONPATH")

    def on_path(folder: Path) -> None:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), before])))

    on_path(ci_lib)
    assert set(build(site, url, write=True)["ran"]) == ALL | {"delta"}
    inputs = json.loads((site.root / ".figgen-cache/records/delta.json").read_text())["inputs"]
    assert "sys.path:outlib/shapes.py" in inputs
    assert not [name for name in inputs if Path(name).is_absolute()]  # no machine's path
    shutil.rmtree(ci_lib)  # CI's checkout is not on the laptop
    on_path(laptop_lib)
    report = build(laptop, url)
    assert report["ran"] == {} and set(report["cached"]) == ALL | {"delta"}
    for page in ("a-tiny-post.html", "a-checkout.html"):
        assert images(laptop, page) == images(site, page)  # byte for byte
    laptop_lib.joinpath("outlib/shapes.py").write_text("SLOPE = 3\n")
    assert set(build(laptop, url)["ran"]) == {"delta"}  # exactly its importer
    assert build(laptop, url)["ran"] == {}


def _record_of(folder: Path, name: str) -> Path:
    (path,) = (folder / "records" / name).glob("*.json")
    return path


def _tamper(path: Path) -> None:
    """Change what the record says, keeping its signature."""
    found = json.loads(path.read_text())
    found["record"]["fields"]["color"] = "purple"
    path.write_text(json.dumps(found))


def _unsign(path: Path) -> None:
    """Drop the record's signature."""
    found = json.loads(path.read_text())
    del found["signature"]
    path.write_text(json.dumps(found))


@pytest.mark.parametrize(("damage", "warning"), [
    (_tamper, "its signature is not FIGGEN_REMOTE_KEY's"),
    (_unsign, "ignoring an unsigned remote record of alpha"),
])
def test_a_tampered_or_unsigned_record_is_ignored_with_a_warning(
    filled: tuple[Site, Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    damage: object, warning: str,
) -> None:
    ci, folder, url = filled
    damage(_record_of(folder, "alpha"))  # type: ignore[operator]
    laptop = clone(ci, tmp_path / "laptop")
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.remote"):
        report = build(laptop, url)
    assert warning in caplog.text
    assert set(report["ran"]) == {"alpha"} and set(report["cached"]) == {"beta", "gamma"}
    assert "Alpha is drawn in red" in laptop.html() and "purple" not in laptop.html()


def test_a_record_signed_with_another_key_is_ignored(
    filled: tuple[Site, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ci, _, url = filled
    monkeypatch.setenv("FIGGEN_REMOTE_KEY", "the bucket writer's own key")
    laptop = clone(ci, tmp_path / "laptop")
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.remote"):
        assert set(build(laptop, url)["ran"]) == ALL
    assert caplog.text.count("its signature is not") == 3


def test_without_a_key_the_remote_is_not_used(
    filled: tuple[Site, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ci, _, url = filled
    monkeypatch.delenv("FIGGEN_REMOTE_KEY")
    laptop = clone(ci, tmp_path / "laptop")
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.remote"):
        assert set(build(laptop, url)["ran"]) == ALL
    assert "FIGGEN_REMOTE_KEY is not set" in caplog.text


def test_an_object_whose_bytes_do_not_match_its_name_is_refused(
    filled: tuple[Site, Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ci, folder, url = filled
    image = json.loads(_record_of(folder, "gamma").read_text())["record"]["image"]
    good = ci.root.joinpath(".figgen-cache/objects", image["sha256"] + image["suffix"])
    folder.joinpath("objects", image["sha256"] + image["suffix"]).write_bytes(b"not the image")
    laptop = clone(ci, tmp_path / "laptop")
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.remote"):
        report = build(laptop, url)
    assert "do not match their sha256 name" in caplog.text
    assert set(report["ran"]) == {"gamma"}
    assert images(laptop)["Points from a file"] == good.read_bytes()


def test_a_forced_run_does_not_read(filled: tuple[Site, Path, str], tmp_path: Path) -> None:
    ci, folder, url = filled
    before = remote_files(folder)
    laptop = clone(ci, tmp_path / "laptop")
    conf = laptop.root / "pelicanconf.py"
    conf.write_text(conf.read_text().replace('FIGGEN = {"scripts": "figs"}',
                                             f'FIGGEN = {{"scripts": "figs", "remote": {url!r}}}'))
    forced = laptop.figgen("run", "--force")
    assert forced.returncode == 0, forced.stderr
    assert set(laptop.report()["ran"]) == ALL  # nothing made elsewhere is reused
    assert remote_files(folder) == before


def test_a_writer_runs_what_is_stale_and_replaces_the_remote_record(
    filled: tuple[Site, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ci, folder, url = filled
    _tamper(_record_of(folder, "alpha"))  # a bad record: the writer's next build replaces it
    monkeypatch.setenv("FIGGEN_REMOTE_WRITE", "1")  # as CI sets it
    runner = clone(ci, tmp_path / "ci-again")
    assert set(build(runner, url)["ran"]) == ALL  # a writer makes what it signs
    monkeypatch.delenv("FIGGEN_REMOTE_WRITE")
    laptop = clone(ci, tmp_path / "laptop")
    assert build(laptop, url)["ran"] == {} and "Alpha is drawn in red" in laptop.html()


# --- against a real S3 API: moto's standalone server on localhost --------------------------

HAVE_S3 = all(importlib.util.find_spec(m) for m in ("s3fs", "moto"))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free local port; its endpoint URL."""
    if not HAVE_S3:
        if os.environ.get("FIGGEN_REQUIRE_REMOTE"):
            pytest.fail("FIGGEN_REQUIRE_REMOTE is set but s3fs or moto[server] is not installed")
        pytest.skip("s3fs and moto[server] are not installed (pip install -e '.[dev]')")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # until it listens (it imports for a few seconds)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"moto's server exited with {proc.returncode}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch, keyed: None) -> str:
    """A fresh bucket on the moto server, reached the way a user's CI would name one."""
    for variable, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(variable, value)
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FIGGEN_REMOTE_OPTIONS", json.dumps({"endpoint_url": moto_server}))
    import s3fs

    bucket = f"figs-{time.monotonic_ns()}"
    s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/blog"


def test_s3_ci_writes_a_clone_reads_and_a_tampered_record_runs_locally(
    site: Site, s3: str, moto_server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import s3fs

    assert set(build(site, s3, write=True)["ran"]) == ALL
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    stored = [p.removeprefix(s3[5:] + "/") for p in fs.find(s3)]
    # 3 records and their objects: the light render's PNG and WebP, the dark render's WebP.
    assert len(stored) == 3 + 3 * 3 and not any(p.endswith(".pickle") for p in stored)
    laptop = clone(site, tmp_path / "laptop")
    report = build(laptop, s3)
    assert report["ran"] == {} and set(report["cached"]) == ALL
    assert images(laptop) == images(site)
    (record,) = fs.glob(f"{s3}/records/beta/*.json")
    found = json.loads(fs.cat_file(record))
    found["record"]["fields"]["color"] = "purple"
    fs.pipe_file(record, json.dumps(found).encode())
    other = clone(site, tmp_path / "other")
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.remote"):
        report = build(other, s3)
    assert "its signature is not" in caplog.text
    assert set(report["ran"]) == {"beta"} and images(other) == images(site)


@pytest.mark.parametrize("write", [False, True])  # a laptop reading, CI writing
def test_an_unreachable_remote_is_a_warning_not_a_failure(
    site: Site, s3: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    write: bool,
) -> None:
    monkeypatch.setenv("FIGGEN_REMOTE_OPTIONS",
                       json.dumps({"endpoint_url": f"http://127.0.0.1:{free_port()}"}))
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.remote"):
        report = build(site, s3, write)
    assert set(report["ran"]) == ALL and report["failed"] == []
    assert caplog.text.count("cannot be reached") == 1
