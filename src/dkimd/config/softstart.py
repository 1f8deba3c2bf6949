"""SoftStart: whether a data set that cannot be opened at start stops the start.

opendkim.conf(5): with SoftStart, "the inability to connect and authenticate to an LDAP or
SQL server will not prevent the filter from starting, and reconnections will be attempted
for each query". It concerns only data sets behind a server: a `file:`/`refile:` that
cannot be read stops opendkim whatever SoftStart says (`dkimf_db_open()` failure, exit 78),
and a `csl:` cannot fail to open.

This module is the one place that rule lives: `open_dataset` asks `failure_severity` how
to report a failed open. The kinds dkimd has today (file, refile, csl) are not in
`RECONNECTING_KINDS`, so SoftStart changes nothing for them, as in opendkim; a data-set
kind that talks to a server (SQL, LDAP, memcache, Redis) joins the set and, when it cannot
connect at start, answers each query by trying again.
"""

from __future__ import annotations

from dkimd.config.problems import Severity

__all__ = ["RECONNECTING_KINDS", "failure_severity"]

# Data-set kinds (DatasetKind values) that reconnect per query and so may start without
# their server under SoftStart.
RECONNECTING_KINDS: frozenset[str] = frozenset({"remote"})  # dkimd.stores


def failure_severity(kind: str, soft_start: bool) -> Severity:
    """How a data set of `kind` that cannot be opened at start is reported."""
    if soft_start and kind in RECONNECTING_KINDS:
        return Severity.WARNING  # the filter starts; each query tries the server again
    return Severity.ERROR
