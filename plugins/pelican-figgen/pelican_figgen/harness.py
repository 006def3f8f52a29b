"""Run one figure script: seeds, Agg backend, reproducible PNGs and a manifest for the plugin.

A figure script defines ``main(ctx)`` and ends with ``if __name__ == "__main__": run(main)``.
Run on its own it writes ``<script>.png`` into ``--out`` (default: the current folder); the
Pelican plugin runs the same command with ``--manifest`` to learn what was made, which
project modules the script imported, on which device it ran and its peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib.abc
import importlib.util
import io
import json
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pelican_figgen import contract
from pelican_figgen.png import png_bytes, smallest, webp

T = TypeVar("T")

# Set before anything imports pyplot, so a script never opens a window.
os.environ.setdefault("MPLBACKEND", "Agg")
# Read when cuBLAS starts, so set before any CUDA work: its deterministic workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# Where the script is when its run times out: the plugin sends SIGUSR1 before the kill.
if hasattr(faulthandler, "register"):  # not on Windows
    faulthandler.register(signal.SIGUSR1, all_threads=True)
# Dates matplotlib writes into PDF/SVG files come from here (a user's value is honoured).
os.environ.setdefault("SOURCE_DATE_EPOCH", "0")

PNG_DPI = 200  # figures are drawn at 2x their CSS size, so they stay sharp on dense screens
CSS_SCALE = 2
PROGRESS_EVERY = 0.1  # seconds between two progress reports
SVG_SALT = "figgen"  # matplotlib's SVG ids derive from it instead of a random value
SEED = 0  # the run's seed, set by run(); library code (pelican_figgen.intermediates) reads it here


@dataclass
class Context:
    """What a figure script gets: its name, seed, parameters, and where to save."""

    name: str
    seed: int
    params: dict[str, Any]
    out_dir: Path
    fields: dict[str, Any] = field(default_factory=dict)  # values captions may quote
    image: dict[str, Any] | None = None  # the one image it saved: file, CSS size, density
    declared: tuple[str, ...] = ()  # the data files of its __figure__["data"]
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)  # files beside the image
    # Other renders of the same run by role ("dark", "narrow", "narrow-dark"), as image is.
    renders: dict[str, dict[str, Any]] = field(default_factory=dict)
    folder: Path = Path(".")  # the script's folder: where its interactive module is found

    def data(self, name: str) -> Path:
        """The path of a data file this script declared in ``__figure__["data"]``.

        Only declared files: each is in the figure's cache key, so editing it re-runs the figure.
        """
        wanted = os.path.normpath(name)
        if wanted not in {os.path.normpath(d) for d in self.declared}:
            declared = ", ".join(self.declared) or "none"
            raise LookupError(
                f"{self.name}: data file {name!r} is not declared (declared: {declared}); add it "
                f'to __figure__ = {{"data": [...]}}, so that a change to it re-runs the figure'
            )
        return project_root() / wanted

    def save(self, fig: Any, narrow: Any = None, dark: bool = True) -> Path:
        """Save a figure as this script's image, with its dark and (given) narrow renders.

        The main render is the figure as drawn; unless ``dark`` is False, the same Figure is
        saved again recoloured for a dark page (``pelican_figgen.dark``). ``narrow`` is a
        second Figure drawn by the script from the same data for phones (its dark render too).
        The main render is a PNG, as small as ``png.encode`` makes it, with a lossless WebP
        twin of the same pixels; the others are that WebP only (a `<source>` shows them).
        """
        if self.image is not None:
            raise RuntimeError(f"{self.name}: a figure script saves exactly one image")
        if drafting():  # make serve's preview: the final renders follow in a full run
            self.image = self._draft(fig)
            return self.out_dir / self.image["file"]
        figures = {"": fig, "narrow": narrow} if narrow is not None else {"": fig}
        # Drawing holds the GIL, encoding does not: each render is encoded in a thread while
        # the next one draws, and the slowest (a photo's WebP) no longer add up.
        with ThreadPoolExecutor(encoders(), thread_name_prefix="figgen-encode") as pool:
            saved = {}
            for role, figure in figures.items():
                saved[role] = pool.submit(self._encode, role, rasterize(figure, dark=False))
                if dark:
                    shade = f"{role}-dark" if role else "dark"
                    saved[shade] = pool.submit(self._encode, shade, rasterize(figure, dark=True))
        self.image = saved.pop("").result()
        self.renders = {role: future.result() for role, future in saved.items()}
        return self.out_dir / self.image["file"]

    def _encode(self, role: str, image: Any) -> dict[str, Any]:
        """Write one render's files (the main one's PNG and WebP, another's WebP); its entry."""
        stem = f"{self.name}.{role}" if role else self.name
        pixels, options = smallest(image)  # the PNG's pixels, which the WebP holds exactly
        (self.out_dir / f"{stem}.webp").write_bytes(webp(pixels))
        if role:
            return render_entry(f"{stem}.webp", image)
        (self.out_dir / f"{stem}.png").write_bytes(png_bytes(pixels, options))
        return {**render_entry(f"{stem}.png", image), "webp": f"{stem}.webp"}

    def _draft(self, fig: Any) -> dict[str, Any]:
        """Save the main render alone, at one pixel per CSS pixel, as a quick PNG; its entry."""
        # No palette search, no WebP, no dark or narrow render, zlib's fastest level, and a
        # quarter of the pixels to draw and compress: a photo figure's draft costs a small
        # savefig instead of four full renders. The page shows it at the final size.
        image = sketch(fig)
        (self.out_dir / f"{self.name}.png").write_bytes(png_bytes(image, {"compress_level": 1}))
        return render_entry(f"{self.name}.png", image, density=1)

    def save_interactive(
        self, fig: Any, data: dict[str, Any], module: str | Path, ax: Any = None
    ) -> Path:
        """Save the figure's PNG plus a JSON data file and an ES module that enhances it.

        ``module`` is a JavaScript file (relative to the script's folder, or absolute) whose
        ``enhance(figure, data)`` the page calls; it is an input of the run, like an import.
        With ``ax``, ``data["axes"]`` says where those axes are in the image (fractions of
        its width and height from the top left) and their data limits.
        """
        path = self.save(fig)
        source = self.folder / module
        if not source.is_file():
            raise FileNotFoundError(f"{self.name}: no interactive module {source}")
        depends_on([source])  # editing the module re-runs the figure, as an import would
        payload = {**data, "axes": axes_box(fig, ax)} if ax is not None else dict(data)
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=json_scalar)
        (self.out_dir / f"{self.name}.data.json").write_text(text, encoding="utf-8")
        (self.out_dir / f"{self.name}.js").write_bytes(source.read_bytes())
        self.assets = {"data": {"file": f"{self.name}.data.json"},
                       "module": {"file": f"{self.name}.js"}}
        return path

    def progress(
        self, iterable: Iterable[T], total: int | None = None, description: str = ""
    ) -> Iterator[T]:
        """Yield the items of ``iterable`` with a progress report (see ``progress``)."""
        return progress(iterable, total, description or self.name)


