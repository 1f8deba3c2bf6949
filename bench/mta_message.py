"""A message file cut into what Postfix's cleanup server hands a milter: headers, then body.

Postfix reads the message back from its queue file (milter8_message() through mime_state), so:

* a header field is a name and the text after the colon; continuation lines are joined to it
  with a bare LF (the queue file keeps no CR); spaces and tabs before the colon are dropped;
* the header section ends at the first empty line, or at the first line that is neither a
  header nor a continuation (that line then belongs to the body);
* every body line goes out followed by CRLF, whatever the file used, including a last line
  with no newline at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# RFC 5322 field name: printable ASCII except colon (is_header.c accepts the same, plus blanks
# before the colon, which it strips).
_HEADER_START = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_ADDRESS = re.compile(rb"<([^<>@\s]+@[^<>\s]+)>|([^<>\s,;\"]+@[^<>\s,;\"]+)")


@dataclass(frozen=True, slots=True)
class Message:
    """Headers as (name, text after the colon) and the CRLF body, ready for the milter."""

    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header_values(self, leading_space: bool) -> list[tuple[bytes, bytes]]:
        """Header pairs as sent: one space after the colon is eaten unless HDR_LEADSPC."""
        if leading_space:
            return list(self.headers)
        return [(n, v[1:] if v.startswith(b" ") else v) for n, v in self.headers]

    def from_address(self) -> str | None:
        """The first address in From:, used as the default envelope sender."""
        for name, value in self.headers:
            if name.lower() == b"from":
                m = _ADDRESS.search(value)
                if m:
                    return (m.group(1) or m.group(2)).decode("latin-1")
        return None

    def to_wire_text(self) -> bytes:
        """The message as a file again (CRLF), e.g. to hand to a verifier."""
        out = bytearray()
        for name, value in self.headers:
            out += name + b":" + value.replace(b"\n", b"\r\n") + b"\r\n"
        return bytes(out) + b"\r\n" + self.body


def parse_message(raw: bytes) -> Message:
    """Split raw message bytes (LF or CRLF) the way Postfix presents them to a milter."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line does not start another one
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    headers: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == b"":
            i += 1  # the separator belongs to neither part
            break
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        else:
            m = _HEADER_START.match(line)
            if not m:
                break  # not a header: the body starts here, without a separator line
            headers.append((m.group(1), line[m.end() :]))
        i += 1
    body_lines = lines[i:]
    body = b"\r\n".join(body_lines) + b"\r\n" if body_lines else b""
    return Message(tuple(headers), body)


def load_message(path: str | Path) -> Message:
    """Read and parse a message file."""
    return parse_message(Path(path).read_bytes())
