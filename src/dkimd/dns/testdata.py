"""`TestDNSData`: TXT records served from a file instead of DNS (OpenDKIM's testing hook).

OpenDKIM's `TestDNSData` option names a data set, normally `file:/path`; opendkim then answers
every TXT query from it (opendkim-dns.c, dkimf_filedns_*) and never touches the network.
The `file:` data set format (opendkim-db.c, DKIMF_DB_TYPE_FILE):

* one entry per line; `#` starts a comment anywhere on the line; blank lines are skipped;
* the key is the first run of non-blank characters (the DNS name, no trailing dot), the value is
  the rest of the line after the following blanks, trimmed: the TXT record text, verbatim
  (no zone-file quoting: `"a" "b"` stays as those six characters);
* a name that is not in the file answers NXDOMAIN, except for opendkim.conf's TestDNSData,
  where OpenDKIM takes it as a failed lookup (`from_records(..., missing=)`); a key with no
  value is a record with empty text.

    mail._domainkey.example.com v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA...

Differences from OpenDKIM, on purpose: names match case-insensitively and with or without a
trailing dot (as DNS does), and several lines for one name are several TXT records (OpenDKIM
returns only the first one). Lines are not limited to OpenDKIM's 1024-byte buffer.

The path may be given bare or with OpenDKIM's `file:` prefix.

A file given on the command line (`dkimd verify --dns-file`, `dkimd testkey --dns-file`) is
read by `parse_records_file`, which takes, entry by entry, that `name record` form or the
zone-file form that `dkimd genkey`, opendkim-genkey and `genzone -F` write (see
`dkimd.dns.zonetext`). A line is a zone-file entry when it reads OWNER [TTL] [CLASS] TYPE
..., which no `name record` line for a key record does. A line that is neither is rejected
with FILE:LINE and why.

A relative owner name (`mail._domainkey`, as genkey writes it) is completed with `$ORIGIN`
when the file sets one, else with the domain of genkey's `; ----- DKIM key mail for
example.com` comment on that record; without either the line is an error. Never with the
domain of the signature being verified: the record would then vouch for any domain that
signs with that selector.

`TestDNSData` in opendkim.conf is not read here: it is an OpenDKIM data set, read by
`dkimd.config` with OpenDKIM's meaning (the `name record` form only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.dns.zonetext import ZoneEntry, ZoneSyntaxError, entry_start, tokenize

__all__ = ["RecordsFileError", "TestDnsFile", "parse_records_file"]

_BLANKS = b" \t\r\n\v\f"
# Host names as key records use them: letters, digits, '-', '_' (RFC 6376 3.6.2.1), '*'.
_DNS_NAME = re.compile(r"(?:[A-Za-z0-9_*-]+\.)*[A-Za-z0-9_*-]+\.?")


class RecordsFileError(ValueError):
    """A line of a records file that cannot be read: `str()` is FILE:LINE: reason."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


def _normalize(name: str) -> str:
    return name.rstrip(".").lower()


def parse_records_file(data: bytes, source: str = "<records>") -> dict[str, list[bytes]]:
    """Name -> TXT records (file order) from `name record` lines and zone-file entries.

    Raises RecordsFileError for the first line that is neither.
    """
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # a UTF-8 BOM from an editor
    records: dict[str, list[bytes]] = {}
    origin: str | None = None
    index = 0
    while index < len(lines):
        start = number = index + 1  # the entry's first line, and the line being read
        line = lines[index].strip(_BLANKS)
        index += 1
        if not line or line[:1] in (b"#", b";"):
            continue
        try:
            if line[:1] == b"$":
                origin = _directive(line, origin)
                continue
            entry = entry_start(line)
            if entry is None:
                name, value = _name_record(line)
                records.setdefault(name, []).append(value)
                continue
            while entry.depth > 0:
                if index == len(lines):
                    number = start
                    raise ZoneSyntaxError('"(" is not closed before the end of the file')
                number = index + 1
                entry.feed(*tokenize(lines[index]))
                index += 1
            number = start
            if entry.rtype == "txt":
                name = _owner_name(entry, origin)
                records.setdefault(name, []).append(entry.txt())
        except ZoneSyntaxError as exc:
            raise RecordsFileError(source, number, str(exc)) from None
    return records


