"""dkimd under faults: broken or slow DNS, bad reloads, vanished keys, clients that hang up.

Everything runs against the real daemon (support.dkimd.Dkimd: ``python -m dkimd -x conf -f``),
driven by a tiny milter client written here from the protocol description, independent of
dkimd.milter, so a bug in the codec under test cannot hide itself.

DNS: dkimd's ``Nameservers`` option takes addresses only (no port), so the key lookups go to
UDP port 53 of a loopback address of our own (127.53.x.y, all of 127/8 is local on Linux),
where a small relay answers from a support.fakedns.FakeDns's configuration (its ``respond``;
the FakeDns itself needs no socket). Binding port 53 needs root, as the e2e tests do anyway.
"""

from __future__ import annotations

import email
import os
import random
import shutil
import signal
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import dns.rcode
import pytest

from support.dkimd import Dkimd
from support.fakedns import FakeDns
from support.opendkim import DkimKey
from support.postfix import PrivatePostfix
from support.tools import require, unavailable, wait_for_all_closed, wait_until_read

pytestmark = [pytest.mark.e2e]

OUTSIDE = "198.51.100.77"  # TEST-NET-2: not in InternalHosts, so mail from it is verified
AUTHSERV = "mx.test.example"

# ---- a raw milter client (MTA side), from the milter protocol v6 description -----------------

SMFI_VERSION = 6
# NR_* protocol bits: the MTA sends the command but the filter sends no reply to it.
_NO_REPLY_BIT = {
    b"C": 0x1000,  # SMFIP_NR_CONN
    b"H": 0x2000,  # SMFIP_NR_HELO
    b"M": 0x4000,  # SMFIP_NR_MAIL
    b"R": 0x8000,  # SMFIP_NR_RCPT
    b"T": 0x10000,  # SMFIP_NR_DATA
    b"L": 0x80,  # SMFIP_NR_HDR
    b"N": 0x40000,  # SMFIP_NR_EOH
    b"B": 0x80000,  # SMFIP_NR_BODY
}
_HDR_LEADSPC = 0x100000
_FINAL = {b"c", b"a", b"r", b"t", b"y", b"d"}  # continue accept reject tempfail replycode discard


class MilterError(Exception):
    pass


@dataclass
class MilterReply:
    code: bytes  # the final reply's command byte (b"c", b"y", ...)
    text: str = ""  # SMFIR_REPLYCODE text, e.g. "451 4.7.5 DKIM key retrieval failed"
    inserted: list[tuple[str, str]] = field(default_factory=list)  # (name, value) added
    elapsed: float = 0.0

    def headers(self, name: str) -> list[str]:
        return [" ".join(v.split()) for n, v in self.inserted if n.lower() == name.lower()]


class MilterClient:
    """Plays Postfix's side of one milter connection, synchronously."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.protocol = 0

    def close(self, reset: bool = False) -> None:
        if reset:  # RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, cmd: bytes, data: bytes = b"") -> None:
        self.sock.sendall(struct.pack("!I", len(data) + 1) + cmd + data)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise MilterError("filter closed the connection")
            buf += chunk
        return buf

    def recv(self) -> tuple[bytes, bytes]:
        while True:
            (length,) = struct.unpack("!I", self._exact(4))
            packet = self._exact(length)
            if packet[:1] != b"p":  # SMFIR_PROGRESS: keep waiting
                return packet[:1], packet[1:]

    def command(self, cmd: bytes, data: bytes = b"") -> bytes | None:
        """Send one command; return the filter's reply byte, or None when none is due."""
        self.send(cmd, data)
        if self.protocol & _NO_REPLY_BIT.get(cmd, 0):
            return None
        code, _ = self.recv()
        return code

    def negotiate(self) -> None:
        self.send(b"O", struct.pack("!III", SMFI_VERSION, 0x1FF, 0x1FFFFF))
        code, data = self.recv()
        if code != b"O" or len(data) < 12:
            raise MilterError(f"bad option negotiation reply {code!r}")
        _version, _actions, self.protocol = struct.unpack("!III", data[:12])

    def macros(self, for_cmd: bytes, values: dict[str, str]) -> None:
        self.send(
            b"D",
            for_cmd + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in values.items()),
        )

    def connect(self, hostname: str, address: str) -> bytes | None:
        self.macros(b"C", {"j": AUTHSERV, "{daemon_name}": "smtpd"})
        return self.command(
            b"C",
            hostname.encode() + b"\0" + b"4" + struct.pack("!H", 25) + address.encode() + b"\0",
        )

    def header(self, name: bytes, value: bytes) -> bytes | None:
        if not self.protocol & _HDR_LEADSPC:
            value = value.lstrip(b" \t")
        return self.command(b"L", name + b"\0" + value + b"\0")

    def end_of_message(self) -> MilterReply:
        self.send(b"E")
        reply = MilterReply(b"")
        while True:
            code, data = self.recv()
            if code == b"i":  # SMFIR_INSHEADER: index, name, value
                name, value = data[4:].rstrip(b"\0").split(b"\0", 1)
                reply.inserted.append((name.decode(), value.decode()))
            elif code == b"h":  # SMFIR_ADDHEADER
                name, value = data.rstrip(b"\0").split(b"\0", 1)
                reply.inserted.append((name.decode(), value.decode()))
            elif code in _FINAL:
                reply.code = code
                reply.text = data.rstrip(b"\0").decode()
                return reply


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)  # Postfix passes folds as bare LF
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields, body


