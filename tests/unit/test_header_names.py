"""One header-name rule through the milter: a field name with WSP before the colon ("From ",
"Subject ") is the same field for signing, for h= selection and for the RFC 6376 8.15
multiple-From check (RFC 6376 3.4.2 reads names that way).

Self-contained on purpose: a small MTA stand-in feeding milter packets to `MilterSession`.
"""

from __future__ import annotations

import asyncio
import base64
import re
import struct
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo
from dkimd.session import MilterSession, Runtime, RuntimeHolder, SessionStats
from support.handler import settle

INTERNAL = "127.0.0.1"
OUTSIDE = "198.51.100.7"
BODY = b"Hello,\r\nthis is a test.\r\n"
Headers = Sequence[tuple[bytes, bytes]]


def _pkt(cmd: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload) + 1) + cmd + payload


class Mta:
    """Sends one message per connection to a fresh session and collects its actions."""

    def __init__(self, tmp: Path) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        path = tmp / "ed.private"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(public).decode()
        self.dns = TestDnsFile.from_records({"ed._domainkey.example.com": record})
        (tmp / "KeyTable").write_text(f"ed._domainkey.example.com example.com:ed:{path}\n")
        (tmp / "SigningTable").write_text("*@example.com ed._domainkey.example.com\n")
        self.config = parse_config_text(
            "Mode sv\nCanonicalization relaxed/relaxed\nRequireSafeKeys no\nAuthservID mx.test\n"
            f"KeyTable file:{tmp / 'KeyTable'}\nSigningTable refile:{tmp / 'SigningTable'}\n"
            "InternalHosts 127.0.0.1\nAlwaysAddARHeader yes\n"
        )

    def send(self, headers: Headers, client: str) -> list[milter.Action]:
        return asyncio.run(self._send(headers, client))

    async def _send(self, headers: Headers, client: str) -> list[milter.Action]:
        conn = milter.Connection(
            milter.FilterOptions(
                protocol=milter.ProtocolFlag.HDR_LEADSPC
                | milter.ProtocolFlag.NR_HDR
                | milter.ProtocolFlag.NR_BODY
            )
        )
        holder = RuntimeHolder(Runtime.build(self.config, self.dns))
        session = MilterSession(ConnectionInfo(conn, "test"), holder, SessionStats())
        stream = _pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        stream += _pkt(b"C", b"client\0" + b"4" + struct.pack(">H", 2525) + client.encode() + b"\0")
        stream += (
            _pkt(b"D", b"Mi\0QID1\0")
            + _pkt(b"M", b"<a@example.com>\0")
            + _pkt(b"R", b"<b@example.net>\0")
        )
        stream += b"".join(_pkt(b"L", name + b"\0" + value + b"\0") for name, value in headers)
        stream += _pkt(b"N") + _pkt(b"B", BODY) + _pkt(b"E")
        conn.receive_data(stream)
        actions: list[milter.Action] = []
        while (event := conn.next_event()) is not milter.NEED_DATA:
            if isinstance(event, milter.OptionNegotiation | milter.Macros):
                conn.send(milter.Continue())
                continue
            result = await settle(session, session.handle(event))
            if isinstance(result, milter.FinalAction):
                conn.send(result)  # encoded as the server would: checked against the protocol
                actions.append(result)
                continue
            replies = [result] if isinstance(result, milter.Action) else list(result or [])
            conn.send_many(replies or [milter.Continue()])
            actions += replies
        return actions


def _inserted(actions: Sequence[milter.Action], name: bytes) -> list[bytes]:
    return [a.value for a in actions if isinstance(a, milter.InsertHeader) and a.name == name]


def _signed(mta: Mta, headers: Headers) -> list[tuple[bytes, bytes]]:
    """`headers` with the DKIM-Signature our own milter adds for an internal client."""
    [sig] = _inserted(mta.send(headers, INTERNAL), b"DKIM-Signature")
    return [(b"DKIM-Signature", sig.replace(b"\r\n", b"\n")), *headers]


MESSAGE = [
    (b"From", b" Alice <alice@example.com>"),
    (b"Subject ", b" hello"),
    (b"To", b" bob@example.net"),
]


def test_subject_with_wsp_is_signed_and_verified(tmp_path: Path) -> None:
    mta = Mta(tmp_path)
    signed = _signed(mta, MESSAGE)
    h = re.search(rb"\bh=([^;]*)", signed[0][1].replace(b"\n\t", b""))
    assert h is not None and h.group(1) == b"From:Subject:To:From"
    [ar] = _inserted(mta.send(signed, OUTSIDE), b"Authentication-Results")
    assert b"dkim=pass" in ar
    forged = [(n, b" goodbye" if n == b"Subject " else v) for n, v in signed]
    [ar] = _inserted(mta.send(forged, OUTSIDE), b"Authentication-Results")
    assert b'dkim=fail reason="signature verification failed"' in ar


def test_second_from_with_wsp_is_not_signed(tmp_path: Path) -> None:
    mta = Mta(tmp_path)
    two_froms = [(b"From ", b" mallory@example.com"), *MESSAGE]
    assert _inserted(mta.send(two_froms, INTERNAL), b"DKIM-Signature") == []


def test_second_from_with_wsp_fails_verification(tmp_path: Path) -> None:
    mta = Mta(tmp_path)
    signed = _signed(mta, MESSAGE)
    prepended = [(b"From ", b" mallory@evil.example"), *signed]
    [ar] = _inserted(mta.send(prepended, OUTSIDE), b"Authentication-Results")
    assert b'dkim=fail reason="message has more than one From field"' in b" ".join(ar.split())
