"""Milter wire codec: packet framing, payload decoding, action encoding. No I/O.

Framing (mfdef.h; Postfix milter8.c ``milter8_write_cmd``/``milter8_read_resp``)::

    uint32 length (big-endian, counts the command byte + payload) | command byte | payload

A length of 0 is invalid (milter8.c: "bad packet length"), and we refuse anything above
``max_packet`` as soon as the 4 length bytes are in, before buffering the payload.

All payload parsing goes through ``PayloadReader``: every read checks the remaining
length, and anything malformed raises ``MalformedPacket`` (a ``RemoteProtocolError``).

Performance notes: ``FrameReader`` keeps the bytes it was fed as they are while they
hold whole packets (the usual case: the MTA sends, then waits for the reply), and
switches to one ``bytearray`` (front deletion is O(1) in CPython) while a packet arrives
in pieces; each payload is copied out exactly once. The packets Postfix sends most
(header, body, macros, the argument-less ones) skip ``PayloadReader``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

from . import actions as act
from . import events as ev
from .constants import (
    DEFAULT_MAX_PACKET,
    MAX_BODY_CHUNK,
    Action,
    Command,
    Family,
    ProtocolFlag,
    Reply,
)
from .errors import LocalProtocolError, MalformedPacket, PacketTooLarge

__all__ = [
    "FrameReader",
    "PayloadReader",
    "decode",
    "decode_header",
    "encode_action",
    "encode_optneg_reply",
    "encode_packet",
]

_HEAD: Final = struct.Struct(">IB")  # length, command
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")
_OPTNEG: Final = struct.Struct(">III")  # version, actions, protocol


class FrameReader:
    """Split a byte stream into ``(command, payload)`` packets.

    ``feed(data)`` buffers; iterating yields every complete packet and stops at the
    first incomplete one. ``pending`` is the number of buffered bytes not yet returned
    (non-zero at end of stream means a truncated packet).
    """

    __slots__ = ("_buf", "_max", "_pos")

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if max_packet < 1:
            raise ValueError("max_packet must be positive")
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._max = max_packet

    @property
    def max_packet(self) -> int:
        return self._max

    @property
    def pending(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            # Everything before was consumed (the usual case: the MTA sends whole packets
            # and waits): keep the new bytes as they are, no copy.
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif type(buf) is bytearray:
            if pos:
                # Drop what was consumed before growing; cheap on a bytearray.
                del buf[:pos]
                self._pos = 0
            buf += data
        else:
            # A packet continues in the new bytes: collect from here on in a bytearray,
            # which grows in amortised O(1) however many pieces the packet comes in.
            with memoryview(buf) as view:
                grown = bytearray(view[pos:])
            grown += data
            self._buf = grown
            self._pos = 0

    def next_packet(self) -> tuple[int, bytes] | None:
        """The next complete packet, or None if more bytes are needed."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 5:
            if avail == 4:
                # Check the length now, before the MTA sends a huge payload.
                self._check_length(_U32.unpack_from(buf, pos)[0])
            return None
        length, command = _HEAD.unpack_from(buf, pos)
        if length == 0 or length > self._max:
            self._check_length(length)
        end = pos + 4 + length
        if end > len(buf):
            return None
        if length == 1:
            payload = b""
        elif type(buf) is bytes:
            payload = buf[pos + 5 : end]
        else:
            with memoryview(buf) as view:
                payload = bytes(view[pos + 5 : end])
        self._pos = end
        return command, payload

    def _check_length(self, length: int) -> None:
        if length == 0:
            raise MalformedPacket("zero-length milter packet")
        if length > self._max:
            raise PacketTooLarge(f"milter packet of {length} bytes exceeds limit {self._max}")

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while (packet := self.next_packet()) is not None:
            yield packet


