"""Imported files outside the site's root, named the same on every machine, and found again.

A plain file a run imports from outside the root (a checkout on ``PYTHONPATH``, the source of a
distribution installed editable) is named by its path below the import-path entry it was
imported from, after ``MARK``: ``sys.path:mylib/helpers.py`` for the module ``mylib.helpers``,
wherever the checkout lives. The build finds the file again as the scripts' interpreter would
import it: the first entry of its import path holding the top-level module (the standard
library's ``PathFinder``), else the editable install that maps it; there the rest of the name
is the file. ``python -m pelican_figgen.importpath`` prints that import path (``ImportPath``)
as JSON, for a build whose scripts run in another interpreter.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.machinery import PathFinder
from pathlib import Path, PurePath
from typing import Any

# A root-relative name never starts with it: root_name puts "./" before one that would.
MARK = "sys.path:"


def is_portable(name: str) -> bool:
    """Whether an input's name is one of a file outside the root, below an import-path entry."""
    return name.startswith(MARK)


def root_name(rel: str) -> str:
    """A root-relative posix path as an input's name: never mistaken for a portable one."""
    return f"./{rel}" if is_portable(rel) else rel


def module_path(name: str, file: str) -> str | None:
    """A module's file below its import-path entry ('mylib/helpers.py'); None if it is not there.

    None for a module whose file does not lie where its dotted name says (an alias in
    sys.modules, a file loaded by hand).
    """
    if not name:
        return None
    parts, path = name.split("."), PurePath(file)
    if path.name.partition(".")[0] == "__init__":
        tail = (*parts, path.name)
    elif path.name.partition(".")[0] == parts[-1]:  # 'helpers.py', 'fast.cpython-311-...so'
        tail = (*parts[:-1], path.name)
    else:
        return None
    return "/".join(tail) if path.parts[-len(tail):] == tail else None


def portable_names(files: Iterable[Path], modules: Mapping[str, Any],
                   entries: Sequence[str]) -> dict[Path, str]:
    """The portable name of each resolved file that a module or an import-path entry holds.

    A module's own file is named by its dotted name; another file (one a cached intermediate's
    key read, not imported by this run) by the deepest folder it lies in among those the
    modules were imported from and the path entries. A file in none of them is left out.
    """
    wanted = set(files)
    if not wanted:  # nothing outside the root: no module is looked at
        return {}
    by_file = {m.__file__: n for n, m in list(modules.items())
               if isinstance(getattr(m, "__file__", None), str) and os.path.isabs(m.__file__)}
    # Only the wanted files' modules are named: a run forked from a server that preloaded
    # torch has over a thousand modules, and naming each cost 13 ms a run.
    found = {file: rel for file in wanted
             if (rel := module_path(by_file.get(str(file), ""), str(file)))}
    rest = wanted - set(found)
    if rest:  # the folders modules were imported from, links resolved, and the path entries
        named = {file: rel for file, name in by_file.items() if (rel := module_path(name, file))}
        bases = {Path(b).resolve() for b in {file[:-len(rel)] for file, rel in named.items()}}
        bases |= {Path(e).resolve() for e in entries if e}
        for file in rest:
            holders = [b for b in bases if file.is_relative_to(b)]
            if holders:
                deepest = max(holders, key=lambda b: len(b.parts))
                found[file] = file.relative_to(deepest).as_posix()
    return {file: MARK + rel for file, rel in found.items()}


@dataclass(frozen=True)
class ImportPath:
    """Where an interpreter imports from: its path entries in order, then its editable installs."""

    entries: tuple[str, ...]
    editable: Mapping[str, str] = field(default_factory=dict)  # top-level name -> its path

    def find(self, name: str) -> Path | None:
        """The file a portable name names here; None when this import path holds none."""
        first, _, rest = name.removeprefix(MARK).partition("/")
        folders, module = self._top(first.partition(".")[0])  # 'mylib' of 'mylib.py' too
        if folders:
            places = [folder / rest for folder in folders] if rest else []
        else:  # a module file stands for itself alone: 'mylib/x.py' is not in 'mylib.py'
            places = [module] if module and not rest and module.name == first else []
        hits = [place for place in places if place.is_file()]
        return hits[0] if hits else None

    def _top(self, top: str) -> tuple[list[Path], Path | None]:
        """Where a top-level module is imported from: a package's folders, or a module's file."""
        # The path entries first, as the meta path asks them before an editable install's finder.
        spec = PathFinder.find_spec(top, list(self.entries))
        if spec is not None and spec.submodule_search_locations is not None:
            return [Path(p) for p in spec.submodule_search_locations], None
        if spec is not None:
            return [], Path(spec.origin) if spec.origin else None
        found = self.editable.get(top)
        if found is None:
            return [], None
        return ([Path(found)], None) if Path(found).is_dir() else ([], Path(found))


def editable_installs() -> dict[str, str]:
    """Top-level name -> path of each module an editable install's finder maps (setuptools)."""
    found: dict[str, str] = {}
    for finder in sys.meta_path:
        module = sys.modules.get(getattr(finder, "__module__", "") or "")
        mapping = getattr(module, "MAPPING", None) if module else None
        # setuptools' __editable___*_finder modules: MAPPING holds each top-level name's path.
        if "editable" in getattr(module, "__name__", "") and isinstance(mapping, dict):
            for top, path in mapping.items():
                found.setdefault(str(top), str(path))
    return found


def this_import_path(first: Sequence[str] = ()) -> ImportPath:
    """This interpreter's import path, with `first` (a run's PYTHONPATH) before sys.path."""
    return ImportPath(tuple(dict.fromkeys([*first, *sys.path])), editable_installs())


if __name__ == "__main__":  # python -m pelican_figgen.importpath: the import path as JSON
    here = this_import_path()
    print(json.dumps({"entries": here.entries, "editable": here.editable}))
