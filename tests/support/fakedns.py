"""A tiny authoritative DNS server on loopback (UDP and TCP, same port) for resolver tests.

Answers are configured per name; anything not configured is NXDOMAIN (without SOA unless
`default_soa` is given). Every query is counted, so tests can assert cache hits and coalescing.

    with FakeDns() as dns_server:
        dns_server.txt("sel._domainkey.example.com", "v=DKIM1; p=...", ttl=300)
        dns_server.txt("multi.example", "one", "two")           # two TXT records
        dns_server.txt("split.example", [b"v=DKIM1; ", b"p=abc"])  # one record, two strings
        dns_server.nxdomain("gone.example", soa=(30, 20))        # SOA ttl 30, minimum 20
        dns_server.nodata("empty.example")
        dns_server.rcode("broken.example", dns.rcode.SERVFAIL)
        dns_server.delay("slow.example", 2.0)                   # then answers as configured
        dns_server.drop("blackhole.example")                    # never answers
        dns_server.cname("alias.example", "target.example")
        dns_server.garbage("junk.example", b"\\x00\\x01")        # raw bytes instead of a reply
        resolver = DnsResolver(["127.0.0.1"], port=dns_server.port, timeout=1.0)
        ...
        assert dns_server.count("sel._domainkey.example.com") == 1

Records longer than 255 bytes given as one str/bytes are split into 255-byte
character-strings. UDP replies larger than the client's EDNS payload (512 without EDNS) are
sent truncated (TC=1) and the client retries over TCP, as with a real server. The server runs
in background threads, so it works with any event loop and with synchronous clients.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset

__all__ = ["FakeDns"]

Record = str | bytes | Sequence[bytes]


@dataclass
class _Entry:
    txt: list[tuple[bytes, ...]] = field(default_factory=list)
    ttl: int = 300
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    soa: tuple[int, int] | None = None  # (ttl, minimum) in the authority section
    cname: str | None = None
    cname_ttl: int = 300
    delay: float = 0.0
    drop: bool = False
    raw: bytes | None = None


def _strings(record: Record) -> tuple[bytes, ...]:
    if isinstance(record, str):
        record = record.encode("utf-8")
    if isinstance(record, bytes):
        if not record:
            return (b"",)
        return tuple(record[i : i + 255] for i in range(0, len(record), 255))
    return tuple(bytes(s) for s in record)


def _key(name: str) -> str:
    return name.rstrip(".").lower()


class FakeDns:
    """Threaded UDP+TCP DNS responder on 127.0.0.1:port. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", default_soa: tuple[int, int] | None = None):
        self.host = host
        self.port = 0
        self.default_soa = default_soa
        self._entries: dict[str, _Entry] = {}
        self._counts: Counter[str] = Counter()
        self.transports: Counter[str] = Counter()  # queries received per transport
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    # ---- configuration -------------------------------------------------------------------
    def _entry(self, name: str) -> _Entry:
        with self._lock:
            return self._entries.setdefault(_key(name), _Entry())

    def txt(self, name: str, *records: Record, ttl: int = 300) -> None:
        """Serve these TXT records at `name` (replacing earlier TXT records there)."""
        entry = self._entry(name)
        entry.txt = [_strings(r) for r in records]
        entry.ttl = ttl
        entry.rcode = dns.rcode.NOERROR

    def nxdomain(self, name: str, soa: tuple[int, int] | None = None) -> None:
        entry = self._entry(name)
        entry.rcode = dns.rcode.NXDOMAIN
        entry.soa = soa

    def nodata(self, name: str, soa: tuple[int, int] | None = None) -> None:
        entry = self._entry(name)
        entry.txt = []
        entry.rcode = dns.rcode.NOERROR
        entry.soa = soa

    def rcode(self, name: str, rcode: int) -> None:
        self._entry(name).rcode = dns.rcode.Rcode(rcode)

    def delay(self, name: str, seconds: float) -> None:
        self._entry(name).delay = seconds

    def drop(self, name: str) -> None:
        self._entry(name).drop = True

    def cname(self, name: str, target: str, ttl: int = 300) -> None:
        entry = self._entry(name)
        entry.cname = target
        entry.cname_ttl = ttl

    def garbage(self, name: str, data: bytes) -> None:
        self._entry(name).raw = data

    def count(self, name: str) -> int:
        """How many queries for `name` arrived (UDP and TCP both count)."""
        with self._lock:
            return self._counts[_key(name)]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    # ---- answering -----------------------------------------------------------------------
    def _lookup(self, name: str) -> _Entry | None:
        with self._lock:
            return self._entries.get(_key(name))

    def _soa_rrset(self, zone: dns.name.Name, soa: tuple[int, int]) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(zone, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.update_ttl(soa[0])
        rrset.add(
            dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN,
                dns.rdatatype.SOA,
                dns.name.from_text("ns.test."),
                dns.name.from_text("hostmaster.test."),
                1,
                3600,
                600,
                86400,
                soa[1],
            )
        )
        return rrset

    def respond(self, wire: bytes) -> tuple[bytes | None, float]:
        """Build the reply to one query; returns (reply or None to stay silent, delay)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None, 0.0
        if not query.question:
            return None, 0.0
        question = query.question[0]
        qname = question.name
        key = _key(qname.to_text())
        with self._lock:
            self._counts[key] += 1
        entry = self._lookup(key)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if entry is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            if self.default_soa is not None:
                response.authority.append(self._soa_rrset(qname.parent(), self.default_soa))
            return response.to_wire(), 0.0
        if entry.drop:
            return None, 0.0
        if entry.raw is not None:
            return entry.raw, entry.delay
        # follow CNAMEs inside our own data, as an authoritative server for all names would
        current: _Entry | None = entry
        seen = {key}
        name = qname
        while current is not None and current.cname is not None:
            target = dns.name.from_text(current.cname)
            rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.CNAME)
            rrset.update_ttl(current.cname_ttl)
            cname = dns.rdtypes.ANY.CNAME.CNAME(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, dns.rdatatype.CNAME, target
            )
            rrset.add(cname)
            response.answer.append(rrset)
            tkey = _key(target.to_text())
            if tkey in seen:
                break  # a loop: the answer holds the whole cycle, the client must cope
            seen.add(tkey)
            name = target
            current = self._lookup(tkey)
        if current is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif current.cname is None:
            response.set_rcode(current.rcode)
            if current.txt and question.rdtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
                rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.TXT)
                rrset.update_ttl(current.ttl)
                for strings in current.txt:
                    rrset.add(
                        dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
                    )
                response.answer.append(rrset)
            elif current.soa is not None:
                response.authority.append(self._soa_rrset(name.parent(), current.soa))
        return response.to_wire(max_size=65535), entry.delay

    def _udp_reply(self, wire: bytes) -> tuple[bytes | None, float]:
        reply, delay = self.respond(wire)
        if reply is None or len(reply) <= 512:
            return reply, delay
        try:
            query = dns.message.from_wire(wire)
            limit = query.payload if query.edns >= 0 else 512
            if len(reply) <= limit:
                return reply, delay
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | dns.flags.AA
            return truncated.to_wire(), delay
        except dns.exception.DNSException:
            return reply, delay

    # ---- server life cycle ---------------------------------------------------------------
    def start(self) -> FakeDns:
        owner = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                owner.transports["udp"] += 1
                reply, delay = owner._udp_reply(data)
                if delay and owner._stopping.wait(delay):
                    return
                if reply is not None and not owner._stopping.is_set():
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(5)
                while not owner._stopping.is_set():
                    header = _recv_exact(conn, 2)
                    if header is None:
                        return
                    data = _recv_exact(conn, struct.unpack("!H", header)[0])
                    if data is None:
                        return
                    owner.transports["tcp"] += 1
                    reply, delay = owner.respond(data)
                    if delay and owner._stopping.wait(delay):
                        return
                    if reply is None:
                        continue
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        for _attempt in range(20):
            udp = UdpServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                tcp = TcpServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:  # pragma: no cover
            raise RuntimeError("no free port for FakeDns")
        self.port = port
        self._servers = [udp, tcp]
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> FakeDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf
