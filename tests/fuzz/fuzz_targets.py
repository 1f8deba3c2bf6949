"""Fuzz targets shared by the hypothesis tests (tests/fuzz/test_fuzz_*.py), the regression
corpus replay (test_fuzz_regressions.py) and the optional atheris driver (atheris_main.py).

Every target takes one ``bytes`` input and either returns normally or raises
``AssertionError`` (an invariant broke) or an unexpected exception (a crash). The
documented exception types of each parser are caught here, so anything that escapes is a
bug. Targets are pure functions of their input: the same bytes always do the same thing,
which is what lets a crash become a file in tests/fuzz/regressions/<target>/.

Targets:

* ``milter_stream``     -- raw bytes into ``milter.Connection`` (chunked by the first byte).
* ``milter_mutation``   -- a valid Postfix v2/v6 session, mutated by the input bytes.
* ``tag_list``, ``signature``, ``key_record`` -- the DKIM grammars.
* ``header_block``, ``body_canon`` -- header splitting/canonicalization, body hashing.
* ``auth_results``      -- ``authentication_results_value`` with hostile fields.
* ``authserv_id``       -- ``dkimd.authres.authserv_id_of``.
* ``config_text``, ``dataset`` -- opendkim.conf and data set parsers.
* ``session``           -- a whole ``MilterSession`` behind a real ``milter.Connection``
                           (ARC on: ArcMode sv or v, hostile ARC fields among the edits).
* ``arc_fields``        -- the three ARC header field parsers (RFC 8617 4.1).
* ``arc_trusted``       -- hostile fields read for OpenARC's options: SealHeaderChecks, the
                           arc= override and the results copied into an AAR.
* ``arc_chain``         -- a header block of hostile ARC fields through ``ArcVerifier``, and
                           the next set sealed over it by ``ArcSealer``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import random
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from dkimd import milter
from dkimd.config import ConfigError, analyze_config_text, open_dataset, parse_config_text
from dkimd.config.reader import read_config_text
from dkimd.dkim import (
    BodyCanonicalizer,
    DkimError,
    DkimResult,
    HeaderField,
    KeyRecordError,
    MessageError,
    SignatureError,
    SignatureResult,
    TagListError,
    VerifyError,
    authentication_results_value,
    canonicalize_body,
    canonicalize_header,
    load_private_key,
    parse_header_block,
    parse_key_record,
    parse_signature,
    parse_tag_list,
)
from dkimd.milter.codec import FrameReader


def examples(default: int) -> int:
    """max_examples for one hypothesis test: `default` in the normal run, or the
    DKIMD_FUZZ_EXAMPLES override for a long local run (scripts/fuzz-long.sh)."""
    override = os.environ.get("DKIMD_FUZZ_EXAMPLES")
    return int(override) if override else default


# --------------------------------------------------------------------------------------------
# Wire helpers (MTA side, as Postfix milter8.c writes packets).

POSTFIX_ACTIONS = 0x1FF
V2_PROTOCOL = 0x7F
V6_PROTOCOL = 0x1FFFFF

VALID_REPLIES = frozenset(b"+-24abcdefhilmOpqrsty")


def pkt(command: str | int, payload: bytes = b"") -> bytes:
    code = ord(command) if isinstance(command, str) else command
    return struct.pack(">IB", len(payload) + 1, code) + payload


def z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


def optneg(version: int = 6, protocol: int = V6_PROTOCOL) -> bytes:
    return pkt("O", struct.pack(">III", version, POSTFIX_ACTIONS, protocol))


def session_packets(
    headers: Sequence[tuple[bytes, bytes]] = (
        (b"From", b" Alice <alice@example.com>"),
        (b"To", b" bob@example.net"),
        (b"Subject", b" hello"),
    ),
    body: bytes = b"Hello,\r\nworld.\r\n",
    *,
    version: int = 6,
    client: str = "127.0.0.1",
) -> list[bytes]:
    """One message as Postfix sends it (v6 with leading space in header values)."""
    out = [
        optneg(version, V6_PROTOCOL if version >= 6 else V2_PROTOCOL),
        pkt("D", b"C" + z("j", "mx.test.example", "{daemon_name}", "smtpd")),
        pkt("C", z("client.example") + b"4" + struct.pack(">H", 40000) + z(client)),
        pkt("D", b"H"),
        pkt("H", z("client.example")),
        pkt("D", b"M" + z("i", "4ABCDEF", "{mail_addr}", "alice@example.com")),
        pkt("M", z("<alice@example.com>", "SIZE=100")),
        pkt("R", z("<bob@example.net>")),
    ]
    if version >= 4:
        out.append(pkt("T"))
    for name, value in headers:
        out.append(pkt("L", z(name, value if version >= 6 else value.lstrip(b" "))))
    out.append(pkt("N"))
    if body:
        out.append(pkt("B", body))
    out.append(pkt("E"))
    out.append(pkt("Q"))
    return out


def check_reply_stream(out: bytes, *, leading_space: bool = True) -> list[tuple[int, bytes]]:
    """Replies the filter wrote must be well-formed milter packets (Postfix would drop the
    connection otherwise): framing, known reply codes, NUL-terminated strings, one-line SMTP
    text, and header values whose line breaks are only folding."""
    reader = FrameReader(1 << 30)
    reader.feed(out)
    packets = list(reader)
    assert reader.pending == 0, "truncated reply packet"
    for code, payload in packets:
        assert code in VALID_REPLIES, f"unknown reply code {code!r}"
        if code in (ord("h"), ord("i"), ord("m")):
            body = payload[4:] if code != ord("h") else payload
            name, nul, rest = body.partition(b"\0")
            assert nul and name and rest.endswith(b"\0"), payload
            value = rest[:-1]
            assert b"\0" not in value
            assert not any(c in name for c in b"\0:\r\n \t"), name
            _assert_folded(value)
        elif code == ord("y"):
            assert payload.endswith(b"\0") and payload.count(b"\0") == 1, payload
            text = payload[:-1]
            assert b"\r" not in text and b"\n" not in text
            assert text[:1] in (b"4", b"5") and text[:3].isdigit()
        elif code == ord("q"):
            assert payload.endswith(b"\0") and payload.count(b"\0") == 1
    return packets


def _assert_folded(value: bytes) -> None:
    """Every line break in a header value is CRLF (or LF) followed by WSP: folding only."""
    normalized = value.replace(b"\r\n", b"\n")
    assert b"\r" not in normalized, f"bare CR in header value {value!r}"
    for i, c in enumerate(normalized):
        if c == 0x0A:
            assert normalized[i + 1 : i + 2] in (b" ", b"\t"), f"unfolded LF in {value!r}"


# --------------------------------------------------------------------------------------------
# milter: Connection fed raw bytes


def _pump(conn: milter.Connection, chunks: Sequence[bytes]) -> bytes:
    """Feed chunks; answer every event with Continue (Accept at end of message)."""
    out = bytearray()
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except milter.RemoteProtocolError:
                # The connection stays broken: every later call raises again.
                try:
                    conn.next_event()
                except milter.RemoteProtocolError:
                    pass
                else:  # pragma: no cover - a bug
                    raise AssertionError("broken connection produced another event") from None
                return bytes(out)
            if event is milter.NEED_DATA:
                break
            if isinstance(event, milter.ConnectionClosed):
                assert chunk == b"" or conn.state is milter.State.CLOSED
                return bytes(out)
            negotiated = conn.negotiated
            if (
                isinstance(event, milter.EndOfMessage)
                and conn.reply_expected
                and negotiated is not None
                and negotiated.actions & milter.ActionFlag.ADDHDRS
            ):
                mods = [milter.InsertHeader(0, b"X-Fuzz", b" ok"), milter.Accept()]
                out += conn.send_many(mods)
            else:
                out += conn.send(milter.Continue())
            if isinstance(event, milter.Quit):
                return bytes(out)
    return bytes(out)


def _chunks(data: bytes, size: int) -> list[bytes]:
    size = max(1, size)
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def milter_stream(data: bytes) -> None:
    """Random bytes (maybe after a valid negotiation) into a Connection."""
    if not data:
        return
    mode, rest = data[0], data[1:]
    prefix = optneg() if mode & 1 else b""
    conn = milter.Connection(milter.FilterOptions(), max_packet=(1 << 20) if mode & 2 else 64)
    out = _pump(conn, _chunks(prefix + rest, (mode >> 2) + 1))
    check_reply_stream(out)


def mutate(seed: bytes, ops: bytes) -> bytes:
    """Structured mutation of a valid session: ops bytes drive a deterministic RNG that
    drops, duplicates, swaps, truncates and corrupts packets (lengths and payloads)."""
    rng = random.Random(ops)
    reader = FrameReader(1 << 30)
    reader.feed(seed)
    packets = [pkt(c, p) for c, p in reader]
    for _ in range(1 + (ops[0] % 6 if ops else 0)):
        if not packets:
            break
        i = rng.randrange(len(packets))
        op = rng.randrange(9)
        p = bytearray(packets[i])
        if len(p) < 5:
            op = 0
        if op == 0:
            del packets[i]
        elif op == 1:
            packets.insert(i, bytes(p))
        elif op == 2:
            j = rng.randrange(len(packets))
            packets[i], packets[j] = packets[j], packets[i]
        elif op == 3:
            packets[i] = bytes(p[: rng.randrange(len(p) + 1)])
        elif op == 4:  # corrupt the length
            packets[i] = struct.pack(">I", rng.choice([0, 1, 2, len(p), 2**31, 2**32 - 1]))
            packets[i] += bytes(p[4:])
        elif op == 5:  # flip a byte
            k = rng.randrange(len(p))
            p[k] ^= 1 << rng.randrange(8)
            packets[i] = bytes(p)
        elif op == 6:  # change the command byte
            p[4] = rng.choice(b"OCHMRTLNBEAQKDUXZ\0\xff")
            packets[i] = bytes(p)
        elif op == 7:  # hostile payload: NULs, CR, LF, 8-bit
            junk = bytes(rng.choice(b"\0\r\n\x80\xff: \tA=;") for _ in range(rng.randrange(40)))
            packets[i] = pkt(p[4], bytes(p[5:]) + junk)
        else:  # drop a NUL terminator
            packets[i] = pkt(p[4], bytes(p[5:]).replace(b"\0", b"", 1))
    return b"".join(packets)


def milter_mutation(data: bytes) -> None:
    version = 2 if data[:1] and data[0] & 0x80 else 6
    seed = b"".join(session_packets(version=version))
    stream = mutate(seed, data)
    conn = milter.Connection(milter.FilterOptions())
    out = _pump(conn, _chunks(stream, (data[1] if len(data) > 1 else 0) + 1))
    check_reply_stream(out)


# --------------------------------------------------------------------------------------------
# DKIM grammars


def tag_list(data: bytes) -> None:
    try:
        tags = parse_tag_list(data)
    except TagListError:
        return
    for name, value in tags.items():
        assert name and name[0].isalpha()
        assert value == value.strip(" \t\r\n")
        assert "\0" not in value
    # Parsing is a function of the text: str and bytes (Latin-1) agree.
    assert parse_tag_list(data.decode("latin-1")) == tags


def signature(data: bytes) -> None:
    try:
        sig = parse_signature(data)
    except SignatureError:
        return
    assert sig.algorithm in ("rsa-sha256", "rsa-sha1", "ed25519-sha256")
    assert "from" in (h.lower() for h in sig.signed_headers)
    assert sig.header_canon in ("simple", "relaxed") and sig.body_canon in ("simple", "relaxed")
    assert sig.body_hash and sig.signature
    if sig.identity is not None:
        idomain = sig.identity.rpartition("@")[2].lower().rstrip(".")
        sdid = sig.domain.lower().rstrip(".")
        assert idomain == sdid or idomain.endswith("." + sdid)
    if sig.timestamp is not None and sig.expiration is not None:
        assert sig.expiration >= sig.timestamp
    assert sig.key_name == sig.key_name.lower()
    assert "\0" not in sig.key_name and ";" not in sig.key_name


def key_record(data: bytes) -> None:
    try:
        record = parse_key_record(data)
    except KeyRecordError:
        return
    assert record.key_type in ("rsa", "ed25519")
    assert record.revoked == (record.public_key is None)
    if not record.revoked:
        assert record.key_bits > 0


def header_block(data: bytes) -> None:
    try:
        fields = parse_header_block(data)
    except MessageError:
        return
    for f in fields:
        simple = canonicalize_header(f, "simple")
        relaxed = canonicalize_header(f, "relaxed")
        assert simple == f.raw + b"\r\n"
        assert relaxed.endswith(b"\r\n") and b"\r\n" not in relaxed[:-2]
        name, colon, value = relaxed[:-2].partition(b":")
        assert colon and name == name.lower()
        assert value == value.strip(b" ") and b"  " not in value and b"\t" not in value
        assert canonicalize_header(HeaderField(name, value), "relaxed") == relaxed


def body_canon(data: bytes) -> None:
    """Chunked hashing equals one-shot canonicalization, for both algorithms."""
    if not data:
        return
    cut, body = data[0], data[1:]
    for canon in ("simple", "relaxed"):
        whole = canonicalize_body(body, canon)
        assert whole.endswith(b"\r\n") or (canon == "relaxed" and whole == b"")
        c = BodyCanonicalizer(canon, "sha256")
        for piece in _chunks(body, cut % 7 + 1):
            c.update(piece)
        c.finish()
        assert c.length == len(whole)
        assert c.digest() == hashlib.sha256(whole).digest()
        limited = BodyCanonicalizer(canon, "sha256", limit=cut)
        limited.update(body)
        limited.finish()
        assert limited.hashed == min(cut, len(whole))
        assert limited.beyond_limit == len(whole) - limited.hashed


_RESULTS = list(DkimResult)


def auth_results(data: bytes) -> None:
    """Hostile authserv-id, reasons, domains, selectors, b=: the A-R value never carries a
    CR, LF or NUL except its own CRLF TAB folding, and stays ASCII."""
    parts = data.split(b"\xfe")
    text = [p.decode("utf-8", "surrogateescape") for p in parts]
    authserv = text[0] if text else ""
    results: list[SignatureResult] = []
    for i in range(1, len(text), 5):
        group = (text[i : i + 5] + [""] * 5)[:5]
        kind = _RESULTS[len(group[0]) % len(_RESULTS)]
        results.append(
            SignatureResult(
                kind,
                VerifyError.SIGNATURE_SYNTAX,  # its reason is the detail, hostile text here
                detail=group[0],
                domain=group[1] or None,
                identity=group[2] or None,
                selector=group[3] or None,
                algorithm="rsa-sha256",
                b=group[4] or None,
                key_bits=len(group[4]) * 8 or None,
            )
        )
    value = authentication_results_value(authserv, results)
    check_ar_value(value)
    if results:
        assert value.count(b"dkim=") >= len(results)


def check_ar_value(value: bytes) -> None:
    assert isinstance(value, bytes)
    value.decode("ascii")
    unfolded = value.replace(b";\r\n\t", b"; ")
    assert not any(c in unfolded for c in b"\r\n\0"), value
    assert all(32 <= c < 127 for c in unfolded), value


def authserv_id(data: bytes) -> None:
    from dkimd.authres import authserv_id_of

    ident = authserv_id_of(data)
    assert isinstance(ident, str)
    assert ident == ident.lower()
    # Any CR or LF is folding whitespace, never part of the id.
    assert "\r" not in ident and "\n" not in ident, ident
    # A token id ends at ";", blanks or a comment; a quoted-string id may hold them.
    if b'"' not in data:
        assert not any(c in ident for c in "; \t("), ident


# --------------------------------------------------------------------------------------------
# config


def config_text(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    raw = read_config_text(text, base_dir="/nonexistent")
    for setting in raw:
        assert setting.line >= 1
    report = analyze_config_text(text, base_dir="/nonexistent")
    assert (report.config is None) == bool(report.errors)
    for problem in report.problems:
        str(problem)  # every problem renders
    try:
        parse_config_text(text, base_dir="/nonexistent")
    except ConfigError as exc:
        assert exc.errors
        assert str(exc)


_DATASET_DIR = tempfile.mkdtemp(prefix="dkimd-fuzz-ds-")


def dataset(data: bytes) -> None:
    """csl: lists from the input, and file:/refile: data sets whose content is the input."""
    text = data.decode("utf-8", "surrogateescape")
    kind = data[0] % 3 if data else 0
    if kind == 0:
        spec = "csl:" + text
    else:
        path = Path(_DATASET_DIR) / f"ds-{os.getpid()}"
        path.write_bytes(data[1:])
        spec = ("file:" if kind == 1 else "refile:") + str(path)
    for ci in (True, False):
        ds, problems = open_dataset(spec, case_insensitive=ci, origin=("fuzz.conf", 3))
        for p in problems:
            str(p)
        if ds is None:
            assert problems
            continue
        for entry in list(ds)[:20]:
            ds.lookup(entry.key)
            ds.lookup_all(entry.key)
        ds.lookup(text[:40])


# --------------------------------------------------------------------------------------------
# the whole MilterSession


#: The three ARC fields (RFC 8617 4.1): the session target inserts them, arc_fields parses them.
_ARC_NAMES = (b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results")


class _SessionWorld:
    """Keys, configs and runtimes for the session target, built once per process."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from dkimd.config import Config
        from dkimd.dns.testdata import TestDnsFile
        from dkimd.negotiation import filter_options_for
        from dkimd.session import Runtime, RuntimeHolder, SessionStats

        self.filter_options = filter_options_for(Config())
        self.dir = Path(tempfile.mkdtemp(prefix="dkimd-fuzz-session-"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        keyfile = self.dir / "mail.private"
        keyfile.write_bytes(pem)
        keyfile.chmod(0o600)
        self.private_key = load_private_key(pem)
        spki = base64.b64encode(self.private_key.dns_public_key()).decode()
        records = {
            "mail._domainkey.example.com": [f"v=DKIM1; k=rsa; p={spki}"],
            "revoked._domainkey.example.com": ["v=DKIM1; p="],
            "junk._domainkey.example.com": ["v=DKIM1; k=foo; p=@@@", "p=AAAA"],
            "two._domainkey.example.com": ["garbage", f"v=DKIM1; p={spki}"],
        }
        resolver = TestDnsFile.from_records(records)
        self.holders = []
        actions = ["accept", "reject", "tempfail", "discard", "quarantine"]
        for i, action in enumerate(actions):
            conf = "\n".join(
                [
                    "Mode sv",
                    "Domain example.com",
                    "Selector mail",
                    f"KeyFile {keyfile}",
                    "RequireSafeKeys no",
                    "InternalHosts csl:127.0.0.1,10.0.0.0/8",
                    "Syslog no",
                    "LogWhy yes",
                    "SyslogSuccess yes",
                    f"On-BadSignature {action}",
                    f"On-NoSignature {actions[(i + 1) % 5]}",
                    f"On-KeyNotFound {actions[(i + 2) % 5]}",
                    f"On-DNSError {actions[(i + 3) % 5]}",
                    f"On-SignatureError {action}",
                    "AlwaysAddARHeader yes" if i % 2 else "RemoveOldSignatures yes",
                    "AuthservID mx.test.example" if i % 2 else "MultipleSignatures yes",
                    # ARC (dkimd.arc_filter): verified and sealed, or verified only.
                    "ArcMode sv" if i % 2 == 0 else "ArcMode v",
                ]
            )
            config = parse_config_text(conf + "\n")
            self.holders.append(RuntimeHolder(Runtime.build(config, resolver)))
        self.stats = SessionStats()
        self.loop = asyncio.new_event_loop()
        logging.getLogger("dkimd").setLevel(logging.CRITICAL)

    def signed_message(self) -> list[tuple[bytes, bytes]]:
        from dkimd.dkim import Signer, SigningRequest

        headers = [
            HeaderField(b"From", b" Alice <alice@example.com>"),
            HeaderField(b"To", b" bob@example.net"),
            HeaderField(b"Subject", b" hello"),
        ]
        signer = Signer(SigningRequest("example.com", "mail", self.private_key))
        signer.feed_body(b"Hello,\r\nworld.\r\n")
        sig = signer.sign(headers)
        return [(sig.name, sig.value), *((h.name, h.value) for h in headers)]


_WORLD: _SessionWorld | None = None


def world() -> _SessionWorld:
    global _WORLD
    if _WORLD is None:
        _WORLD = _SessionWorld()
    return _WORLD


async def _drive_session(holder: object, stream: bytes, chunk: int) -> bytes:
    from dkimd.milter.handler import ConnectionInfo
    from dkimd.session import MilterSession
    from support.handler import settle

    w = world()
    conn = milter.Connection(w.filter_options)
    session = MilterSession(ConnectionInfo(conn, "fuzz"), holder, w.stats)  # type: ignore[arg-type]
    out = bytearray()
    try:
        for piece in [*_chunks(stream, chunk), b""]:
            conn.receive_data(piece)
            while True:
                try:
                    event = conn.next_event()
                except milter.RemoteProtocolError:
                    return bytes(out)
                if event is milter.NEED_DATA:
                    break
                if isinstance(event, milter.ConnectionClosed):
                    return bytes(out)
                if isinstance(event, milter.OptionNegotiation):
                    out += conn.send(milter.Continue())
                    continue
                # The invariant: the session handles every event the Connection accepts
                # without raising, and its answer is a valid reply for that event (the
                # server would otherwise log a traceback and tempfail).
                result = await settle(session, session.handle(event))
                if result is None:
                    out += conn.send(milter.Continue())
                elif isinstance(result, milter.Action):
                    out += (
                        conn.send(result)
                        if isinstance(result, milter.FinalAction)
                        else conn.send_many([result])
                    )
                else:
                    out += conn.send_many(result)
                if isinstance(event, milter.Quit):
                    return bytes(out)
    finally:
        session.close()
    return bytes(out)


def run_session(
    flags: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    mutation: bytes | None = None,
    chunk: int = 4096,
) -> bytes:
    """One session through MilterSession; returns (and checks) what it wrote back.

    `flags`: bits 0-2 pick the configuration (On-* actions), 0x20 an internal client (sign),
    0x40 milter protocol 2 instead of 6."""
    w = world()
    holder = w.holders[flags % len(w.holders)]
    client = "127.0.0.1" if flags & 0x20 else "192.0.2.9"
    version = 2 if flags & 0x40 else 6
    stream = b"".join(session_packets(headers, body, version=version, client=client))
    if mutation is not None:
        stream = mutate(stream, mutation)
    out = w.loop.run_until_complete(_drive_session(holder, stream, chunk))
    check_reply_stream(out)
    return out


def session(data: bytes) -> None:
    """A valid (often signed) session, its headers and body edited by the input."""
    w = world()
    if not data:
        data = b"\0"
    rng = random.Random(data)
    headers = (
        w.signed_message()
        if data[0] & 0x10
        else [(b"From", b" Alice <alice@example.com>"), (b"Subject", b" hi")]
    )
    pieces = data[1:].split(b"\xff")
    for piece in pieces[:8]:
        if not piece:
            continue
        op = piece[0] % 6
        name, _, value = piece[1:].partition(b":")
        name = name.replace(b"\0", b"") or b"X"
        value = value.replace(b"\0", b"")
        if op == 0:
            headers.append((name, value))
        elif op == 1:
            headers.insert(0, (b"DKIM-Signature", b" " + value))
        elif op == 2:
            headers.insert(0, (b"Authentication-Results", b" " + value))
        elif op == 3 and headers:
            i = rng.randrange(len(headers))
            headers[i] = (headers[i][0], value)
        elif op == 4:
            headers.append((b"From", value))
        elif op == 5:
            # An ARC field of the kind the name's first byte picks, the value as given.
            headers.insert(0, (_ARC_NAMES[name[0] % 3], b" " + value))
    body = pieces[-1] if len(pieces) > 1 else b"Hello,\r\nworld.\r\n"
    run_session(
        data[0],
        headers,
        body,
        mutation=data if data[0] & 0x80 else None,
        chunk=rng.choice([1, 7, 4096, 1 << 20]),
    )


# --------------------------------------------------------------------------------------------
# ARC (RFC 8617)


def arc_fields(data: bytes) -> None:
    """Each ARC field parser returns a value in range or raises ArcFieldError."""
    from dkimd.arc import ArcFieldError, ChainState, parse_aar, parse_ams, parse_seal

    for name, parse in zip(_ARC_NAMES, (parse_seal, parse_ams, parse_aar), strict=True):
        try:
            parsed = parse(HeaderField(name, data))
        except ArcFieldError:
            continue
        assert 1 <= parsed.instance <= 50
        if name == b"ARC-Seal":
            assert parsed.cv in ChainState  # type: ignore[union-attr]


_ARC_KEY_CACHE: list[object] = []


def _arc_key() -> object:
    if not _ARC_KEY_CACHE:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        from dkimd.dkim import PrivateKey

        # A fixed seed: the target stays a pure function of its input.
        seed = hashlib.sha256(b"dkimd arc fuzz").digest()
        _ARC_KEY_CACHE.append(PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed)))
    return _ARC_KEY_CACHE[0]


