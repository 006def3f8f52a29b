"""Errors the plugin raises: each names the article, the figure reference and the cause."""

from __future__ import annotations


class SettingsError(SystemExit):
    """The FIGGEN setting (or a FIGGEN_* variable) is wrong: the message names it.

    A SystemExit, as FigureBuildError: Pelican, which logs any Exception with its traceback,
    lets it through, and Python prints the message alone and exits with status 1.
    """


class FigureError(Exception):
    """One figure could not be made or embedded.

    `cause` and `detail` may reach a reader (keep-going builds show them on the page);
    `hint`, what a developer can do about it (a command, a setting), goes only to the log.
    """

    def __init__(
        self, article: str, reference: str, cause: str, detail: str = "", hint: str = ""
    ) -> None:
        self.article, self.reference, self.cause, self.detail = article, reference, cause, detail
        self.hint = hint
        super().__init__(self.describe())

    def describe(self) -> str:
        """Say where the figure is referenced, what went wrong and what to do (for the log)."""
        text = f"{self.article}: figure '{self.reference}': {self.headline()}"
        return f"{text}\n{self.detail.rstrip()}" if self.detail else text

    def headline(self) -> str:
        """The cause, then the developer's hint, if any, in one line."""
        return f"{self.cause}; {self.hint}" if self.hint else self.cause

    def shown(self) -> str:
        """What a reader may see of it: the cause and the details, no commands."""
        return f"{self.cause}\n{self.detail.rstrip()}" if self.detail else self.cause


class FigureBuildError(SystemExit):
    """One or more figures failed in strict mode: the build exits non-zero with this summary.

    A SystemExit, not an Exception: Pelican then exits with status 1 and prints no traceback
    of the plugin under the summary (the details were logged just before).
    """

    def __init__(self, errors: list[FigureError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  {e.article}: figure '{e.reference}': {e.headline()}"
                          for e in errors)
        self.summary = f"{len(errors)} figure error(s), details above:\n{lines}"
        super().__init__(1)

    def __str__(self) -> str:
        return self.summary


class BuildInterrupted(SystemExit):
    """The build was interrupted (Ctrl-C): it exits with status 130, as a shell reports SIGINT.

    Pelican ends a build interrupted by KeyboardInterrupt with status 0; a build that made
    only part of its figures must not look like a success.
    """

    def __init__(self, stopped: int) -> None:
        self.summary = (f"figgen: build interrupted; killed the {stopped} figure(s) running "
                        "(the cache keeps every figure that completed)")
        super().__init__(130)

    def __str__(self) -> str:
        return self.summary
