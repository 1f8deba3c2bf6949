"""MTA-side packet builders and a driver for ``milter.Connection`` tests (no sockets).

The builders write packets the way Postfix milter8.c does (``milter8_write_cmd``): a
4-byte big-endian length counting the command byte, the command, then the payload.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

from dkimd import milter

# What Postfix 3.x offers (milter8.c milter8_connect): actions 0x1FF for every version,
# protocol MILTER8_V2_PROTO_MASK (0x7F) or MILTER8_V6_PROTO_MASK (0x1FFFFF).
POSTFIX_ACTIONS = 0x1FF
POSTFIX_V2_PROTOCOL = 0x7F
POSTFIX_V6_PROTOCOL = 0x1FFFFF


def pkt(command: str | bytes | int, payload: bytes = b"") -> bytes:
    code = command if isinstance(command, int) else ord(command)
    return struct.pack(">IB", len(payload) + 1, code) + payload


def z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


def optneg(
    version: int = 6, actions: int = POSTFIX_ACTIONS, protocol: int = POSTFIX_V6_PROTOCOL
) -> bytes:
    return pkt("O", struct.pack(">III", version, actions, protocol))


def macro(stage: str | bytes, pairs: dict[str, str]) -> bytes:
    code = stage.encode() if isinstance(stage, str) else stage
    return pkt("D", code + b"".join(z(k, v) for k, v in pairs.items()))


def connect(
    host: str = "client.example", family: str = "4", port: int = 40000, addr: str = "192.0.2.1"
) -> bytes:
    if family == "U":
        return pkt("C", z(host) + b"U")
    return pkt("C", z(host) + family.encode() + struct.pack(">H", port) + z(addr))


def helo(name: str = "client.example") -> bytes:
    return pkt("H", z(name))


def mail(addr: str | bytes = "<sender@example.org>", *args: str) -> bytes:
    return pkt("M", z(addr, *args))


def rcpt(addr: str | bytes = "<rcpt@example.net>", *args: str) -> bytes:
    return pkt("R", z(addr, *args))


def header(name: bytes | str, value: bytes | str) -> bytes:
    return pkt("L", z(name, value))


def body(chunk: bytes) -> bytes:
    return pkt("B", chunk)


def eom(data: bytes = b"") -> bytes:
    return pkt("E", data)


DATA = pkt("T")
EOH = pkt("N")
ABORT = pkt("A")
QUIT = pkt("Q")
QUIT_NC = pkt("K")


def message(
    n: int = 1, body_chunks: Sequence[bytes] = (b"Hello.\r\n",), with_data: bool = True
) -> list[bytes]:
    """One message as Postfix sends it (macros before their stage, abort after EOM)."""
    out = [
        macro("M", {"i": f"QUEUE{n}", "{auth_authen}": "alice", "{mail_addr}": "sender"}),
        mail("<sender@example.org>", "SIZE=100", "BODY=8BITMIME"),
        macro("R", {"{rcpt_addr}": f"rcpt{n}@example.net"}),
        rcpt(f"<rcpt{n}@example.net>"),
    ]
    if with_data:
        out += [macro("T", {"i": f"QUEUE{n}"}), DATA]
    out += [
        header("From", " Sender <sender@example.org>"),
        header("Subject", f" message {n}"),
        header("X-Folded", " one\r\n\ttwo"),
        macro("N", {"i": f"QUEUE{n}"}),
        EOH,
    ]
    out += [body(c) for c in body_chunks]
    out += [macro("E", {"i": f"QUEUE{n}"}), eom(), ABORT]
    return out


def session(
    version: int = 6,
    protocol: int | None = None,
    messages: int = 2,
    body_chunks: Sequence[bytes] = (b"Hello.\r\n",),
) -> bytes:
    """A whole Postfix-like milter session."""
    if protocol is None:
        protocol = POSTFIX_V6_PROTOCOL if version >= 6 else POSTFIX_V2_PROTOCOL
    parts = [
        optneg(version, POSTFIX_ACTIONS, protocol),
        macro("C", {"j": "mx.example.com", "{daemon_name}": "smtpd", "_": "client [192.0.2.1]"}),
        connect(),
        macro("H", {"{tls_version}": "TLSv1.3"}),
        helo(),
    ]
    for n in range(1, messages + 1):
        parts += message(n, body_chunks, with_data=version >= 4)
    parts.append(QUIT)
    return b"".join(parts)


Reply = Callable[[milter.Event, milter.Connection], Iterable[milter.Action] | None]


def drive(
    conn: milter.Connection, chunks: Iterable[bytes], reply: Reply | None = None
) -> tuple[list[milter.Event], bytes]:
    """Feed chunks (then EOF), answer each event, return (events, all bytes sent)."""
    events: list[milter.Event] = []
    out = bytearray()

    def pump() -> bool:
        while True:
            event = conn.next_event()
            if event is milter.NEED_DATA:
                return False
            events.append(event)
            if isinstance(event, milter.ConnectionClosed):
                return True
            actions = reply(event, conn) if reply is not None else None
            out.extend(conn.send_many(actions) if actions else conn.send(milter.Continue()))

    for chunk in chunks:
        if not chunk:
            continue  # b"" would mean end of stream
        conn.receive_data(chunk)
        if pump():
            return events, bytes(out)
    conn.receive_data(b"")
    pump()
    return events, bytes(out)


def replies(data: bytes) -> list[tuple[str, bytes]]:
    """Split filter output into (reply letter, payload) pairs."""
    result = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        result.append((chr(data[pos + 4]), data[pos + 5 : pos + 4 + length]))
        pos += 4 + length
    assert pos == len(data)
    return result