def _directive(line: bytes, origin: str | None) -> str | None:
    """The $ORIGIN after a `$...` line ($TTL changes nothing here)."""
    words = line.split()
    keyword = words[0].decode("ascii", "replace").upper()
    if keyword == "$TTL" and len(words) >= 2:
        return origin
    if keyword == "$ORIGIN" and len(words) >= 2:
        name = words[1].decode("utf-8", "surrogateescape")
        if not name.endswith(".") or not _DNS_NAME.fullmatch(name):
            raise ZoneSyntaxError(
                f'$ORIGIN "{_shown(name)}" is not a fully qualified name (end it with ".")'
            )
        return _normalize(name)
    raise ZoneSyntaxError(f"{_shown(keyword)} is not supported here (only $ORIGIN and $TTL)")


def _name_record(line: bytes) -> tuple[str, bytes]:
    """OpenDKIM's `name record` line: name, record text (see the module docstring)."""
    line = line.split(b"#", 1)[0].strip(_BLANKS)
    parts = line.split(None, 1)
    name = parts[0].decode("utf-8", "surrogateescape")
    if not _DNS_NAME.fullmatch(name):
        raise ZoneSyntaxError(
            f'"{_shown(name)}" is not a DNS name; each line is NAME RECORD '
            "(mail._domainkey.example.com v=DKIM1; p=...) or a zone-file TXT record"
        )
    if _normalize(name).endswith("._domainkey") or _normalize(name) == "_domainkey":
        raise ZoneSyntaxError(f'"{name}" names no domain: write SELECTOR._domainkey.DOMAIN')
    value = parts[1].strip(_BLANKS) if len(parts) > 1 else b""
    return _normalize(name), value


def _owner_name(entry: ZoneEntry, origin: str | None) -> str:
    """The absolute name of a zone-file entry's owner (see the module docstring)."""
    owner = entry.owner
    if not _DNS_NAME.fullmatch(owner) and owner != "@":
        raise ZoneSyntaxError(f'"{_shown(owner)}" is not a DNS name')
    if owner.endswith("."):
        return _normalize(owner)
    domain = origin
    if domain is None:
        named = entry.genkey_domain()
        if named is not None:
            selector, domain = named
            if owner.split(".", 1)[0].lower() != selector.lower():
                raise ZoneSyntaxError(
                    f'the comment names key "{selector}", but the record is for "{owner}"'
                )
    if domain is None:
        raise ZoneSyntaxError(
            f'"{owner}" is relative and nothing says to which domain: write the full name '
            "with a final dot (SELECTOR._domainkey.DOMAIN., as genzone -F does), or put "
            "$ORIGIN DOMAIN. above it"
        )
    domain = _normalize(domain)
    return domain if owner == "@" else f"{_normalize(owner)}.{domain}"


def _shown(text: str) -> str:
    """`text` for an error message: printable, and not a whole key long."""
    clean = text.encode("ascii", "backslashreplace").decode("ascii")
    return clean if len(clean) <= 40 else clean[:37] + "..."


class TestDnsFile:
    """`TxtLookup` answering from a records file (read once, at construction).

    Raises OSError when the file cannot be read, RecordsFileError when a line is malformed.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, path: str | os.PathLike[str]) -> None:
        spec = os.fspath(path)
        self.path = spec
        self._missing = TxtStatus.NXDOMAIN
        if spec.startswith("file:"):
            spec = spec[5:]
        with open(spec, "rb") as f:
            self._records = parse_records_file(f.read(), spec)

    @classmethod
    def from_records(
        cls,
        records: Mapping[str, str | bytes | Iterable[str | bytes]],
        *,
        missing: TxtStatus = TxtStatus.NXDOMAIN,
    ) -> TestDnsFile:
        """Build from a mapping name -> record text, or name -> several record texts.

        `missing` is the answer for a name that is not there: NXDOMAIN for a records file
        standing in for a zone, SERVFAIL for opendkim.conf's TestDNSData, where OpenDKIM
        2.11 takes a name it lacks as a failed lookup, not as a name that does not exist
        (observed: no Authentication-Results for such a key, dkim-atps=neutral for ATPS).
        """
        self = cls.__new__(cls)
        self.path = "<records>"
        self._missing = missing
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
            return TxtResult(name, self._missing, detail="not in TestDNSData")
        return TxtResult(name, TxtStatus.OK, tuple(found))

    async def lookup_txt(self, name: str) -> TxtResult:
        found = self._records.get(_normalize(name))
        if found is None:
            return TxtResult(name, self._missing, detail="not in TestDNSData")
        return TxtResult(name, TxtStatus.OK, tuple(found))
