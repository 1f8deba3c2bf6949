"""What libopendkim refuses as a syntax error before any signature is verified.

OpenDKIM 2.11 (libopendkim/dkim.c) has two such checks, with different outcomes in the
filter, so they are two functions here:

* `header_syntax_error`: `dkim_header()` returns DKIM_STAT_SYNTAX for a field whose name
  holds a byte outside printable ASCII, or for a DKIM-Signature field whose tag-list
  `dkim_process_set()` cannot read. The filter then applies On-BadSignature at end of
  headers ("DKIM signature syntax error").
* `strict_header_error`: with StrictHeaders (DKIM_LIBFLAGS_STRICTHDRS), `dkim_eoh()` returns
  DKIM_STAT_SYNTAX when the RFC 5322 section 3.6 field counts are wrong; the filter then takes
  its "bad message format" path (permerror Authentication-Results, no verification).

Both mirror libopendkim's acceptance exactly, including its leniencies: a repeated tag is not
an error (the last one wins), a required tag may be empty, and c=, a=, h=, l=, bh= are judged
later, per signature, as a failed signature and not as a syntax error. Pure; never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dkimd.dkim.headers import HeaderField
from dkimd.dkim.signature import FIELD_KEY, SignatureField, signature_fields
from dkimd.dkim.tags import TagList, strip_fws

__all__ = ["header_syntax_error", "signature_tag_list_error", "strict_header_error"]

# dkim_process_set: a signature set lacking any of these is DKIM_STAT_SYNTAX.
_REQUIRED_TAGS = frozenset(("s", "h", "d", "b", "v", "a"))
# C isspace() in the "C" locale.
_WHITESPACE = b" \t\n\v\f\r"
# dkim_process_set: a byte that is neither printable ASCII nor whitespace.
_BAD_BYTE = re.compile(rb"[^\x20-\x7e\t\n\v\f\r]")
# dkim_header: a field name byte outside printable ASCII.
_BAD_NAME_BYTE = re.compile(rb"[^\x20-\x7e]")
# A tag name: a letter or digit first, then anything up to "=" but whitespace or ";".
_TAG_NAME = re.compile(rb"[A-Za-z0-9][^\s;=]*")
_UINT64_MAX = 2**64 - 1

# dkim_headercheck: fields allowed at most once, in libopendkim's order of checks.
_AT_MOST_ONCE = (
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"bcc",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"subject",
)


def _bad_time(value: str) -> bool:
    """t= and x= as dkim_process_set reads them with strtoull(value, &end, 10)."""
    if not value or value[:1] == "-":
        return True
    digits = value[1:] if value[:1] == "+" else value
    if not (digits.isascii() and digits.isdigit()):
        return True
    return int(digits) >= _UINT64_MAX


def signature_tag_list_error(value: bytes, tags: TagList | None = None) -> str | None:
    """Why libopendkim's tag-list reader refuses a DKIM-Signature value, or None.

    `value` is everything after the colon. The reader stops at a NUL (the C string ends
    there), so bytes after one are never seen. Its byte-by-byte state machine
    (`dkim_process_set`) comes down to: every byte printable ASCII or whitespace; every
    ";"-separated tag-spec, bar an empty last one, a tag name starting with a letter or a
    digit, with no whitespace inside it, then "=" and a value (possibly empty).

    `tags`, when given, is RFC 6376's reading of the same value (`parse_tag_list`). That
    grammar is the stricter one: a value it reads holds no NUL and no byte libopendkim
    refuses except those above 0x7e, and each of its tag-specs is one libopendkim reads
    the same way. So for an ASCII value only the tags themselves are left to judge.
    """
    if tags is not None and value.isascii():
        return _tags_error(tags)
    value = value.split(b"\0", 1)[0]
    bad = _BAD_BYTE.search(value)
    if bad is not None:
        return (
            f"invalid character (ASCII 0x{value[bad.start()]:02x} at offset {bad.start()}) "
            "in signature data"
        )
    # From here on every byte is ASCII.
    read: dict[str, str] = {}
    specs = value.split(b";")
    last = len(specs) - 1
    for n, spec in enumerate(specs):
        name, eq, text = spec.partition(b"=")
        name = name.strip(_WHITESPACE)
        if not eq:
            if not name and n == last:
                break  # whitespace after the last ";"
            if name and n == last and _TAG_NAME.fullmatch(name):
                return "tag without value at end of signature data"
            return (
                "syntax error in signature data (ASCII 0x3b)"
                if not name
                else ("syntax error in signature data (tag-spec without a value)")
            )
        if not _TAG_NAME.fullmatch(name):
            return "syntax error in signature data (bad tag name)"
        read[name.decode("ascii")] = text.translate(None, _WHITESPACE).decode("ascii")
    return _tags_error(read)


def _tags_error(tags: Mapping[str, str]) -> str | None:
    """dkim_process_set on the tags it has read: a required tag absent (a repeated one
    counts once, the last wins), or a t= or x= that strtoull does not take whole."""
    if not tags.keys() >= _REQUIRED_TAGS:
        return "missing parameter(s) in signature data"
    for tag in ("t", "x"):
        value = tags.get(tag)
        # dkim_process_set drops every whitespace byte of a value; in an RFC 6376 tag
        # value (the other reading) only folding whitespace can be left inside.
        if value is not None and _bad_time(strip_fws(value)):
            return f'invalid "{tag}" value in signature data'
    return None


def header_syntax_error(
    headers: Sequence[HeaderField], signatures: Sequence[SignatureField] | None = None
) -> str | None:
    """The first field `dkim_header()` refuses, as a log reason, or None.

    Field names holding ";" never get that far: the filter drops such fields on arrival.
    `signatures`: the DKIM-Signature fields of `headers` as `signature_fields` reads them,
    when the caller has read them already (the verifier takes the same reading).
    """
    if signatures is None:
        signatures = signature_fields(headers)
    if _BAD_NAME_BYTE.search(b"".join([h.name for h in headers])) is None:
        # No field name to refuse (the usual case, found in one pass over all of them):
        # only the signatures are left, and they come in header order.
        for s in signatures:
            problem = signature_tag_list_error(s.header.value, s.tags)
            if problem is not None:
                return problem
        return None
    read = {s.header: s.tags for s in signatures}
    for h in headers:
        if b";" in h.name:
            continue
        if _BAD_NAME_BYTE.search(h.name):
            return "invalid character in header field name"
        if h.key == FIELD_KEY:
            problem = signature_tag_list_error(h.value, read.get(h))
            if problem is not None:
                return problem
    return None


def strict_header_error(headers: Sequence[HeaderField], author_parses: bool) -> str | None:
    """dkim_headercheck (StrictHeaders): why the header block breaks RFC 5322 3.6, or None.

    `author_parses`: whether the From value holds a mailbox with a local part and a domain
    (the caller's address parser, the one the filter uses for the sender).
    """
    counts: dict[bytes, int] = {}
    for h in headers:
        counts[h.key] = counts.get(h.key, 0) + 1
    dates = counts.get(b"date", 0)
    if dates == 0:
        return "Date: header field absent"
    if dates > 1:
        return "multiple Date: header fields present"
    froms = counts.get(b"from", 0)
    if froms > 1:
        return "multiple From: header fields present"
    if froms == 0:
        return "From: header field absent"
    if not author_parses:
        return "From: header field cannot be parsed"
    for name in _AT_MOST_ONCE:
        if counts.get(name, 0) > 1:
            return f"multiple {_display(name)}: header fields present"
    return None


def _display(key: bytes) -> str:
    names = {b"message-id": "Message-ID", b"in-reply-to": "In-Reply-To", b"reply-to": "Reply-To"}
    return names.get(key, key.decode().capitalize())
