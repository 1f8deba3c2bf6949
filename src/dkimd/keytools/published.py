"""Is a signing key published? Its record looked up and compared with the private key.

One answer for the three places that ask: `dkimd keys rotate` (wait until the new key's
record is visible before signing with it), the daemon's key guard (SkipUnpublishedKeys)
and the reports of `dkimd check` / `testkey`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from dkimd.config import Config, KeyTableEntry
from dkimd.dkim.errors import KeyRecordError
from dkimd.dkim.keys import PrivateKey, parse_key_record
from dkimd.dns.base import TxtLookup, TxtStatus


class Publication(enum.Enum):
    MATCHES = "published"  # a record at the name publishes this key's public half
    MISSING = "missing"  # no record (NXDOMAIN, no TXT)
    MISMATCH = "mismatch"  # a record, but for another key, revoked, or unreadable
    UNKNOWN = "unknown"  # the lookup failed for a temporary reason

    @property
    def unpublished(self) -> bool:
        """Verifiers would fail signatures made with the key."""
        return self in (Publication.MISSING, Publication.MISMATCH)


@dataclass(frozen=True, slots=True)
class PublicationCheck:
    name: str  # SELECTOR._domainkey.DOMAIN
    state: Publication
    detail: str = ""

    def describe(self) -> str:
        text = {
            Publication.MATCHES: "record published",
            Publication.MISSING: "no key record in DNS",
            Publication.MISMATCH: "the key record does not match the private key",
            Publication.UNKNOWN: "key record lookup failed",
        }[self.state]
        text = f"{self.name}: {text}"
        return f"{text} ({self.detail})" if self.detail else text


def key_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


async def check_publication(
    lookup: TxtLookup, selector: str, domain: str, key: PrivateKey
) -> PublicationCheck:
    """Whether `key`'s public half is at SELECTOR._domainkey.DOMAIN. Never raises."""
    name = key_record_name(selector, domain)
    answer = await lookup.lookup_txt(name)
    if answer.status is TxtStatus.NXDOMAIN or (answer.ok and not answer.records):
        return PublicationCheck(name, Publication.MISSING)
    if not answer.ok:
        return PublicationCheck(name, Publication.UNKNOWN, answer.detail or answer.status.value)
    problems: list[str] = []
    for record in answer.records:
        try:
            parsed = parse_key_record(record)
        except KeyRecordError as exc:
            problems.append(f"unreadable record: {exc}")
            continue
        if parsed.revoked:
            problems.append("revoked (empty p=)")
        elif key.matches(parsed):
            return PublicationCheck(name, Publication.MATCHES)
        else:
            problems.append("another key")
    return PublicationCheck(name, Publication.MISMATCH, "; ".join(problems))


def guarded_entries(config: Config) -> Iterator[KeyTableEntry]:
    """The KeyTable entries that sign with a fixed domain: what the guard checks."""
    if config.key_table is None or not config.signs:
        return
    names: set[str] | None = None
    if config.signing_table is not None:
        names = {(e.value or "").partition(":")[0] for e in config.signing_table.dataset.entries}
    for entry in config.key_table:
        if entry.needs_sender_domain or (names is not None and entry.name not in names):
            continue
        yield entry
