"""Configuration problems as values.

Every stage of configuration loading (reading opendkim.conf, opening data sets, validating
values) reports what it finds as `Problem` values instead of raising at the first one: the
daemon wants every error at once, and `dkimd check` wants warnings too. Only the top-level
`load_config` turns error-severity problems into a `ConfigError`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "Problem", "Severity", "errors_in", "warnings_in"]


class Severity(enum.Enum):
    ERROR = "error"  # the daemon refuses to start
    WARNING = "warning"  # the daemon runs; something is ignored or suspicious


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration, located as precisely as we can.

    `file`/`line` point at the line that caused it (the opendkim.conf line, or the line of a
    data set file); either may be None when there is no such line (a missing mandatory
    option, say). `hint` is a suggestion for the fix, shown in parentheses.
    """

    file: str | None
    line: int | None
    severity: Severity
    message: str
    hint: str | None = None
    option: str | None = None  # the canonical option name concerned, when there is one
    # A warning the daemon starts with, as OpenDKIM does, though the messages that need
    # this entry fail (a malformed KeyTable line...); `dkimd check` counts it as an error.
    fails_messages: bool = False

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def location(self) -> str:
        if self.file is None:
            return "(configuration)"
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        text = f"{self.location}: {prefix}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


def errors_in(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    return tuple(p for p in problems if p.severity is Severity.ERROR)


def warnings_in(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    return tuple(p for p in problems if p.severity is Severity.WARNING)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds every error (and the warnings)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self._text())

    @property
    def errors(self) -> tuple[Problem, ...]:
        return errors_in(self.problems)

    def _text(self) -> str:
        errors = self.errors or self.problems
        return "\n".join(str(p) for p in errors) or "invalid configuration"
