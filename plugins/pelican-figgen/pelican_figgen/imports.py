"""What a Python file imports, found by reading it: nothing is imported or run.

Used three times: the build preloads the libraries that several figures import
(pelican_figgen.forkserver), a cached intermediate's key covers the project files its module
imports (pelican_figgen.intermediates), and the plugin runs
``python -m pelican_figgen.imports ROOT SCRIPT`` to learn what a failed run read when the run
could not say (it crashed or was killed). Every import statement counts, including those
inside functions and ``try`` blocks: a lazy import is still a dependency. A file that does not
parse is listed, its imports unknown.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Imports:
    """A file's transitive imports: project files (the file first) and other modules."""

    files: tuple[Path, ...]  # resolved paths below the search folders
    external: tuple[str, ...]  # dotted names of modules from installed packages, sorted
    # `pkg.x` of `from pkg import x`, pkg installed: a module only if x is one, unknown here.
    maybe_external: tuple[str, ...] = ()


def closure(path: Path, search: Iterable[Path]) -> Imports:
    """Follow the imports of `path` through the project files found in `search` folders."""
    folders = tuple(p.resolve() for p in search)
    tops = _top_names(folders)
    todo, files, external, maybe_external = [path.resolve()], [], set(), set()
    while todo:
        current = todo.pop(0)
        if current in files:
            continue
        files.append(current)
        for name, maybe in _imported(current, _package(current, folders)):
            # Most names are installed libraries': a name no folder holds needs no stat.
            found = _project_files(name, folders) if name.partition(".")[0] in tops else []
            todo.extend(found)
            if not found:
                (maybe_external if maybe else external).add(name)
    maybe_external = {n for n in maybe_external if n.rpartition(".")[0] in external}
    return Imports(tuple(files), tuple(sorted(external)), tuple(sorted(maybe_external)))


def _package(path: Path, folders: tuple[Path, ...]) -> str:
    """The dotted package a project file belongs to ('' for a top-level file)."""
    for folder in folders:
        if path.is_relative_to(folder):
            return ".".join(path.relative_to(folder).parent.parts)
    return ""


# What each file's source imports, by content: a figure forked from the warm server starts
# with what the server read (it read every script's imports to choose what to preload).
_SERVER = sys.modules.get("pelican_figgen.forkserver")
PARSED: dict[tuple[Path, str, bytes], tuple[tuple[str, bool], ...]] = getattr(
    _SERVER, "PARSED", {})


def _imported(path: Path, package: str) -> tuple[tuple[str, bool], ...]:
    """Absolute dotted names a file's import statements name; True marks a mere candidate."""
    source = path.read_bytes()
    key = (path, package, hashlib.sha256(source).digest())
    if key not in PARSED:
        PARSED[key] = _parsed(source, path, package)
    return PARSED[key]


def _parsed(source: bytes, path: Path, package: str) -> tuple[tuple[str, bool], ...]:
    """_imported(), of this source."""
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError):  # still a dependency: editing it may fix what it broke
        return ()
    names: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((a.name, False) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = _absolute(node.module, node.level, package)
            if base:
                names.append((base, False))
                # `from pkg import x` imports the module pkg.x when there is one.
                names.extend((f"{base}.{a.name}", True) for a in node.names if a.name != "*")
    return tuple(dict.fromkeys(names))


def _absolute(module: str | None, level: int, package: str) -> str:
    """Resolve a possibly relative import to a dotted name ('' when it leaves the package)."""
    if level == 0:
        return module or ""
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return ""
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _top_names(folders: tuple[Path, ...]) -> set[str]:
    """The names an import of a project module may start with: the folders' entries."""
    names: set[str] = set()
    for folder in folders:
        try:
            entries = os.listdir(folder)
        except OSError:  # not there (any more): it holds no module
            continue
        names.update(entry.removesuffix(".py") for entry in entries)
    return names


def _project_files(name: str, folders: tuple[Path, ...]) -> list[Path]:
    """The files that importing `name` runs (packages first), when it is a project module.

    A folder without ``__init__.py`` on the way is a namespace package: no file of its own.
    The last part must be a file, a module or a package's ``__init__.py``, so that a folder
    that merely shares an installed package's name is not taken for it.
    """
    parts = name.split(".")
    for folder in folders:
        found: list[Path] = []
        for depth in range(1, len(parts) + 1):
            stem = folder.joinpath(*parts[:depth])
            last = depth == len(parts)
            if (stem / "__init__.py").is_file():
                found.append(stem / "__init__.py")
            elif last and stem.with_suffix(".py").is_file():
                found.append(stem.with_suffix(".py"))
            elif last or not stem.is_dir():
                break
            if last:
                return found
    return []


def project_files(root: Path, script: Path) -> list[str]:
    """The project files below `root` a script imports, transitively, itself first."""
    from pelican_figgen.importpath import root_name  # here: a run never asks for this list

    found = closure(script, [root, script.parent]).files  # its folder: how `python script` finds
    root = root.resolve()
    return [root_name(f.relative_to(root).as_posix()) for f in found if f.is_relative_to(root)]


if __name__ == "__main__":  # python -m pelican_figgen.imports ROOT SCRIPT: a JSON list on stdout
    print(json.dumps(project_files(Path(sys.argv[1]), Path(sys.argv[2]))))