def arc_chain(data: bytes) -> None:
    """The input is a header block (LF or CRLF) of mostly ARC fields, then a body. The
    verifier ends in none/pass/fail with a reason for anything but pass and none, asks for
    at most two keys per allowed set, and the sealer either refuses (saying why) or adds a
    set numbered after the highest instance whose three fields parse back."""
    from dkimd.arc import (
        MAX_INSTANCES,
        ArcSealer,
        ArcVerifier,
        ArcVerifyOptions,
        ChainState,
        SealRequest,
        collect_sets,
        parse_aar,
        parse_ams,
        parse_seal,
    )
    from dkimd.dkim import PrivateKey, split_message
    from dkimd.dns.base import TxtResult, TxtStatus

    message = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    try:
        headers, offset = split_message(message)
    except MessageError:
        return
    limit = 1 + (data[0] % MAX_INSTANCES if data else 0)
    verifier = ArcVerifier(headers, ArcVerifyOptions(now=1_700_000_000, max_instances=limit))
    queries = verifier.key_queries()
    assert len(queries) <= 2 * limit
    for name in queries:
        verifier.provide_key(name, TxtResult(name, TxtStatus.NXDOMAIN))
    verifier.feed_body(message[offset:])
    result = verifier.result()
    assert result.state in ChainState
    if result.state is ChainState.FAIL:
        assert result.reason
    else:
        assert not result.reason
    key = _arc_key()
    assert isinstance(key, PrivateKey)
    sealer = ArcSealer(SealRequest("fuzz.example", "s", key, "mx.fuzz.example", timestamp=1))
    sealer.feed_body(message[offset:])
    fields = sealer.seal(headers, result, "dkim=none")
    if not fields:
        assert sealer.refusal
        return
    seal, ams, aar = fields
    instance = result.highest + 1
    assert parse_seal(seal).instance == parse_ams(ams).instance == parse_aar(aar).instance
    assert parse_seal(seal).instance == instance
    assert parse_seal(seal).cv is result.state
    if result.state is not ChainState.FAIL:
        assert collect_sets([*fields, *headers]).error == ""


