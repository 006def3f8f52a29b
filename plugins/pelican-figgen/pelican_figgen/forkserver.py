"""A warm start for figure scripts: import the shared libraries once, then fork per script.

Each figure script run as its own interpreter pays Python's start-up and its imports (torch,
matplotlib: about 2-3 s here) before it computes anything. The build starts this server
instead, with the scripts it is about to run; the server imports every library that two or
more of them import (read statically, see pelican_figgen.imports) and then forks one child per
script, under a supervisor of its own (pelican_figgen.reaper: nothing the script starts outlives
its run). A child is a fresh process as far as the script can tell: its own session, stdin and
stdout on /dev/null, stderr to a file, the environment and arguments it was given, the
server's own project modules forgotten, the script run as ``__main__``, and an exit as
Python's (non-daemon threads joined, atexit handlers run, files it left open flushed).

Protocol, one JSON object per line. The server says ``{"ready", "preloaded",
"cuda_initialized"}`` once its imports are done. Then the build writes ``{"id", "argv", "env",
"cwd", "stderr", "report"}`` per script and the server answers ``{"id", "pid"}`` at once (or
``{"id", "error"}`` when it cannot fork) and ``{"id", "exit"}`` (the supervisor's exit
code) when it ends; the supervisor writes how the script ended to the ``report`` file. A
request may add ``"path"``, folders put ahead of the server's import path in that child only.
``{"id", "preload": [names]}`` imports more libraries for the children to come and answers
``{"id", "preloaded", "cuda_initialized"}``. End of input stops the server.

Linux only (``os.pidfd_open``): the build starts each script itself elsewhere.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import gc
import importlib
import importlib.machinery
import importlib.util
import io
import json
import os
import runpy
import select
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

from pelican_figgen import contract, dists, reaper
from pelican_figgen.imports import PARSED, closure  # noqa: F401 (PARSED: children read it)


def shared_libraries(scripts: list[Path], root: Path) -> list[str]:
    """Modules of installed packages that at least two of the scripts import."""
    counts: Counter[str] = Counter()
    for script in scripts:
        # Preloading what one script alone imports would save nothing, and would slow down
        # a rebuild whose one script no longer needs it (a cached intermediate, say).
        try:
            found = closure(script, [root, script.parent])
        except (SyntaxError, ValueError, OSError):  # its run will say what is wrong with it
            continue
        counts.update(found.external + found.maybe_external)
    stdlib = sys.stdlib_module_names
    shared = {n for n, c in counts.items() if c >= 2 and n.partition(".")[0] not in stdlib}
    # What the harness's ctx.save imports when a script draws with matplotlib (no script
    # names it): without it, every run imported the Agg canvas and Pillow's plugins anew.
    if any(n.partition(".")[0] == "matplotlib" for n in shared):
        shared.update(SAVE_IMPORTS)
    return sorted(shared)


# Imported by matplotlib's savefig and Pillow's first save (PIL.Image.preinit), in every run.
SAVE_IMPORTS = ("matplotlib.backends.backend_agg", "PIL.BmpImagePlugin", "PIL.GifImagePlugin",
                "PIL.JpegImagePlugin", "PIL.PngImagePlugin", "PIL.PpmImagePlugin")
# What the preloading added to sys.modules (in a child: every module it found loaded), and
# each module's subtree: those first loaded while its own import ran. A child's record names
# only the libraries its own run imports, each with what importing it alone would load.
LOADED_BY: dict[str, set[str]] = {}
SUBTREE: dict[str, frozenset[str]] = {}
# And the modules each import asked for that were loaded already (by an earlier import): a run
# alone that imports the module without that earlier one loads them inside it.
ASKED: dict[str, set[str]] = {}
SELF = "pelican_figgen.forkserver"
PRELOADED: set[str] = set()
WARM: Any = None  # a dists.Classifier that sorted the preloaded modules, for the children
REQUESTED: set[str] = set()  # in a child: every absolute module name an import asked for


def preload(names: list[str]) -> list[str]:
    """Import what can be imported; a failure is the script's to report, when it imports it."""
    done = []
    with _Nesting():
        for name in names:  # sorted: a package before its modules
            before = set(sys.modules)
            try:
                # `from pkg import x`: x may be a module (scipy.ndimage) or not (numpy.ndarray).
                if "." in name and importlib.util.find_spec(name) is None:
                    continue
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 (any import error: the script raises it itself)
                continue
            LOADED_BY[name] = set(sys.modules) - before
            done.append(name)
    return done


