"""Reading opendkim.conf exactly as OpenDKIM 2.11 reads it (opendkim/config.c).

The format, from config_load_level():

* one setting per line: a name, a run of spaces/tabs, the value. The value is the rest of the
  line with leading and trailing spaces/tabs removed, so it may contain inner blanks.
* a line is cut at the first `#` *or carriage return*, wherever it is: `#` inside a value
  starts a comment too (there is no quoting or escaping), and CRLF files just work.
* names are matched case-insensitively; an unknown name is an error.
* a name with no value is an error ("required value missing").
* a Boolean looks only at the first character of its value: t/T/y/Y/1 or f/F/n/N/0.
  Anything else is an error ("illegal value").
* an integer is `strtol(value, &end, 0)` with nothing left over: decimal, `0x` hex, or
  leading-`0` octal (`UMask 022` is 18).
* `Include FILE` reads another file in place; OpenDKIM allows five levels of nesting. We keep
  that limit and also detect a file including itself (OpenDKIM only hits the depth limit).
* when a name appears more than once the last one wins: config_get() walks a list that the
  reader builds by prepending, so later lines (and lines of later includes) shadow earlier.

OpenDKIM stops at the first error; we keep going and report every problem, each with its
file:line. Every value keeps its file:line (`Setting.file`, `Setting.line`) so later stages
can point at the line a bad value came from. `RawConfig` is the parsed-but-unvalidated
result; `dkimd check` inspects it, `dkimd.config.load` builds the typed `Config` from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from dkimd.config.options import OptionSpec, OptionType, find_option, suggest_option
from dkimd.config.problems import Problem, Severity

__all__ = [
    "MAX_INCLUDE_DEPTH",
    "RawConfig",
    "Setting",
    "parse_bool",
    "parse_int",
    "read_config_file",
    "read_config_text",
]

MAX_INCLUDE_DEPTH = 5  # config.c MAXLEVEL: the top file is level 0, level 6 is refused

_BLANKS = " \t"
_TRUE_FIRST = frozenset("tTyY1")
_FALSE_FIRST = frozenset("fFnN0")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # OpenDKIM keeps integers in a C int
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


@dataclass(frozen=True, slots=True)
class Setting:
    """One `Name value` line, after comment stripping and option lookup.

    `name` is the canonical spelling from the option table; `written_name` is how the file
    spelled it. `value` is the raw text; `parsed` is the value converted per the option's
    type (bool or int for those types, else the same text).
    """

    name: str
    written_name: str
    value: str
    parsed: bool | int | str
    file: str
    line: int
    spec: OptionSpec = field(repr=False, compare=False)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class RawConfig:
    """Every setting in file order (includes expanded in place), plus what went wrong."""

    settings: tuple[Setting, ...]
    problems: tuple[Problem, ...]
    files: tuple[str, ...]  # the config file and every file it included, in reading order

    def get(self, name: str) -> Setting | None:
        """The effective setting for `name` (any case): the last one, as in OpenDKIM."""
        key = name.lower()
        for setting in reversed(self.settings):
            if setting.name.lower() == key:
                return setting
        return None

    def get_all(self, name: str) -> tuple[Setting, ...]:
        key = name.lower()
        return tuple(s for s in self.settings if s.name.lower() == key)

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.settings)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


def parse_bool(value: str) -> bool | None:
    """OpenDKIM's Boolean: the first character decides; None if it is not a Boolean."""
    if value[:1] in _TRUE_FIRST:
        return True
    if value[:1] in _FALSE_FIRST:
        return False
    return None


def parse_int(value: str) -> int | None:
    """C `strtol(value, &end, 0)` that must consume the whole string; None if it doesn't."""
    text = value.lstrip(" \t\n\v\f\r")  # strtol skips leading white space
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text[:2].lower() == "0x" and len(text) > 2:
        digits, base = text[2:], 16
    elif text.startswith("0") and len(text) > 1:
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    allowed = _DIGITS[base]
    if not digits or any(c not in allowed for c in digits):
        return None
    return sign * int(digits, base)


