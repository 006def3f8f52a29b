"""Progress on the terminal: bars of the running figures; nothing when output is not a terminal."""

from __future__ import annotations

import contextlib
import threading
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


class Board:
    """The bars of the figures running now: one display for the build, several figures."""

    def __init__(self, display: Any = None) -> None:
        """Draw on `display` (a rich Progress), or nowhere when it is None."""
        self.display = display
        self._tasks: dict[str, dict[str, Any]] = {}  # figure -> description -> task id
        self._lock = threading.Lock()  # each figure reports from the thread waiting for it

    def for_figure(self, name: str) -> Callback | None:
        """A callback that shows a figure's progress reports as bars, or None."""
        if self.display is None:
            return None

        def update(report: Mapping[str, Any]) -> None:
            description = f"[bold]{name}[/] {report.get('description', '')}"
            total = report.get("total")
            with self._lock:
                tasks = self._tasks.setdefault(name, {})
                if description not in tasks:
                    tasks[description] = self.display.add_task(description, total=total)
                self.display.update(tasks[description], completed=report.get("completed", 0),
                                    total=total)

        return update

    def done(self, name: str) -> None:
        """Take a figure's bars away: it has ended."""
        with self._lock:
            for task in self._tasks.pop(name, {}).values():
                self.display.remove_task(task)


@contextlib.contextmanager
def board() -> Iterator[Board]:
    """A board for the build; it draws nothing when the screen is not a terminal (CI logs)."""
    screen = console()
    if not screen.is_terminal:
        yield Board()
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
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=screen, transient=True,
    )
    with display:
        yield Board(display)