class _Nesting:
    """While preloading: note each module's subtree (what was first loaded inside its import).

    A finder placed first asks the others for the spec, as the import system would, and
    wraps its loader's exec_module; only the server pays for it, never a script run alone.
    """

    def __init__(self) -> None:
        self.wrapped: list[Any] = []
        self.stack: list[str] = []  # the modules whose import is running, innermost last
        self.original = builtins.__import__

    def __enter__(self) -> _Nesting:
        sys.meta_path.insert(0, self)  # type: ignore[arg-type]
        builtins.__import__ = self._import
        return self

    def __exit__(self, *exc: object) -> None:
        builtins.__import__ = self.original
        sys.meta_path.remove(self)  # type: ignore[arg-type]
        for loader in self.wrapped:  # the children use the loaders as they were
            del loader.exec_module

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        """The spec the next finders give, its loader watched."""
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:  # type: ignore[arg-type]
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                self._watch(spec.loader)
                return spec
        return None

    def _watch(self, loader: Any) -> None:
        """Wrap one loader object's exec_module (not its class's: a class serves others)."""
        # A class as loader (builtin, frozen: the standard library's), one already wrapped,
        # or one that keeps no attributes of its own: its modules are not watched.
        own = getattr(loader, "__dict__", None)
        if isinstance(loader, type) or own is None or "exec_module" in own \
                or not hasattr(loader, "exec_module"):
            return
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            if threading.current_thread() is not threading.main_thread():
                return original(module)  # the stack is the main thread's imports
            # The module is in sys.modules already, last: what follows it is its subtree.
            last, count = next(reversed(sys.modules)), len(sys.modules)
            self.stack.append(module.__spec__.name)
            try:
                return original(module)
            finally:
                self.stack.pop()
                SUBTREE[module.__spec__.name] = _added_since(last, count)

        loader.exec_module = exec_module
        self.wrapped.append(loader)


    def _import(self, name: str, globals: Any = None, locals: Any = None,  # noqa: A002
                fromlist: Any = (), level: int = 0) -> Any:
        """builtins.__import__, noting what a running import asks for that is loaded already."""
        if self.stack and threading.current_thread() is threading.main_thread():
            loaded = [n for n in _asked(name, globals, fromlist, level) if n in sys.modules]
            ASKED.setdefault(self.stack[-1], set()).update(loaded)
        return self.original(name, globals, locals, fromlist, level)


def _asked(name: str, globals: Any, fromlist: Any, level: int) -> list[str]:
    """The absolute names an import statement asks for: the module, and those it names."""
    if level:  # relative: resolved against the importing module's package
        package = (globals or {}).get("__package__") or ""
        try:
            name = importlib.util.resolve_name("." * level + name, package)
        except ValueError:
            return []
    items = [i for i in fromlist or () if isinstance(i, str) and i != "*"]
    return [name, *(f"{name}.{i}" for i in items)]


def _added_since(last: str, count: int) -> frozenset[str]:
    """The modules put in sys.modules after `last` (of `count` then), whoever put them there.

    Whatever the module's own code put there (an alias, a module it made) counts, as what
    the finders loaded does: sys.modules keeps the order its entries were added in.
    """
    added = []
    for name in reversed(sys.modules):
        if name == last:
            return frozenset(added)
        added.append(name)
    # `last` was removed meanwhile: the newest entries, as many as were added.
    return frozenset(added[:max(len(sys.modules) - count, 0)])