def milter_message(
    port: int,
    message: bytes,
    *,
    client_addr: str = "127.0.0.1",
    sender: str = "alice@example.com",
    queue_id: str = "TESTQ",
    on_eoh: Callable[[], None] | None = None,
) -> MilterReply:
    """One whole message through the milter, as Postfix sends it; the final EOM reply."""
    started = time.monotonic()
    client = MilterClient(port)
    try:
        client.negotiate()
        hostname = "localhost" if client_addr == "127.0.0.1" else f"[{client_addr}]"
        for cmd, data in (
            (b"connect", b""),
            (b"H", b"client.test.example\0"),
            (b"M", f"<{sender}>\0".encode()),
            (b"R", b"<bob@example.net>\0"),
        ):
            code = (
                client.connect(hostname, client_addr)
                if cmd == b"connect"
                else client.command(cmd, data)
            )
            if code not in (None, b"c"):
                return MilterReply(code, elapsed=time.monotonic() - started)
        client.macros(b"N", {"i": queue_id})
        fields, body = split_message(message)
        for name, value in fields:
            client.header(name, value)
        code = client.command(b"N")
        if on_eoh is not None:
            on_eoh()
        if code not in (None, b"c"):
            return MilterReply(code, elapsed=time.monotonic() - started)
        for i in range(0, len(body), 65535):
            client.command(b"B", body[i : i + 65535])
        reply = client.end_of_message()
        client.send(b"Q")
        reply.elapsed = time.monotonic() - started
        return reply
    finally:
        client.close()


# ---- DNS on port 53 of a private loopback address ------------------------------------------


