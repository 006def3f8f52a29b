"""Discover phase: find figure references in the articles and resolve them to scripts."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from .errors import FigureError
from .kept import KeptMap
from .markdown_ext import MARKER_TAG
from .settings import FiggenSettings, seconds

MARKER = re.compile(rf"<{MARKER_TAG}\b[^>]*>\s*</{MARKER_TAG}>")
# A `{figure}` link that did not stand alone in its paragraph (code samples may show it freely).
STRAY = re.compile(r"""(?:src|href)\s*=\s*["']\{figure\}(?P<name>[^"']*)""")
# In reStructuredText, where `{figure}` is no syntax at all, any `{figure}name` in the text too.
STRAY_TEXT = re.compile(r"\{figure\}(?P<name>[^\s<\"']*)")
# Code samples, where `{figure}` may be shown freely (docutils writes inline code as <tt>).
CODE = re.compile(r"<(pre|code|tt)\b.*?</\1>", re.S | re.I)
HOW = {
    "markdown": 'a figure reference must be a paragraph of its own, written '
                '![alt text]({figure}name "caption")',
    "rst": "a figure reference in reStructuredText is the directive '.. figgen:: name' with "
           "its :alt: and :caption: options",
}
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*")
# What a script may say in __figure__, each with its check and what it accepts: data files
# it reads, its own time-out, whether it wants a GPU (it then runs in the GPU queue when the
# machine has one).
DECLARABLE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(p, str) and p for p in v),
             "a list of data file paths (str), relative to the project root"),
    "timeout": (lambda v: _is_seconds(v), "a number of seconds > 0"),
    "gpu": (lambda v: isinstance(v, bool), "True or False"),
}


@dataclass(frozen=True)
class FigureRef:
    """One reference to a figure in one article."""

    article: str  # the article's source path, for messages
    name: str
    alt: str
    caption: str
    marker: str  # the marker HTML the embed phase replaces
    problem: str = ""  # what the syntax found wrong (a misspelt directive option), or ""


@dataclass(frozen=True)
class Figure:
    """A figure script and what it declared about itself."""

    name: str
    script: Path
    data: tuple[Path, ...]
    timeout: float
    params: Mapping[str, Any]
    gpu: bool = False  # declared: it runs in the GPU queue when there is a GPU


class _Attrs(HTMLParser):
    """Collect the attributes of the first start tag fed in."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs = self.attrs or {k: v or "" for k, v in attrs}


def find_refs(article: str, html: str) -> list[FigureRef]:
    """List the figure references marked in an article's HTML, malformed names included."""
    refs = []
    for match in MARKER.finditer(html):
        parser = _Attrs()
        parser.feed(match.group())
        a = parser.attrs
        refs.append(FigureRef(article, a.get("name", ""), a.get("alt", ""),
                              a.get("caption", ""), match.group(), a.get("problem", "")))
    return refs


def stray_errors(article: str, html: str, syntax: str = "markdown") -> list[FigureError]:
    """An error for each `{figure}` the syntax did not read: never published as it is.

    In Markdown that is a `{figure}` link or image not in a paragraph of its own; in
    reStructuredText (`syntax` "rst") any `{figure}name` outside code samples.
    """
    rest = MARKER.sub("", html)
    strays = STRAY_TEXT.finditer(CODE.sub("", rest)) if syntax == "rst" else STRAY.finditer(rest)
    return [FigureError(article, stray["name"], HOW[syntax]) for stray in strays]


def script_names(scripts: Path) -> list[str]:
    """Names of every figure script below the scripts folder ('sub/name' for sub/name.py)."""
    paths = scripts.rglob("*.py") if scripts.is_dir() else []
    return sorted(
        p.relative_to(scripts).with_suffix("").as_posix()
        for p in paths
        if not p.name.startswith("_")
    )


Hasher = Callable[[Path], "str | None"]  # a file's sha256 (cache.Hashes), None: absent


def resolve(
    ref: FigureRef, settings: FiggenSettings, names: list[str], hashes: Hasher | None = None
) -> Figure:
    """Check a reference and find the script it names, with the script's declarations."""
    if ref.problem:
        raise FigureError(ref.article, ref.name, ref.problem)
    if not ref.alt.strip():
        raise FigureError(ref.article, ref.name, "alt text is empty: say what the figure shows")
    if not ref.caption.strip():
        raise FigureError(ref.article, ref.name, 'no caption: add one, ({figure}name "caption")'
                          " in Markdown, :caption: in reStructuredText")
    return load_figure(ref.article, ref.name, settings, names, hashes)