# Source file -> ((mtime_ns, size), code): the project's modules and the runtime's, compiled
# once by the server. A child imports each anew (its record must list it) but compiles none:
# the runs write no bytecode (PYTHONDONTWRITEBYTECODE), so each compiled the harness and the
# project's modules again (40 ms a run here). A file changed since is compiled as usual.
CODE: dict[str, tuple[tuple[int, int], Any]] = {}


def precompile(scripts: list[Path], root: Path) -> None:
    """Compile the modules the scripts' runs import themselves, and have imports use them."""
    files = {str(p) for p in Path(contract.__file__).parent.glob("*.py")}
    for script in scripts:
        with contextlib.suppress(SyntaxError, ValueError, OSError):  # its run will say
            files.update(str(f) for f in closure(script, [root, script.parent]).files[1:])
    for file in files:
        with contextlib.suppress(SyntaxError, ValueError, OSError):
            stat = os.stat(file)
            loader = importlib.machinery.SourceFileLoader("", file)
            CODE[file] = ((stat.st_mtime_ns, stat.st_size),
                          loader.source_to_code(loader.get_data(file), file))
    importlib.machinery.SourceFileLoader.get_code = _get_code  # type: ignore[method-assign]


_COMPILE = importlib.machinery.SourceFileLoader.get_code


def _get_code(self: Any, fullname: str) -> Any:
    """SourceFileLoader.get_code, from the server's compiled code while the file is the same."""
    file = self.get_filename(fullname)
    kept = CODE.get(file)
    if kept is not None:
        with contextlib.suppress(OSError):
            stat = os.stat(file)
            if (stat.st_mtime_ns, stat.st_size) == kept[0]:
                return kept[1]
    return _COMPILE(self, fullname)


def preloaded_for() -> tuple[set[str], set[str]]:
    """In a child: the modules it found loaded, and those of them its run imported.

    A preloaded module counts only when the run executed an import of it (or of a module
    inside it), with the packages it is in and what each of their imports first loaded: a
    lazy import the run never reached counts as little as in a run alone, which never
    loaded it.
    """
    if not PRELOADED:  # not a forked child: every module in sys.modules is the script's own
        return set(), set()
    wanted: set[str] = set()
    # `seen`: with torch preloaded, the subtrees ask for the same modules tens of thousands
    # of times; each name is expanded once (a third of a small figure's run went here).
    todo, done, seen = list(REQUESTED), set(), set()
    while todo:
        asked = todo.pop()
        if asked in seen:
            continue
        seen.add(asked)
        for name in _parents(asked):  # importing a.b.c runs a, a.b and a.b.c
            if name in PRELOADED and name not in done:
                done.add(name)
                for module in (name, *SUBTREE.get(name, ())):
                    if module in wanted:  # nested subtrees overlap: its asks are queued
                        continue
                    wanted.add(module)
                    # What it found loaded, alone loads.
                    todo.extend(a for a in ASKED.get(module, ()) if a not in seen)
    # This server under another name (multiprocessing's __mp_main__ is the __main__ it found):
    # alone, that name is the script's own module.
    server = sys.modules.get(SELF)
    return set(PRELOADED), {n for n in wanted if sys.modules.get(n) is not server}