class Port53:
    """UDP port 53 on a random 127.53.x.y, answering from `fake`'s configuration."""

    def __init__(self, fake: FakeDns) -> None:
        self.fake = fake
        self.address = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
        self._stopping = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply, delay = owner.fake.respond(data)
                if delay and owner._stopping.wait(delay):
                    return
                if reply is not None and not owner._stopping.is_set():
                    sock.sendto(reply, self.client_address)

        class Server(socketserver.ThreadingUDPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self.server = Server((self.address, 53), Handler)
        except OSError as exc:  # not root, or something holds *:53 exclusively
            message = (
                f"cannot bind UDP {self.address}:53 ({exc.strerror}); dkimd's Nameservers "
                "option takes no port, so the fake DNS must listen on 53 (run as root)"
            )
            unavailable(message)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def dns53() -> Iterator[Port53]:
    relay = Port53(FakeDns())
    try:
        yield relay
    finally:
        relay.close()


# ---- messages and daemons -----------------------------------------------------------------


def message(subject: str, body: bytes = b"Hello,\r\n\r\nthis is a test.\r\n") -> bytes:
    return (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <" + subject.replace(" ", ".").encode() + b"@example.com>\r\n"
        b"\r\n" + body
    )


def signed(key: DkimKey, subject: str, selector: str | None = None) -> bytes:
    """`message(subject)` with a DKIM-Signature by dkimpy (d=example.com, s=selector)."""
    raw = message(subject)
    sig = dkim.sign(
        raw,
        (selector or key.selector).encode(),
        key.domain.encode(),
        key.private_key.read_bytes(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return sig + raw


def key_table_for(key: DkimKey, path: Path | None = None) -> dict[str, str]:
    return {"mail._domainkey.example.com": f"example.com:mail:{path or key.private_key}"}


SIGNING_TABLE = {"*@example.com": "mail._domainkey.example.com"}


@pytest.fixture
def start_dkimd(tmp_path: Path) -> Iterator[Callable[..., Dkimd]]:
    started: list[Dkimd] = []

    def start(key: DkimKey, *, dns: Port53 | None = None, **kwargs: object) -> Dkimd:
        options = dict(kwargs.pop("options", None) or {})  # type: ignore[call-overload]
        if dns is not None:
            options["Nameservers"] = dns.address
        d = Dkimd(
            tmp_path / f"dkimd{len(started)}",
            mode="sv",
            key_table=kwargs.pop("key_table", None) or key_table_for(key),  # type: ignore[arg-type]
            signing_table=SIGNING_TABLE,
            dns_records=key.records,
            internal_hosts=["127.0.0.1"],
            authserv_id=AUTHSERV,
            options=options,
        )
        if dns is not None:  # real DNS lookups, not the TestDNSData file
            del d.config["TestDNSData"]
            d.write_config()
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.stop()


def fake_for(dns: Port53, key: DkimKey, *selectors: str) -> FakeDns:
    for selector in selectors or (key.selector,):
        dns.fake.txt(f"{selector}._domainkey.{key.domain}", key.txt)
    return dns.fake


def assert_signed(key: DkimKey, reply: MilterReply, raw: bytes) -> None:
    assert reply.code == b"a", reply
    sigs = [v for n, v in reply.inserted if n == "DKIM-Signature"]
    assert len(sigs) == 1, reply
    out = (
        b"DKIM-Signature:"
        + sigs[0].encode().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        + b"\r\n"
        + raw
    )

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        n = (name.decode() if isinstance(name, bytes) else name).rstrip(".")
        return key.txt.encode() if n == key.dns_name else None

    assert dkim.verify(out, dnsfunc=dnsfunc), out


# ---- 1. DNS faults -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop", "servfail"])
def test_dns_fault_default_action_is_tempfail(
    fault: str, dkim_key: DkimKey, dns53: Port53, start_dkimd: Callable[..., Dkimd]
) -> None:
    fake = fake_for(dns53, dkim_key)
    if fault == "drop":
        fake.drop(dkim_key.dns_name)
    else:
        fake.rcode(dkim_key.dns_name, dns.rcode.SERVFAIL)
    d = start_dkimd(dkim_key, dns=dns53, options={"DNSTimeout": "1"})
    reply = milter_message(d.port, signed(dkim_key, f"dns {fault}"), client_addr=OUTSIDE)
    assert reply.code == b"y", reply
    assert reply.text == "451 4.7.5 DKIM key retrieval failed", reply
    assert fake.count(dkim_key.dns_name) >= 1
    assert "key retrieval failed (s=mail, d=example.com)" in d.log_text()
    # the daemon still serves: a message to sign right after
    raw = message("after the fault")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)


@pytest.mark.parametrize("fault", ["drop", "servfail"])
def test_dns_fault_accept_adds_temperror(
    fault: str, dkim_key: DkimKey, dns53: Port53, start_dkimd: Callable[..., Dkimd]
) -> None:
    fake = fake_for(dns53, dkim_key)
    if fault == "drop":
        fake.drop(dkim_key.dns_name)
    else:
        fake.rcode(dkim_key.dns_name, dns.rcode.SERVFAIL)
    d = start_dkimd(dkim_key, dns=dns53, options={"DNSTimeout": "1", "On-DNSError": "accept"})
    reply = milter_message(d.port, signed(dkim_key, f"dns {fault}"), client_addr=OUTSIDE)
    assert reply.code == b"a", reply
    [ar] = reply.headers("Authentication-Results")
    assert ar.startswith(f"{AUTHSERV};"), ar
    assert "dkim=temperror" in ar and "header.d=example.com" in ar, ar


@pytest.mark.parametrize("timeout", [1, 3])
def test_dns_timeout_is_honoured(
    timeout: int, dkim_key: DkimKey, dns53: Port53, start_dkimd: Callable[..., Dkimd]
) -> None:
    fake = fake_for(dns53, dkim_key)
    fake.drop(dkim_key.dns_name)
    d = start_dkimd(
        dkim_key, dns=dns53, options={"DNSTimeout": str(timeout), "On-DNSError": "accept"}
    )
    reply = milter_message(d.port, signed(dkim_key, "timeout"), client_addr=OUTSIDE)
    assert "dkim=temperror" in " ".join(reply.headers("Authentication-Results")), reply
    # the lookup starts at end-of-headers and gives up after DNSTimeout seconds
    assert timeout - 0.2 <= reply.elapsed < timeout + 1.5, reply.elapsed


def test_slow_key_lookup_does_not_stall_other_messages(
    dkim_key: DkimKey, dns53: Port53, start_dkimd: Callable[..., Dkimd]
) -> None:
    fake = fake_for(dns53, dkim_key, "mail", "slow")
    fake.delay(f"slow._domainkey.{dkim_key.domain}", 3.0)
    d = start_dkimd(dkim_key, dns=dns53, options={"DNSTimeout": "6"})
    slow_done: list[MilterReply] = []
    in_lookup = threading.Event()

    def slow() -> None:
        raw = signed(dkim_key, "slow one", selector="slow")
        slow_done.append(milter_message(d.port, raw, client_addr=OUTSIDE))

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 5
    while fake.count(f"slow._domainkey.{dkim_key.domain}") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    in_lookup.set()
    assert fake.count(f"slow._domainkey.{dkim_key.domain}") == 1

    def other(i: int) -> tuple[str, MilterReply, bytes]:
        if i % 2:
            raw = signed(dkim_key, f"fast verify {i}")
            return "verify", milter_message(d.port, raw, client_addr=OUTSIDE), raw
        raw = message(f"fast sign {i}")
        return "sign", milter_message(d.port, raw), raw

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        others = list(pool.map(other, range(16)))
    wall = time.monotonic() - started
    assert not slow_done, "the slow lookup finished too early for the test to mean anything"
    for kind, reply, raw in others:
        assert reply.elapsed < 1.0, (kind, reply.elapsed)
        if kind == "sign":
            assert_signed(dkim_key, reply, raw)
        else:
            assert reply.code == b"a", reply
            assert "dkim=pass" in reply.headers("Authentication-Results")[0], reply
    assert wall < 2.0, wall
    print(f"16 messages during a 3 s lookup: slowest {max(r.elapsed for _, r, _ in others):.3f}s")
    thread.join(timeout=10)
    [reply] = slow_done
    assert reply.code == b"a", reply
    assert "dkim=pass" in reply.headers("Authentication-Results")[0], reply
    assert reply.elapsed >= 2.9, reply.elapsed


@pytest.mark.parametrize("action", ["tempfail", "accept"])
def test_dns_fault_through_postfix(
    action: str,
    dkim_key: DkimKey,
    dns53: Port53,
    start_dkimd: Callable[..., Dkimd],
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    require("postfix")
    fake = fake_for(dns53, dkim_key)
    fake.rcode(dkim_key.dns_name, dns.rcode.SERVFAIL)
    d = start_dkimd(dkim_key, dns=dns53, options={"DNSTimeout": "1", "On-DNSError": action})
    pf = private_postfix(milter=d.postfix_milter, milter_protocol=6)
    raw = signed(dkim_key, f"postfix {action}")
    code, text = pf.send_smtp("alice@example.com", "bob@example.net", raw, xclient_addr=OUTSIDE)
    if action == "tempfail":
        assert code == 451, (code, text)
        assert b"4.7.5" in text and b"DKIM key retrieval failed" in text
        assert pf.queue_count() == 0 and pf.delivered() == []
        return
    assert code == 250, (code, text)
    [got] = pf.wait_for_delivery(1)
    ars = [
        " ".join(str(v).split())
        for v in email.message_from_bytes(got).get_all("Authentication-Results", [])
    ]
    assert len(ars) == 1 and "dkim=temperror" in ars[0], got


# ---- 2. reloads and keys that go away ------------------------------------------------------


def test_broken_reload_keeps_the_old_configuration(
    dkim_key: DkimKey, start_dkimd: Callable[..., Dkimd]
) -> None:
    d = start_dkimd(dkim_key)
    raw = message("before reload")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)
    # The new file would stop signing (Mode v) and is broken (a bad Canonicalization).
    d.config["Mode"] = "v"
    d.config["Canonicalization"] = "sideways/relaxed"
    d.write_config()
    d.reload()
    log = d.log_text()
    assert "reload failed; keeping the previous configuration" in log, log
    assert "Canonicalization" in log.split("reload failed")[0].rsplit("\n", 3)[-2], log
    assert d.running()
    raw = message("after broken reload")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)
    # A key table naming a missing key file is a broken reload too.
    d.config["Mode"] = "sv"
    d.config["Canonicalization"] = "relaxed/relaxed"
    d.config["KeyTable"] = f"file:{d.dir / 'no-such-KeyTable'}"
    d.write_config()
    d.reload()
    assert d.log_text().count("reload failed") == 2, d.log_text()
    raw = message("after second broken reload")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)
    # and a good reload is taken
    d.config["KeyTable"] = f"file:{d.dir / 'KeyTable'}"
    d.write_config()
    d.reload()
    assert "configuration reloaded" in d.log_text()