class PayloadReader:
    """Bounds-checked reader over one packet payload; every failure is MalformedPacket."""

    __slots__ = ("_command", "_data", "_pos")

    def __init__(self, command: int, data: bytes) -> None:
        self._command = command
        self._data = data
        self._pos = 0

    def _fail(self, what: str) -> MalformedPacket:
        return MalformedPacket(f"{_command_name(self._command)} packet: {what}")

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u32(self) -> int:
        if self.remaining < 4:
            raise self._fail("truncated 32-bit integer")
        (value,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(value)

    def u16(self) -> int:
        if self.remaining < 2:
            raise self._fail("truncated 16-bit integer")
        (value,) = _U16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(value)

    def byte(self) -> int:
        if self.remaining < 1:
            raise self._fail("missing byte")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def cstring(self) -> bytes:
        end = self._data.find(b"\0", self._pos)
        if end < 0:
            raise self._fail("string without NUL terminator")
        value = self._data[self._pos : end]
        self._pos = end + 1
        return value

    def cstrings(self) -> list[bytes]:
        """All remaining NUL-terminated strings; the payload must end with a NUL."""
        if self._pos == len(self._data):
            return []
        if self._data[-1] != 0:
            raise self._fail("string without NUL terminator")
        parts = self._data[self._pos : -1].split(b"\0")
        self._pos = len(self._data)
        return parts

    def rest(self) -> bytes:
        value = self._data[self._pos :] if self._pos else self._data
        self._pos = len(self._data)
        return value

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self._fail(f"{self.remaining} unexpected trailing bytes")


def _command_name(command: int) -> str:
    try:
        return f"SMFIC_{Command(command).name}"
    except ValueError:
        return f"command 0x{command:02x}"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------
# Decoders, one per command, chosen by table lookup.


def _optneg(r: PayloadReader) -> ev.OptionNegotiation:
    # MTA sends version, actions, protocol (12 bytes). libmilter ignores anything after.
    version = r.u32()
    actions = r.u32()
    protocol = r.u32()
    # Building Flag values runs Python code in enum; an MTA offers the same pair on
    # every connection.
    flags = _OFFERED.get((actions, protocol))
    if flags is None:
        if len(_OFFERED) >= 64:
            _OFFERED.clear()
        flags = _OFFERED[actions, protocol] = (Action(actions), ProtocolFlag(protocol))
    return ev.OptionNegotiation(version, *flags)


_OFFERED: dict[tuple[int, int], tuple[Action, ProtocolFlag]] = {}


def _macro(r: PayloadReader) -> ev.Macros:
    # stage byte, then name\0value\0 pairs (milter8.c: MILTER8_DATA_OCTET + ARGV).
    stage = r.byte()
    parts = r.cstrings()
    if len(parts) % 2:
        raise MalformedPacket(f"SMFIC_MACRO: macro {_text(parts[-1])!r} without a value")
    it = iter(parts)
    return ev.Macros(stage, {_text(name): _text(value) for name, value in zip(it, it, strict=True)})


_FAMILIES: Final = {ord(f.value): f for f in Family}


def _connect(r: PayloadReader) -> ev.Connect:
    # hostname\0, family byte, then for 4/6/L: port (network short), address\0
    # (milter8.c milter8_conn_event; 'U' has nothing after the family).
    hostname = _text(r.cstring())
    family = _FAMILIES.get(r.byte())
    if family is None:
        raise MalformedPacket("SMFIC_CONNECT: unknown address family")
    if family is Family.UNKNOWN:
        return ev.Connect(hostname, family)
    port = r.u16()
    address = _text(r.cstring())
    r.end()
    return ev.Connect(hostname, family, port, address)


def _helo(r: PayloadReader) -> ev.Helo:
    name = _text(r.cstring())
    r.end()
    return ev.Helo(name)


def _envelope(r: PayloadReader) -> tuple[str, tuple[str, ...]]:
    parts = r.cstrings()
    if not parts:
        raise r._fail("missing address")
    return _text(parts[0]), tuple(_text(p) for p in parts[1:])


def _mail(r: PayloadReader) -> ev.MailFrom:
    return ev.MailFrom(*_envelope(r))


def _rcpt(r: PayloadReader) -> ev.RcptTo:
    return ev.RcptTo(*_envelope(r))


def decode_header(payload: bytes, leading_space: bool) -> ev.Header:
    """Decode SMFIC_HEADER (name\\0value\\0).

    Without SMFIP_HDR_LEADSPC the MTA stripped the whitespace after the colon; put one
    space back so ``value`` is always "everything after the colon" (see events.py).
    """
    end = payload.find(b"\0")
    if end > 0 and payload.find(b"\0", end + 1) == len(payload) - 1:
        # Well-formed: "name\0value\0", no other NUL. Anything else takes the checked way.
        value = payload[end + 1 : -1]
        if not leading_space and value:
            value = b" " + value
        return ev.Header(payload[:end], value)
    r = PayloadReader(Command.HEADER, payload)
    name = r.cstring()
    value = r.cstring()
    r.end()
    if not name:
        raise MalformedPacket("SMFIC_HEADER: empty header name")
    if not leading_space and value:
        value = b" " + value
    return ev.Header(name, value)


def _header(r: PayloadReader) -> ev.Header:
    return decode_header(r.rest(), leading_space=True)


def _body(r: PayloadReader) -> ev.BodyChunk:
    return ev.BodyChunk(r.rest())


_EOM_EMPTY: Final = ev.EndOfMessage()


def _bodyeob(r: PayloadReader) -> ev.EndOfMessage:
    return ev.EndOfMessage(r.rest()) if r.remaining else _EOM_EMPTY


def _unknown(r: PayloadReader) -> ev.Unknown:
    # A string; be lenient about a missing terminator, this is informational only.
    raw = r.rest()
    return ev.Unknown(_text(raw[:-1] if raw.endswith(b"\0") else raw))


def _constant(event: ev.Event) -> Callable[[PayloadReader], ev.Event]:
    # Commands without arguments. libmilter ignores stray payload bytes; so do we.
    return lambda r: event


DECODERS: Final[Mapping[int, Callable[[PayloadReader], ev.Event]]] = {
    Command.OPTNEG: _optneg,
    Command.MACRO: _macro,
    Command.CONNECT: _connect,
    Command.HELO: _helo,
    Command.MAIL: _mail,
    Command.RCPT: _rcpt,
    Command.DATA: _constant(ev.Data()),
    Command.HEADER: _header,
    Command.EOH: _constant(ev.EndOfHeaders()),
    Command.BODY: _body,
    Command.BODYEOB: _bodyeob,
    Command.ABORT: _constant(ev.Abort()),
    Command.QUIT: _constant(ev.Quit()),
    Command.QUIT_NC: _constant(ev.QuitNewConnection()),
    Command.UNKNOWN: _unknown,
}


def _header_fast(payload: bytes) -> ev.Event:
    return decode_header(payload, leading_space=True)


def _constant_fast(event: ev.Event) -> Callable[[bytes], ev.Event]:
    return lambda payload: event


def _macro_fast(payload: bytes) -> ev.Event:
    if len(payload) > 1 and payload[-1] == 0:
        # One decode for all names and values: NUL splits UTF-8 (and surrogateescape)
        # exactly where splitting the bytes first would.
        parts = payload[1:-1].decode("utf-8", "surrogateescape").split("\0")
        if not len(parts) % 2:
            it = iter(parts)
            return ev.Macros(payload[0], dict(zip(it, it, strict=True)))
    return _macro(PayloadReader(Command.MACRO, payload))  # the checked way, with errors


def macro_stage(payload: bytes) -> int:
    """Check an SMFIC_MACRO payload's structure without decoding it; its stage byte.

    Refuses exactly what ``decode`` refuses, with the same MalformedPacket, so a
    connection that decodes macros only when they are read still fails a bad packet
    when it arrives. A payload that passes decodes without error (``macro_values``).
    """
    # Even NUL count after the stage byte, the last byte a NUL: whole name\0value\0 pairs.
    if len(payload) > 1 and payload[-1] == 0 and not payload.count(b"\0", 1) % 2:
        return payload[0]
    if len(payload) == 1:  # a stage without macros (Postfix's HELO stage, often)
        return payload[0]
    return _macro(PayloadReader(Command.MACRO, payload)).stage  # raises unless valid


def macro_values(payload: bytes) -> dict[str, str]:
    """The name/value pairs of an SMFIC_MACRO payload that ``macro_stage`` accepted."""
    if len(payload) < 2:
        return {}
    it = iter(payload[1:-1].decode("utf-8", "surrogateescape").split("\0"))
    return dict(zip(it, it, strict=True))


def _bodyeob_fast(payload: bytes) -> ev.Event:
    return ev.EndOfMessage(payload) if payload else _EOM_EMPTY


# Commands whose payload needs no PayloadReader (the same results as DECODERS; none of
# these constructors can refuse a value). Keyed by plain ints, like the command bytes
# they are looked up with.
_DIRECT: Final[dict[int, Callable[[bytes], ev.Event]]] = {
    int(command): fast
    for command, fast in {
        Command.MACRO: _macro_fast,
        Command.HEADER: _header_fast,
        Command.BODY: ev.BodyChunk,
        Command.BODYEOB: _bodyeob_fast,
        Command.DATA: _constant_fast(ev.Data()),
        Command.EOH: _constant_fast(ev.EndOfHeaders()),
        Command.ABORT: _constant_fast(ev.Abort()),
        Command.QUIT: _constant_fast(ev.Quit()),
        Command.QUIT_NC: _constant_fast(ev.QuitNewConnection()),
    }.items()
}


def decode(command: int, payload: bytes) -> ev.Event:
    """Decode one packet into an event; MalformedPacket on any problem."""
    direct = _DIRECT.get(command)
    if direct is not None:
        return direct(payload)
    decoder = DECODERS.get(command)
    if decoder is None:
        # libmilter (engine.c mi_engine) fails the session on a command it does not
        # know; Postfix only sends the commands above. Same here: a clean error.
        raise MalformedPacket(f"unknown milter command {_command_name(command)}")
    try:
        return decoder(PayloadReader(command, payload))
    except LocalProtocolError as exc:  # an event constructor refused the values
        raise MalformedPacket(f"{_command_name(command)}: {exc}") from None


# ---------------------------------------------------------------------------
# Encoding.


def encode_packet(code: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) + 1, code) + payload