def _parents(name: str) -> list[str]:
    """A dotted name and the packages it is in: 'a.b.c' -> a, a.b, a.b.c."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts) + 1)]


def _note_imports() -> None:
    """In a child: note every module an import statement or import_module asks for."""
    original, by_name = builtins.__import__, importlib.import_module

    def note(name: str, globals: Any = None, locals: Any = None,  # noqa: A002 (its names)
             fromlist: Any = (), level: int = 0) -> Any:
        module = original(name, globals, locals, fromlist, level)  # raises as it would
        REQUESTED.update(_asked(name, globals, fromlist, level))  # `from pkg import mod` too
        return module

    def note_module(name: str, package: str | None = None) -> Any:
        module = by_name(name, package)
        REQUESTED.add(module.__name__)
        return module

    builtins.__import__ = note
    importlib.import_module = note_module


def serve(scripts: list[Path], root: Path, out: int) -> None:
    """Preload, say ready on `out`, then fork a child per request until the input ends."""
    start = time.perf_counter()
    # Run as __main__: registered under its name, the harness of a child finds what it preloaded.
    sys.modules.setdefault(SELF, sys.modules[__name__])
    loaded = preload(shared_libraries(scripts, root))
    precompile(scripts, root)
    global WARM
    WARM = dists.Classifier()
    WARM.sources(dists.module_files())  # each child's record sorts these: once, here
    # What the imports made is never collected in a child: its collections then scan only the
    # script's objects, and leave the shared pages alone (no copy on write).
    gc.freeze()
    torch = sys.modules.get("torch")
    cuda = bool(torch and torch.cuda.is_initialized())  # a fork could not use it: GPU runs
    _send(out, {"ready": round(time.perf_counter() - start, 3), "preloaded": loaded,
                "cuda_initialized": cuda})
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    pending = b""
    while True:
        ready, _, _ = select.select([0, *children], [], [])
        for fd in ready:
            if fd != 0:
                request, pid = children.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                _send(out, {"id": request, "exit": os.waitstatus_to_exitcode(status)})
                continue
            data = os.read(0, 65536)
            if not data:  # the build is done (or gone): supervisors stop with us (PDEATHSIG)
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                if "preload" in request:  # a server kept across tasks learns new libraries
                    _preload_more(request, out)
                else:
                    _start(request, out, children)


def _preload_more(request: dict[str, Any], out: int) -> None:
    """Import more libraries for the children still to come; say which ones it could."""
    loaded = preload([n for n in request["preload"] if n not in LOADED_BY])
    gc.freeze()
    torch = sys.modules.get("torch")
    _send(out, {"id": request["id"], "preloaded": loaded,
                "cuda_initialized": bool(torch and torch.cuda.is_initialized())})


def _start(request: dict[str, Any], out: int, children: dict[int, tuple[int, int]]) -> None:
    """Fork the requested script and say its pid; or say why it could not be forked."""
    _forgotten(Path(request["cwd"]).resolve())  # found here, once: each child inherits it
    try:
        pid = _fork(request, [out, *children])
    except OSError as err:  # no memory, too many processes: the build starts it itself
        _send(out, {"id": request["id"], "error": f"fork failed: {err}"})
        return
    try:
        children[os.pidfd_open(pid)] = (request["id"], pid)
    except OSError as err:  # the server could not wait for it: it must not run unwatched
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _send(out, {"id": request["id"], "error": f"cannot watch the child: {err}"})
        return
    _send(out, {"id": request["id"], "pid": pid})


def _send(out: int, message: dict[str, Any]) -> None:
    """Write one protocol line to the build."""
    os.write(out, (json.dumps(message) + "\n").encode())


def _fork(request: dict[str, Any], server_fds: list[int]) -> int:
    """Fork the run's supervisor (pelican_figgen.reaper), which forks the script; return its pid."""
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()  # its own session: no terminal's Ctrl-C reaches the run
        for fd in server_fds:
            os.close(fd)
        _redirect(request["stderr"])
        reaper.supervise(server, Path(request["report"]), lambda: _fork_script(request))
    except BaseException:  # noqa: BLE001 (setting up failed: say why, in the script's stderr)
        traceback.print_exc()
    os._exit(1)


def _fork_script(request: dict[str, Any]) -> int:
    """In the supervisor: fork the child that runs the script; return its pid."""
    supervisor = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        reaper.become_script(supervisor)
        _become_script(request)
        code = _run_script(request["argv"])
    except BaseException:  # noqa: BLE001 (setting up failed: say why, in the script's stderr)
        traceback.print_exc()
    _exit_as_python_does(code)


def _exit_as_python_does(code: int) -> NoReturn:
    """End the child as an interpreter ends: threads joined, atexit run, files flushed."""
    # CPython's own first steps at exit, in its order (private calls: there are no public
    # ones). _shutdown also wakes the workers of concurrent.futures, which would block a
    # plain join. What finalization does next, tearing every module down, costs about a
    # second with torch loaded; its one visible effect, open files flushed, is done here.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    gc.collect()  # finalizes what only the script's globals kept
    for obj in gc.get_objects():  # files still referenced (a module's LOG = open(...))
        if isinstance(obj, io.IOBase) and not obj.closed:
            with contextlib.suppress(Exception):
                obj.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _redirect(stderr: str) -> None:
    """stdin and stdout on /dev/null, stderr to the run's file."""
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for target, source in ((0, null), (1, null), (2, err)):
        os.dup2(source, target)
    os.close(null)
    os.close(err)


