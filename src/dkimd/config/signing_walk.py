"""`CheckSigningTable`: refuse to start when the SigningTable names a key that cannot sign.

OpenDKIM's development branch walks the SigningTable at start and refuses the configuration
when an entry names a key the KeyTable lacks or whose KeyTable line lacks a field (its
t-conf-check and t-conf-check2 tests); `CheckSigningTable no` (or `opendkim -g`) skips the
walk, which takes hours on database tables of 100k+ domains. Debian's 2.11 never refuses
(its walk skips entries without a signer field and ignores lookup errors), so dkimd's
default is "no": start, and tempfail the messages such an entry matches, as 2.11 does.

dkimd walks every table it can read whole, `refile:` included; the development branch skips
`refile:` tables because its database layer cannot enumerate them. Tables on a server
(`dsn:`, `ldap:`, ...) are never walked at start (issue 16: a start must not cost a walk of
a million rows): `dkimd check --walk` checks them on request, and `dkimd check` says so.
"""

from __future__ import annotations

from dkimd.config.datasets import DatasetKind
from dkimd.config.keytable import KeyTable, SigningTable
from dkimd.config.problems import Problem, Severity

__all__ = ["walk_signing_table"]


def walk_signing_table(signing: SigningTable, keys: KeyTable) -> list[Problem]:
    """An error for each SigningTable entry whose key is missing from or broken in `keys`.

    A key name of `%` (the sender's domain) is only known per message and is not checked.
    """
    problems: list[Problem] = []
    if keys.dataset.kind is DatasetKind.REMOTE:
        return problems  # each name would be a lookup on the server: check --walk does it
    for entry in signing.dataset.entries:
        key_name = (entry.value or "").partition(":")[0].strip()
        if key_name == "%":
            continue
        if not key_name:
            why = "names no key"
        elif key_name not in keys:
            why = f'names key "{key_name}", which is not in the KeyTable'
        else:
            broken = keys.broken(key_name)
            if broken is None:
                continue
            why = f'names key "{key_name}", whose KeyTable line is unusable: {broken}'
        problems.append(
            Problem(
                entry.file,
                entry.line,
                Severity.ERROR,
                f'SigningTable entry "{entry.key}" {why}',
                "fix the entry, or set CheckSigningTable no to start and tempfail its senders",
                "CheckSigningTable",
            )
        )
    return problems
