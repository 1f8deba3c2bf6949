"""The bad-input table (docs/bad-input.md), one test per row, against the real daemon.

One `python -m dkimd` serves the whole module (Mode sv, Domain example.com, key lookups from
a FakeDns through `Nameservers 127.0.0.1:PORT`). Each row sends its bad input -- raw milter
bytes from the tiny MTA client below, or a whole message -- and asserts three things:

* the reply: the connection closed (protocol errors), or the end-of-message reply the
  configured On-* action gives, as OpenDKIM 2.11 sends it (reject "550 5.7.0 <text>", a
  bare reject for a revoked key, tempfail "451 4.7.x <text>", accept);
* a clear log line, found in what the daemon logged while the row ran;
* the daemon still serves: a good message on a new connection is signed (and the signature
  verifies with dkimpy), and a good signed message from outside verifies (dkim=pass).

Configuration rows start the daemon on a broken opendkim.conf: it must refuse to start with
a file:line message, and `-n` must report the same.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.dkim import HeaderField, Signer, SigningRequest, load_private_key
from dkimd.milter import ProtocolFlag
from support.dkimd import Dkimd
from support.fakedns import FakeDns
from support.opendkim import milter_transaction
from support.tools import require

pytestmark = pytest.mark.e2e

AUTHSERV = "mx.test.example"
INTERNAL = "127.0.0.1"
EXTERNAL = "192.0.2.77"
MAX_PACKET = 1024 * 1024
FINAL = frozenset(b"acdrtys")

# ---------------------------------------------------------------------------------------------
# A tiny MTA: milter packets over a socket, as Postfix milter8.c writes them.


def pkt(command: str | int, payload: bytes = b"") -> bytes:
    code = ord(command) if isinstance(command, str) else command
    return struct.pack(">IB", len(payload) + 1, code) + payload


def z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


OPTNEG = pkt("O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))

# Commands and the NR_* flag that makes them reply-less.
_NO_REPLY = {
    "C": ProtocolFlag.NR_CONN,
    "H": ProtocolFlag.NR_HELO,
    "M": ProtocolFlag.NR_MAIL,
    "R": ProtocolFlag.NR_RCPT,
    "T": ProtocolFlag.NR_DATA,
    "L": ProtocolFlag.NR_HDR,
    "N": ProtocolFlag.NR_EOH,
    "B": ProtocolFlag.NR_BODY,
}


class Mta:
    """One milter connection to the daemon, driven by hand."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.protocol = ProtocolFlag.NONE

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Mta:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_oversized(self, data: bytes) -> None:
        """Send a packet the daemon refuses from its length field alone: it may close the
        connection while the rest is still being written (EPIPE/ECONNRESET here, as a write
        error in a real MTA). Whether it closed is what closed_by_peer() then checks."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def _exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def reply(self) -> tuple[int, bytes] | None:
        """The next reply packet, or None when the daemon closed the connection."""
        head = self._exact(5)
        if head is None:
            return None
        length, code = struct.unpack(">IB", head)
        payload = self._exact(length - 1) if length > 1 else b""
        if payload is None:
            return None
        return code, payload

    def closed_by_peer(self) -> bool:
        """True when the daemon closes the connection (EOF) without sending anything more."""
        try:
            return self.reply() is None
        except TimeoutError:
            return False

    def negotiate(self) -> None:
        self.send(OPTNEG)
        r = self.reply()
        assert r is not None and r[0] == ord("O"), r
        self.protocol = ProtocolFlag(struct.unpack(">III", r[1][:12])[2])

    def command(self, cmd: str, payload: bytes = b"") -> tuple[int, bytes] | None:
        """Send one command; return its final reply (None if it expects none)."""
        self.send(pkt(cmd, payload))
        flag = _NO_REPLY.get(cmd)
        if flag is not None and self.protocol & flag:
            return None
        while True:
            r = self.reply()
            assert r is not None, f"connection closed after {cmd!r}"
            if r[0] != ord("p"):
                return r


@dataclass
class Outcome:
    """What the daemon answered for one message."""

    final: tuple[int, bytes]
    mods: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def code(self) -> str:
        return chr(self.final[0])

    @property
    def smtp(self) -> str:
        return self.final[1].rstrip(b"\0").decode("latin-1") if self.code == "y" else ""

    def inserted(self, name: str) -> list[bytes]:
        out = []
        for code, payload in self.mods:
            if code == ord("i"):
                hname, _, rest = payload[4:].partition(b"\0")
                if hname.lower() == name.lower().encode():
                    out.append(rest.rstrip(b"\0"))
        return out

    def changed(self, name: str) -> list[tuple[int, bytes]]:
        out = []
        for code, payload in self.mods:
            if code == ord("m"):
                (index,) = struct.unpack(">I", payload[:4])
                hname, _, rest = payload[4:].partition(b"\0")
                if hname.lower() == name.lower().encode():
                    out.append((index, rest.rstrip(b"\0")))
        return out

    @property
    def ar(self) -> str:
        values = self.inserted("Authentication-Results")
        return values[0].decode("ascii") if values else ""


def send_message(
    port: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes = b"Hello.\r\n",
    *,
    client: str = EXTERNAL,
    mta: Mta | None = None,
) -> Outcome:
    """A whole Postfix-like transaction; stops early at a non-continue reply."""
    own = mta is None
    m = mta or Mta(port)
    try:
        if own:
            m.negotiate()
            m.send(pkt("D", b"C" + z("j", AUTHSERV)))
            r = m.command("C", z("client.example") + b"4" + struct.pack(">H", 4000) + z(client))
            if r is not None and r[0] != ord("c"):
                return Outcome(r)
        m.send(pkt("D", b"M" + z("i", "QID123")))
        for cmd, payload in (("M", z("<a@example.com>")), ("R", z("<b@example.net>")), ("T", b"")):
            r = m.command(cmd, payload)
            if r is not None and r[0] != ord("c"):
                return Outcome(r)
        for name, value in headers:
            r = m.command("L", z(name, value))
            if r is not None and r[0] != ord("c"):
                return Outcome(r)
        r = m.command("N")
        if r is not None and r[0] != ord("c"):
            return Outcome(r)
        for i in range(0, len(body), 65535):
            r = m.command("B", body[i : i + 65535])
            if r is not None and r[0] == ord("s"):
                break  # SMFIR_SKIP: the rest of the body is not wanted (Postfix stops too)
            if r is not None and r[0] != ord("c"):
                return Outcome(r)
        m.send(pkt("E"))
        mods = []
        while True:
            r = m.reply()
            assert r is not None, "connection closed at end of message"
            if r[0] in FINAL:
                return Outcome(r, mods)
            if r[0] != ord("p"):
                mods.append(r)
    finally:
        if own:
            m.close()


# ---------------------------------------------------------------------------------------------
# Keys, DNS and the daemon.


def _rsa(bits: int = 1024) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _p(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@dataclass
class World:
    daemon: Dkimd
    dns: FakeDns
    key_pem: bytes
    record: str

    @property
    def port(self) -> int:
        return self.daemon.port

    def sign(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        selector: str = "mail",
        **kwargs: object,
    ) -> list[tuple[bytes, bytes]]:
        """`headers` with a DKIM-Signature by example.com on top (dkimd's own signer)."""
        fields = [HeaderField(n, v) for n, v in headers]
        request = SigningRequest("example.com", selector, load_private_key(self.key_pem), **kwargs)  # type: ignore[arg-type]
        signer = Signer(request)
        signer.feed_body(body)
        sig = signer.sign(fields)
        return [(sig.name, sig.value), *headers]


GOOD_HEADERS = [
    (b"From", b" Alice <alice@example.com>"),
    (b"To", b" bob@example.net"),
    (b"Subject", b" good"),
]
GOOD_BODY = b"A good message.\r\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("bad-input")
    key = _rsa()
    pem = _pem(key)
    keyfile = tmp / "mail.private"
    keyfile.write_bytes(pem)
    keyfile.chmod(0o600)
    record = f"v=DKIM1; k=rsa; p={_p(key)}"
    with FakeDns() as dns_server:
        dns_server.txt("mail._domainkey.example.com", record)
        _publish_bad_keys(dns_server, key, record)
        d = Dkimd(
            tmp / "dkimd",
            mode="sv",
            domain="example.com",
            selector="mail",
            keyfile=keyfile,
            internal_hosts=[INTERNAL],
            authserv_id=AUTHSERV,
            options={
                "On-BadSignature": "reject",
                "On-KeyNotFound": "tempfail",
                "On-DNSError": "tempfail",
                "On-NoSignature": "accept",
                "On-Security": "tempfail",
                "DNSTimeout": "2",
                "AlwaysAddARHeader": "yes",
                # ARC verified and sealed (with the Domain/Selector/KeyFile key): the ARC
                # rows below feed its parsers; every other row is sealed too when accepted.
                "ArcMode": "sv",
            },
        )
        del d.config["TestDNSData"]
        d.config["Nameservers"] = f"127.0.0.1:{dns_server.port}"
        d.write_config()
        with d:
            yield World(d, dns_server, pem, record)
            assert "Traceback" not in d.log_text(), d.log_text()


def _publish_bad_keys(dns_server: FakeDns, key: rsa.RSAPrivateKey, record: str) -> None:
    p = _p(key)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ed_p = base64.b64encode(ed.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    dns_server.txt("unknownk._domainkey.example.com", f"v=DKIM1; k=dsa; p={p}")
    dns_server.txt("badb64._domainkey.example.com", "v=DKIM1; k=rsa; p=!!not*base64!!")
    dns_server.txt("notakey._domainkey.example.com", "v=DKIM1; k=rsa; p=QUJDREVGRw==")
    dns_server.txt("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p=")
    dns_server.txt("several._domainkey.example.com", "this is not a key", record)
    dns_server.txt("allbad._domainkey.example.com", "garbage one", "v=DKIM1; p=@@@")
    dns_server.txt("big._domainkey.example.com", record + "; n=" + "x" * 10240)
    dns_server.txt("bigjunk._domainkey.example.com", "v=DKIM1; p=" + "A" * 10240)
    dns_server.txt("vnotfirst._domainkey.example.com", f"k=rsa; v=DKIM1; p={p}")
    dns_server.txt("edkey._domainkey.example.com", f"v=DKIM1; k=ed25519; p={ed_p}")
    dns_server.txt("sha1only._domainkey.example.com", f"v=DKIM1; h=sha1; p={p}")
    dns_server.txt("ftponly._domainkey.example.com", f"v=DKIM1; s=ftp; p={p}")
    dns_server.txt("testing._domainkey.example.com", f"v=DKIM1; t=y; p={p}")
    dns_server.rcode("servfail._domainkey.example.com", 2)  # SERVFAIL
    dns_server.drop("timeout._domainkey.example.com")
    dns_server.cname("loop._domainkey.example.com", "loop2._domainkey.example.com")
    dns_server.cname("loop2._domainkey.example.com", "loop._domainkey.example.com")
    dns_server.cname("self._domainkey.example.com", "self._domainkey.example.com")
    dns_server.garbage("garbled._domainkey.example.com", b"\x00\x01\x02")


# ---------------------------------------------------------------------------------------------
# The checks every row shares.


class LogWatch:
    def __init__(self, d: Dkimd) -> None:
        self.d = d
        self.start = len(d.log_text())

    def new(self) -> str:
        return self.d.log_text()[self.start :]

    def wait_for(self, pattern: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.new()
            m = re.search(pattern, text)
            if m:
                return m.group(0)
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} in:\n{text}")
            time.sleep(0.02)


def still_serving(w: World) -> None:
    """A good message on a new connection is signed (dkimpy verifies it), and a good signed
    message from outside verifies."""
    import dkim  # dkimpy

    out = send_message(w.port, GOOD_HEADERS, GOOD_BODY, client=INTERNAL)
    assert out.code == "a", out
    sigs = out.inserted("DKIM-Signature")
    assert len(sigs) == 1, out
    message = (
        b"DKIM-Signature:"
        + sigs[0].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        + b"\r\n"
        + b"".join(n + b":" + v + b"\r\n" for n, v in GOOD_HEADERS)
        + b"\r\n"
        + GOOD_BODY
    )
    txt = w.record.encode()
    assert dkim.verify(message, dnsfunc=lambda name, timeout=5: txt), message
    signed = w.sign(GOOD_HEADERS, GOOD_BODY)
    out = send_message(w.port, signed, GOOD_BODY)
    assert out.code == "a" and "dkim=pass" in out.ar, (out, w.daemon.log_text()[-2000:])


# ---------------------------------------------------------------------------------------------
# Rows: raw milter packets. Expected: the daemon closes that connection and logs why.


@dataclass(frozen=True)
class PacketRow:
    id: str
    stream: bytes  # sent after connecting (negotiation included when the row wants it)
    log: str  # regex expected in the log
    half_close: bool = False  # shut down our write side after sending (truncated stream)


_GOOD_START = OPTNEG + pkt("C", z("h") + b"4" + struct.pack(">H", 1) + z(EXTERNAL))

PACKET_ROWS = [
    PacketRow("zero-length-packet", OPTNEG + b"\0\0\0\0", r"protocol error: zero-length"),
    PacketRow(
        "oversized-length-2GB", OPTNEG + b"\x7f\xff\xff\xffL", r"protocol error: .*exceeds limit"
    ),
    PacketRow("oversized-length-4GB", b"\xff\xff\xff\xffO", r"protocol error: .*4294967295 bytes"),
    PacketRow(
        "packet-just-over-1MB",
        OPTNEG + struct.pack(">IB", MAX_PACKET + 1, ord("B")),
        r"protocol error: milter packet of 1048577 bytes exceeds limit 1048576",
    ),
    PacketRow("http-request", b"GET / HTTP/1.0\r\n\r\n", r"protocol error: .*exceeds limit"),
    PacketRow("unknown-command-X", OPTNEG + pkt("X"), r"unknown milter command command 0x58"),
    PacketRow("unknown-command-NUL", OPTNEG + pkt(0), r"unknown milter command command 0x00"),
    PacketRow(
        "connect-before-optneg",
        pkt("C", z("h") + b"4" + struct.pack(">H", 1) + z("192.0.2.1")),
        r"SMFIC_CONNECT in state negotiate",
    ),
    PacketRow("optneg-twice", OPTNEG + OPTNEG, r"SMFIC_OPTNEG in state ready"),
    PacketRow(
        "header-before-mail", _GOOD_START + pkt("L", z("From", "x")), r"SMFIC_HEADER in state"
    ),
    PacketRow("rcpt-before-mail", _GOOD_START + pkt("R", z("<x@y>")), r"SMFIC_RCPT in state"),
    PacketRow("eom-before-mail", _GOOD_START + pkt("E"), r"SMFIC_BODYEOB in state connected"),
    PacketRow(
        "optneg-truncated-payload",
        pkt("O", struct.pack(">II", 6, 0x1FF)),
        r"SMFIC_OPTNEG packet: truncated 32-bit integer",
    ),
    PacketRow(
        "optneg-version-1",
        pkt("O", struct.pack(">III", 1, 0x1FF, 0x7F)),
        r"protocol error: .*version",
    ),
    PacketRow(
        "connect-unknown-family",
        OPTNEG + pkt("C", z("h") + b"Z" + struct.pack(">H", 1) + z("x")),
        r"unknown address family",
    ),
    PacketRow(
        "connect-no-nul", OPTNEG + pkt("C", b"hostname-without-nul"), r"without NUL terminator"
    ),
    PacketRow(
        "connect-truncated-port",
        OPTNEG + pkt("C", z("h") + b"4\x00"),
        r"truncated 16-bit integer",
    ),
    PacketRow("macro-without-stage", OPTNEG + pkt("D"), r"SMFIC_MACRO packet: missing byte"),
    PacketRow("macro-without-value", OPTNEG + pkt("D", b"C" + z("j")), r"without a value"),
    PacketRow(
        "header-empty-name",
        _GOOD_START + pkt("M", z("<a@b>")) + pkt("R", z("<c@d>")) + pkt("L", z("", "v")),
        r"empty header name",
    ),
    PacketRow(
        "header-nul-in-value",
        _GOOD_START + pkt("M", z("<a@b>")) + pkt("R", z("<c@d>")) + pkt("L", b"X\0a\0b\0"),
        r"SMFIC_HEADER packet: 2 unexpected trailing bytes",
    ),
    PacketRow(
        "header-no-terminator",
        _GOOD_START + pkt("M", z("<a@b>")) + pkt("R", z("<c@d>")) + pkt("L", b"Subject\0x"),
        r"SMFIC_HEADER packet: string without NUL terminator",
    ),
    PacketRow("mail-empty", _GOOD_START + pkt("M"), r"SMFIC_MAIL packet: missing address"),
    PacketRow(
        "helo-trailing-bytes", _GOOD_START + pkt("H", b"h\0junk"), r"unexpected trailing bytes"
    ),
    PacketRow(
        "truncated-mid-packet",
        OPTNEG + struct.pack(">IB", 100, ord("L")) + b"Subj",
        r"end of stream inside a packet \(9 bytes pending\)",
        half_close=True,
    ),
    PacketRow(
        "truncated-length-prefix",
        OPTNEG + b"\x00\x00",
        r"end of stream inside a packet \(2 bytes pending\)",
        half_close=True,
    ),
]


@pytest.mark.parametrize("row", PACKET_ROWS, ids=lambda r: r.id)
def test_packet_row(world: World, row: PacketRow) -> None:
    watch = LogWatch(world.daemon)
    with Mta(world.port) as m:
        m.send(row.stream)
        if row.half_close:
            m.sock.shutdown(socket.SHUT_WR)
        # Replies to the valid packets in front may come first; then the daemon hangs up.
        for _ in range(10):
            r = m.reply()
            if r is None:
                break
        else:
            pytest.fail("the daemon kept the connection open")
    line = watch.wait_for(row.log)
    assert "protocol error" in watch.new() or "closing" in line
    still_serving(world)


def test_huge_header_packet(world: World) -> None:
    """Row 1mb-header: a 1 MB header value in one SMFIC_HEADER packet exceeds the 1 MB cap."""
    watch = LogWatch(world.daemon)
    with Mta(world.port) as m:
        m.negotiate()
        m.command("C", z("h") + b"4" + struct.pack(">H", 1) + z(EXTERNAL))
        m.command("M", z("<a@example.com>"))
        m.command("R", z("<b@example.net>"))
        m.send_oversized(pkt("L", z("Subject", b"x" * MAX_PACKET)))
        assert m.closed_by_peer()
    watch.wait_for(r"protocol error: milter packet of \d+ bytes exceeds limit 1048576")
    still_serving(world)


def test_abrupt_close_mid_message(world: World) -> None:
    """Row close-mid-message: the MTA disappears after end-of-headers; nothing leaks."""
    watch = LogWatch(world.daemon)
    with Mta(world.port) as m:
        m.negotiate()
        m.command("C", z("h") + b"4" + struct.pack(">H", 1) + z(EXTERNAL))
        m.command("M", z("<a@example.com>"))
        m.command("R", z("<b@example.net>"))
        signed = world.sign(
            [(b"From", b" a@example.com")], b"x\r\n", selector="timeout"
        )  # a lookup that never answers is in flight
        for n, v in signed:
            m.command("L", z(n, v))
        m.command("N")
    still_serving(world)
    assert "Traceback" not in watch.new()
    assert "internal error" not in watch.new()


def test_abort_then_next_message_same_connection(world: World) -> None:
    """Row abort-mid-message: SMFIC_ABORT drops the message; the next one on the same
    connection is signed."""
    with Mta(world.port) as m:
        m.negotiate()
        m.send(pkt("D", b"C" + z("j", AUTHSERV)))
        m.command("C", z("h") + b"4" + struct.pack(">H", 1) + z(INTERNAL))
        m.command("M", z("<a@example.com>"))
        m.command("R", z("<b@example.net>"))
        m.command("L", z("From", b" a@example.com"))
        m.send(pkt("A"))
        out = send_message(world.port, GOOD_HEADERS, GOOD_BODY, mta=m)
        assert out.code == "a" and out.inserted("DKIM-Signature")
    still_serving(world)


# ---------------------------------------------------------------------------------------------
# Rows: messages. Each builds headers/body, names the client, and expects a reply and a log.


@dataclass(frozen=True)
class MessageRow:
    id: str
    build: Callable[[World], tuple[list[tuple[bytes, bytes]], bytes]]
    client: str
    reply: str  # "accept", "reject", "reject-bare", "tempfail", "tempfail-bare"
    log: str
    ar: str | None = None  # regex the Authentication-Results value must match
    signed: bool | None = None  # whether a DKIM-Signature must (True) / must not (False) appear
    # Authentication-Results the daemon must delete, by milter header index (1 = the first);
    # every other row must delete none.
    deleted_ar: tuple[int, ...] = ()


def _plain(*extra: tuple[bytes, bytes], body: bytes = GOOD_BODY) -> Callable[[World], object]:
    return lambda w: ([*GOOD_HEADERS, *extra], body)


def _sig(value: bytes) -> Callable[[World], object]:
    return lambda w: ([(b"DKIM-Signature", b" " + value), *GOOD_HEADERS], GOOD_BODY)


def _signed(selector: str = "mail", **kw: object) -> Callable[[World], object]:
    return lambda w: (w.sign(GOOD_HEADERS, GOOD_BODY, selector=selector, **kw), GOOD_BODY)


def _edit_sig(old: bytes, new: bytes) -> Callable[[World], object]:
    def build(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
        signed = w.sign(GOOD_HEADERS, GOOD_BODY)
        name, value = signed[0]
        assert old in value, value
        return [(name, value.replace(old, new, 1)), *signed[1:]], GOOD_BODY

    return build


def _tampered_body(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
    return w.sign(GOOD_HEADERS, GOOD_BODY), b"A tampered message.\r\n"


def _tampered_header(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
    signed = w.sign(GOOD_HEADERS, GOOD_BODY)
    return [*signed[:-1], (b"Subject", b" changed")], GOOD_BODY


def _many_headers(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
    return [*GOOD_HEADERS, *((b"X-Filler", b" %d" % i) for i in range(100_000))], GOOD_BODY


def _headers_900k(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
    return [*GOOD_HEADERS, (b"X-Big", b" " + b"y" * 900_000)], GOOD_BODY


def _many_sigs(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
    junk = [(b"DKIM-Signature", b" junk %d" % i) for i in range(50)]
    return [*junk, *w.sign(GOOD_HEADERS, GOOD_BODY)], GOOD_BODY


_BASE = b"v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=mail; h=from:to; bh=YWJj; b=YWJj"


def _tags(**change: str | None) -> bytes:
    tags = dict(p.split("=", 1) for p in _BASE.decode().split("; "))
    for k, v in change.items():
        if v is None:
            tags.pop(k, None)
        else:
            tags[k] = v
    return "; ".join(f"{k}={v}" for k, v in tags.items()).encode()


def _arc_chain(w: World, sets: int = 1) -> list[tuple[bytes, bytes]]:
    """GOOD_HEADERS sealed `sets` times by example.com (dkimd.arc), newest set on top."""
    from dkimd.arc import ArcResult, ArcSealer, ChainState, SealRequest

    fields = [HeaderField(n, v) for n, v in GOOD_HEADERS]
    key = load_private_key(w.key_pem)
    for i in range(sets):
        state = ChainState.NONE if i == 0 else ChainState.PASS
        chain = ArcResult(state, highest=i, last_cv=state if i else None)
        sealer = ArcSealer(SealRequest("example.com", "mail", key, "relay.example"))
        sealer.feed_body(GOOD_BODY)
        fields = [*sealer.seal(fields, chain, f"arc={state.value}"), *fields]
    return [(f.name, f.value) for f in fields]


def _arc_edit(
    edit: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]], sets: int = 1
) -> Callable[[World], object]:
    return lambda w: (edit(_arc_chain(w, sets)), GOOD_BODY)


def _arc_bomb(w: World) -> tuple[list[tuple[bytes, bytes]], bytes]:
    seal = b" i=%d; a=rsa-sha256; cv=pass; d=example.com; s=mail; b=YWJj"
    return [*((b"ARC-Seal", seal % (n % 50 + 1)) for n in range(300)), *GOOD_HEADERS], GOOD_BODY


def _without_set(n: int) -> Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]:
    return lambda hs: [
        (k, v) for k, v in hs if not (k.startswith(b"ARC-") and v.startswith(b" i=%d;" % n))
    ]


def _seal_h(hs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (
            k,
            re.sub(rb"(?<![a-z])h=", b"h=ARC-Seal:", v, count=1)
            if k == b"ARC-Message-Signature"
            else v,
        )
        for k, v in hs
    ]


def _huge_b(hs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (k, v.replace(b"b=", b"b=" + b"A" * 40_000, 1) if k == b"ARC-Seal" else v) for k, v in hs
    ]


ARC_FAIL = r"ARC chain fail: "

R = "reject"
T = "tempfail"
C = "accept"
A = C
PERM = r"dkim=permerror"
# A key record that cannot be parsed is "key DNS reply corrupt" to libopendkim, which
# OpenDKIM's A-R reports as temperror (dkimf_ar_all_sigs). Key record problems get no On-*
# action from OpenDKIM (observed): such messages are delivered with their A-R.
KEY_CORRUPT = r"dkim=temperror"
# OpenDKIM's bad-format path (no usable From): permerror A-R, accepted (dkimd.malformed).
BAD_FORMAT = r"^ ?mx\.test\.example; dkim=permerror \(bad message/signature format\)$"
BAD_FORMAT_LOG = r"can't determine message sender; bad message format"
SYNTAX = r"syntax error: "  # then the reason, logged with the On-BadSignature action

MESSAGE_ROWS = [
    # -- signing side (internal client) --
    MessageRow("good-internal", _plain(), INTERNAL, C, r"DKIM-Signature field added", signed=True),
    MessageRow(
        # OpenDKIM's MaximumHeaders (default 65536 bytes): On-Security, a bare tempfail.
        "100k-headers",
        _many_headers,
        INTERNAL,
        "tempfail-bare",
        r"too much header data",
        signed=False,
    ),
    MessageRow(
        "900KB-header",
        _headers_900k,
        INTERNAL,
        "tempfail-bare",
        r"too much header data",
        signed=False,
    ),
    MessageRow(
        "nul-bytes-in-body",
        _plain(body=b"a\0b\0\r\n\0\r\n"),
        INTERNAL,
        C,
        r"DKIM-Signature field added",
        signed=True,
    ),
    MessageRow(
        "bare-cr-in-header",
        _plain((b"X-CR", b" a\rb")),
        INTERNAL,
        C,
        r"DKIM-Signature field added",
        signed=True,
    ),
    MessageRow(
        "bare-lf-in-header",
        _plain((b"X-LF", b" a\nb")),
        INTERNAL,
        C,
        r"DKIM-Signature field added",
        signed=True,
    ),
    MessageRow(
        "bare-cr-lf-in-body",
        _plain(body=b"a\rb\nc\r\r\n\n"),
        INTERNAL,
        C,
        r"DKIM-Signature field added",
        signed=True,
    ),
    MessageRow(
        # libopendkim refuses a field name outside printable ASCII (observed: opendkim 2.11
        # answers On-BadSignature at end of headers); 8-bit values are fine.
        "8bit-garbage-in-headers",
        _plain((b"X-\xff\xfe", b" \x80\x81\xc3\x28 \xff"), (b"Subject", b" \xe9t\xe9")),
        INTERNAL,
        R,
        r"syntax error: invalid character in header field name",
        signed=False,
    ),
    MessageRow(
        "8bit-header-values",
        _plain((b"X-8bit", b" \x80\x81\xc3\x28 \xff"), (b"Subject", b" \xe9t\xe9")),
        INTERNAL,
        C,
        r"DKIM-Signature field added",
        signed=True,
    ),
    MessageRow(
        "empty-message",
        lambda w: ([], b""),
        INTERNAL,
        A,
        BAD_FORMAT_LOG,
        ar=BAD_FORMAT,
        signed=False,
    ),
    MessageRow(
        "missing-from",
        lambda w: ([(b"To", b" b@example.net"), (b"Subject", b" x")], GOOD_BODY),
        INTERNAL,
        A,
        BAD_FORMAT_LOG,
        ar=BAD_FORMAT,
        signed=False,
    ),
    MessageRow(
        "several-from",
        _plain((b"From", b" mallory@example.com")),
        INTERNAL,
        C,
        r"multiple From fields; not signing",
        signed=False,
    ),
    MessageRow(
        "from-unparsable",
        lambda w: ([(b"From", b" <<<@@@>>>"), (b"To", b" b@x")], GOOD_BODY),
        INTERNAL,
        A,
        BAD_FORMAT_LOG,
        ar=BAD_FORMAT,
        signed=False,
    ),
    MessageRow(
        "from-foreign-domain",
        lambda w: ([(b"From", b" a@other.example"), (b"To", b" b@x")], GOOD_BODY),
        INTERNAL,
        C,
        r"other\.example",
        signed=False,
    ),
    # -- verifying side: the DKIM-Signature itself --
    MessageRow("no-signature", _plain(), EXTERNAL, C, r"no signature data", ar=r"dkim=none"),
    MessageRow(
        "good-signature", _signed(), EXTERNAL, C, r"DKIM verification successful", ar="dkim=pass"
    ),
    # A tag-list libopendkim cannot read: On-BadSignature at end of headers, no A-R.
    MessageRow("sig-missing-b", _sig(_tags(b=None)), EXTERNAL, R, SYNTAX + "missing parameter"),
    MessageRow(
        "sig-missing-d-s", _sig(_tags(d=None, s=None)), EXTERNAL, R, SYNTAX + "missing parameter"
    ),
    MessageRow(
        "sig-duplicate-tag",
        _sig(_BASE + b"; a=rsa-sha1"),
        EXTERNAL,
        R,
        r"duplicate tag 'a'",
        PERM,
    ),
    MessageRow("sig-garbage", _sig(b"this is not a tag list"), EXTERNAL, R, SYNTAX + "syntax"),
    MessageRow(
        "sig-empty-tag-spec", _sig(b"v=1;; a=rsa-sha256"), EXTERNAL, R, SYNTAX + r"syntax.*0x3b"
    ),
    MessageRow(
        "sig-control-char", _sig(_tags(s="ma\x01il")), EXTERNAL, R, SYNTAX + r"invalid character"
    ),
    MessageRow(
        "sig-bad-base64-b", _sig(_tags(b="YW!j")), EXTERNAL, R, r"b= is not valid base64", PERM
    ),
    MessageRow(
        "sig-bad-base64-bh",
        _sig(_tags(bh="%%%")),
        EXTERNAL,
        R,
        r"bh= is not valid base64",
        PERM,
    ),
    MessageRow(
        "sig-h-without-from",
        _sig(_tags(h="to:subject")),
        EXTERNAL,
        R,
        r"From field not signed",
        PERM,
    ),
    MessageRow(
        "sig-x-before-t",
        _sig(_tags(t="1700000000", x="1600000000")),
        EXTERNAL,
        R,
        r"x= is earlier than t=",
        PERM,
    ),
    MessageRow(
        "sig-expired",
        _signed(timestamp=1000, ttl=1),
        EXTERNAL,
        C,  # OpenDKIM 2.11 applies no On-* action to a time error (observed)
        r"signature expired",
        PERM,
    ),
    MessageRow(
        "sig-i-outside-d",
        _sig(_tags(i="user@evil.example")),
        EXTERNAL,
        R,
        r"identity i= is not within d=",
        PERM,
    ),
    MessageRow(
        "sig-unknown-a",
        _sig(_tags(a="rsa-sha512")),
        EXTERNAL,
        R,
        r"unknown signature algorithm a=",
        PERM,
    ),
    MessageRow(
        "sig-rsa-sha1",
        _sig(_tags(a="rsa-sha1")),
        EXTERNAL,
        R,
        r"rsa-sha1 signatures are not accepted",
        PERM,
    ),
    MessageRow(
        "sig-huge-b",
        # Within MaximumHeaders (a larger header block is tempfailed before it is read).
        _sig(_tags(b="A" * 20_000)),
        EXTERNAL,
        R,
        r"b= is too long",
        PERM,
    ),
    MessageRow("sig-v2", _sig(_tags(v="2")), EXTERNAL, R, r"unsupported signature version", PERM),
    MessageRow(
        "sig-unknown-c",
        _sig(_tags(c="fancy/relaxed")),
        EXTERNAL,
        R,
        r"unknown canonicalization c=",
        PERM,
    ),
    MessageRow(
        "sig-bad-domain", _sig(_tags(d="-bad..example")), EXTERNAL, R, r"malformed domain d=", PERM
    ),
    MessageRow(
        "sig-crlf-injection",
        _sig(_tags(d="example.com\r\nX-Injected: yes")),
        EXTERNAL,
        R,
        r"DKIM verification: permerror",
        PERM,
    ),
    MessageRow("sig-bad-l", _sig(_tags(l="-5")), EXTERNAL, R, r"l= is not a valid number", PERM),
    MessageRow(
        "sig-unknown-q", _sig(_tags(q="http/well-known")), EXTERNAL, R, r"no supported query", PERM
    ),
    MessageRow("body-tampered", _tampered_body, EXTERNAL, R, r"body hash mismatch", r"dkim=fail"),
    MessageRow(
        "header-tampered",
        _tampered_header,
        EXTERNAL,
        R,
        r"signature verification failed",
        r"dkim=fail",
    ),
    MessageRow(
        "50-signatures",
        _many_sigs,
        EXTERNAL,
        R,
        SYNTAX + "syntax error in signature data",
    ),
    MessageRow(
        "forged-ar-claiming-our-id",
        lambda w: (
            [
                (b"Authentication-Results", b" " + AUTHSERV.encode() + b"; dkim=pass"),
                *w.sign(GOOD_HEADERS, GOOD_BODY),
            ],
            GOOD_BODY,
        ),
        EXTERNAL,
        C,
        r"removing 1 Authentication-Results field\(s\) claiming authserv-id mx\.test\.example",
        ar="dkim=pass",
        deleted_ar=(1,),
    ),
    # -- verifying side: the key record and DNS --
    MessageRow(
        "key-unknown-k", _signed("unknownk"), EXTERNAL, C, r"unknown key type k=", KEY_CORRUPT
    ),
    MessageRow("key-bad-p", _signed("badb64"), EXTERNAL, C, r"p= is not valid base64", KEY_CORRUPT),
    MessageRow(
        "key-p-not-a-key",
        _signed("notakey"),
        EXTERNAL,
        C,
        r"p= is not a valid RSA public key",
        KEY_CORRUPT,
    ),
    # OpenDKIM sets no reply text for a revoked key: the reject goes out bare.
    MessageRow(
        "key-revoked",
        _signed("revoked"),
        EXTERNAL,
        "reject-bare",
        r"key revoked",
        r'dkim=fail reason="key revoked"',
    ),
    MessageRow(
        "key-several-txt-one-good",
        _signed("several"),
        EXTERNAL,
        C,
        r"DKIM verification successful \(d=example\.com, s=several",
        "dkim=pass",
    ),
    MessageRow(
        "key-several-txt-all-bad",
        _signed("allbad"),
        EXTERNAL,
        C,
        # DNS does not order the records of one RRset: either error may be the first.
        r"s=allbad\): (key record: tag-spec without '='|p= is not valid base64)",
        KEY_CORRUPT,
    ),
    MessageRow(
        "key-10KB-txt",
        _signed("big"),
        EXTERNAL,
        C,
        r"DKIM verification successful \(d=example\.com, s=big",
        "dkim=pass",
    ),
    MessageRow(
        "key-10KB-junk-p", _signed("bigjunk"), EXTERNAL, C, r"s=bigjunk\): p= is not", KEY_CORRUPT
    ),
    MessageRow(
        "key-v-not-first",
        _signed("vnotfirst"),
        EXTERNAL,
        C,
        r"v= is not the first tag",
        KEY_CORRUPT,
    ),
    # A key that was read but does not fit the signature: fail, with libopendkim's reason.
    MessageRow(
        "key-type-mismatch",
        _signed("edkey"),
        EXTERNAL,
        C,
        r"key type does not match a=",
        r'dkim=fail reason="unknown key type"',
    ),
    MessageRow(
        "key-h-sha1-only",
        _signed("sha1only"),
        EXTERNAL,
        C,
        r"key h= does not allow",
        r'dkim=fail reason="signature-key hash mismatch"',
    ),
    MessageRow(
        "key-s-not-email",
        _signed("ftponly"),
        EXTERNAL,
        C,
        r"key s= does not include email",
        r'dkim=fail reason="not an e-mail key"',
    ),
    MessageRow(
        "key-testing-mode-fail",
        lambda w: (w.sign(GOOD_HEADERS, GOOD_BODY, selector="testing"), b"tampered\r\n"),
        EXTERNAL,
        C,
        r"DKIM verification: neutral \(d=example\.com, s=testing\): body hash mismatch",
        # OpenDKIM's A-R does not look at t=y; only the reply does (delivered).
        r'dkim=fail reason="signature verification failed"',
    ),
    MessageRow(
        "key-nxdomain",
        _signed("missing"),
        EXTERNAL,
        T,
        r"no key for signature",
        r'dkim=fail reason="key not found in DNS"',
    ),
    MessageRow(
        "key-servfail", _signed("servfail"), EXTERNAL, T, r"key query failed: servfail", "temperror"
    ),
    MessageRow(
        "key-timeout", _signed("timeout"), EXTERNAL, T, r"key query failed: timeout", "temperror"
    ),
    # A lookup that fails is a key retrieval failure to OpenDKIM: On-DNSError, temperror.
    MessageRow(
        "key-cname-loop",
        _signed("loop"),
        EXTERNAL,
        T,
        r"s=loop\): key query failed: error",
        "temperror",
    ),
    MessageRow(
        "key-cname-self",
        _signed("self"),
        EXTERNAL,
        T,
        r"s=self\): key query failed: error",
        "temperror",
    ),
    MessageRow(
        "key-garbled-dns-reply",
        _signed("garbled"),
        EXTERNAL,
        T,
        r"s=garbled\): key query failed: timeout",
        "temperror",
    ),
    # -- ARC (RFC 8617): the chain parsers; mail is delivered, the chain fails --
    MessageRow("arc-good-chain", _arc_edit(lambda hs: hs, 2), EXTERNAL, C, r"ARC set i=3 added"),
    MessageRow("arc-instance-bomb", _arc_bomb, EXTERNAL, C, ARC_FAIL + r"300 ARC header fields"),
    MessageRow(
        "arc-duplicate-instance",
        _arc_edit(lambda hs: [hs[0], *hs]),
        EXTERNAL,
        C,
        ARC_FAIL + r"duplicate ARC-Seal i=1",
    ),
    MessageRow(
        "arc-gap", _arc_edit(_without_set(2), 3), EXTERNAL, C, ARC_FAIL + r"gap in the chain"
    ),
    MessageRow(
        "arc-instance-51",
        _arc_edit(lambda hs: [(k, v.replace(b" i=1;", b" i=51;", 1)) for k, v in hs]),
        EXTERNAL,
        C,
        ARC_FAIL + r"instance i=51 outside 1\.\.50",
    ),
    MessageRow(
        "arc-ams-signs-seal",
        _arc_edit(_seal_h),
        EXTERNAL,
        C,
        ARC_FAIL + r"AMS i=1: h= contains ARC-Seal",
    ),
    MessageRow(
        "arc-forged-pass-result",
        lambda w: (
            [(b"Authentication-Results", f" {AUTHSERV}; arc=pass".encode()), *_arc_chain(w)],
            GOOD_BODY + b"changed\r\n",
        ),
        EXTERNAL,
        C,
        ARC_FAIL + r"AMS i=1: body hash mismatch(?s:.*)ARC set i=2 added \(.*cv=fail\)",
    ),
    MessageRow(
        "arc-huge-seal", _arc_edit(_huge_b), EXTERNAL, C, ARC_FAIL + r"AS i=1: b= is too long"
    ),
]

_REPLIES = {
    "accept": ("a", ""),
    "reject": ("y", "550 5.7.0 "),
    "reject-bare": ("r", ""),
    "tempfail": ("y", "451 4.7."),
    "tempfail-bare": ("t", ""),
}
# The log line OpenDKIM writes for a status that is rejected or tempfailed.
_STATUS_LOG = (
    r"(bad signature data|syntax error|signature processing failed|key retrieval failed"
    r"|key revoked)"
)


@pytest.mark.parametrize("row", MESSAGE_ROWS, ids=lambda r: r.id)
def test_message_row(world: World, row: MessageRow) -> None:
    watch = LogWatch(world.daemon)
    headers, body = row.build(world)  # type: ignore[misc]
    out = send_message(world.port, headers, body, client=row.client)
    code, smtp = _REPLIES[row.reply]
    assert out.code == code, (out, watch.new()[-3000:])
    assert out.smtp.startswith(smtp), out.smtp
    assert "\r" not in out.smtp and "\n" not in out.smtp
    if row.ar is not None:
        assert re.search(row.ar, out.ar), (out.ar, watch.new()[-2000:])
    for value in out.inserted("Authentication-Results"):
        unfolded = value.replace(b"\r\n\t", b" ").replace(b"\n\t", b" ")
        assert not any(c in unfolded for c in b"\r\n\0"), value
        assert b"X-Injected" not in value or b'"' in value
    if row.signed is not None:
        assert bool(out.inserted("DKIM-Signature")) == row.signed, out
    # A change with an empty value is the milter protocol's deletion.
    assert out.changed("Authentication-Results") == [(i, b"") for i in row.deleted_ar], out
    watch.wait_for(row.log)
    if row.reply in ("reject", "reject-bare", "tempfail"):
        watch.wait_for(_STATUS_LOG)
    still_serving(world)


def test_rows_are_documented() -> None:
    """Every row id above is a row of docs/bad-input.md, and the table has >= 50 rows."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bad-input.md").read_text()
    ids = re.findall(r"^\| `([^`]+)` \|", doc, re.M)
    assert len(ids) >= 50
    code_ids = (
        {r.id for r in PACKET_ROWS} | {r.id for r in MESSAGE_ROWS} | {r.id for r in CONFIG_ROWS}
    )
    code_ids |= {"1MB-header", "close-mid-message", "abort-mid-message"}
    assert set(ids) == code_ids, set(ids) ^ code_ids


# ---------------------------------------------------------------------------------------------
# Rows: broken configuration. The daemon refuses to start with file:line; -n says the same
# (except what OpenDKIM starts with: `starts`).


@dataclass(frozen=True)
class ConfigRow:
    id: str
    conf: str  # opendkim.conf text; {dir} is the row's directory
    files: dict[str, str]  # extra files in {dir}
    message: str  # regex; {conf} stands for the config path
    starts: bool = False  # OpenDKIM serves this file: only a warning, and -n exits 0
    # opendkim -n does not look at it (read in main after -n returns): -n warns and exits
    # 0, a real start refuses it
    start_only: bool = False


CONFIG_ROWS = [
    ConfigRow(
        "conf-unknown-option",
        "Mode sv\nBogusOption yes\n",
        {},
        r'{conf}:2: unknown option "BogusOption"',
    ),
    ConfigRow(
        "conf-bad-boolean", "Syslog maybe\n", {}, r'{conf}:1: Syslog: "maybe" is not a Boolean'
    ),
    ConfigRow("conf-missing-value", "Mode sv\nMode\n", {}, r"{conf}:2: .*value"),
    ConfigRow("conf-bad-integer", "DNSTimeout ten\n", {}, r"{conf}:1: DNSTimeout"),
    ConfigRow("conf-bad-mode", "Mode xyz\n", {}, r"{conf}:1: Mode"),
    # OpenDKIM 2.11 starts with any On-* value and accepts such messages: a warning only.
    ConfigRow(
        "conf-bad-action",
        "Mode v\nSocket inet:8891@127.0.0.1\nOn-BadSignature explode\n",
        {},
        r'{conf}:3: warning: On-BadSignature: unknown action "explode"',
        starts=True,
    ),
    ConfigRow("conf-include-missing", "Include {dir}/nope.conf\n", {}, r"{conf}:1: .*nope\.conf"),
    ConfigRow(
        "conf-keytable-line-no-value",
        "Mode s\nKeyTable file:{dir}/KeyTable\nSigningTable refile:{dir}/SigningTable\n",
        {"KeyTable": "# keys\nonlykey\n", "SigningTable": "*@example.com onlykey\n"},
        r'{dir}/KeyTable:2: warning: KeyTable entry "onlykey" has no value',
        starts=True,
    ),
    ConfigRow(
        "conf-signingtable-bad-pattern",
        "Mode s\nKeyTable csl:k=example.com:mail:/nonexistent\n"
        "SigningTable refile:{dir}/SigningTable\n",
        {"SigningTable": "*@example.com k\n(unclosed k\n"},
        r'{dir}/SigningTable:2: cannot compile pattern "\(unclosed"',
    ),
    ConfigRow(
        "conf-dataset-missing-file",
        "InternalHosts refile:{dir}/missing\n",
        {},
        r"{conf}:1: .*cannot read data set file",
    ),
    ConfigRow(
        "conf-bad-socket",
        "Socket inet:99999@127.0.0.1\n",
        {},
        r"{conf}:1: .*Socket",
        start_only=True,
    ),
    ConfigRow("conf-bad-nameserver", "Nameservers not-an-ip\n", {}, r"{conf}:1: Nameservers"),
]


@pytest.mark.parametrize("row", CONFIG_ROWS, ids=lambda r: r.id)
def test_config_row(tmp_path: Path, row: ConfigRow) -> None:
    for name, text in row.files.items():
        (tmp_path / name).write_text(text)
    conf = tmp_path / "opendkim.conf"
    conf.write_text(row.conf.format(dir=tmp_path))
    expected = row.message.format(conf=re.escape(str(conf)), dir=re.escape(str(tmp_path)))
    if row.starts:
        proc = subprocess.run(
            [sys.executable, "-m", "dkimd", "-x", str(conf), "-n"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, (proc.returncode, proc.stderr)
        assert re.search(expected, proc.stderr), (expected, proc.stderr)
        return
    for args in (["-n"], ["-f"]):
        proc = subprocess.run(
            [sys.executable, "-m", "dkimd", "-x", str(conf), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        refused = args == ["-f"] or not row.start_only
        assert proc.returncode == (78 if refused else 0), (args, proc.returncode, proc.stderr)
        assert re.search(expected, proc.stderr), (args, expected, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_miltertest_after_bad_rows(world: World) -> None:
    """The real miltertest (libmilter's client) still gets a signature after all the rows."""
    require("miltertest")
    message = b"".join(n + b":" + v + b"\r\n" for n, v in GOOD_HEADERS) + b"\r\n" + GOOD_BODY
    result = milter_transaction(world.daemon.socket_spec, message, client_addr=INTERNAL)
    assert result.headers("DKIM-Signature"), result.output
