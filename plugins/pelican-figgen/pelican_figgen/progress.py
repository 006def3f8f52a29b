"""Following a run's progress file: the JSON object lines a script appends as it goes.

One reader for the build (pelican.plugins.figgen.run) and for a Dask worker
(pelican_figgen.worker): a file the script appends to, polled, works alike for a script forked
from the warm server and one started in its own interpreter.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_POLL = 0.1  # seconds between two reads of the progress file


def follow(path: Path, send: Callable[[dict[str, Any]], None], done: threading.Event) -> None:
    """Pass each JSON object line appended to `path` to `send`, until `done` (then once more)."""
    offset, partial = 0, b""
    while True:
        ended = done.is_set()  # read once more after the end: the last reports count
        with contextlib.suppress(OSError), path.open("rb") as file:
            file.seek(offset)
            data = file.read()
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                _pass_on(line, send)
        if ended:
            return
        done.wait(PROGRESS_POLL)


def _pass_on(line: bytes, send: Callable[[dict[str, Any]], None]) -> None:
    """Send one line on if it is a JSON object; a script's garbage is skipped."""
    try:
        report = json.loads(line)
    except ValueError:
        return
    if isinstance(report, dict):
        send(report)