class _Reader:
    def __init__(self, base_dir: str | None) -> None:
        self.base_dir = base_dir
        self.settings: list[Setting] = []
        self.problems: list[Problem] = []
        self.files: list[str] = []
        self.warned_unimplemented: set[str] = set()
        self.stack: list[str] = []  # real paths of the files being read, for loop detection

    def problem(
        self,
        file: str,
        line: int | None,
        message: str,
        hint: str | None = None,
        severity: Severity = Severity.ERROR,
        option: str | None = None,
    ) -> None:
        self.problems.append(Problem(file, line, severity, message, hint, option))

    def read_file(self, path: str, depth: int, where: tuple[str, int] | None) -> None:
        at_file, at_line = where if where is not None else (path, None)
        if depth > MAX_INCLUDE_DEPTH:
            self.problem(
                at_file,
                at_line,
                f'Include nesting too deep at "{path}"',
                f"OpenDKIM allows {MAX_INCLUDE_DEPTH} levels",
                option="Include",
            )
            return
        real = os.path.realpath(path)
        if real in self.stack:
            self.problem(
                at_file, at_line, f'Include loop: "{path}" is already being read', option="Include"
            )
            return
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            what = "cannot read configuration file" if where is None else "cannot read Include"
            self.problem(
                at_file,
                at_line,
                f'{what} "{path}": {e.strerror or e}',
                option=None if where is None else "Include",
            )
            return
        self.stack.append(real)
        try:
            self.read_text(data.decode("utf-8", "surrogateescape"), path, depth)
        finally:
            self.stack.pop()

    def read_text(self, text: str, source: str, depth: int) -> None:
        self.files.append(source)
        # config_getline() splits at LF only; a CR ends the useful part of a line below.
        for number, line in enumerate(text.split("\n"), start=1):
            self.read_line(line, source, number, depth)

    def read_line(self, line: str, source: str, number: int, depth: int) -> None:
        # Cut at '#' or CR (config.c); a NUL ends a C string, so it cuts too.
        for i, ch in enumerate(line):
            if ch in "#\r\0":
                line = line[:i]
                break
        stripped = line.lstrip(_BLANKS)
        if not stripped:
            return
        # strtok_r(buf, " \t"): the name runs to the first blank; the value is what follows,
        # trimmed of spaces and tabs (only those: a form feed stays part of the value).
        cut = len(stripped)
        for i, ch in enumerate(stripped):
            if ch in _BLANKS:
                cut = i
                break
        written = stripped[:cut]
        value = stripped[cut + 1 :].strip(_BLANKS)

        spec = find_option(written)
        if spec is None:
            suggestion = suggest_option(written)
            self.problem(
                source,
                number,
                f'unknown option "{written}"',
                f'did you mean "{suggestion}"?' if suggestion else None,
            )
            return
        if not value:
            self.problem(source, number, f"{spec.name}: value missing", option=spec.name)
            return

        parsed: bool | int | str = value
        if spec.type is OptionType.BOOL:
            flag = parse_bool(value)
            if flag is None:
                self.problem(
                    source,
                    number,
                    f'{spec.name}: "{value}" is not a Boolean',
                    "use yes or no",
                    option=spec.name,
                )
                return
            parsed = flag
        elif spec.type is OptionType.INT:
            number_value = parse_int(value)
            if number_value is None or not _INT_MIN <= number_value <= _INT_MAX:
                self.problem(
                    source, number, f'{spec.name}: "{value}" is not an integer', option=spec.name
                )
                return
            parsed = number_value

        if spec.type is OptionType.INCLUDE:
            path = value
            if not os.path.isabs(path) and self.base_dir is not None:
                path = os.path.join(self.base_dir, path)
            self.read_file(path, depth + 1, (source, number))
            return

        if not spec.implemented and spec.key not in self.warned_unimplemented:
            self.warned_unimplemented.add(spec.key)
            self.problem(
                source,
                number,
                f'"{spec.name}" is an OpenDKIM option dkimd does not implement; it is ignored',
                severity=Severity.WARNING,
                option=spec.name,
            )
        if spec.alias_of is not None:
            self.problem(
                source,
                number,
                f'"{spec.name}" is deprecated',
                f'use "{spec.alias_of}"',
                Severity.WARNING,
                spec.name,
            )
        self.settings.append(
            Setting(spec.alias_of or spec.name, written, value, parsed, source, number, spec)
        )

    def result(self) -> RawConfig:
        return RawConfig(tuple(self.settings), tuple(self.problems), tuple(self.files))


def read_config_file(path: str | os.PathLike[str], *, base_dir: str | None = None) -> RawConfig:
    """Read opendkim.conf at `path` (following Includes) into a `RawConfig`.

    A relative `Include` path is opened relative to `base_dir`, or to the current directory
    when it is None, which is what OpenDKIM does (it just calls fopen()).
    """
    reader = _Reader(base_dir)
    reader.read_file(os.fspath(path), 0, None)
    return reader.result()


def read_config_text(
    text: str, *, source: str = "<config>", base_dir: str | None = None
) -> RawConfig:
    """Read opendkim.conf content given as a string (for tests and `dkimd check -`)."""
    reader = _Reader(base_dir)
    reader.read_text(text, source, 0)
    return reader.result()