def load_figure(
    article: str, name: str, settings: FiggenSettings, names: list[str],
    hashes: Hasher | None = None,
) -> Figure:
    """Find the script of a figure name, refusing any path out of the scripts folder.

    With `hashes`, its declarations are taken from the last build's when the script's hash
    is the same (DECLARED): a no-op build reads and parses no script.
    """
    if not NAME.fullmatch(name):
        cause = f"not a figure name (letters, digits, _ - and /): {name!r}"
        raise FigureError(article, name, cause)
    if name.rpartition("/")[2].startswith("_"):
        raise FigureError(article, name, f"{name}.py starts with _: files starting with _ are "
                          "helpers, not figures (rename it, or reference a figure script)")
    if not settings.scripts.is_dir():
        raise FigureError(article, name, f"the scripts folder {settings.scripts} does not "
                          "exist: create it, or set FIGGEN['scripts'] to the folder of the "
                          "figure scripts (relative to FIGGEN['root'])")
    script = (settings.scripts / f"{name}.py").resolve()  # follows links: a link out is refused
    if not script.is_relative_to(settings.scripts):
        raise FigureError(article, name, f"{name}.py leads to {script}, outside the scripts "
                          f"folder {settings.scripts} (FIGGEN['scripts']): refused")
    if name not in names or not script.is_file():
        import difflib  # here: only a wrong name needs it

        close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise FigureError(article, name, f"no script {name}.py in {settings.scripts} "
                          f"(FIGGEN['scripts']){hint}")
    sha256 = hashes(script) if hashes is not None else None
    read = functools.partial(declarations, script, article, name)
    declared = DECLARED.get(sha256, read) if sha256 else read()
    data = tuple(_data_path(settings.root, p, article, name) for p in declared.get("data", []))
    return Figure(
        name=name,
        script=script,
        data=data,
        timeout=float(declared.get("timeout", settings.timeout)),
        params=figure_params(name, settings.params),
        gpu=bool(declared.get("gpu", False)),
    )


# Each script's `__figure__` by the script's hash.
DECLARED = KeptMap("declarations", __file__)


def figure_params(name: str, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A figure's parameters: those of each folder it lies in, then its own, the last winning."""
    parts = name.split("/")
    merged: dict[str, Any] = {}
    for depth in range(1, len(parts) + 1):  # "imagenet", then "imagenet/fgsm"
        merged |= params.get("/".join(parts[:depth]), {})
    return merged


def declarations(script: Path, article: str, name: str) -> dict[str, Any]:
    """Read a script's literal `__figure__ = {...}` without running it."""
    source = script.read_text(encoding="utf-8")
    if "__figure__" not in source:  # nothing declared: no parse (a no-op build counts them)
        return {}
    try:
        tree = ast.parse(source, filename=str(script))
    except SyntaxError as err:
        raise FigureError(article, name, f"{script.name} does not parse: {err}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__figure__" for t in node.targets
        ):
            return _checked(node.value, script, article, name)
    return {}


def _checked(node: ast.expr, script: Path, article: str, name: str) -> dict[str, Any]:
    """The literal dict of a `__figure__`, each key checked against DECLARABLE."""
    try:
        found = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        found = None  # not a literal (a name, a call, an unhashable key)
    if not isinstance(found, dict):
        cause = f"{script.name}: __figure__ must be a literal dict, such as {{'timeout': 120}}"
        raise FigureError(article, name, cause)
    for key, value in found.items():
        if key not in DECLARABLE:
            cause = f"{script.name}: __figure__ has unknown key {key!r} (known: " \
                f"{', '.join(DECLARABLE)})"
            raise FigureError(article, name, cause)
        check, accepts = DECLARABLE[key]
        if not check(value):
            cause = f"{script.name}: __figure__[{key!r}] is {value!r}; expected {accepts}"
            raise FigureError(article, name, cause)
    return found


def _is_seconds(value: Any) -> bool:
    """Whether a value is a time-out the settings would accept too."""
    try:
        seconds(value)
    except (TypeError, ValueError):
        return False
    return True


def _data_path(root: Path, declared: str, article: str, name: str) -> Path:
    """Resolve a declared data file, refusing anything outside the project."""
    path = (root / declared).resolve()  # follows links: a link out of the project is refused
    if not path.is_relative_to(root):
        raise FigureError(article, name, f"data file {declared} is outside the project "
                          f"{root} (FIGGEN['root']): refused")
    if not path.is_file():
        raise FigureError(article, name, f"declared data file {declared} does not exist in "
                          f"the project {root} (FIGGEN['root'])")
    return path
