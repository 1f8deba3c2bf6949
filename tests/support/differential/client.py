"""The MTA side of the milter protocol (version 6), independent of dkimd's own codec.

A differential test must not drive dkimd with dkimd's code, so this is a small client of its
own, written from the protocol (libmilter's mfdef.h, Postfix's milter8.c). It offers what
Postfix offers (protocol 6, every action, every protocol step including SMFIP_HDR_LEADSPC and
SMFIP_SKIP), then honours what the filter negotiated: a step the filter declined (SMFIP_NO*)
is not sent; a step it asked no reply for (SMFIP_NR_*) is sent and not waited on.

    transcript = milter_exchange(("127.0.0.1", 8891), Envelope(...), message_bytes)
    transcript.replies      # [("connect", "c"), ("helo", "-"), ..., ("eom", "a")]
    transcript.final        # ("eom", "a") -- the reply that ended the message
    transcript.mods         # [("add", "DKIM-Signature", " v=1; ..."), ("chg", 1, "A-R", "")]

A reply is its SMFIR_ letter; `y` (SMFIR_REPLYCODE) carries its text (`y 550 5.7.0 ...`),
`-` marks a step the filter declined or asked no reply for (the MTA goes on as after a
continue), and `closed` a filter that hung up.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["Envelope", "Transcript", "milter_exchange", "split_message"]

SMFI_VERSION = 6
ALL_ACTIONS = 0x1FF
# Every step Postfix can leave out or not wait for, plus SKIP and HDR_LEADSPC.
ALL_PROTOCOL = 0x1FFFFF

NO_CONNECT, NO_HELO, NO_MAIL, NO_RCPT = 0x1, 0x2, 0x4, 0x8
NO_BODY, NO_HDRS, NO_EOH, NR_HDR = 0x10, 0x20, 0x40, 0x80
NO_UNKNOWN, NO_DATA, P_SKIP = 0x100, 0x200, 0x400
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
NR_DATA, NR_EOH, NR_BODY, HDR_LEADSPC = 0x10000, 0x40000, 0x80000, 0x100000

_FINAL = frozenset("adrty")  # accept, discard, reject, tempfail, replycode end the message


@dataclass(frozen=True)
class Envelope:
    """What the MTA says about the message before its header."""

    client_addr: str = "127.0.0.1"
    client_host: str = "localhost"
    helo: str = "client.example"
    mail_from: str = "sender@example.com"
    rcpt_to: tuple[str, ...] = ("rcpt@example.net",)
    macros: tuple[tuple[str, str], ...] = (("j", "mx.test.example"), ("i", "TESTQUEUEID"))
    body_chunk: int = 65535


@dataclass
class Transcript:
    """Everything one filter answered for one message."""

    actions: int = 0
    protocol: int = 0
    replies: list[tuple[str, str]] = field(default_factory=list)
    mods: list[tuple[object, ...]] = field(default_factory=list)

    @property
    def final(self) -> tuple[str, str]:
        for stage, reply in reversed(self.replies):
            if reply[:1] in _FINAL or reply == "closed":
                return stage, reply
        return self.replies[-1] if self.replies else ("", "")

    def stage(self, name: str) -> str:
        """The reply at `name` ("" if the message never got there); for a step sent several
        times (header, body chunk, rcpt) the first that is not continue, else continue."""
        got = [r for s, r in self.replies if s == name]
        if not got:
            return ""
        return next((r for r in got if r not in ("c", "-")), got[0])

    def headers(self, name: str) -> list[str]:
        """Values of the fields the filter added or inserted called `name`."""
        return [
            str(m[-1])
            for m in self.mods
            if m[0] in ("add", "ins") and str(m[-2]).lower() == name.lower()
        ]


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """([(name, raw value)], body) with CRLF line ends; a value keeps its leading blanks and
    its folds (CRLF + WSP), as an MTA holds it."""
    msg = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if msg.startswith(b"\r\n"):
        head, body = b"", msg[2:]
    elif b"\r\n\r\n" in msg:
        head, body = msg.split(b"\r\n\r\n", 1)
    else:
        head, body = msg.rstrip(b"\r\n"), b""
    fields: list[list[bytes]] = []
    for line in head.split(b"\r\n") if head else []:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    out: list[tuple[bytes, bytes]] = []
    for lines in fields:
        name, _, value = b"\r\n".join(lines).partition(b":")
        out.append((name, value))
    return out, body


class _Closed(Exception):
    pass


class _Conn:
    def __init__(self, address: tuple[str, int] | str, timeout: float) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)

    def send(self, cmd: bytes, payload: bytes = b"") -> None:
        self.sock.sendall(struct.pack(">I", len(payload) + 1) + cmd + payload)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise _Closed
            data += chunk
        return data

    def read(self) -> tuple[str, bytes]:
        (length,) = struct.unpack(">I", self._exact(4))
        packet = self._exact(length)
        return chr(packet[0]), packet[1:]

    def close(self) -> None:
        self.sock.close()


def _reply_text(cmd: str, data: bytes) -> str:
    if cmd == "y":
        return "y " + data.rstrip(b"\0").decode("latin-1")
    return cmd


def _cstr(*parts: bytes) -> bytes:
    return b"".join(p + b"\0" for p in parts)


def _mod(cmd: str, data: bytes) -> tuple[object, ...]:
    """One modification request of end-of-message, decoded."""
    text = data.decode("latin-1")
    if cmd == "h":
        name, value = [*text.split("\0"), ""][:2]
        return ("add", name, value)
    if cmd in ("i", "m"):
        (index,) = struct.unpack(">I", data[:4])
        name, value = [*data[4:].decode("latin-1").split("\0"), ""][:2]
        return ("ins" if cmd == "i" else "chg", index, name, value)
    kinds = {
        "b": "body",
        "+": "addrcpt",
        "-": "delrcpt",
        "e": "chgfrom",
        "q": "quarantine",
        "2": "addrcpt",
    }
    return (kinds.get(cmd, f"cmd-{cmd}"), text.rstrip("\0"))


def milter_exchange(
    address: tuple[str, int] | str,
    envelope: Envelope,
    message: bytes,
    timeout: float = 30.0,
) -> Transcript:
    """Send one message through the filter at `address` as Postfix would; the transcript."""
    t = Transcript()
    conn = _Conn(address, timeout)
    try:
        _converse(conn, t, envelope, message)
    except _Closed:
        t.replies.append(("eof", "closed"))
    finally:
        with contextlib.suppress(OSError):
            conn.send(b"Q")
        conn.close()
    return t


def _converse(conn: _Conn, t: Transcript, env: Envelope, message: bytes) -> None:
    conn.send(b"O", struct.pack(">III", SMFI_VERSION, ALL_ACTIONS, ALL_PROTOCOL))
    cmd, data = conn.read()
    if cmd != "O":
        raise _Closed
    _, t.actions, t.protocol = struct.unpack(">III", data[:12])
    proto = t.protocol
    macros = dict(env.macros)

    def step(stage: str, cmd: bytes, payload: bytes, no: int, nr: int, macro: bytes = b"") -> bool:
        """Send a step; False once the filter has ended the message."""
        if proto & no:
            t.replies.append((stage, "-"))  # declined: the MTA goes on as after continue
            return True
        if macro:
            pairs = b"".join(_cstr(k.encode(), v.encode()) for k, v in macros.items())
            conn.send(b"D", macro + pairs)
        conn.send(cmd, payload)
        if proto & nr:
            t.replies.append((stage, "-"))
            return True
        while True:
            rc, rdata = conn.read()
            if rc != "p":  # progress: keep waiting
                break
        reply = _reply_text(rc, rdata)
        t.replies.append((stage, reply))
        return reply[:1] not in _FINAL

    family = b"6" if ":" in env.client_addr else b"4"
    connect = _cstr(env.client_host.encode()) + family + struct.pack(">H", 25)
    connect += _cstr(env.client_addr.encode())
    if not step("connect", b"C", connect, NO_CONNECT, NR_CONN, b"C"):
        return
    if not step("helo", b"H", _cstr(env.helo.encode()), NO_HELO, NR_HELO):
        return
    if not step("mail", b"M", _cstr(f"<{env.mail_from}>".encode()), NO_MAIL, NR_MAIL, b"M"):
        return
    for rcpt in env.rcpt_to:
        if not step("rcpt", b"R", _cstr(f"<{rcpt}>".encode()), NO_RCPT, NR_RCPT, b"R"):
            return
    if not step("data", b"T", b"", NO_DATA, NR_DATA):
        return
    headers, body = split_message(message)
    for name, value in headers:
        if not proto & HDR_LEADSPC:
            value = value.lstrip(b" \t")
        if not step("header", b"L", _cstr(name, value), NO_HDRS, NR_HDR):
            return
    if not step("eoh", b"N", b"", NO_EOH, NR_EOH):
        return
    if not proto & NO_BODY:
        for i in range(0, len(body), env.body_chunk):
            if not step("body", b"B", body[i : i + env.body_chunk], NO_BODY, NR_BODY):
                return
            if t.replies[-1][1] == "s":  # SMFIR_SKIP: the filter wants no more body
                break
    conn.send(b"E")
    while True:
        rc, rdata = conn.read()
        if rc == "p":
            continue
        if rc in "hime+-bq2":
            t.mods.append(_mod(rc, rdata))
            continue
        t.replies.append(("eom", _reply_text(rc, rdata)))
        return