_SEAL_CHECKS: list[object] = []


def arc_trusted(data: bytes) -> None:
    """The input is a header block (LF or CRLF) of hostile fields. What dkimd reads from
    them for OpenARC's options never raises: SealHeaderChecks (regular expressions on the
    values, JSON lists), PermitAuthenticationOverrides (the arc= of our own A-R field) and
    the results copied into an AAR (each one line of printable ASCII, bounded)."""
    from dkimd.arc import ChainState
    from dkimd.arc.header_checks import first_match, parse_header_checks
    from dkimd.arc_filter import copied_results, override_state
    from dkimd.dkim import split_message

    if not _SEAL_CHECKS:
        checks, problems = parse_header_checks(
            [
                "List-Id:<[^>]*\\.lists\\.example>",
                "X-Tags:^forward$",
                "Subject:^\\[dev\\] .*\\<x\\>",
            ]
        )
        assert not problems
        _SEAL_CHECKS.extend(checks)
    try:
        headers, _ = split_message(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    except DkimError:
        return
    first_match(_SEAL_CHECKS, headers[:200])  # type: ignore[arg-type]
    state = override_state(headers, "mx.test")
    assert state in (None, ChainState.PASS, ChainState.FAIL)
    for item in copied_results(headers, "mx.test", own_dkim=bool(data[:1] == b"A")):
        assert "\n" not in item and "\r" not in item and len(item) <= 512
        assert all(" " <= c <= "~" for c in item)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "milter_stream": milter_stream,
    "milter_mutation": milter_mutation,
    "tag_list": tag_list,
    "signature": signature,
    "key_record": key_record,
    "header_block": header_block,
    "body_canon": body_canon,
    "auth_results": auth_results,
    "authserv_id": authserv_id,
    "config_text": config_text,
    "dataset": dataset,
    "session": session,
    "arc_fields": arc_fields,
    "arc_chain": arc_chain,
    "arc_trusted": arc_trusted,
}

# Exceptions a target may never let escape are everything else; these are the documented
# ones each parser raises, listed for docs/fuzzing.md and the atheris driver.
DOCUMENTED = {
    "milter": (milter.RemoteProtocolError,),
    "dkim": (DkimError,),
    "config": (ConfigError,),
}
