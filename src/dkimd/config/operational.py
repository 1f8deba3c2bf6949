"""The options opendkim reads only once it is really starting, after `-n` has returned.

opendkim's `main` loads the configuration (`config_load`, then `dkimf_config_load`, which
opens every data set and key) and, under `-n`, exits 0 right there. The options below are
read in `main` after that point, so `opendkim -n` never looks at them: a malformed `Socket`,
an `AutoRestartRate` that is not n/t or a `UserID` that does not exist all pass `-n`
(observed with 2.11: rc=0 for each) and only stop a real start. `SyslogFacility` is not
checked by `-n` either (observed; a real start with a bogus one crashes opendkim 2.11).

`dkimd -n` matches that: errors of these options are not what `-n` fails on; it says them as
warnings ("the daemon would not start"), and a real start still refuses them.
"""

from __future__ import annotations

from dataclasses import replace

from dkimd.config.problems import Problem, Severity
from dkimd.config.reader import RawConfig

__all__ = ["OPERATIONAL_OPTIONS", "is_operational", "split_check_problems", "without_operational"]

OPERATIONAL_OPTIONS = frozenset(
    name.lower()
    for name in (
        "AutoRestart",
        "AutoRestartCount",
        "AutoRestartRate",
        "Background",
        "ChangeRootDirectory",
        "MilterDebug",
        "PidFile",
        "QueryCache",
        "Socket",
        "StrictTestMode",
        "SyslogFacility",
        "UMask",
        "UserID",
    )
)


def is_operational(problem: Problem) -> bool:
    """A problem of an option `-n` does not check."""
    return problem.option is not None and problem.option.lower() in OPERATIONAL_OPTIONS


def without_operational(raw: RawConfig) -> RawConfig:
    """`raw` as `-n` sees it: the operational options left out, as if they were not set."""
    kept = tuple(s for s in raw.settings if s.name.lower() not in OPERATIONAL_OPTIONS)
    return replace(raw, settings=kept)


def split_check_problems(
    problems: tuple[Problem, ...], read_problems: tuple[Problem, ...] = ()
) -> tuple[list[Problem], list[Problem]]:
    """(what `-n` fails on, what it only warns about): errors of operational options become
    warnings, as opendkim -n does not see them; but not those of reading the file
    (`read_problems`: a value that is not of the option's type), which opendkim's
    config_load refuses for every option ("illegal value", observed with `UMask 0999`)."""
    failing: list[Problem] = []
    warnings: list[Problem] = []
    for problem in problems:
        if problem.severity is Severity.ERROR and (
            not is_operational(problem) or problem in read_problems
        ):
            failing.append(problem)
        elif problem.severity is Severity.ERROR:
            warnings.append(
                replace(
                    problem,
                    severity=Severity.WARNING,
                    message=f"{problem.message}; the daemon would not start",
                )
            )
        else:
            warnings.append(problem)
    return failing, warnings
