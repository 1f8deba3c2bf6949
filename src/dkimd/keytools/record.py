"""DNS TXT text for DKIM public keys, laid out exactly as the OpenDKIM tools lay it out.

Two layouts exist because OpenDKIM has two tools with their own habits:

* opendkim-genkey's SELECTOR.txt: one record, tags in a fixed order, the p= value cut
  into 250-character pieces, and a trailing comment naming the key.
* opendkim-genzone (Debian 2.11 build): one record per KeyTable entry, semicolons
  escaped as `\\;`, pieces cut to fit a 75-column line, or an nsupdate script.

Admins diff these files and feed them to scripts, so the layouts are reproduced byte for
byte (tests compare against the real tools). Every quoted piece stays under 255 bytes,
the limit of one DNS character-string (RFC 1035 section 3.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dkimd.keytools.generate import KeyType

# opendkim-genkey cuts the base64 key after every 250 characters.
GENKEY_CHUNK = 250
# opendkim-genzone wraps at "column" 75, counting from the start of the record text on
# the first line (so the first piece holds 75 characters) and from column 9 on
# continuation lines (a tab, then the quote), which therefore hold 66.
GENZONE_FIRST_PIECE = 75
GENZONE_PIECE = 66
# nsupdate output: pieces of 255 characters, the most one character-string holds.
NSUPDATE_PIECE = 255

_HASH_ALG = re.compile(r"[a-z0-9]+(?::[a-z0-9]+)*")
KNOWN_HASH_ALGORITHMS = frozenset({"sha1", "sha256"})


class RecordError(ValueError):
    """A value that cannot be put in a key record without corrupting it."""


@dataclass(frozen=True, slots=True)
class KeyRecordOptions:
    """The tags opendkim-genkey's flags add to the record (RFC 6376 section 3.6.1).

    Defaults are Debian's opendkim-genkey defaults: h=sha256 is always present there
    (a Debian patch, after NIST SP 800-177), subdomains allowed, not testing, any service.
    """

    key_type: KeyType = "rsa"
    hash_algorithms: str | None = "sha256"  # h=; None leaves the tag out
    note: str | None = None  # n=
    restrict_email: bool = False  # s=email
    subdomains: bool = True  # False adds t=s
    testing: bool = False  # t=y

    def __post_init__(self) -> None:
        if self.hash_algorithms is not None and not _HASH_ALG.fullmatch(self.hash_algorithms):
            raise RecordError(
                f"hash algorithm list {self.hash_algorithms!r} is not of the form sha256[:sha1]"
            )
        if self.note is not None:
            # The note lands inside a quoted zone-file string and a tag-list: a quote,
            # backslash or semicolon would end one of them early; control characters
            # are not allowed in either.
            bad = [c for c in self.note if c in '";\\' or ord(c) < 0x20 or ord(c) > 0x7E]
            if bad:
                raise RecordError(f"the note may not contain {''.join(sorted(set(bad)))!r}")

    @property
    def unknown_hash_algorithms(self) -> list[str]:
        if self.hash_algorithms is None:
            return []
        return [h for h in self.hash_algorithms.split(":") if h not in KNOWN_HASH_ALGORITHMS]

    def flags(self) -> list[str]:
        """The t= and s= tags, in opendkim-genkey's order."""
        t_flags = (["y"] if self.testing else []) + ([] if self.subdomains else ["s"])
        tags = [f"t={':'.join(t_flags)}"] if t_flags else []
        if self.restrict_email:
            tags.append("s=email")
        return tags


def record_value(public_key_b64: str, options: KeyRecordOptions) -> str:
    """The record as DNS serves it (all pieces joined): what opendkim-genkey's .txt says.

    Example: "v=DKIM1; h=sha256; k=rsa; p=MIIB...". The note keeps the literal quotes
    opendkim-genkey puts around it (n="text"), which verifiers ignore.
    """
    return _genkey_head(options).replace('\\"', '"') + "p=" + public_key_b64


def _genkey_head(options: KeyRecordOptions) -> str:
    # Tag order and spacing as opendkim-genkey prints them: v, n, h, k, then t= / s=.
    # The note's quotes are written escaped (\") because the whole thing sits inside a
    # zone-file string; DNS then serves plain quotes.
    parts = ["v=DKIM1;"]
    if options.note is not None:
        parts.append(f'n=\\"{options.note}\\";')
    if options.hash_algorithms is not None:
        parts.append(f"h={options.hash_algorithms};")
    parts.append(f"k={options.key_type};")
    parts += [f"{tag};" for tag in options.flags()]
    return " ".join(parts) + " "


def genkey_txt(
    selector: str,
    domain: str,
    public_key_b64: str,
    options: KeyRecordOptions,
    *,
    append_domain: bool = False,
) -> str:
    """SELECTOR.txt exactly as opendkim-genkey writes it, final newline included."""
    name = f"{selector}._domainkey"
    if append_domain:
        name += f".{domain}."
    out = [f'{name}\tIN\tTXT\t( "{_genkey_head(options)}"\n\t  "p=']
    # Same loop as opendkim-genkey: a full piece is always followed by a piece break,
    # so a key whose length is a multiple of 250 ends with an empty string "".
    remaining = public_key_b64
    while remaining:
        if len(remaining) < GENKEY_CHUNK:
            out.append(remaining)
            remaining = ""
        else:
            out.append(remaining[:GENKEY_CHUNK] + '"\n\t  "')
            remaining = remaining[GENKEY_CHUNK:]
    comment = f" ; ----- DKIM key {selector} for {domain}" if domain else ""
    out.append(f'" ) {comment}\n')
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ZoneKey:
    """One KeyTable entry's public half, as genzone needs it."""

    key_name: str
    domain: str
    selector: str
    key_type: KeyType
    public_key_b64: str


