"""The MTA side of the milter protocol, version 6, as Postfix 3.x speaks it. No I/O here.

This is deliberately a second, independent implementation: the load driver must not share code
with the milter under test (dkimd.milter), or a shared misunderstanding would pass unseen.

Everything below follows Postfix's src/milter/milter8.c (3.7), which is what dkimd replaces
OpenDKIM behind:

* a packet is a 4-byte big-endian length (command byte + data), the command byte, the data;
* SMFIC_OPTNEG carries version 6, the actions Postfix allows (0x1ff) and the protocol mask it
  offers for version 6 (0x1fffff: every SMFIP_NO*, SMFIP_NR_*, SKIP, RCPT_REJ, HDR_LEADSPC);
  the filter answers with the subset it wants, optionally followed by macro-name overrides;
* before each event Postfix sends SMFIC_MACRO (`D`, event byte, name\\0value\\0...) even when
  the event itself is then skipped (SMFIP_NO*), and waits for no reply when the filter asked
  for SMFIP_NR_* on that event;
* header values lose one leading space unless SMFIP_HDR_LEADSPC was negotiated ("Sendmail
  compatibility: it eats the first space (not tab)"), and folded lines are joined with a bare
  LF, because that is how the queue file holds them;
* body chunks are at most 65535 bytes (MILTER_CHUNK_SIZE), lines end in CRLF.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Commands, MTA -> filter.
CMD_OPTNEG = b"O"
CMD_MACRO = b"D"
CMD_CONNECT = b"C"
CMD_HELO = b"H"
CMD_MAIL = b"M"
CMD_RCPT = b"R"
CMD_DATA = b"T"
CMD_HEADER = b"L"
CMD_EOH = b"N"
CMD_BODY = b"B"
CMD_EOB = b"E"
CMD_ABORT = b"A"
CMD_QUIT = b"Q"

# Protocol flags (SMFIP_*): what the filter does not want sent, or will not answer.
P_NOCONNECT = 1 << 0
P_NOHELO = 1 << 1
P_NOMAIL = 1 << 2
P_NORCPT = 1 << 3
P_NOBODY = 1 << 4
P_NOHDRS = 1 << 5
P_NOEOH = 1 << 6
P_NR_HDR = 1 << 7
P_NOUNKNOWN = 1 << 8
P_NODATA = 1 << 9
P_SKIP = 1 << 10
P_RCPT_REJ = 1 << 11
P_NR_CONN = 1 << 12
P_NR_HELO = 1 << 13
P_NR_MAIL = 1 << 14
P_NR_RCPT = 1 << 15
P_NR_DATA = 1 << 16
P_NR_UNKN = 1 << 17
P_NR_EOH = 1 << 18
P_NR_BODY = 1 << 19
P_HDR_LEADSPC = 1 << 20

# milter8.c MILTER8_V6_PROTO_MASK: everything above.
POSTFIX_V6_EVENTS = (1 << 21) - 1
# milter8.c my_actions: ADDHDRS CHGBODY ADDRCPT DELRCPT CHGHDRS QUARANTINE CHGFROM
# ADDRCPT_PAR SETSYMLIST.
POSTFIX_ACTIONS = 0x1FF
MILTER_VERSION = 6
MILTER_CHUNK_SIZE = 65535

# Per event: (flag: filter does not want it, flag: filter will not reply to it).
EVENT_FLAGS: dict[bytes, tuple[int, int]] = {
    CMD_CONNECT: (P_NOCONNECT, P_NR_CONN),
    CMD_HELO: (P_NOHELO, P_NR_HELO),
    CMD_MAIL: (P_NOMAIL, P_NR_MAIL),
    CMD_RCPT: (P_NORCPT, P_NR_RCPT),
    CMD_DATA: (P_NODATA, P_NR_DATA),
    CMD_HEADER: (P_NOHDRS, P_NR_HDR),
    CMD_EOH: (P_NOEOH, P_NR_EOH),
    CMD_BODY: (P_NOBODY, P_NR_BODY),
    CMD_EOB: (0, 0),
}

# SMFIM_* macro-list indexes in an OPTNEG reply (SMFIF_SETSYMLIST) -> the event they go with.
SYMLIST_EVENTS: dict[int, bytes] = {
    0: CMD_CONNECT,
    1: CMD_HELO,
    2: CMD_MAIL,
    3: CMD_RCPT,
    4: CMD_DATA,
    5: CMD_EOB,
    6: CMD_EOH,
}

# Replies, filter -> MTA, by name. "Final" ones end the current event.
REPLY_NAMES: dict[bytes, str] = {
    b"c": "continue",
    b"a": "accept",
    b"r": "reject",
    b"t": "tempfail",
    b"d": "discard",
    b"y": "replycode",
    b"f": "conn_fail",
    b"4": "shutdown",
    b"s": "skip",
    b"p": "progress",
    b"h": "addheader",
    b"i": "insheader",
    b"m": "chgheader",
    b"+": "addrcpt",
    b"-": "delrcpt",
    b"2": "addrcpt_par",
    b"e": "chgfrom",
    b"b": "replbody",
    b"q": "quarantine",
    b"O": "optneg",
}
FINAL_REPLIES = frozenset(bytes([c]) for c in b"cartdyf4s")
MODIFICATIONS = frozenset(bytes([c]) for c in b"him+-2ebq")

_LEN = struct.Struct(">I")
_OPTNEG = struct.Struct(">III")


class ProtocolError(Exception):
    """The filter sent something Postfix would also refuse."""


def packet(command: bytes, data: bytes = b"") -> bytes:
    """Frame one command: length (command byte + data), command, data."""
    return _LEN.pack(len(data) + 1) + command + data


def packet_header(command: bytes, data_len: int) -> bytes:
    """Just the 5-byte frame head, for sending a large body chunk without copying it."""
    return _LEN.pack(data_len + 1) + command


def cstrings(values: Iterable[str | bytes]) -> bytes:
    """NUL-terminated strings back to back, as milter8.c's MILTER8_DATA_STRING/ARGV."""
    out = bytearray()
    for v in values:
        out += v.encode() if isinstance(v, str) else v
        out += b"\0"
    return bytes(out)


