"""What a build worked out, by key, kept in the cache for the next build: only what it used."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import write_optional


class KeptMap:
    """A JSON map in the cache's code/ folder, named by its kind and its owner module's hash."""

    def __init__(self, stem: str, owner: str) -> None:
        # The owner's code decides what an entry holds: another version of it, another file.
        code = hashlib.sha256(Path(owner).read_bytes()).hexdigest()[:12]
        self.name = f"{stem}-{code}.json"
        self.path: Path | None = None
        self.kept: dict[str, Any] = {}  # the last build's
        self.used: dict[str, Any] = {}  # this build's

    def load(self, cache_dir: Path) -> None:
        """Read what the last build kept in this cache."""
        path = cache_dir / "code" / self.name
        if path != self.path:  # a long-lived process (make serve) keeps what it read
            self.path, self.kept = path, {}
            with contextlib.suppress(OSError, ValueError):
                self.kept = json.loads(path.read_text(encoding="utf-8"))
        self.used = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value the last build kept for key, else compute()'s; kept for the next build."""
        value = self.kept[key] if key in self.kept else compute()
        self.used[key] = value
        return value

    def save(self, cache_dir: Path) -> None:
        """Keep this build's entries for the next build, unless they are those kept already."""
        if self.path is not None and self.used and self.used != self.kept:
            self.kept = self.used
            write_optional(self.path, json.dumps(self.used), cache_dir)
