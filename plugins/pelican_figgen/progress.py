"""Progress on the terminal: a bar per running figure; nothing when output is not a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console

from .run import Progress as Callback


def console() -> Console:
    """The console Pelican logs to, so bars and log lines share the screen."""
    try:
        from pelican.log import console as pelican_console
    except ImportError:  # pragma: no cover (Pelican is installed with the plugin)
        return Console(stderr=True)
    return pelican_console


@contextlib.contextmanager
def bars(name: str) -> Iterator[Callback | None]:
    """While a figure runs: a callback that shows its progress reports as bars, or None."""
    screen = console()
    if not screen.is_terminal:  # CI logs stay readable: only the per-figure lines
        yield None
        return
    # Here, not at the top: importing rich.progress costs a no-op build ~10 ms.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    display = Progress(
        TextColumn(f"[bold]{name}[/] {{task.description}}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=screen, transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(report: Mapping[str, Any]) -> None:
        description = str(report.get("description", ""))
        total = report.get("total")
        if description not in tasks:
            tasks[description] = display.add_task(description, total=total)
        display.update(tasks[description], completed=report.get("completed", 0), total=total)

    with display:
        yield update