def drafting() -> bool:
    """Whether this run is a draft (make serve's preview, contract.DRAFT)."""
    return os.environ.get(contract.DRAFT) == "1"


def axes_box(fig: Any, ax: Any) -> dict[str, Any]:
    """Where the axes are drawn in the saved image, as fractions from its top left, and limits."""
    # After savefig: the constrained layout and the equal aspect have placed the axes.
    box = ax.get_position(original=False)  # figure fractions, from the bottom left
    return {"left": box.x0, "right": box.x1, "top": 1.0 - box.y1, "bottom": 1.0 - box.y0,
            "xlim": list(ax.get_xlim()), "ylim": list(ax.get_ylim())}


def rasterize(fig: Any, dark: bool, density: int = CSS_SCALE) -> Any:
    """A figure's RGBA pixels, ``density`` per CSS pixel (PNG_DPI's), recoloured if dark."""
    from pelican_figgen.dark import dark_colours

    # Raw pixels spare a PNG's encoding and decoding between matplotlib and the encoders.
    canvas, raw = _agg_canvas(fig), io.BytesIO()
    with dark_colours(fig) if dark else contextlib.nullcontext():
        fig.savefig(raw, format="rgba", dpi=PNG_DPI * density / CSS_SCALE)
    return _drawn(canvas, raw.getbuffer())


def sketch(fig: Any) -> Any:
    """A draft's RGBA pixels, one per CSS pixel, from a single draw of the figure."""
    import matplotlib

    if any(matplotlib.rcParams[f"savefig.{key}"] != "auto" for key in ("facecolor", "edgecolor")):
        return rasterize(fig, dark=False, density=1)  # savefig's own colours: its own draw
    # savefig draws a figure that has a layout engine twice, the first time for its layout
    # alone; a draft keeps the layout of the one pass that draws it.
    canvas, dpi = _agg_canvas(fig), fig.dpi
    try:
        fig.dpi = PNG_DPI / CSS_SCALE
        canvas.draw()
        # A copy: the canvas's buffer is drawn over by its next draw.
        return _drawn(canvas, canvas.buffer_rgba()).copy()
    finally:
        fig.dpi = dpi


def _agg_canvas(fig: Any) -> Any:
    """The figure's Agg canvas, given it one if it has none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # A canvas of its own keeps the renderer that drew last, and so the image's size.
    return fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)


def _drawn(canvas: Any, buffer: Any) -> Any:
    """The canvas's last drawing as an RGBA image over ``buffer`` (its pixels, not a copy)."""
    from PIL import Image  # here: a script run only to fail need not import Pillow

    size = int(canvas.renderer.width), int(canvas.renderer.height)
    return Image.frombuffer("RGBA", size, buffer, "raw", "RGBA", 0, 1)


def render_entry(file: str, image: Any, density: int = CSS_SCALE) -> dict[str, Any]:
    """A render's manifest entry: its file, its size in CSS pixels and its pixel density."""
    width, height = image.size
    return {"file": file, "width": width // density, "height": height // density,
            "density": density}


def encoders() -> int:
    """Threads that encode a figure's renders: one per usable core, at most one per render."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


def progress(iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Yield the items of ``iterable``, reporting how many were done out of ``total``.

    ``for step in ctx.progress(range(steps), description="PGD steps"): ...``; library code
    without a ctx calls this function itself (e.g. a training loop).
    ``total`` defaults to ``len(iterable)`` when it has one (else the count is open-ended).
    Run by the plugin, the report goes to the build (a bar on a terminal, nothing in a
    log); run alone, to a plain line on stderr.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    report = _reporter(description, total)
    done, last = 0, 0.0
    for done, item in enumerate(iterable, 1):
        yield item
        if time.monotonic() - last >= PROGRESS_EVERY:
            report(done, final=False)
            last = time.monotonic()
    report(done, final=True)


def _reporter(description: str, total: int | None) -> Callable[..., None]:
    """A function that reports `done` items: to the plugin's pipe, or as a line on stderr."""
    if _progress_channel() is not None:
        def to_plugin(done: int, final: bool) -> None:
            _tell({"description": description, "completed": done, "total": total})

        return to_plugin
    live = sys.stderr.isatty()

    def to_terminal(done: int, final: bool) -> None:
        if live or final:  # a log gets the last line only
            end = "\n" if final else ""
            print(f"\r{description}: {done}/{total or '?'}", end=end, file=sys.stderr, flush=True)

    return to_terminal


def waiting(now: bool) -> None:
    """Tell the build that this run waits (or no longer waits) for another run's result.

    The build's pool starts another figure on the core meanwhile; run alone, nothing happens.
    """
    _tell({"waiting": now})


def _tell(report: dict[str, Any]) -> None:
    """Write one report line for the plugin, if it is listening."""
    channel = _progress_channel()
    if channel is not None:
        channel.write(json.dumps(report) + "\n")
        channel.flush()


_CHANNEL: list[TextIO] = []


def _progress_channel() -> TextIO | None:
    """The file the plugin reads progress from, opened once; None when run alone."""
    path = os.environ.get(contract.PROGRESS)
    if path is None:
        return None
    if not _CHANNEL:
        _CHANNEL.append(open(path, "a", encoding="utf-8"))  # noqa: SIM115 (open for the run)
    return _CHANNEL[0]


_READ_FROM: set[str] = set()  # devices that computed the cached intermediates a run read


def computed_on(device_name: str) -> None:
    """Note that this run used a result computed on this device (a cached intermediate)."""
    _READ_FROM.add(device_name)


def device() -> str:
    """The GPU the script used through torch (itself or through a cached result), else the CPU."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return f"GPU {torch.cuda.get_device_name()}"
    gpus = sorted(d for d in _READ_FROM if d.startswith("GPU "))
    if gpus:  # a restyle read a GPU's result without touching the GPU: it still shows it
        return gpus[0]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.partition(':')[2].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (each now, or as soon as it is imported), ask for determinism.

    "As soon as it is imported": a figure forked from the build's warm server finds NumPy and
    torch already imported, one run alone imports them in main(); both must start alike.
    """
    random.seed(seed)
    for name, seeder in SEEDERS.items():
        if name in sys.modules:
            seeder(sys.modules[name], seed)
        else:
            seed_on_import(name, seed)


def seed_numpy(numpy: Any, seed: int) -> None:
    """Seed NumPy's global generator."""
    numpy.random.seed(seed)


def salt_matplotlib(matplotlib: Any, seed: int) -> None:
    """Fix the salt matplotlib derives SVG ids from (it is random otherwise)."""
    matplotlib.rcParams["svg.hashsalt"] = SVG_SALT


