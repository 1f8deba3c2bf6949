"""`TestPublicKeys`: DKIM key records from a flat file instead of DNS (OpenDKIM's test hook).

OpenDKIM 2.11 sets libopendkim's query method to "file" with this path
(DKIM_QUERY_FILE, libopendkim dkim_get_key_file), and then answers every *key* query for a
signature from it; all other DNS queries (ATPS, `_report`, ...) still go to DNS, or to
TestDNSData when that is set. The lookup, as dkim_get_key_file does it:

* the file is opened anew for every lookup (no caching), so it may change while the
  filter runs; a file that cannot be opened is a key retrieval failure (KEYFAIL: a
  temporary error here);
* each line is `NAME<blanks>RECORD`: the name is the text up to the first blank, the
  record starts at the first non-blank after it and runs to the end of the line;
* names compare case-insensitively; the *first* matching line wins;
* a line without a blank after the name never matches; a line starting with `#`
  never matches either (no DNS name starts with `#`);
* no matching line: the key does not exist (NOKEY, as NXDOMAIN).

Difference, on purpose: OpenDKIM reads lines into a fixed buffer and would treat the rest
of an overlong line as a line of its own; here a line is a line.

`KeyRecordsFirst` puts this file in front of another lookup: DKIM key names
(`SELECTOR._domainkey.DOMAIN`) go to the file, every other name to the other lookup.
"""

from __future__ import annotations

import asyncio
import os

from dkimd.dns.base import CachingTxtLookup, TxtLookup, TxtResult, TxtStatus

__all__ = ["KeyRecordsFirst", "TestPublicKeysFile", "is_key_record_name"]

_BLANKS = b" \t\r\n\v\f"  # C isspace() in the C locale
_KEY_LABEL = "_domainkey"


def is_key_record_name(name: str) -> bool:
    """Whether `name` is where a DKIM key record lives: SELECTOR._domainkey.DOMAIN.

    A selector is one or more sub-domains, each starting with a letter or digit (RFC 6376
    3.1, RFC 5321 sub-domain), so `_report._domainkey.example.com` (RFC 6651) and
    `_adsp._domainkey...` are not key names.
    """
    labels = name.rstrip(".").lower().split(".")
    try:
        at = labels.index(_KEY_LABEL)
    except ValueError:
        return False
    return 0 < at < len(labels) - 1 and not labels[0].startswith("_")


def find_key_record(data: bytes, name: str) -> bytes | None:
    """The record for `name` in TestPublicKeys file content, or None (see the module doc)."""
    wanted = name.rstrip(".").lower().encode("utf-8", "surrogateescape")
    for line in data.split(b"\n"):
        if line.startswith(b"#"):
            continue
        end = 0
        while end < len(line) and line[end] not in _BLANKS:
            end += 1
        if end == len(line):
            continue  # no blank after the name: dkim_get_key_file never matches it
        if line[:end].lower() != wanted:
            continue
        return line[end:].lstrip(_BLANKS).rstrip(b"\r")
    return None


class TestPublicKeysFile:
    """`TxtLookup` for DKIM key records from the TestPublicKeys file, re-read per lookup."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def lookup(self, name: str) -> TxtResult:
        """The answer for `name`, reading the file now (synchronously)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            return TxtResult(
                name, TxtStatus.SERVFAIL, detail=f"TestPublicKeys: {exc.strerror or exc}"
            )
        record = find_key_record(data, name)
        if record is None:
            return TxtResult(name, TxtStatus.NXDOMAIN, detail="not in TestPublicKeys")
        return TxtResult(name, TxtStatus.OK, (record,))

    async def lookup_txt(self, name: str) -> TxtResult:
        # A file read is blocking I/O: off the event loop, as a DNS query would be.
        return await asyncio.to_thread(self.lookup, name)


class KeyRecordsFirst:
    """Key record names from `keys`, every other name from `other` (a `TxtLookup`).

    It answers `cached` for the names `other` has in memory; key names are never cached,
    since TestPublicKeys is read on every lookup.
    """

    def __init__(self, keys: TxtLookup, other: TxtLookup) -> None:
        self.keys = keys
        self.other = other

    def cached(self, name: str) -> TxtResult | None:
        if is_key_record_name(name):
            return None
        if isinstance(self.other, CachingTxtLookup):
            return self.other.cached(name)
        return None

    async def lookup_txt(self, name: str) -> TxtResult:
        if is_key_record_name(name):
            return await self.keys.lookup_txt(name)
        return await self.other.lookup_txt(name)