# OpenDKIM tempfails a message whose key will not load ("error loading key", mlfi_eoh), with
# no reply text and whatever On-SignatureError says.
@pytest.mark.parametrize("action", [None, "tempfail", "accept"])
def test_removed_key_file_gives_a_clear_error_and_recovers(
    action: str | None,
    tmp_path: Path,
    dkim_key: DkimKey,
    start_dkimd: Callable[..., Dkimd],
) -> None:
    """As OpenDKIM ("error loading key"): a bare TEMPFAIL at end-of-headers, whatever
    On-SignatureError says; the reason, with the path, is in the log only."""
    keyfile = tmp_path / "keys" / "mail.private"
    keyfile.parent.mkdir()
    shutil.copy(dkim_key.private_key, keyfile)
    options = {"On-SignatureError": action} if action else {}
    d = start_dkimd(dkim_key, key_table=key_table_for(dkim_key, keyfile), options=options)
    raw = message("key present")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)

    keyfile.unlink()
    for i in range(3):
        reply = milter_message(d.port, message(f"key gone {i}"))
        assert reply.code == b"t", reply
        assert reply.text == "", reply  # the file's path stays in the log
        assert [n for n, _ in reply.inserted if n == "DKIM-Signature"] == [], reply
    log = d.log_text()
    lines = [ln for ln in log.splitlines() if str(keyfile) in ln]
    assert len(lines) >= 3, log
    assert any("No such file" in ln for ln in lines), lines
    assert "Traceback" not in log
    assert d.running()

    shutil.copy(dkim_key.private_key, keyfile)
    raw = message("key back")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)


