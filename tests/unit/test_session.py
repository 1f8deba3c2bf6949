"""MilterSession end to end in-process: real milter.Connection, real Config, real DKIM engine.

Each test plays the MTA with milter packets, lets the session answer, and checks the
replies as Postfix would see them; signatures are checked with dkimpy as the oracle.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dkim import HeaderField, Signer, SigningRequest, load_private_key
from dkimd.dns.base import TxtLookup, TxtResult, TxtStatus
from dkimd.dns.keyrequest import NeedKeys
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo, Prefetch, Request, Step
from dkimd.server import perform_request
from dkimd.session import MilterSession, Runtime, RuntimeHolder, SessionStats
from support.handler import settle
from support.milterwire import macro, pkt

INTERNAL = "127.0.0.1"
OUTSIDE = "198.51.100.7"

MESSAGE_HEADERS = [
    (b"From", b" Alice <alice@example.com>"),
    (b"To", b" bob@example.net"),
    (b"Subject", b" hello\n\tthere"),  # Postfix folds with bare LF
    (b"Date", b" Thu, 26 Nov 2026 12:00:00 +0000"),
    (b"Message-ID", b" <1@example.com>"),
]
BODY = b"Hello,\r\n\r\nthis is a test.\r\n"


def optneg(version: int = 6) -> bytes:
    return pkt(b"O", struct.pack(">III", version, 0x1FF, 0x1FFFFF if version == 6 else 0x7F))


def connect(address: str, hostname: str = "client.example") -> bytes:
    return pkt(
        b"C", hostname.encode() + b"\0" + b"4" + struct.pack(">H", 2525) + address.encode() + b"\0"
    )


class FakeKeyTable:
    """Keys and records for one test run."""

    def __init__(self, tmp: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rsa_path = tmp / "mail.private"
        self.ed_path = tmp / "ed.private"
        self.rsa_path.write_bytes(
            self.rsa.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        self.ed_path.write_bytes(
            self.ed.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        for p in (self.rsa_path, self.ed_path):
            p.chmod(0o600)
        import base64

        rsa_pub = self.rsa.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ed_pub = self.ed.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.records = {
            "mail._domainkey.example.com": "v=DKIM1; k=rsa; p="
            + base64.b64encode(rsa_pub).decode(),
            "ed._domainkey.example.com": "v=DKIM1; k=ed25519; p="
            + base64.b64encode(ed_pub).decode(),
        }

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        value = self.records.get(name.decode().rstrip("."))
        return value.encode() if value else None


@pytest.fixture
def keys(tmp_path: Path) -> FakeKeyTable:
    return FakeKeyTable(tmp_path)


def make_config(tmp: Path, keys: FakeKeyTable, extra: str = "") -> str:
    (tmp / "KeyTable").write_text(
        f"mail._domainkey.example.com example.com:mail:{keys.rsa_path}\n"
        f"ed._domainkey.example.com example.com:ed:{keys.ed_path}\n"
    )
    (tmp / "SigningTable").write_text("*@example.com mail._domainkey.example.com\n")
    return (
        "Mode sv\nCanonicalization relaxed/relaxed\nRequireSafeKeys no\nAuthservID mx.test\n"
        f"KeyTable file:{tmp / 'KeyTable'}\nSigningTable refile:{tmp / 'SigningTable'}\n"
        "InternalHosts 127.0.0.1\nSocket inet:8891@127.0.0.1\n" + extra
    )


class Driver:
    """Plays the MTA: bytes into a Connection, events into the session, replies collected."""

    def __init__(
        self,
        config_text: str,
        resolver: TxtLookup,
        protocol: milter.ProtocolFlag = (
            milter.ProtocolFlag.HDR_LEADSPC
            | milter.ProtocolFlag.NR_HDR
            | milter.ProtocolFlag.NR_BODY
        ),
    ) -> None:
        config = parse_config_text(config_text)
        self.holder = RuntimeHolder(Runtime.build(config, resolver))
        self.stats = SessionStats()
        self.conn = milter.Connection(milter.FilterOptions(protocol=protocol))
        self.session = MilterSession(ConnectionInfo(self.conn, "test"), self.holder, self.stats)

    async def feed(self, data: bytes) -> list[milter.Action]:
        self.conn.receive_data(data)
        out: list[milter.Action] = []
        while True:
            event = self.conn.next_event()
            if event is milter.NEED_DATA:
                return out
            if isinstance(event, milter.OptionNegotiation):
                self.conn.send(milter.Continue())
                continue
            result = await settle(self.session, self.session.handle(event))
            # Encode every reply as the server would: that also checks each action is valid
            # for what was negotiated.
            if result is None:
                self.conn.send(milter.Continue())
                continue
            if isinstance(result, milter.FinalAction):
                self.conn.send(result)
            else:
                result = [result] if isinstance(result, milter.Action) else list(result)
                self.conn.send_many(result)
            out += [result] if isinstance(result, milter.Action) else list(result)

    async def message(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        client: str = INTERNAL,
        mail_macros: dict[str, str] | None = None,
        new_connection: bool = True,
    ) -> list[milter.Action]:
        stream = b""
        if new_connection:
            stream += optneg() + macro(b"C", {"j": "mx.test.example"}) + connect(client)
        stream += macro(b"M", {"i": "QID1", **(mail_macros or {})})
        stream += pkt(b"M", b"<alice@example.com>\0") + pkt(b"R", b"<bob@example.net>\0")
        early = await self.feed(stream)
        assert all(isinstance(a, milter.Continue) for a in early), early
        replies: list[milter.Action] = []
        for name, value in headers:
            replies += await self.feed(pkt(b"L", name + b"\0" + value + b"\0"))
        replies += await self.feed(pkt(b"N"))
        if replies:  # e.g. Accept at end of headers
            return replies
        for i in range(0, len(body), 7):  # awkward chunking on purpose
            replies += await self.feed(pkt(b"B", body[i : i + 7]))
        return replies + await self.feed(pkt(b"E"))


def inserted(actions: Sequence[milter.Action], name: bytes) -> list[bytes]:
    return [a.value for a in actions if isinstance(a, milter.InsertHeader) and a.name == name]


def wire(
    headers: Sequence[tuple[bytes, bytes]], body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    lines = [
        n + b":" + v.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for n, v in [*extra, *headers]
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def run(coro: object) -> list[milter.Action]:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_internal_client_is_signed_and_dkimpy_verifies(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    [sig] = inserted(actions, b"DKIM-Signature")
    assert isinstance(actions[-1], milter.Accept)  # OpenDKIM ends every message with ACCEPT
    assert b"d=example.com" in sig and b"s=mail" in sig and b"c=relaxed/relaxed" in sig
    signed = wire(MESSAGE_HEADERS, BODY, [(b"DKIM-Signature", sig)])
    assert dkim.verify(signed, dnsfunc=keys.dnsfunc)
    # From is oversigned by default.
    h = re.search(rb"\bh=([^;]*)", sig.replace(b"\r\n\t", b"")).group(1)  # type: ignore[union-attr]
    assert h.lower().split(b":").count(b"from") == 2
    assert d.stats.signed == 1


def test_multiple_signatures_rsa_and_ed25519(tmp_path: Path, keys: FakeKeyTable) -> None:
    (tmp_path / "SigningTable2").write_text(
        "*@example.com mail._domainkey.example.com\n*@example.com ed._domainkey.example.com\n"
    )
    text = make_config(tmp_path, keys, "MultipleSignatures yes\n").replace(
        f"SigningTable refile:{tmp_path / 'SigningTable'}",
        f"SigningTable refile:{tmp_path / 'SigningTable2'}",
    )
    d = Driver(text, TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    sigs = inserted(actions, b"DKIM-Signature")
    # In SigningTable order, each inserted at the top (OpenDKIM): the last one ends up first.
    assert [a.index for a in actions if isinstance(a, milter.InsertHeader)] == [0, 0]
    assert b"a=rsa-sha256" in sigs[0] and b"a=ed25519-sha256" in sigs[1]
    signed = wire(MESSAGE_HEADERS, BODY, [(b"DKIM-Signature", s) for s in sigs])
    d_verifier = dkim.DKIM(signed)
    assert d_verifier.verify(idx=0, dnsfunc=keys.dnsfunc)
    assert d_verifier.verify(idx=1, dnsfunc=keys.dnsfunc)


def _signed_headers(keys: FakeKeyTable, body: bytes) -> list[tuple[bytes, bytes]]:
    key = load_private_key(keys.rsa_path.read_bytes())
    signer = Signer(SigningRequest("example.com", "mail", key))
    signer.feed_body(body)
    fields = [HeaderField(n, v.replace(b"\n", b"\r\n")) for n, v in MESSAGE_HEADERS]
    sig = signer.sign(fields)
    return [(sig.name, sig.value), *MESSAGE_HEADERS]


def test_external_signed_mail_gets_pass(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    ar = b" ".join(ar.split())
    assert ar.startswith(b"mx.test; dkim=pass (1024-bit key")
    assert b"header.d=example.com" in ar and b"header.s=mail" in ar
    assert inserted(actions, b"DKIM-Signature") == []
    assert isinstance(actions[-1], milter.Accept)


def test_tampered_mail_fails_and_reject_gives_550(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(
        make_config(tmp_path, keys, "On-BadSignature reject\n"),
        TestDnsFile.from_records(keys.records),
    )
    actions = run(d.message(_signed_headers(keys, BODY), BODY + b"PS\r\n", client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=fail" in ar
    # OpenDKIM's dkimf_libstatus: "550 5.7.0 bad DKIM signature data", sent as REPLYCODE.
    assert actions[-1] == milter.ReplyCode(550, "5.7.0", "bad DKIM signature data")


def test_forged_authentication_results_are_deleted_by_index(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    headers = [
        (b"Authentication-Results", b" MX.test; dkim=pass header.d=example.com"),
        (b"Authentication-Results", b" other.example; spf=pass"),
        (b"Authentication-Results", b" (comment) mx.test ; dkim=pass"),
        *_signed_headers(keys, BODY),
    ]
    actions = run(d.message(headers, BODY, client=OUTSIDE))
    deletes = [(a.index, a.value) for a in actions if isinstance(a, milter.ChangeHeader)]
    assert deletes == [(3, b""), (1, b"")]


def test_authenticated_outside_client_is_signed(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    actions = run(
        d.message(MESSAGE_HEADERS, BODY, client=OUTSIDE, mail_macros={"{auth_authen}": "alice"})
    )
    assert len(inserted(actions, b"DKIM-Signature")) == 1


def test_macro_list_marks_local_senders(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(
        make_config(tmp_path, keys, "MacroList daemon_name=ORIGINATING\n"),
        TestDnsFile.from_records(keys.records),
    )
    actions = run(
        d.message(
            MESSAGE_HEADERS, BODY, client=OUTSIDE, mail_macros={"{daemon_name}": "ORIGINATING"}
        )
    )
    assert len(inserted(actions, b"DKIM-Signature")) == 1
    d = Driver(
        make_config(tmp_path, keys, "MacroList daemon_name=ORIGINATING\n"),
        TestDnsFile.from_records(keys.records),
    )
    actions = run(
        d.message(MESSAGE_HEADERS, BODY, client=OUTSIDE, mail_macros={"{daemon_name}": "other"})
    )
    assert inserted(actions, b"DKIM-Signature") == []


def test_peer_list_client_is_accepted_at_connect(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(
        make_config(tmp_path, keys, "PeerList 198.51.100.0/24\n"), TestDnsFile.from_records({})
    )
    actions = run(d.feed(optneg() + connect(OUTSIDE)))
    assert [type(a) for a in actions] == [milter.Accept]


class Unreachable:
    async def lookup_txt(self, name: str) -> TxtResult:
        return TxtResult(name, TxtStatus.TIMEOUT, detail="test")


def test_dns_timeout_is_temperror_and_tempfail(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), Unreachable())
    actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=temperror" in ar
    # On-DNSError (default tempfail) with OpenDKIM's text and 4.7.5 for key retrieval.
    assert actions[-1] == milter.ReplyCode(451, "4.7.5", "DKIM key retrieval failed")


def test_missing_key_file_tempfails_at_end_of_headers(
    tmp_path: Path,
    keys: FakeKeyTable,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenDKIM: "error loading key" -> a bare TEMPFAIL at EOH, whatever On-SignatureError
    says; the reply carries no text (so no path), the log has the reason."""
    # Another test may have run the daemon's logging set-up, which stops propagation.
    monkeypatch.setattr(logging.getLogger("dkimd"), "propagate", True)
    caplog.set_level(logging.INFO, logger="dkimd")
    d = Driver(
        make_config(tmp_path, keys, "On-SignatureError reject\n"),
        TestDnsFile.from_records(keys.records),
    )
    keys.rsa_path.unlink()
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    assert actions == [milter.TempFail()]
    assert "can't load key" in caplog.text and str(keys.rsa_path) in caplog.text


def test_key_under_minimum_key_bits_fails_at_end_of_message(
    tmp_path: Path,
    keys: FakeKeyTable,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OpenDKIM takes a key under MinimumKeyBits at end of headers and libopendkim refuses
    to sign with it at end of message: On-SignatureError there (default reject, "550 5.7.0
    DKIM signing error"), as the differential matrix observed."""
    monkeypatch.setattr(logging.getLogger("dkimd"), "propagate", True)
    caplog.set_level(logging.INFO, logger="dkimd")
    d = Driver(
        make_config(tmp_path, keys, "MinimumKeyBits 2048\n"),
        TestDnsFile.from_records(keys.records),
    )
    actions = run(d.message(MESSAGE_HEADERS, BODY))
    assert actions == [milter.ReplyCode(550, "5.7.0", "DKIM signing error")]
    assert "below MinimumKeyBits 2048" in caplog.text


def test_key_file_rotated_or_removed_between_messages_is_noticed(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    """What the tables say per sender is remembered, and so is the request made per key,
    but the key file is looked at for every message: a key swapped in place (as
    `dkimd genkey` + mv does) signs the next message, a removed one stops signing."""
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    first = run(d.message(MESSAGE_HEADERS, BODY))
    [sig1] = inserted(first, b"DKIM-Signature")
    old_records = dict(keys.records)

    (tmp_path / "new").mkdir()
    rotated = FakeKeyTable(tmp_path / "new")
    staged = tmp_path / "mail.private.new"
    staged.write_bytes(rotated.rsa_path.read_bytes())
    staged.replace(keys.rsa_path)  # a new inode at the configured path
    second = run(d.message(MESSAGE_HEADERS, BODY, new_connection=False))
    [sig2] = inserted(second, b"DKIM-Signature")
    signed2 = wire(MESSAGE_HEADERS, BODY, [(b"DKIM-Signature", sig2)])
    assert dkim.verify(signed2, dnsfunc=rotated.dnsfunc)
    assert not dkim.verify(signed2, dnsfunc=keys.dnsfunc)
    signed1 = wire(MESSAGE_HEADERS, BODY, [(b"DKIM-Signature", sig1)])
    assert keys.records == old_records and dkim.verify(signed1, dnsfunc=keys.dnsfunc)

    keys.rsa_path.unlink()
    third = run(d.message(MESSAGE_HEADERS, BODY, new_connection=False))
    assert third == [milter.TempFail()]  # at end-of-headers, as OpenDKIM


def test_unsigned_external_mail_gets_no_header_unless_asked(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY, client=OUTSIDE))
    assert inserted(actions, b"Authentication-Results") == []
    d = Driver(
        make_config(tmp_path, keys, "AlwaysAddARHeader yes\nSoftwareHeader yes\n"),
        TestDnsFile.from_records(keys.records),
    )
    actions = run(d.message(MESSAGE_HEADERS, BODY, client=OUTSIDE))
    assert inserted(actions, b"Authentication-Results") == [
        b" mx.test; dkim=none; dkim-atps=neutral"
    ]
    [software] = inserted(actions, b"DKIM-Filter")
    assert software.startswith(b" dkimd v") and software.endswith(b" QID1")


def test_several_messages_and_abort_on_one_connection(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))

    async def scenario() -> list[list[milter.Action]]:
        first = await d.message(MESSAGE_HEADERS, BODY)
        await d.feed(
            macro(b"M", {"i": "QID2"})
            + pkt(b"M", b"<a@example.com>\0")
            + pkt(b"R", b"<b@example.net>\0")
        )
        await d.feed(pkt(b"L", b"From\0 x@example.com\0") + pkt(b"A"))
        second = await d.message(MESSAGE_HEADERS, BODY, new_connection=False)
        return [first, second]

    first, second = asyncio.run(scenario())
    assert inserted(first, b"DKIM-Signature") and inserted(second, b"DKIM-Signature")
    assert d.stats.signed == 2


def test_multiple_from_is_not_signed(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    headers = [(b"From", b" mallory@example.com"), *MESSAGE_HEADERS]
    actions = run(d.message(headers, BODY))
    assert inserted(actions, b"DKIM-Signature") == []


def test_filter_options_follow_the_config() -> None:
    """No replies before end-of-message, except where the config may need one."""
    from dkimd.negotiation import filter_options_for

    flags = milter.ProtocolFlag
    plain = filter_options_for(parse_config_text("Mode sv\n")).protocol
    for wanted in (flags.NR_CONN, flags.NR_EOH, flags.NR_HDR, flags.NORCPT):
        assert wanted in plain
    assert flags.HDR_LEADSPC in plain
    # A verify-only filter answers body chunks, with SKIP once it needs no more of the body
    # (as OpenDKIM); one that also signs (or only signs) answers none: a signed message
    # needs every chunk, and a reply per chunk would cost it a round trip each.
    assert flags.NR_BODY in plain and flags.SKIP not in plain
    assert flags.NR_BODY in filter_options_for(parse_config_text("Mode s\n")).protocol
    verify_only = filter_options_for(parse_config_text("Mode v\n")).protocol
    assert flags.NR_BODY not in verify_only and flags.SKIP in verify_only
    # A broken signature field gets On-BadSignature at end-of-headers: a reply is needed
    # there unless that action is accept (then the end-of-message reply carries it).
    strict = filter_options_for(parse_config_text("Mode v\nOn-BadSignature reject\n"))
    assert flags.NR_EOH not in strict.protocol
    # A PeerList answers at connect; Mode s alone may accept at end-of-headers.
    assert (
        flags.NR_CONN not in filter_options_for(parse_config_text("PeerList 10.0.0.1\n")).protocol
    )
    assert flags.NR_EOH not in filter_options_for(parse_config_text("Mode s\n")).protocol


# -- the handler contract: key records as a request (dkimd.milter.handler) --------------


class NoCache:
    """A resolver with no memory: every key must be asked for."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def lookup_txt(self, name: str) -> TxtResult:
        self.asked.append(name)
        return TxtResult(name, TxtStatus.OK, (self.records[name].encode(),))


class Broken:
    async def lookup_txt(self, name: str) -> TxtResult:
        raise RuntimeError("resolver bug")


def _steps_up_to_eom(d: Driver, headers: Sequence[tuple[bytes, bytes]]) -> list[Step]:
    """What the session returns for each event of one outside message, unsettled; every
    event before end of message is replied to with Continue (a prefetch is not run)."""
    stream = optneg() + macro(b"C", {"j": "mx"}) + connect(OUTSIDE)
    stream += macro(b"M", {"i": "QID1"}) + pkt(b"M", b"<a@example.com>\0")
    stream += pkt(b"R", b"<bob@example.net>\0")
    stream += b"".join(pkt(b"L", n + b"\0" + v + b"\0") for n, v in headers)
    stream += pkt(b"N") + pkt(b"B", BODY) + pkt(b"E")
    d.conn.receive_data(stream)
    steps: list[Step] = []
    while True:
        event = d.conn.next_event()
        assert isinstance(event, milter.Event)
        if isinstance(event, milter.OptionNegotiation):
            d.conn.send(milter.Continue())
            continue
        steps.append(d.session.handle(event))
        if isinstance(event, milter.EndOfMessage):
            return steps
        assert steps[-1] is None or isinstance(steps[-1], Prefetch)
        d.conn.send(milter.Continue())
    raise AssertionError("no end of message")


def test_uncached_keys_are_prefetched_then_asked_for_at_end_of_message(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    dns = NoCache(keys.records)
    d = Driver(make_config(tmp_path, keys), dns)
    steps = _steps_up_to_eom(d, _signed_headers(keys, BODY))
    prefetch = steps[-3]  # end of headers, then the body chunk, then end of message
    assert isinstance(prefetch, Prefetch) and isinstance(prefetch.request, NeedKeys)
    assert prefetch.request.names == ("mail._domainkey.example.com",)
    assert prefetch.request.answer_now() is None
    assert steps[-1] is prefetch.request  # the same work, now needed
    answer = asyncio.run(perform_request(prefetch.request))
    actions = d.session.provide(answer)
    assert isinstance(actions, list)
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=pass" in ar
    assert dns.asked == ["mail._domainkey.example.com"]
    with pytest.raises(RuntimeError):
        d.session.provide(answer)  # nothing is owed any more


def test_cached_keys_need_no_request(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), TestDnsFile.from_records(keys.records))
    steps = _steps_up_to_eom(d, _signed_headers(keys, BODY))
    assert not any(isinstance(s, Prefetch | Request) for s in steps)
    assert isinstance(steps[-1], list) and isinstance(steps[-1][-1], milter.Accept)


def test_raising_resolver_is_a_temporary_failure(
    tmp_path: Path, keys: FakeKeyTable, caplog: pytest.LogCaptureFixture
) -> None:
    d = Driver(make_config(tmp_path, keys), Broken())
    with caplog.at_level(logging.ERROR, logger="dkimd.dns"):
        actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=temperror" in ar
    final = actions[-1]
    assert final == milter.ReplyCode(451, "4.7.5", "DKIM key retrieval failed")
    assert "resolver bug" in caplog.text  # the traceback is in our log, not the reply


def test_key_request_that_times_out_is_temperror(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), NoCache(keys.records))
    [*_, request] = _steps_up_to_eom(d, _signed_headers(keys, BODY))
    assert isinstance(request, NeedKeys)
    actions = d.session.provide(request.failed(TimeoutError()))
    assert isinstance(actions, list)
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=temperror" in ar


def test_close_while_owed_a_reply_drops_the_message(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(make_config(tmp_path, keys), NoCache(keys.records))
    [*_, request] = _steps_up_to_eom(d, _signed_headers(keys, BODY))
    assert isinstance(request, NeedKeys)
    d.session.close()
    with pytest.raises(RuntimeError):
        d.session.provide({})


# -- replies as OpenDKIM 2.11 sends them (dkimd.replies, dkimd.recipients) ---------------


def test_dont_sign_mail_to_accepts_at_end_of_headers(tmp_path: Path, keys: FakeKeyTable) -> None:
    """OpenDKIM mlfi_eoh: a listed recipient (brackets stripped, any case) ends a message
    that would be signed with ACCEPT at end-of-headers, before any body is read."""
    config = make_config(tmp_path, keys, "DontSignMailTo csl:Bob@Example.NET\n")
    d = Driver(config, TestDnsFile.from_records(keys.records))
    assert run(d.message(MESSAGE_HEADERS, BODY)) == [milter.Accept()]
    # Mail that is only verified is not affected, nor mail to other recipients.
    d = Driver(config, TestDnsFile.from_records(keys.records))
    actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    assert b"dkim=pass" in inserted(actions, b"Authentication-Results")[0]
    other = make_config(tmp_path, keys, "DontSignMailTo csl:carol@example.net\n")
    d = Driver(other, TestDnsFile.from_records(keys.records))
    assert len(inserted(run(d.message(MESSAGE_HEADERS, BODY)), b"DKIM-Signature")) == 1


def test_recipients_are_kept_only_when_an_option_reads_them(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    for extra, kept in (("", ()), ("DontSignMailTo csl:x@example.org\n", ("bob@example.net",))):
        d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))
        run(
            d.feed(
                optneg()
                + connect(INTERNAL)
                + pkt(b"M", b"<alice@example.com>\0")
                + pkt(b"R", b"<bob@example.net>\0")
            )
        )
        assert d.session.recipients == kept


def test_verdict_at_end_of_headers_waits_for_end_of_message_under_nr_eoh(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    """With SMFIP_NR_EOH the MTA reads no reply at end-of-headers: the ACCEPT comes at
    end-of-message, with no header changes, and the body is not hashed."""
    flags = milter.ProtocolFlag
    d = Driver(
        make_config(tmp_path, keys, "DontSignMailTo csl:bob@example.net\n"),
        TestDnsFile.from_records(keys.records),
        protocol=flags.HDR_LEADSPC | flags.NR_HDR | flags.NR_BODY | flags.NR_EOH,
    )
    assert run(d.message(MESSAGE_HEADERS, BODY)) == [milter.Accept()]
    assert d.stats.signed == 0


def _verify_outcome(
    tmp_path: Path, keys: FakeKeyTable, extra: str, body: bytes, records: dict[str, str]
) -> list[milter.Action]:
    d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(records))
    return run(d.message(_signed_headers(keys, BODY), body, client=OUTSIDE))


@pytest.mark.parametrize(
    ("extra", "final"),
    [
        ("", milter.Accept()),
        ("On-BadSignature reject\n", milter.ReplyCode(550, "5.7.0", "bad DKIM signature data")),
        ("On-BadSignature tempfail\n", milter.ReplyCode(451, "4.7.0", "bad DKIM signature data")),
        ("On-BadSignature discard\n", milter.Discard()),
        # No SMFIF_QUARANTINE is negotiated (as OpenDKIM without CaptureUnknownErrors).
        ("On-BadSignature quarantine\n", milter.Accept()),
        ("On-Default reject\nOn-BadSignature accept\n", milter.Accept()),
    ],
)
def test_bad_signature_replies(
    tmp_path: Path, keys: FakeKeyTable, extra: str, final: milter.Action
) -> None:
    actions = _verify_outcome(tmp_path, keys, extra, BODY + b"PS\r\n", keys.records)
    [ar] = inserted(actions, b"Authentication-Results")
    assert b'dkim=fail reason="signature verification failed"' in ar
    assert actions[-1] == final


def test_revoked_key_rejects_without_text(tmp_path: Path, keys: FakeKeyTable) -> None:
    records = {**keys.records, "mail._domainkey.example.com": "v=DKIM1; p="}
    actions = _verify_outcome(tmp_path, keys, "On-BadSignature reject\n", BODY, records)
    assert b'dkim=fail reason="key revoked"' in inserted(actions, b"Authentication-Results")[0]
    assert actions[-1] == milter.Reject()


@pytest.mark.parametrize(
    ("action", "final"),
    [
        ("reject", milter.ReplyCode(550, "5.7.0", "DKIM key retrieval failed")),
        ("tempfail", milter.ReplyCode(451, "4.7.5", "DKIM key retrieval failed")),
        ("accept", milter.Accept()),
    ],
)
def test_key_not_found_replies(
    tmp_path: Path, keys: FakeKeyTable, action: str, final: milter.Action
) -> None:
    actions = _verify_outcome(tmp_path, keys, f"On-KeyNotFound {action}\n", BODY, {})
    [ar] = inserted(actions, b"Authentication-Results")
    assert b'dkim=fail reason="key not found in DNS"' in ar
    assert actions[-1] == final


def test_testing_key_failure_is_delivered(tmp_path: Path, keys: FakeKeyTable) -> None:
    records = {
        **keys.records,
        "mail._domainkey.example.com": keys.records["mail._domainkey.example.com"] + "; t=y",
    }
    actions = _verify_outcome(tmp_path, keys, "On-BadSignature reject\n", BODY + b"PS\r\n", records)
    assert actions[-1] == milter.Accept()


@pytest.mark.parametrize(
    ("extra", "ar", "final"),
    [
        ("", [], milter.Accept()),
        (
            "On-NoSignature reject\n",
            [],
            milter.ReplyCode(550, "5.7.0", "no DKIM signature data"),
        ),
        (
            "On-NoSignature tempfail\n",
            [],
            milter.ReplyCode(451, "4.7.0", "no DKIM signature data"),
        ),
        # OpenDKIM applies On-NoSignature only when it adds no A-R.
        (
            "On-NoSignature reject\nAlwaysAddARHeader yes\n",
            [b" mx.test; dkim=none; dkim-atps=neutral"],
            milter.Accept(),
        ),
    ],
)
def test_unsigned_message_replies(
    tmp_path: Path, keys: FakeKeyTable, extra: str, ar: list[bytes], final: milter.Action
) -> None:
    d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))
    actions = run(d.message(MESSAGE_HEADERS, BODY, client=OUTSIDE))
    assert inserted(actions, b"Authentication-Results") == ar
    assert actions[-1] == final


@pytest.mark.parametrize(
    ("extra", "macros_at_connect", "authserv_id"),
    [
        ("", {}, b"unknown-host"),
        ("", {"j": "mx.example.org"}, b"mx.example.org"),
        ("AuthservID relay.example\n", {"j": "mx.example.org"}, b"relay.example"),
        ("AuthservIDWithJobID yes\n", {"j": "mx.example.org"}, b"mx.example.org/QID1"),
        # HOSTNAME is this machine's name (gethostname), not the MTA's.
        ("AuthservID HOSTNAME\n", {"j": "mx.example.org"}, socket.gethostname().encode()),
    ],
)
def test_authserv_id_falls_back_as_opendkim_does(
    tmp_path: Path,
    keys: FakeKeyTable,
    extra: str,
    macros_at_connect: dict[str, str],
    authserv_id: bytes,
) -> None:
    text = make_config(tmp_path, keys, extra + "AlwaysAddARHeader yes\n").replace(
        "AuthservID mx.test\n", ""
    )
    d = Driver(text, TestDnsFile.from_records(keys.records))
    run(d.feed(optneg() + macro(b"C", macros_at_connect) + connect(OUTSIDE)))
    actions = run(d.message(MESSAGE_HEADERS, BODY, client=OUTSIDE, new_connection=False))
    assert inserted(actions, b"Authentication-Results") == [
        b" " + authserv_id + b"; dkim=none; dkim-atps=neutral"
    ]


def test_filter_options_ask_for_recipients_and_end_of_headers_only_when_needed() -> None:
    from dkimd.negotiation import filter_options_for

    flags = milter.ProtocolFlag
    plain = filter_options_for(parse_config_text("Mode sv\n"))
    assert milter.ActionFlag.QUARANTINE not in plain.actions
    dont_sign = filter_options_for(parse_config_text("DontSignMailTo csl:a@example.org\n"))
    assert flags.NORCPT not in dont_sign.protocol
    assert flags.NR_EOH not in dont_sign.protocol
    assert flags.NR_RCPT in dont_sign.protocol  # the reply to RCPT is always CONTINUE


@pytest.mark.parametrize(
    ("extra", "deleted", "chghdrs"),
    [
        ("", [(3, b""), (1, b"")], True),
        ("KeepAuthResults yes\n", [], False),
        ("RemoveARAll yes\n", [(4, b""), (3, b""), (1, b"")], True),
        ("RemoveARFrom csl:.other.example\n", [(2, b"")], True),
    ],
)
def test_incoming_authentication_results_options(
    tmp_path: Path, keys: FakeKeyTable, extra: str, deleted: list[tuple[int, bytes]], chghdrs: bool
) -> None:
    from dkimd.negotiation import filter_options_for

    config = make_config(tmp_path, keys, extra)
    assert (milter.ActionFlag.CHGHDRS in filter_options_for(parse_config_text(config)).actions) is (
        chghdrs
    )
    d = Driver(config, TestDnsFile.from_records(keys.records))
    headers = [
        (b"Authentication-Results", b" mx.test; dkim=pass header.d=example.com"),
        (b"Authentication-Results", b" relay.other.example; dkim=pass"),
        (b"Authentication-Results", b" mx.test; dkim=none"),
        (b"Authentication-Results", b" mx.test; spf=pass"),
        *_signed_headers(keys, BODY),
    ]
    actions = run(d.message(headers, BODY, client=OUTSIDE))
    assert [(a.index, a.value) for a in actions if isinstance(a, milter.ChangeHeader)] == deleted


def test_no_header_b(tmp_path: Path, keys: FakeKeyTable) -> None:
    d = Driver(
        make_config(tmp_path, keys, "NoHeaderB yes\n"), TestDnsFile.from_records(keys.records)
    )
    actions = run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=pass" in ar and b"header.s=mail" in ar and b"header.b=" not in ar


def test_reload_to_mode_s_on_a_connection_without_end_of_headers_replies(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    """A connection that agreed SMFIP_NR_EOH under Mode sv, then a reload to Mode s: the
    early ACCEPT for mail that is not signed waits for end-of-message."""
    flags = milter.ProtocolFlag
    d = Driver(
        make_config(tmp_path, keys),
        TestDnsFile.from_records(keys.records),
        protocol=flags.HDR_LEADSPC | flags.NR_HDR | flags.NR_BODY | flags.NR_EOH,
    )
    config = parse_config_text(make_config(tmp_path, keys).replace("Mode sv", "Mode s"))
    d.holder.current = Runtime.build(config, TestDnsFile.from_records(keys.records))
    assert run(d.message(_signed_headers(keys, BODY), BODY, client=OUTSIDE)) == [milter.Accept()]


@pytest.mark.parametrize(
    ("record_tail", "ar"),
    [
        ("; h=sha1", b'dkim=fail reason="signature-key hash mismatch" header.d=example.com'),
        ("; s=ftp", b'dkim=fail reason="not an e-mail key" header.d=example.com'),
        ("; p=again", b"dkim=temperror header.d=example.com"),  # a record that does not parse
    ],
)
def test_key_record_problems_get_no_on_action(
    tmp_path: Path, keys: FakeKeyTable, record_tail: str, ar: bytes
) -> None:
    """As OpenDKIM 2.11 (observed): the A-R says why, and On-BadSignature reject does not apply."""
    name = "mail._domainkey.example.com"
    records = {**keys.records, name: keys.records[name] + record_tail}
    actions = _verify_outcome(tmp_path, keys, "On-BadSignature reject\n", BODY, records)
    assert ar in inserted(actions, b"Authentication-Results")[0]
    assert actions[-1] == milter.Accept()


# -- ATPS (RFC 6541) verification: dkimd.dkim.atps ------------------------------------------

ATPS_NAME = "UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ====._atps.example.net"


def _third_party_headers(keys: FakeKeyTable, *, atps: bool) -> list[tuple[bytes, bytes]]:
    """Mail from example.net signed by example.com, asking for ATPS or not."""
    headers = [(b"From", b" Carol <carol@example.net>"), *MESSAGE_HEADERS[1:]]
    key = load_private_key(keys.rsa_path.read_bytes())
    tags = (("atpsh", "sha256"), ("atps", "example.net")) if atps else ()
    signer = Signer(SigningRequest("example.com", "mail", key, extension_tags=tags))
    signer.feed_body(BODY)
    sig = signer.sign([HeaderField(n, v.replace(b"\n", b"\r\n")) for n, v in headers])
    return [(sig.name, sig.value), *headers]


@pytest.mark.parametrize(
    ("record", "test_dns_data", "expected"),
    [
        ("v=ATPS1", False, b"dkim-atps=pass"),
        ("foo=bar", False, b"dkim-atps=fail"),
        (None, False, b"dkim-atps=fail"),  # NXDOMAIN
        (None, True, b"dkim-atps=neutral"),  # not in TestDNSData: a lookup failure to OpenDKIM
    ],
)
def test_atps_result_in_authentication_results(
    tmp_path: Path, keys: FakeKeyTable, record: str | None, test_dns_data: bool, expected: bytes
) -> None:
    records = dict(keys.records)
    if record is not None:
        records[ATPS_NAME] = record
    extra = ""
    if test_dns_data:
        (tmp_path / "dnsdata").write_text("".join(f"{k} {v}\n" for k, v in records.items()))
        extra = f"TestDNSData file:{tmp_path / 'dnsdata'}\n"
    d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(records))
    actions = run(d.message(_third_party_headers(keys, atps=True), BODY, client=OUTSIDE))
    [ar] = inserted(actions, b"Authentication-Results")
    assert b"dkim=pass" in ar
    assert ar.endswith(b";\n\t" + expected)  # the last item, on its own folded line
    assert isinstance(actions[-1], milter.Accept)


def test_atps_record_is_fetched_with_the_keys_only_when_asked_for(
    tmp_path: Path, keys: FakeKeyTable
) -> None:
    dns = NoCache({**keys.records, ATPS_NAME: "v=ATPS1"})
    d = Driver(make_config(tmp_path, keys), dns)
    steps = _steps_up_to_eom(d, _third_party_headers(keys, atps=True))
    prefetch = steps[-3]
    assert isinstance(prefetch, Prefetch) and isinstance(prefetch.request, NeedKeys)
    assert prefetch.request.names == ("mail._domainkey.example.com", ATPS_NAME)
    actions = d.session.provide(asyncio.run(perform_request(prefetch.request)))
    assert isinstance(actions, list)
    [ar] = inserted(actions, b"Authentication-Results")
    assert ar.endswith(b"dkim-atps=pass")
    # Without atps= nothing more is asked for, and the result is neutral.
    dns = NoCache(keys.records)
    d = Driver(make_config(tmp_path, keys), dns)
    steps = _steps_up_to_eom(d, _third_party_headers(keys, atps=False))
    prefetch = steps[-3]
    assert isinstance(prefetch, Prefetch) and isinstance(prefetch.request, NeedKeys)
    assert prefetch.request.names == ("mail._domainkey.example.com",)
    actions = d.session.provide(asyncio.run(perform_request(prefetch.request)))
    assert isinstance(actions, list)
    [ar] = inserted(actions, b"Authentication-Results")
    assert ar.endswith(b"dkim-atps=neutral")
