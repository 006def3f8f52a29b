"""Where an imported module comes from: the standard library, a distribution, or a plain file.

The harness sorts every module a run imported: the standard library is skipped; a module in an
installed distribution counts by that distribution's name and version; anything else (the
site's own modules, a checkout on ``PYTHONPATH``, a distribution installed editable, whose
files are source one edits) is a plain file the plugin hashes as an input. Versions are read
from the ``.dist-info`` folder names of each ``sys.path`` entry, a directory listing, so the
plugin reads installed versions the same way and cheaply on every build.
``python -m pelican_figgen.dists`` prints the Python version and every installed
distribution's version, as JSON, for a build whose scripts run in another interpreter.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Dist:
    """An installed distribution: its normalised name, version and whether it is editable."""

    name: str
    version: str
    editable: bool


@dataclass(frozen=True)
class Sources:
    """What a run's modules came from: distributions with versions, and plain files."""

    distributions: dict[str, str]
    files: tuple[Path, ...]  # resolved


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them: 'scikit_learn' -> 'scikit-learn'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(entries: Iterable[str]) -> dict[str, str]:
    """Version of each distribution found in the path entries; earlier entries win, as imports."""
    found: dict[str, str] = {}
    for entry in entries:
        for folder in _dist_infos(entry):
            name, version = _split(folder)
            found.setdefault(name, version)
    return found


def _dist_infos(entry: str) -> list[str]:
    """The .dist-info folder names in one sys.path entry."""
    try:
        return sorted(n for n in os.listdir(entry or ".") if n.endswith(".dist-info"))
    except OSError:
        return []


def _split(folder: str) -> tuple[str, str]:
    """A dist-info folder name's normalised distribution name and version."""
    name, _, version = folder.removesuffix(".dist-info").partition("-")
    return normalize(name), version


class _Entry:
    """One sys.path entry's distributions, and which one provides each top-level name."""

    def __init__(self, entry: str) -> None:
        self.path = entry
        self.folders = _dist_infos(entry)
        self.by_name = {_split(f)[0]: f for f in self.folders}
        self._tops: dict[str, str] | None = None  # top-level name -> dist-info folder
        self._found: dict[str, Dist | None] = {}

    def provider(self, top: str) -> Dist | None:
        """The distribution of this entry that installs the top-level module `top`."""
        if top not in self._found:  # asked once per top-level name, not once per module
            folder = self.by_name.get(normalize(top)) or self.tops().get(top)
            self._found[top] = self._dist(folder) if folder else None
        return self._found[top]

    def tops(self) -> dict[str, str]:
        """Top-level names of every distribution here, from top_level.txt or RECORD."""
        if self._tops is None:  # read only when a name does not match its distribution's
            self._tops = {}
            for folder in self.folders:
                for top in _top_names(Path(self.path, folder)):
                    self._tops.setdefault(top, folder)
        return self._tops

    def _dist(self, folder: str) -> Dist:
        """A dist-info folder as a Dist, editable when its direct_url.json says so."""
        name, version = _split(folder)
        try:
            url = json.loads(Path(self.path, folder, "direct_url.json").read_text())
            editable = bool(url.get("dir_info", {}).get("editable"))
        except (OSError, ValueError, AttributeError):
            editable = False
        return Dist(name, version, editable)


def _top_names(info: Path) -> set[str]:
    """The top-level module names a distribution installs."""
    try:
        return set((info / "top_level.txt").read_text().split())
    except OSError:
        pass
    try:
        lines = (info / "RECORD").read_text().splitlines()
    except OSError:
        return set()
    firsts = {line.split(",")[0].split("/")[0] for line in lines}
    return {_module_name(f) for f in firsts if not f.endswith((".dist-info", ".data")) and f
            and not f.startswith((".", "__pycache__"))}


def _module_name(file: str) -> str:
    """The module name of a top-level file or folder: 'six.py' -> 'six'."""
    return file.split(".")[0]