def seed_torch(torch: Any, seed: int) -> None:
    """Seed torch's generators, set its thread count and ask it for deterministic algorithms."""
    torch.manual_seed(seed)
    # The same thread count wherever it runs: torch's reductions split by thread, so the
    # count changes a figure's last bits (two of ours differ between 1 and 2 threads).
    torch.set_num_threads(int(os.environ.get(contract.THREADS, "1")))
    # torch.use_deterministic_algorithms(True, warn_only=True) sets two flags: this one, and
    # its compiler's (below), importing the compiler's configuration to do so: 0.9 s per run
    # here, though no figure compiles. The compiler's is set if it is ever imported.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing
    torch.backends.cudnn.deterministic = True


def determine_compiler(config: Any, seed: int) -> None:
    """The other half of torch.use_deterministic_algorithms: the compiler's own flag."""
    # The flag exists since torch 2.10; before, the public call did not set it either.
    if hasattr(config, "deterministic"):
        config.deterministic = True


SEEDERS: dict[str, Callable[[Any, int], None]] = {
    "numpy": seed_numpy, "matplotlib": salt_matplotlib, "torch": seed_torch,
    "torch._inductor.config": determine_compiler,
}


class _SeedOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Seeds a library right after ``import`` completes: preloaded or lazy, it starts alike."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.seed, self.loader, self.finding = name, seed, None, False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        """Find the library with the other finders and put this loader in front of theirs."""
        if name != self.name or self.finding:
            return None
        self.finding = True  # the search below asks this finder again
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: Any) -> Any:
        """Let the library's own loader create the module."""
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        """Run the library's own loader, give the module its loader back, then seed it."""
        # Leaves only here: a mere find_spec (an availability check) imports nothing.
        sys.meta_path.remove(self)
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        SEEDERS[self.name](module, self.seed)


def seed_on_import(name: str, seed: int) -> None:
    """Seed the library `name` with ``seed`` as soon as it is imported (the latest seed wins)."""
    for finder in sys.meta_path:
        if isinstance(finder, _SeedOnImport) and finder.name == name:
            finder.seed = seed
            return
    sys.meta_path.insert(0, _SeedOnImport(name, seed))


_DEPENDS: set[Path] = set()  # project files a run depends on without importing them


def depends_on(paths: Iterable[Path]) -> None:
    """Count project files among this run's inputs though it did not import them.

    A cached intermediate (pelican_figgen.intermediates) read from disk skips the imports that
    computing it would make; its key's files still decide whether the figure is stale.
    """
    _DEPENDS.update(Path(p).resolve() for p in paths)


def peak_rss_mib() -> float:
    """This run's peak resident memory, its child processes' added, in MiB (an upper bound)."""
    import resource  # here: only a run that writes a manifest needs it

    per_kib = 1024 if sys.platform == "darwin" else 1  # macOS counts bytes, Linux KiB
    own = _own_peak_kib()
    if own is None:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_kib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / per_kib
    return round((own + children) / 1024, 1)


def _own_peak_kib() -> float | None:
    """This process's own peak (Linux VmHWM), in KiB; None where the kernel does not say."""
    # Not ru_maxrss: after exec it still holds the parent's peak (Pelican's, for a script
    # started in its own interpreter), which would make a small figure look big.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def declared_data(module: Any) -> tuple[str, ...]:
    """The data files a script module declares in its ``__figure__["data"]``."""
    declared = getattr(module, "__figure__", None)
    # The plugin checked the declaration before the run; a script run alone is checked here.
    data = declared.get("data", ()) if isinstance(declared, dict) else ()
    return tuple(d for d in data if isinstance(d, str))


def project_root() -> Path:
    """The project root the plugin names (FIGGEN_ROOT), else the current folder."""
    return Path(os.environ.get(contract.ROOT, ".")).resolve()


def imported(root: Path, script: Path) -> dict[str, Any]:
    """What this run imported besides the standard library: distributions and plain files.

    A distribution counts by its version; a plain file (the site's modules, a checkout on
    PYTHONPATH, an editable install's source) by its path, relative to the root when inside
    it, else by its portable name (pelican_figgen.importpath), for the plugin to hash as an
    input. The distributions are the same whether the run was forked or alone and whatever
    the intermediates' store held (see ``distributions``).
    """
    found = loaded()
    # Not contract.project_file: a plain file outside the root (a checkout on PYTHONPATH, an
    # editable install) is an input too; the distributions' metadata, not the path, decides.
    # setuptools' editable-install finders run at every start-up; they compute nothing.
    files = {p for p in (*found.files, *_DEPENDS)
             if p != script and not p.name.startswith("__editable__")}
    # Outside the root, by its path below its import-path entry: the same on every machine.
    # Imported after the list was taken: naming the inputs changes no image.
    from pelican_figgen import importpath

    outside = importpath.portable_names((p for p in files if not p.is_relative_to(root)),
                                        sys.modules, sys.path)

    def name(path: Path) -> str:
        if path.is_relative_to(root):
            return importpath.root_name(path.relative_to(root).as_posix())
        return outside.get(path, str(path))  # absolute: no import-path entry holds it

    return {contract.MODULES: sorted(name(p) for p in files),
            contract.DISTRIBUTIONS: distributions(found, root, script)}


