"""`TestDNSData`: TXT records served from a file instead of DNS (OpenDKIM's testing hook).

OpenDKIM's `TestDNSData` option names a data set, normally `file:/path`; opendkim then answers
every TXT query from it (opendkim-dns.c, dkimf_filedns_*) and never touches the network.
The `file:` data set format (opendkim-db.c, DKIMF_DB_TYPE_FILE):

* one entry per line; `#` starts a comment anywhere on the line; blank lines are skipped;
* the key is the first run of non-blank characters (the DNS name, no trailing dot), the value is
  the rest of the line after the following blanks, trimmed: the TXT record text, verbatim
  (no zone-file quoting: `"a" "b"` stays as those six characters);
* a name that is not in the file answers NXDOMAIN; a key with no value is a record with
  empty text.

    mail._domainkey.example.com v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA...

Differences from OpenDKIM, on purpose: names match case-insensitively and with or without a
trailing dot (as DNS does), and several lines for one name are several TXT records (OpenDKIM
returns only the first one). Lines are not limited to OpenDKIM's 1024-byte buffer.

The path may be given bare or with OpenDKIM's `file:` prefix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from dkimd.dns.base import TxtResult, TxtStatus

__all__ = ["TestDnsFile", "parse_test_dns_data"]

_BLANKS = b" \t\r\n\v\f"


def parse_test_dns_data(data: bytes) -> dict[str, list[bytes]]:
    """Parse the contents of a `file:` TestDNSData data set into name -> records (file order)."""
    records: dict[str, list[bytes]] = {}
    for raw in data.split(b"\n"):
        line = raw.split(b"#", 1)[0].strip(_BLANKS)
        if not line:
            continue
        parts = line.split(None, 1)
        key = parts[0].decode("utf-8", "surrogateescape")
        value = parts[1].strip(_BLANKS) if len(parts) > 1 else b""
        records.setdefault(_normalize(key), []).append(value)
    return records


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


class TestDnsFile:
    """`TxtLookup` answering from an OpenDKIM TestDNSData file (read once, at construction)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, path: str | os.PathLike[str]) -> None:
        spec = os.fspath(path)
        self.path = spec
        if spec.startswith("file:"):
            spec = spec[5:]
        with open(spec, "rb") as f:
            self._records = parse_test_dns_data(f.read())

    @classmethod
    def from_records(
        cls, records: Mapping[str, str | bytes | Iterable[str | bytes]]
    ) -> TestDnsFile:
        """Build from a mapping name -> record text, or name -> several record texts."""
        self = cls.__new__(cls)
        self.path = "<records>"
        table: dict[str, list[bytes]] = {}
        for name, value in records.items():
            values = [value] if isinstance(value, str | bytes) else list(value)
            table.setdefault(_normalize(name), []).extend(
                v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values
            )
        self._records = table
        return self

    @property
    def names(self) -> list[str]:
        return list(self._records)

    def records(self, name: str) -> tuple[bytes, ...]:
        return tuple(self._records.get(_normalize(name), ()))

    def cached(self, name: str) -> TxtResult | None:
        """Every answer is at hand: the same as lookup_txt, without the coroutine."""
        found = self._records.get(_normalize(name))
        if found is None:
            return TxtResult(name, TxtStatus.NXDOMAIN, detail="not in TestDNSData")
        return TxtResult(name, TxtStatus.OK, tuple(found))

    async def lookup_txt(self, name: str) -> TxtResult:
        found = self._records.get(_normalize(name))
        if found is None:
            return TxtResult(name, TxtStatus.NXDOMAIN, detail="not in TestDNSData")
        return TxtResult(name, TxtStatus.OK, tuple(found))