@dataclass(frozen=True, slots=True)
class ZoneOptions:
    """opendkim-genzone's output switches."""

    domainkey_suffix: bool = False  # -D: selector._domainkey
    fqdn: bool = False  # -F: selector._domainkey.domain.
    restrict_email: bool = False  # -M: s=email
    ttl: int | None = None  # -t
    nsupdate: bool = False  # -u


def _zone_record_text(key: ZoneKey, restrict_email: bool) -> str:
    # Debian's genzone escapes the semicolons (\;); zone parsers read it back as ";".
    text = f"v=DKIM1\\;k={key.key_type}\\;"
    if restrict_email:
        text += "s=email\\;"
    return text + "p=" + key.public_key_b64


def _zone_owner(key: ZoneKey, options: ZoneOptions) -> str:
    name = key.selector
    if options.domainkey_suffix or options.fqdn:
        name += "._domainkey"
    if options.fqdn:
        name += f".{key.domain}."
    return name


def _pieces(text: str, first: int, rest: int) -> list[str]:
    pieces = [text[:first]]
    pos = first
    while pos < len(text):
        pieces.append(text[pos : pos + rest])
        pos += rest
    return pieces


def genzone_record(key: ZoneKey, options: ZoneOptions) -> str:
    """One zone-file record in opendkim-genzone's layout, final newline included."""
    owner = _zone_owner(key, options)
    ttl = "" if options.ttl is None else f"\t{options.ttl}"
    pieces = _pieces(
        _zone_record_text(key, options.restrict_email), GENZONE_FIRST_PIECE, GENZONE_PIECE
    )
    return f'{owner}{ttl}\tIN\tTXT\t( "' + '"\n\t"'.join(pieces) + '" )\n'


@dataclass(frozen=True, slots=True)
class SoaOptions:
    """opendkim-genzone -S: an SOA record on top (values as -r/-R/-E/-T, defaults its own)."""

    primary_ns: str
    contact: str  # user@host or user.host; '@' becomes '.'
    serial: str  # yyyymmddhh
    refresh: int = 10800
    retry: int = 1800
    expire: int = 604800
    default_ttl: int = 86400


def genzone_text(
    keys: Iterable[ZoneKey],
    options: ZoneOptions,
    *,
    program: str,
    generated_at: str,
    only_domain: str | None = None,
    soa: SoaOptions | None = None,
    nameservers: Sequence[str] = (),
    nsupdate_server: str = "localhost",
    nsupdate_default_ttl: int = 86400,
) -> str:
    """The whole output of opendkim-genzone for `keys` (already filtered by domain)."""
    out: list[str] = []
    if options.nsupdate:
        # nsupdate takes no comments or SOA: a server line, then zone/update per key.
        out.append(f"server {nsupdate_server}\n")
        ttl = nsupdate_default_ttl if options.ttl is None else options.ttl
        for key in keys:
            text = _zone_record_text(key, options.restrict_email)
            pieces = _pieces(text, NSUPDATE_PIECE, NSUPDATE_PIECE)
            out.append(f"zone {key.domain}\n")
            out.append(
                f'update add {_zone_owner(key, options)} {ttl} TXT "' + '" "'.join(pieces) + '"\n'
            )
        out.append("send\nanswer\n")
        return "".join(out)

    out.append("; DKIM public key zone data\n")
    if only_domain is not None:
        out.append(f"; for {only_domain}\n")
    # ctime() ends in a newline of its own, hence the blank line after this comment.
    out.append(f"; auto-generated by {program} at {generated_at}\n\n")
    if soa is not None:
        out.append(f"@\tIN\tSOA\t{soa.primary_ns}\t{soa.contact.replace('@', '.')}\t (\n")
        out.append(f"\t{soa.serial}   ; Serial (yyyymmddhh)\n")
        out.append(f"\t{soa.refresh:<10d}   ; Refresh\n")
        out.append(f"\t{soa.retry:<10d}   ; Retry\n")
        out.append(f"\t{soa.expire:<10d}   ; Expire\n")
        out.append(f"\t{soa.default_ttl:<10d} ) ; Default\n\n")
    if nameservers:
        out += [f"\tIN\tNS\t{ns}\n" for ns in nameservers]
        out.append("\n")
    out += [genzone_record(key, options) for key in keys]
    return "".join(out)


def zone_txt_strings(text: str) -> list[str]:
    """The character-strings of the first TXT record in zone-file `text`, unescaped.

    Enough of RFC 1035 section 5.1 for the files these tools write: quoted strings,
    backslash escapes (\\X and \\DDD), parentheses and `;` comments outside quotes.
    """
    strings: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == ";":  # comment to end of line
            while i < n and text[i] != "\n":
                i += 1
        elif c == '"':
            i += 1
            buf: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                        buf.append(chr(int(text[i + 1 : i + 4])))
                        i += 4
                        continue
                    buf.append(text[i + 1])
                    i += 2
                    continue
                buf.append(text[i])
                i += 1
            if i >= n:
                raise RecordError("unterminated quoted string in zone text")
            strings.append("".join(buf))
            i += 1
        elif c == ")" and strings:
            break
        else:
            i += 1
    return strings