def optneg() -> bytes:
    """The OPTNEG Postfix sends for milter_protocol = 6."""
    return packet(CMD_OPTNEG, _OPTNEG.pack(MILTER_VERSION, POSTFIX_ACTIONS, POSTFIX_V6_EVENTS))


def macro(event: bytes, pairs: Sequence[tuple[str, str]]) -> bytes:
    """SMFIC_MACRO for one event; an empty list still makes a packet, as Postfix sends it."""
    return packet(CMD_MACRO, event + cstrings(x for pair in pairs for x in pair))


def connect(hostname: str, address: str, port: int) -> bytes:
    """SMFIC_CONNECT: hostname, family, port (network short), address. IPv4 or IPv6."""
    family = b"6" if ":" in address else b"4"
    return packet(
        CMD_CONNECT,
        cstrings([hostname]) + family + struct.pack(">H", port) + cstrings([address]),
    )


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the filter answered to OPTNEG."""

    version: int
    actions: int
    protocol: int
    # SMFIF_SETSYMLIST overrides: event byte -> macro names the filter wants for it.
    symlists: dict[bytes, tuple[str, ...]] = field(default_factory=dict)

    def skips(self, event: bytes) -> bool:
        """The filter asked not to receive this event (the macros still go)."""
        return bool(self.protocol & EVENT_FLAGS[event][0])

    def no_reply(self, event: bytes) -> bool:
        """The filter will not answer this event."""
        return bool(self.protocol & EVENT_FLAGS[event][1])


def parse_optneg(data: bytes) -> Negotiated:
    """Check the filter's OPTNEG reply the way milter8_connect() does."""
    if len(data) < _OPTNEG.size:
        raise ProtocolError(f"OPTNEG reply too short: {len(data)} bytes")
    version, actions, protocol = _OPTNEG.unpack_from(data)
    if version > MILTER_VERSION:
        raise ProtocolError(f"filter protocol version {version} > {MILTER_VERSION}")
    if actions & ~POSTFIX_ACTIONS:
        raise ProtocolError(f"filter action mask {actions:#x} exceeds {POSTFIX_ACTIONS:#x}")
    symlists: dict[bytes, tuple[str, ...]] = {}
    rest = data[_OPTNEG.size :]
    while rest:
        if len(rest) < 5 or b"\0" not in rest[4:]:
            raise ProtocolError("malformed macro list in OPTNEG reply")
        (index,) = _LEN.unpack_from(rest)
        names, _, rest = rest[4:].partition(b"\0")
        if index in SYMLIST_EVENTS:  # milter8.c ignores unknown indexes with a warning
            symlists[SYMLIST_EVENTS[index]] = tuple(names.decode("latin-1").split())
    return Negotiated(version, actions, protocol, symlists)


@dataclass(frozen=True, slots=True)
class Modification:
    """One end-of-message edit request. `index` is -1 when the request carries none."""

    action: str
    name: str = ""
    value: str = ""
    index: int = -1


def parse_modification(code: bytes, data: bytes) -> Modification:
    """Decode a modification reply (header add/insert/change; others kept by name only)."""
    action = REPLY_NAMES.get(code, "unknown")
    if code in b"im":
        if len(data) < 4:
            raise ProtocolError(f"{action} reply too short")
        (index,) = _LEN.unpack_from(data)
        name, value = _two_strings(action, data[4:])
        return Modification(action, name, value, index)
    if code == b"h":
        name, value = _two_strings(action, data)
        return Modification(action, name, value)
    return Modification(action, value=data.rstrip(b"\0").decode("latin-1"))


def _two_strings(action: str, data: bytes) -> tuple[str, str]:
    parts = data.split(b"\0")
    if len(parts) < 3:
        raise ProtocolError(f"{action} reply lacks name\\0value\\0")
    # Header text is bytes on the wire; latin-1 round-trips any byte.
    return parts[0].decode("latin-1"), parts[1].decode("latin-1")


def reply_name(code: bytes, data: bytes) -> str:
    """A decision reply by name; SMFIR_REPLYCODE with its SMTP code ("replycode 550")."""
    name = REPLY_NAMES.get(code, f"unknown {code!r}")
    if code == b"y":
        return f"{name} {data[:3].decode('latin-1')}"
    return name


def split_packets(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """Remove every complete packet from `buffer`, return them as (command, data)."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    end = len(buffer)
    while end - pos >= 5:
        (size,) = _LEN.unpack_from(buffer, pos)
        if size < 1:
            raise ProtocolError(f"bad packet length {size}")
        if end - pos - 4 < size:
            break
        start = pos + 4
        out.append((bytes(buffer[start : start + 1]), bytes(buffer[start + 1 : start + size])))
        pos = start + size
    if pos:
        del buffer[:pos]
    return out