def loaded() -> Any:
    """The distributions and plain files of the modules this run imported (dists.Sources).

    Forked from the warm server, a preloaded module counts only if the run imported it.
    """
    from pelican_figgen.dists import module_files, shared  # here: only a manifest needs it

    server = sys.modules.get("pelican_figgen.forkserver")
    skip, keep = server.preloaded_for() if server else (set(), set())
    return shared().sources(module_files(skip, keep))


_READ_DISTRIBUTIONS: dict[str, str] = {}  # what the cached intermediates a run used imported


def used_distributions(found: dict[str, str]) -> None:
    """Count distributions a cached intermediate imported when computed, hit or miss."""
    _READ_DISTRIBUTIONS.update(found)


def distributions(found: Any, root: Path, script: Path) -> dict[str, str]:
    """The run's distributions: the same set forked or alone, computed or read from the store.

    What the run imported; every distribution the script and its project modules import
    statically (lazy imports too: whether one ran may depend on the store, or a forked run
    may find it loaded); and what each cached intermediate it used imported when computed.
    """
    from pelican_figgen.dists import versions_of
    from pelican_figgen.imports import closure

    static = closure(script, [root, script.parent])
    tops = {n.partition(".")[0] for n in static.external} - set(sys.stdlib_module_names)
    every = {**versions_of(tops), **_READ_DISTRIBUTIONS, **found.distributions}
    return dict(sorted(every.items()))


def json_scalar(value: Any) -> Any:
    """Turn a NumPy or torch scalar a script put in ctx.fields into a plain Python number."""
    if hasattr(value, "item"):
        return value.item()
    kind = type(value).__name__
    raise TypeError(f"caption field of type {kind} is not JSON: use str, int or float")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line every figure script shares."""
    parser = argparse.ArgumentParser(description="Make this figure.")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG")
    parser.add_argument("--seed", type=int, default=0, help="seed for every generator")
    parser.add_argument("--params", default="{}", help="JSON object of figure parameters")
    parser.add_argument("--manifest", type=Path, help="write what was made here (JSON)")
    return parser.parse_args(argv)


def run(main: Callable[[Context], None], argv: list[str] | None = None) -> Context:
    """Run a figure script's ``main`` from its command line and save what it made."""
    args = parse_args(argv)
    script = Path(sys.modules[main.__module__].__file__ or sys.argv[0]).resolve()
    root = project_root()
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(script.stem, args.seed, json.loads(args.params), args.out,
                  declared=declared_data(sys.modules[main.__module__]), folder=script.parent)
    global SEED  # for library code: pelican_figgen.intermediates keys and seeds with it
    SEED = args.seed
    seed_everything(args.seed)
    start = time.perf_counter()
    try:
        main(ctx)
    except BaseException:
        if args.manifest:  # what the failed run imported: the plugin retries when it changes
            failed = {contract.FAILED: True, **imported(root, script)}
            args.manifest.write_text(json.dumps(failed, indent=1))
        raise
    seconds = time.perf_counter() - start
    if ctx.image is None:
        raise RuntimeError(f"{ctx.name}: main() returned without calling ctx.save(fig)")
    if args.manifest:
        manifest = {
            contract.IMAGE: ctx.image,
            contract.ASSETS: ctx.assets,
            contract.RENDERS: ctx.renders,
            "fields": ctx.fields,
            **imported(root, script),
            "seconds": round(seconds, 3),
            "device": device(),
            "peak_rss_mib": peak_rss_mib(),
            **({contract.DRAFTED: True} if drafting() else {}),
        }
        if "pelican_figgen.intermediates" in sys.modules:  # hits, misses, seconds spent waiting
            manifest["intermediates"] = sys.modules["pelican_figgen.intermediates"].stats()
        text = json.dumps(manifest, indent=1, sort_keys=True, default=json_scalar)
        args.manifest.write_text(text)
    else:
        print(f"wrote {args.out / ctx.image['file']} in {seconds:.1f} s")
    return ctx
