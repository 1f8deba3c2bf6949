"""What `dkimd check --dns` and `dkimd testkey` say about keys the key guard would flag.

The daemon's key guard (dkimd.key_guard) logs a signing key whose record is missing or
does not match, and SkipUnpublishedKeys decides whether it still signs with it; these
tools report the same finding, with what the daemon will do about it, before mail does.
"""

from __future__ import annotations

from dkimd.config import Config, KeyTableEntry, Problem, Severity
from dkimd.dkim import KeyLoadError, PrivateKey
from dkimd.dkim.keys import load_private_key, load_private_key_file
from dkimd.dns.base import TxtLookup
from dkimd.keytools.published import Publication, check_publication, guarded_entries


def daemon_action(config: Config) -> str:
    """What the daemon does with a signing key whose record is not published."""
    if config.skip_unpublished_keys:
        return "the daemon skips it for the next SigningTable match (SkipUnpublishedKeys yes)"
    return "the daemon still signs with it, and verifiers will fail those signatures"


async def unpublished_problems(config: Config, lookup: TxtLookup) -> list[Problem]:
    """A warning for each signing key whose record is missing, mismatched or unreachable."""
    problems: list[Problem] = []
    for entry in guarded_entries(config):
        try:
            key = _load(entry)
        except (KeyLoadError, OSError):
            continue  # the key checks report a key that cannot be loaded
        result = await check_publication(lookup, entry.selector, entry.domain, key)
        if result.state is Publication.MATCHES:
            continue
        if result.state is Publication.UNKNOWN:
            message = f'key "{entry.name}": {result.describe()}'
            hint = "check Nameservers / resolv.conf, or run again"
        else:
            message = f'key "{entry.name}": {result.describe()}; {daemon_action(config)}'
            hint = "publish the record from the key's .txt file (dkimd genzone prints it)"
        problems.append(
            Problem(entry.file, entry.line, Severity.WARNING, message, hint, "KeyTable")
        )
    return problems


def _load(entry: KeyTableEntry) -> PrivateKey:
    if entry.key_data is not None:
        return load_private_key(entry.key_data)
    assert entry.key_path is not None
    return load_private_key_file(entry.key_path)


async def unpublished_note(
    config: Config, key_name: str, lookup: TxtLookup, key: PrivateKey | None
) -> str | None:
    """For testkey: what the daemon does with signing key `key_name`, when the key guard
    would find its record missing or mismatched; None when it would not."""
    if key is None:
        return None
    for entry in guarded_entries(config):
        if entry.name == key_name:
            result = await check_publication(lookup, entry.selector, entry.domain, key)
            return daemon_action(config) if result.state.unpublished else None
    return None