# ---- 3. clients that hang up half-way ------------------------------------------------------


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _dropped_session(port: int, n: int, signed_msg: bytes, plain_msg: bytes) -> None:
    """Start a message and hang up at one of several points (n picks which, and FIN or RST)."""
    verify = n % 2 == 1
    raw = signed_msg if verify else plain_msg
    addr = OUTSIDE if verify else "127.0.0.1"
    stage = (n // 2) % 6
    client = MilterClient(port, timeout=10)
    try:
        client.negotiate()
        if stage == 0:
            return
        client.connect("localhost" if not verify else f"[{addr}]", addr)
        client.command(b"H", b"client.test.example\0")
        client.command(b"M", b"<alice@example.com>\0")
        client.command(b"R", b"<bob@example.net>\0")
        if stage == 1:
            return
        fields, body = split_message(raw)
        for name, value in fields[: 2 if stage == 2 else None]:
            client.header(name, value)
        if stage == 2:
            return
        client.command(b"N")
        if stage == 3:
            return
        client.command(b"B", body[: len(body) // 2])
        if stage == 4:
            return
        # stage 5: a partial packet (length says more than we send)
        client.sock.sendall(struct.pack("!I", 1000) + b"B" + body[:10])
    finally:
        client.close(reset=(n // 12) % 2 == 1)


@pytest.mark.slow
def test_ten_thousand_dropped_sessions_leak_nothing(
    dkim_key: DkimKey, start_dkimd: Callable[..., Dkimd]
) -> None:
    d = start_dkimd(dkim_key)
    signed_msg = signed(dkim_key, "dropped")
    plain_msg = message("dropped", b"x" * 2000 + b"\r\n")

    def run(count: int, offset: int = 0) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda n: _dropped_session(d.port, n, signed_msg, plain_msg),
                    range(offset, offset + count),
                )
            )

    def settle(target: int | None) -> int:
        # The daemon notices each hang-up asynchronously: count its descriptors once the
        # kernel shows it has closed every connection (and, with a target, until they are
        # down to it, for anything else that closes late).
        assert wait_for_all_closed(d.port), "dkimd kept connections its clients dropped"
        deadline = time.monotonic() + 10
        fds = _fds(d.pid)
        while target is not None and fds > target and time.monotonic() < deadline:
            time.sleep(0.05)
            fds = _fds(d.pid)
        return fds

    run(2000)  # warm-up: caches, allocator arenas, the verifier's key cache
    base_fds = settle(None)
    base_rss = _rss_kb(d.pid)
    started = time.monotonic()
    run(10000, offset=2000)
    elapsed = time.monotonic() - started
    fds = settle(base_fds)
    rss = _rss_kb(d.pid)
    print(
        f"10000 dropped sessions in {elapsed:.1f}s: fds {base_fds} -> {fds}, "
        f"RSS {base_rss} -> {rss} kB"
    )
    assert fds == base_fds, (base_fds, fds, os.listdir(f"/proc/{d.pid}/fd"))
    assert rss <= base_rss * 1.05 + 2048, (base_rss, rss)
    # and it still serves
    raw = message("after the storm")
    assert_signed(dkim_key, milter_message(d.port, raw), raw)
    reply = milter_message(d.port, signed(dkim_key, "verified after"), client_addr=OUTSIDE)
    assert "dkim=pass" in reply.headers("Authentication-Results")[0], reply
    assert "Traceback" not in d.log_text()
    assert d.running()  # stop() at teardown checks the clean exit


# ---- 4. signals during the graceful stop ----------------------------------------------------


def test_repeated_sigterm_during_graceful_stop_still_exits_zero(
    dkim_key: DkimKey, start_dkimd: Callable[..., Dkimd]
) -> None:
    d = start_dkimd(dkim_key)
    assert d.proc is not None
    client = MilterClient(d.port)
    client.negotiate()
    client.connect("localhost", "127.0.0.1")
    client.command(b"M", b"<alice@example.com>\0")
    client.command(b"R", b"<bob@example.net>\0")
    client.command(b"T")
    fields, body = split_message(message("in flight at SIGTERM"))
    for name, value in fields:
        client.header(name, value)
    # No replies are due (NR_MAIL, NR_HDR): the kernel's receive queue says when dkimd has
    # read what we sent.
    assert wait_until_read(d.port), "dkimd did not read the message's first part"
    d.terminate()  # returns once dkimd says it is stopping and no longer listens
    assert d.running(), "stopped with a message in flight\n" + d.log_text()
    client.command(b"N")
    client.command(b"B", body)
    reply = client.end_of_message()
    client.close()
    assert [n for n, _ in reply.inserted] == ["DKIM-Signature"], reply
    # An impatient admin (or a service manager) repeats the signal until the process is gone.
    while d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.001)
    assert d.proc.returncode == 0, d.log_text()
    assert not d.pid_path.exists()
