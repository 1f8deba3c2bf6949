"""Header fields as they cross module boundaries, and splitting a raw message.

A `HeaderField` keeps the field exactly as it was on the wire: `name + b":" + value`, where `value`
is everything after the colon (leading space and CRLF+WSP folding kept, no trailing CRLF). Simple
header canonicalization (RFC 6376 section 3.4.1) needs those bytes unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dkimd.dkim.errors import MessageError

CRLF = b"\r\n"
WSP = b" \t"

# RFC 5322 section 2.2: a field name is printable US-ASCII except the colon. A name that is
# otherwise is not a header field, and treating it as one would let junk into h= matching.
_NAME_BYTES = frozenset(range(33, 127)) - {ord(":")}


def field_key(name: bytes) -> bytes:
    """The one rule for comparing header field names: trailing WSP removed, lower-cased.

    RFC 6376 section 3.4.2 reads a name this way ("From :" is a From field) and RFC 5322
    section 1.2.2 makes names case-insensitive. Every count, lookup and h= match of a field
    goes through here (`HeaderField.key`, `name_key`): a second rule anywhere lets a "From "
    field pass as not-a-From, past the multiple-From check (RFC 6376 section 8.15). Only
    ASCII letters are folded.
    """
    return name.rstrip(WSP).lower()


def name_key(name: str) -> bytes:
    """`field_key` of a name given as text (an h= entry, a configured header name).

    Compared by its UTF-8 bytes, so a non-ASCII name only ever matches the very same bytes.
    """
    return field_key(name.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: `name` without the colon, `value` everything after it."""

    name: bytes
    value: bytes
    # What the field is known by (`field_key`), worked out once: the verifier, the signer and
    # the policy each look it up for most fields of every message.
    key: bytes = field(init=False, repr=False, compare=False)
    # The relaxed canonical form (without CRLF), worked out on first use by
    # canonicalization.canonicalize_header: a field signed or verified by several signatures
    # (DKIM-Signature, ARC-Message-Signature, every later ARC-Seal) is canonicalized once.
    relaxed: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", field_key(self.name))

    @property
    def raw(self) -> bytes:
        """The field as it is on the wire, without the terminating CRLF."""
        return self.name + b":" + self.value

    def __repr__(self) -> str:
        more = "..." if len(self.value) > 60 else ""
        return f"HeaderField({self.name!r}, {self.value[:60]!r}{more})"


def parse_field(line: bytes) -> HeaderField:
    """One unfolded-or-folded field (no final CRLF) into a `HeaderField`."""
    colon = line.find(b":")
    if colon <= 0:
        raise MessageError("header line without a field name")
    name = line[:colon]
    # RFC 5322 obsolete syntax allows WSP between name and colon ("Subject : x"); keep it in the
    # name bytes so simple canonicalization reproduces it, but check the name itself.
    bare = name.rstrip(WSP)
    if not bare or any(b not in _NAME_BYTES for b in bare):
        raise MessageError("malformed header field name")
    return HeaderField(name, line[colon + 1 :])


def parse_header_block(block: bytes) -> list[HeaderField]:
    """Split a CRLF header block (without the empty line that ends it) into fields.

    A line starting with WSP continues the previous field (RFC 5322 section 2.2.3).
    """
    fields: list[HeaderField] = []
    if not block:
        return fields
    if block.endswith(CRLF):
        block = block[:-2]
    current: list[bytes] = []
    for line in block.split(CRLF):
        if line[:1] in (b" ", b"\t") and line:
            if not current:
                raise MessageError("header block starts with a continuation line")
            current.append(line)
            continue
        if current:
            fields.append(parse_field(CRLF.join(current)))
        current = [line]
    if current:
        fields.append(parse_field(CRLF.join(current)))
    return fields


def split_message(message: bytes) -> tuple[list[HeaderField], int]:
    """Split a CRLF message into its header fields and the offset where the body starts.

    A message without the empty line has no body (the offset is its length).
    """
    if message.startswith(CRLF):
        return [], 2
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return parse_header_block(message), len(message)
    return parse_header_block(message[: end + 2]), end + 4


def serialize_headers(fields: Iterable[HeaderField]) -> bytes:
    """The fields back in wire form, each ended by CRLF."""
    return b"".join(f.raw + CRLF for f in fields)


class MessageSplitter:
    """Incremental header/body split for a CRLF stream (the CLI reads stdin in chunks).

    `feed()` buffers until the empty line that ends the header block, then returns body bytes
    as they arrive; `headers` is set from then on. The header block is capped at `max_header`
    bytes so that a stream without an empty line cannot grow the buffer without bound.
    """

    def __init__(self, max_header: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._max = max_header
        self.headers: list[HeaderField] | None = None

    @property
    def in_body(self) -> bool:
        return self.headers is not None

    def feed(self, chunk: bytes) -> bytes:
        if self.headers is not None:
            return chunk
        start = max(0, len(self._buf) - 3)
        self._buf += chunk
        if self._buf.startswith(CRLF):
            self.headers = []
            rest = bytes(self._buf[2:])
            self._buf.clear()
            return rest
        end = self._buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self._buf) > self._max:
                raise MessageError(f"header block longer than {self._max} bytes")
            return b""
        self.headers = parse_header_block(bytes(self._buf[: end + 2]))
        rest = bytes(self._buf[end + 4 :])
        self._buf.clear()
        return rest

    def finish(self) -> None:
        """End of input: a message without an empty line is all header, no body."""
        if self.headers is None:
            self.headers = parse_header_block(bytes(self._buf))
            self._buf.clear()


class LineEndingNormalizer:
    """Turn any mix of LF and CRLF line ends into CRLF, chunk by chunk (the CLI accepts both).

    Every bare LF becomes CRLF, as Postfix does before a message reaches a milter (it stores
    lines, not line ends), and as dkimpy does; so the CLI, the milter and dkimpy all hash the
    same bytes. A bare CR stays as it is. The engine itself (`Signer`, `Verifier`) takes CRLF
    input as given and does not do this. `crlf_input` records the first line's convention so
    the CLI can write its output the same way.
    """

    def __init__(self) -> None:
        self.crlf_input: bool | None = None
        self._head = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self.crlf_input is None:
            self._head += chunk
            nl = self._head.find(b"\n")
            if nl < 0:
                return b""
            self.crlf_input = nl > 0 and self._head[nl - 1 : nl] == b"\r"
            chunk, self._head = self._head, b""
        return self._convert(chunk)

    def _convert(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            self._pending_cr = True
            chunk = chunk[:-1]
        # Remove CRs that already precede an LF, then turn every LF into CRLF.
        return chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def flush(self) -> bytes:
        if self.crlf_input is None:
            # No line end at all: one line, no convention to keep.
            self.crlf_input = False
            out, self._head = self._head, b""
            return out
        if self._pending_cr:
            self._pending_cr = False
            return b"\r"
        return b""