def _become_script(request: dict[str, Any]) -> None:
    """In the child: the folder, environment and modules of a fresh interpreter."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # A server that serves many projects (a Dask worker's) names the run's own import path:
    # ahead of its own, after the script's folder (which _run_script puts first).
    sys.path[1:1] = request.get("path", [])
    # The server imported project modules (pelican_figgen.imports, ...): the script must import
    # them itself, or its record would list files it never used and miss edits to them.
    for name in _forgotten(Path(request["cwd"]).resolve()):
        sys.modules.pop(name, None)
    # The finalizers the preloaded libraries registered belong to the server's objects (torch
    # drops its operator libraries at exit: 30-60 ms of copied pages in each child; one could
    # be a temporary folder the server still uses): a child's exit leaves them to the server.
    for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
        finalizer.atexit = False
    # What preload() imported, and this server: the interpreter's start-up modules (.pth hooks)
    # are any run's, forked or not, and count alike in both.
    PRELOADED.update(*LOADED_BY.values(), [SELF])
    _note_imports()


_FORGOTTEN: dict[tuple[Path, int], tuple[str, ...]] = {}  # (root, modules loaded) -> names


def _forgotten(root: Path) -> tuple[str, ...]:
    """The modules a child must import itself: the project's, and the runtime's own.

    Found in the server before each fork and kept while its modules stay the same (resolving
    every standard library file took a tenth of a second per run).
    """
    key = (root, len(sys.modules))
    if key not in _FORGOTTEN:
        # The runtime's own modules (the supervisor, the import reader, ...), wherever they are
        # installed: a script run alone never has them, and its record must be the same.
        _FORGOTTEN[key] = tuple(
            name for name, module in list(sys.modules.items())
            if (name.partition(".")[0] == "pelican_figgen" and name != SELF)
            or _project_module(module, root))
    return _FORGOTTEN[key]


def _project_module(module: Any, root: Path) -> bool:
    """Whether a loaded module is a file of the project (below the root, not installed)."""
    file = getattr(module, "__file__", None)
    # A string test before resolving: most of them (torch's, ...) are installed packages.
    return bool(file) and "site-packages" not in file and \
        contract.project_file(Path(file).resolve(), root)


def _run_script(argv: list[str]) -> int:
    """Run a script as ``python script args`` would; return its exit status."""
    sys.argv = list(argv)
    sys.path[0] = str(Path(argv[0]).resolve().parent)  # as `python script.py` sets it
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException as err:  # noqa: BLE001 (whatever the script raised: print it)
        _print_from_script(err, Path(argv[0]).resolve())
        return 1
    return 0


def _print_from_script(err: BaseException, script: Path) -> None:
    """Print a traceback from the script's first frame on, as `python script.py` would."""
    tb = err.__traceback__
    while tb and Path(tb.tb_frame.f_code.co_filename).resolve() != script:
        tb = tb.tb_next  # runpy's and this module's frames: not the script's
    traceback.print_exception(type(err), err, tb or err.__traceback__)


def main() -> None:
    """Serve the scripts named on the command line, from the project root (the cwd)."""
    scripts = [Path(a).resolve() for a in sys.argv[1:]]
    # The protocol keeps its own copy of stdout; what a library prints while it is imported
    # goes to stderr, the server's log, instead of into the protocol.
    out = os.dup(1)
    os.dup2(2, 1)
    # Asking torch whether CUDA is there must not start it here: a forked child cannot use it.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    # As harness.project_root(), which the server must not import: children import it anew.
    serve(scripts, Path(os.environ.get(contract.ROOT, ".")).resolve(), out)


if __name__ == "__main__":
    main()
