"""Imported files outside the root: named by their path below their import-path entry, and
found again where the scripts' interpreter imports them (end to end: test_remote.py)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from pelican.plugins.figgen.cache import (
    Cache,
    Expected,
    Hashes,
    Image,
    Record,
    Store,
    scripts_import_path,
)
from pelican_figgen.importpath import (
    ImportPath,
    module_path,
    portable_names,
    root_name,
    this_import_path,
)
from pelican_figgen.imports import project_files


def package(folder: Path, name: str = "mylib") -> Path:
    """A package `name` with a submodule `helpers` and a data file, in folder; folder."""
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text("")
    (folder / name / "helpers.py").write_text("X = 1\n")
    (folder / name / "table.json").write_text("{}")
    return folder


@pytest.mark.parametrize(("name", "file", "rel"), [
    ("mylib.helpers", "/home/ann/src/mylib/helpers.py", "mylib/helpers.py"),
    ("mylib", "/builds/ci/mylib/__init__.py", "mylib/__init__.py"),
    ("mylib.sub", "/x/mylib/sub/__init__.py", "mylib/sub/__init__.py"),
    ("mylib.fast", "/x/mylib/fast.cpython-311-x86_64-linux-gnu.so",
     "mylib/fast.cpython-311-x86_64-linux-gnu.so"),
    ("single", "/x/single.py", "single.py"),
    ("alias", "/x/mylib/helpers.py", None),  # not where its dotted name says
    ("other.helpers", "/x/mylib/helpers.py", None),
])
def test_a_module_is_named_by_its_dotted_name(name: str, file: str, rel: str | None) -> None:
    assert module_path(name, file) == rel


def test_the_same_module_at_two_places_has_one_name(tmp_path: Path) -> None:
    names = set()
    for where in ("home/ann/src", "builds/ci"):
        lib = package(tmp_path / where) / "mylib"
        modules = {"mylib": SimpleNamespace(__file__=str(lib / "__init__.py")),
                   "mylib.helpers": SimpleNamespace(__file__=str(lib / "helpers.py"))}
        found = portable_names([lib / "helpers.py", lib / "__init__.py"], modules, [])
        names.add(frozenset(found.values()))
    assert names == {frozenset({"sys.path:mylib/helpers.py", "sys.path:mylib/__init__.py"})}


def test_a_file_no_module_names_takes_its_folder_s_import_path_entry(tmp_path: Path) -> None:
    lib = package(tmp_path / "src") / "mylib"
    stray = tmp_path / "elsewhere.py"
    stray.write_text("")
    modules = {"mylib.helpers": SimpleNamespace(__file__=str(lib / "helpers.py"))}
    found = portable_names([lib / "table.json", stray], modules, [])
    assert found == {lib / "table.json": "sys.path:mylib/table.json"}  # the stray stays absolute
    # Below a path entry, with no module imported from it.
    assert portable_names([lib / "table.json"], {}, [str(tmp_path / "src")]) == \
        {lib / "table.json": "sys.path:mylib/table.json"}


def test_a_module_reached_through_a_link_is_named_by_its_module(tmp_path: Path) -> None:
    real = package(tmp_path / "real") / "mylib"
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    modules = {"mylib.helpers": SimpleNamespace(__file__=str(tmp_path / "linked/mylib/helpers.py"))}
    found = portable_names([(real / "helpers.py").resolve()], modules, [])
    assert found == {(real / "helpers.py").resolve(): "sys.path:mylib/helpers.py"}


def test_a_root_file_is_never_taken_for_a_portable_name(tmp_path: Path) -> None:
    assert root_name("figs/a.py") == "figs/a.py"
    assert root_name("sys.path:odd/a.py") == "./sys.path:odd/a.py"
    script = tmp_path / "sys.path:figs/a.py"  # a scripts folder of that name, read statically
    script.parent.mkdir()
    script.write_text("import json\n")
    assert project_files(tmp_path, script) == ["./sys.path:figs/a.py"]
    assert Hashes().under(tmp_path, "./sys.path:figs/a.py") == Hashes()(script)


def test_a_name_is_found_where_the_import_path_imports_its_top_module(tmp_path: Path) -> None:
    first, second = package(tmp_path / "first"), package(tmp_path / "second")
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod/single.py").write_text("")
    here = ImportPath((str(tmp_path / "empty"), str(first), str(second), str(tmp_path / "mod")))
    assert here.find("sys.path:mylib/helpers.py") == first / "mylib/helpers.py"  # first wins
    assert here.find("sys.path:mylib/table.json") == first / "mylib/table.json"
    assert here.find("sys.path:single.py") == tmp_path / "mod/single.py"
    (first / "mylib/helpers.py").unlink()  # not in the package imported: missing, not second's
    assert here.find("sys.path:mylib/helpers.py") is None
    assert here.find("sys.path:single.py/x.py") is None  # a module holds no files
    assert here.find("sys.path:nolib/x.py") is None
    assert here.find("sys.path:mylib.py") is None  # mylib is a package, not mylib.py


def test_an_editable_install_s_finder_counts_after_the_path_entries(tmp_path: Path) -> None:
    lib = package(tmp_path / "src")
    mapped = ImportPath((str(tmp_path),), {"mylib": str(lib / "mylib")})
    assert mapped.find("sys.path:mylib/helpers.py") == lib / "mylib/helpers.py"
    shadow = package(tmp_path / "shadow")
    both = ImportPath((str(shadow),), {"mylib": str(lib / "mylib")})
    assert both.find("sys.path:mylib/helpers.py") == shadow / "mylib/helpers.py"


def test_this_interpreter_s_editable_installs_are_found() -> None:
    # The plugin's runtime is installed editable in this venv (setuptools' finder).
    found = this_import_path().find("sys.path:pelican_figgen/harness.py")
    assert found == REPO / "plugins/pelican-figgen/pelican_figgen/harness.py"


def _portable_record(store: Store, digest: str) -> tuple[Record, Expected]:
    record = Record("f", {"sys.path:mylib/helpers.py": digest}, "{}", {},
                    Image("0" * 64, ".png", 1, 1))
    store.save(record)
    return record, Expected("{}", {}, ())


def test_a_portable_input_not_found_here_is_stale_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = package(tmp_path / "src")
    digest = Hashes()(lib / "mylib/helpers.py") or ""
    store = Store(tmp_path / "cache")
    record, want = _portable_record(store, digest)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nowhere"))
    assert Cache(tmp_path, store).judge(record, want).reason == \
        "sys.path:mylib/helpers.py not found on the scripts' import path"
    monkeypatch.setenv("PYTHONPATH", str(lib))  # the run's PYTHONPATH holds it
    assert Cache(tmp_path, store).changed(record, want) == ""
    (lib / "mylib/helpers.py").write_text("X = 2\n")
    assert Cache(tmp_path, store).changed(record, want) == "sys.path:mylib/helpers.py changed"


def test_another_interpreter_is_asked_where_it_imports_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lib = package(tmp_path / "src")
    other = tmp_path / "bin/python"
    other.parent.mkdir()
    other.symlink_to(os.path.realpath(sys.executable))  # the base interpreter, not this venv
    runtime = REPO / "plugins/pelican-figgen"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), str(runtime)]))
    found = scripts_import_path(str(other), tmp_path)
    assert str(lib) in found.entries and str(tmp_path) == found.entries[0]  # the root first
    assert found.find("sys.path:mylib/helpers.py") == lib / "mylib/helpers.py"
    with caplog.at_level(logging.WARNING, logger="pelican.plugins.figgen.cache"):
        gone = scripts_import_path(str(tmp_path / "no-python"), tmp_path)
    assert gone.find("sys.path:mylib/helpers.py") is None
    assert "cannot ask FIGGEN['python']" in caplog.text