def _is_stdlib(entry: str) -> bool:
    """Whether a sys.path entry is the standard library's (the interpreter's own folders)."""
    if "site-packages" in entry or "dist-packages" in entry:
        return False
    bases = {os.path.abspath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    return any(entry == b or entry.startswith(b + os.sep) for b in bases)


class Classifier:
    """Sorts module files into standard library, distributions and plain files."""

    def __init__(self, path: Iterable[str] | None = None) -> None:
        entries = {os.path.abspath(e or ".") for e in (sys.path if path is None else path)}
        self.entries = sorted(entries, key=len, reverse=True)  # the deepest entry first
        self._by_entry: dict[str, _Entry] = {}
        self._origins: dict[str, Dist | Path | None] = {}  # file -> origin, asked once

    def for_path(self, path: Iterable[str]) -> Classifier:
        """A classifier for another sys.path that keeps what this one found still true.

        An answer stays true unless an entry it was found under left or a new entry holds its
        file (the deepest entry decides); a forked figure adds its script's folder to the warm
        server's path, which holds no library. The folders' listings are read again: a
        distribution installed since is found, one the server preloaded restarts the server.
        """
        other = Classifier(path)
        if set(self.entries) <= set(other.entries):
            added = [e.rstrip(os.sep) + os.sep for e in other.entries if e not in self.entries]
            other._origins = {f: o for f, o in self._origins.items()
                              if not any(f.startswith(e) for e in added)}
        return other

    def origin(self, file: str) -> Dist | Path | None:
        """None for the standard library, the Dist a file belongs to, or the file itself."""
        if file not in self._origins:
            self._origins[file] = self._origin(file)
        return self._origins[file]

    def _origin(self, file: str) -> Dist | Path | None:
        """origin(), not remembered."""
        file = os.path.abspath(file)
        entry = self._entry_of(os.path.dirname(file))
        if entry is not None:
            if _is_stdlib(entry):
                return None
            top = _module_name(os.path.relpath(file, entry).split(os.sep)[0])
            if entry not in self._by_entry:
                self._by_entry[entry] = _Entry(entry)
            dist = self._by_entry[entry].provider(top)
            if dist is not None and not dist.editable:  # an editable one's files are source
                return dist
        return Path(file).resolve()

    @cache  # noqa: B019 (one classifier per run: its cache goes with it)
    def _entry_of(self, folder: str) -> str | None:
        """The deepest sys.path entry a folder is in."""
        for entry in self.entries:
            if folder == entry or folder.startswith(entry.rstrip(os.sep) + os.sep):
                return entry
        return None

    def sources(self, files: Iterable[str]) -> Sources:
        """The distributions (with versions) and plain files that module files come from."""
        dists: dict[str, str] = {}
        plain: set[Path] = set()
        for file in files:
            found = self.origin(file)
            if isinstance(found, Dist):
                dists[found.name] = found.version
            elif found is not None and found.is_file():
                plain.add(found)
        return Sources(dict(sorted(dists.items())), tuple(sorted(plain)))


def module_files(skip: Collection[str] = (), keep: Collection[str] = ()) -> list[str]:
    """The files of the modules this process imported, but those in `skip` not in `keep`."""
    files = []
    for name, module in list(sys.modules.items()):
        if name in skip and name not in keep:  # a warm server's, which this script never used
            continue
        file = getattr(module, "__file__", None)
        # torch.ops and torch.classes carry a bare relative __file__ that names no real file.
        if isinstance(file, str) and os.path.isabs(file):
            files.append(file)
    return files


_SHARED: list[Classifier] = []  # this process's, for its sys.path of the moment


def shared() -> Classifier:
    """One classifier for this process, for sys.path as it is now.

    A figure forked from the warm server starts from the server's (``forkserver.WARM``),
    which sorted the modules it preloaded once for all the figures it forks.
    """
    path = list(sys.path)
    if not _SHARED or _SHARED[0].entries != Classifier(path).entries:
        server = sys.modules.get("pelican_figgen.forkserver")
        base = _SHARED[0] if _SHARED else getattr(server, "WARM", None)
        _SHARED[:] = [base.for_path(path) if base is not None else Classifier(path)]
    return _SHARED[0]


def versions_of(tops: Iterable[str], fresh: bool = False) -> dict[str, str]:
    """Versions of the distributions providing these top-level modules, none imported.

    ``fresh`` reads the installed distributions anew: a long-lived process (make serve) must
    see an upgrade that the process's shared classifier, which remembers, would not.
    """
    import importlib.machinery  # here: only a cached intermediate asks

    classifier, files = Classifier() if fresh else shared(), []
    for top in set(tops):
        module = sys.modules.get(top)
        file = getattr(module, "__file__", None) if module else None
        if not file:
            spec = importlib.machinery.PathFinder.find_spec(top)
            file = spec.origin if spec and spec.has_location else None
        if file:
            files.append(file)
    return classifier.sources(files).distributions


if __name__ == "__main__":
    print(json.dumps({"python": sys.version.split()[0], **installed(sys.path)}))


class InstalledVersions:
    """Versions of the distributions providing top-level modules, as installed now.

    For a long-lived process keeping a warm server (make serve, a Dask worker): an upgrade
    must be seen, but reading every top_level.txt again cost each build 50 ms, so the versions
    are read anew only when the installed distributions (a listing per path entry) change.
    """

    def __init__(self) -> None:
        self._last: tuple[str, dict[str, str]] = ("", {})

    def __call__(self, tops: Iterable[str]) -> dict[str, str]:
        """The versions for these top-level modules, read again if anything was installed."""
        tops = sorted(set(tops))
        listing = json.dumps([tops, installed(sys.path)])
        if listing != self._last[0]:
            self._last = (listing, versions_of(tops, fresh=True) if tops else {})
        return self._last[1]