def encode_optneg_reply(
    version: int,
    actions: int,
    protocol: int,
    macros: Sequence[tuple[int, Sequence[str]]] = (),
) -> bytes:
    """SMFIC_OPTNEG reply; ``macros`` (stage, names) pairs form the SETSYMLIST part.

    Each list is uint32 stage + space-separated names + NUL (milter8.c
    ``milter8_connect``, "Secondary negotiations: override lists of macro names").
    """
    parts = [_OPTNEG.pack(version, actions, protocol)]
    for stage, names in macros:
        parts.append(_U32.pack(stage) + " ".join(names).encode() + b"\0")
    return encode_packet(Reply.OPTNEG, b"".join(parts))


_SIMPLE: Final[dict[int, bytes]] = {
    code: encode_packet(code)
    for code in (
        Reply.CONTINUE,
        Reply.ACCEPT,
        Reply.REJECT,
        Reply.TEMPFAIL,
        Reply.DISCARD,
        Reply.SKIP,
        Reply.PROGRESS,
    )
}


def _z(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def _header_value(value: bytes, leading_space: bool) -> bytes:
    # Without HDR_LEADSPC, Postfix writes "name:" + " " + value (milter8.c
    # MILTER8_HDR_SPACE), so drop our one leading space to not end up with two.
    if not leading_space and value[:1] == b" ":
        return value[1:]
    return value


def encode_action(action: act.Action, leading_space: bool = True) -> bytes:
    """Encode one action; ``leading_space`` is whether HDR_LEADSPC was negotiated."""
    simple = _SIMPLE.get(action.reply)
    if simple is not None:
        return simple
    if isinstance(action, act.ReplyCode):
        return encode_packet(Reply.REPLYCODE, _z(action.line()))
    if isinstance(action, act.InsertHeader | act.ChangeHeader):
        value = _header_value(action.value, leading_space)
        payload = _U32.pack(action.index) + action.name + b"\0" + value + b"\0"
        return encode_packet(action.reply, payload)
    if isinstance(action, act.AddHeader):
        value = _header_value(action.value, leading_space)
        return encode_packet(Reply.ADDHEADER, action.name + b"\0" + value + b"\0")
    if isinstance(action, act.Quarantine):
        return encode_packet(Reply.QUARANTINE, _z(action.reason))
    if isinstance(action, act.AddRecipient | act.DeleteRecipient):
        return encode_packet(action.reply, _z(action.address))
    if isinstance(action, act.AddRecipientWithArgs | act.ChangeSender):
        payload = _z(action.address) + (_z(action.args) if action.args else b"")
        return encode_packet(action.reply, payload)
    if isinstance(action, act.ReplaceBody):
        data = action.data
        if len(data) <= MAX_BODY_CHUNK:
            return encode_packet(Reply.REPLBODY, data)
        view = memoryview(data)
        return b"".join(
            encode_packet(Reply.REPLBODY, bytes(view[i : i + MAX_BODY_CHUNK]))
            for i in range(0, len(data), MAX_BODY_CHUNK)
        )
    raise LocalProtocolError(f"cannot encode {action!r}")
