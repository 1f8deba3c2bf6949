"""The dkimd DAEMON (``python -m dkimd -x opendkim.conf -f``) driven by the real ``miltertest``.

miltertest plays Postfix: it negotiates like Postfix does (protocol version 6 offering steps
0x1FFFFF and actions 0x1FF, or version 2 offering 0x7F / 0x3F as with ``milter_protocol = 2``),
sends the connect/mail macros, the headers (miltertest itself puts the blank after the
colon in front of each value when SMFIP_HDR_LEADSPC is negotiated, as Postfix does) and the
body in chunks of at most 65535 bytes, and reports the end-of-message reply and
header changes (tests/interop/miltertest_dkimd/session.lua). Cases:

(a) sign: an internal client (127.0.0.1), From *@example.com -> KeyTable/SigningTable -> a
    DKIM-Signature is inserted, and it verifies with dkimpy over the message as Postfix
    would rebuild it;
(b) verify: an outside client, a message signed by the real OpenDKIM -> Authentication-Results
    dkim=pass header.d=example.com;  (c) tampered -> dkim=fail;
(d) On-BadSignature reject -> SMFIR_REPLYCODE 550;  (e) two messages on one connection, an
    abort between;  (f) an authenticated outside client ({auth_authen}) is signed;
(g) a PeerList client is accepted at connect, untouched;  (h) an incoming
    Authentication-Results claiming our authserv-id is deleted;
and the seed's reference configuration (tests/data/config/reference, paths rewritten) served
unchanged, signing a message from 127.0.0.1.

Without miltertest/opendkim the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import pytest

from support.dkimd import Dkimd
from support.opendkim import (
    DkimKey,
    OpenDKIM,
    genkey,
    lua_string,
    milter_transaction,
    split_message,
)
from support.reference import REFERENCE, reference_user
from support.tools import free_port, require

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).parent / "miltertest_dkimd" / "session.lua"
AUTHSERV_ID = "mx.dkimd.test"
PEER = "192.0.2.99"
OUTSIDE = "192.0.2.77"  # 192.0.2.0/24 is not in this module's InternalHosts

# (version, steps, actions) as Postfix offers them
PROTOCOLS = {"v6": (6, 0x1FFFFF, 0x1FF), "v2": (2, 0x7F, 0x3F)}

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: milter interop\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <milter.1@example.com>\r\n"
    b"X-Folded: one,\r\n\ttwo\r\n"
    b"\r\n"
    b"Hello Bob,\r\n\r\nthis went through miltertest.\r\n" + b"x" * 70000 + b"\r\n"
)


# ---- running a session ------------------------------------------------------------------------


@dataclass
class Msg:
    message: bytes
    mail_macros: dict[str, str] = field(default_factory=lambda: {"i": "QID1"})
    sender: str = "<alice@example.com>"
    rcpt: Sequence[str] = ("<bob@example.net>",)
    abort: bool = False
    collect: Sequence[str] = ("DKIM-Signature", "Authentication-Results")
    change: Sequence[str] = ()
    smtpreply: Sequence[tuple[str, str, str]] = ()  # candidate replies for MT_SMTPREPLY


@dataclass
class MsgResult:
    reply: str = ""
    smtpreply: dict[int, bool] = field(default_factory=dict)
    inserted: dict[str, bool] = field(default_factory=dict)
    headers: dict[str, list[bytes]] = field(default_factory=dict)
    changed: dict[str, bool] = field(default_factory=dict)
    deleted: dict[str, bool] = field(default_factory=dict)


@dataclass
class Session:
    leadspc: bool
    connect: str
    messages: list[MsgResult]
    output: str

    def __getitem__(self, n: int) -> MsgResult:
        return self.messages[n]


def _lua_list(items: Sequence[str]) -> str:
    return "{" + ", ".join(lua_string(i) for i in items) + "}"


def run_session(
    daemon: Dkimd,
    protocol: str,
    messages: Sequence[Msg],
    *,
    client: tuple[str, str] = ("localhost", "127.0.0.1"),
    tmp: Path,
) -> Session:
    tool = require("miltertest")
    version, steps, actions = PROTOCOLS[protocol]
    lines = [
        f"SOCKET = {lua_string(daemon.socket_spec)}",
        f"VERSION = {version}",
        f"STEPS = {steps}",
        f"ACTIONS = {actions}",
        f"CLIENT = {{host = {lua_string(client[0])}, addr = {lua_string(client[1])}}}",
        'CONNECT_MACROS = {"j", "mx.test.example", "{daemon_name}", "miltertest"}',
        "MESSAGES = {",
    ]
    for m in messages:
        headers, body = split_message(m.message)
        macros = ", ".join(f"{lua_string(k)}, {lua_string(v)}" for k, v in m.mail_macros.items())
        hdrs = ", ".join(f"{{{lua_string(n)}, {lua_string(v)}}}" for n, v in headers)
        lines.append(
            f"  {{mail_macros = {{{macros}}}, from = {lua_string(m.sender)},"
            f" rcpt = {{{', '.join(lua_string(r) for r in m.rcpt)}}},"
            f" headers = {{{hdrs}}}, body = {lua_string(body)},"
            f" abort = {'true' if m.abort else 'false'},"
            f" collect = {{{', '.join(lua_string(c) for c in m.collect)}}},"
            f" change = {{{', '.join(lua_string(c) for c in m.change)}}},"
            f" smtpreply = {{{', '.join(_lua_list(t) for t in m.smtpreply)}}}}},"
        )
    lines.append("}")
    data = tmp / f"session-{free_port()}.lua"
    data.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [tool, "-D", f"data={data}", "-s", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (
        f"miltertest failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
        f"--- dkimd log ---\n{daemon.log_text()}"
    )
    assert proc.stdout.rstrip().endswith("done"), proc.stdout
    session = Session(False, "", [MsgResult() for _ in messages], proc.stdout)
    for line in proc.stdout.splitlines():
        f = line.split()
        if f[:1] == ["leadspc"]:
            session.leadspc = f[1] == "1"
        elif f[:1] == ["connect"]:
            session.connect = f[1]
        elif f[:1] == ["msg"]:
            r = session.messages[int(f[1]) - 1]
            kind = f[2]
            if kind == "reply":
                r.reply = f[3]
            elif kind == "smtpreply":
                r.smtpreply[int(f[3])] = f[4] == "true"
            elif kind == "insert":
                r.inserted[f[3]] = f[4] == "true"
            elif kind == "header":
                r.headers.setdefault(f[3], []).append(bytes.fromhex(f[5]) if len(f) > 5 else b"")
            elif kind == "change":
                r.changed[f[3]] = f[4] == "true"
            elif kind == "delete":
                r.deleted[f[3]] = f[4] == "true"
    return session


def postfix_field(name: str, value: bytes, leadspc: bool) -> bytes:
    """A header field a milter inserted, as Postfix writes it into the message.

    Postfix puts ": " between name and value unless SMFIP_HDR_LEADSPC was negotiated (then
    the value brings its own blank), and splits the value into lines at LF (cleanup_out_header),
    which become CRLF on the wire."""
    return name.encode() + (b":" if leadspc else b": ") + value.replace(b"\n", b"\r\n")


def dkimpy_verify(message: bytes, key: DkimKey) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == key.dns_name, name
        return key.txt.encode()

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def ar_text(value: bytes) -> str:
    return " ".join(value.decode("utf-8", "replace").split())


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("milter")


@pytest.fixture(scope="module")
def key(tmp: Path) -> DkimKey:
    return genkey(tmp / "keys", "example.com", "mail", bits=1024)


@pytest.fixture(scope="module")
def signed_by_opendkim(tmp: Path, key: DkimKey) -> bytes:
    """MESSAGE signed by the real OpenDKIM (relaxed/relaxed).

    Not support.opendkim.opendkim_sign: its 65536-byte body chunks are one byte over what
    libmilter accepts (MILTER_CHUNK_SIZE 65535), and MESSAGE has a 70 KB line."""
    with OpenDKIM(
        tmp / "opendkim-signer",
        mode="s",
        domain="example.com",
        selector="mail",
        keyfile=key.private_key,
    ) as od:
        result = milter_transaction(
            od.socket_spec, MESSAGE, collect=("DKIM-Signature",), body_chunk=65535
        )
    (value,) = result.headers("DKIM-Signature")
    field = b"DKIM-Signature:" + value.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    return field + b"\r\n" + MESSAGE


def _dkimd(tmp: Path, name: str, key: DkimKey, **kwargs: object) -> Dkimd:
    return Dkimd(
        tmp / name,
        key_table={"mailkey": f"example.com:mail:{key.private_key}"},
        signing_table={"*@example.com": "mailkey"},
        dns_records=key.records,
        internal_hosts=["127.0.0.1", "::1", "localhost"],
        peer_list=[PEER],
        authserv_id=AUTHSERV_ID,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module", params=["relaxed/relaxed", "simple/simple"])
def daemon(request: pytest.FixtureRequest, tmp: Path, key: DkimKey) -> Iterator[Dkimd]:
    require("miltertest")
    canon = request.param
    with _dkimd(tmp, "dkimd-" + canon.replace("/", "-"), key, canonicalization=canon) as d:
        yield d


@pytest.fixture(scope="module")
def rejecting(tmp: Path, key: DkimKey) -> Iterator[Dkimd]:
    require("miltertest")
    with _dkimd(tmp, "dkimd-reject", key, options={"On-BadSignature": "reject"}) as d:
        yield d


# ---- (a) sign, (f) authenticated --------------------------------------------------------------


def _assert_signed(session: Session, n: int, key: DkimKey, message: bytes, canon: str) -> None:
    r = session[n]
    assert r.reply == "a", session.output
    assert r.inserted["DKIM-Signature"], session.output
    assert len(r.headers["DKIM-Signature"]) == 1, session.output
    value = r.headers["DKIM-Signature"][0]
    text = " ".join(value.decode().split())
    assert f"c={canon};" in text and "d=example.com;" in text and "s=mail;" in text, text
    assert not r.headers.get("Authentication-Results"), session.output
    headers, body = split_message(message)
    rebuilt = (
        postfix_field("DKIM-Signature", value, session.leadspc)
        + b"\r\n"
        + b"".join(n.encode() + b": " + v + b"\r\n" for n, v in headers)
        + b"\r\n"
        + body
    )
    assert dkimpy_verify(rebuilt, key), rebuilt[:600]


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_internal_client_is_signed(daemon: Dkimd, key: DkimKey, tmp: Path, protocol: str) -> None:
    canon = daemon.config["Canonicalization"]
    session = run_session(daemon, protocol, [Msg(MESSAGE)], tmp=tmp)
    assert session.leadspc == (protocol == "v6")
    assert session.connect == "c"
    _assert_signed(session, 0, key, MESSAGE, canon)
    assert "DKIM-Signature field added (s=mail, d=example.com)" in daemon.log_text()


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_authenticated_outside_client_is_signed(
    daemon: Dkimd, key: DkimKey, tmp: Path, protocol: str
) -> None:
    canon = daemon.config["Canonicalization"]
    auth = Msg(MESSAGE, mail_macros={"i": "QIDAUTH", "{auth_authen}": "alice"})
    unauth = Msg(MESSAGE, mail_macros={"i": "QIDNOAUTH"})
    session = run_session(
        daemon, protocol, [auth, unauth], client=("mua.outside.example", OUTSIDE), tmp=tmp
    )
    _assert_signed(session, 0, key, MESSAGE, canon)
    # the next message of the same connection, without AUTH, is verified instead (unsigned)
    assert session[1].reply == "a", session.output
    assert not session[1].headers.get("DKIM-Signature"), session.output


@pytest.mark.parametrize("protocol", ["v6"])
def test_inserted_signature_is_folded_with_bare_lf(daemon: Dkimd, tmp: Path, protocol: str) -> None:
    """smfi_insheader(3): a multi-line value folds with LF + WSP; "The line feed should NOT
    be preceded by a carriage return; the MTA will add this automatically." Postfix splits
    the value at LF only, so a CR before it stays in the message (CR CR LF on the wire) and
    breaks the signature. OpenDKIM folds with bare LF (see support.opendkim's notes)."""
    session = run_session(daemon, protocol, [Msg(MESSAGE)], tmp=tmp)
    value = session[0].headers["DKIM-Signature"][0]
    assert b"\n" in value  # it is folded
    assert b"\r" not in value, value


# ---- (b) verify, (c) tampered, (h) forged A-R --------------------------------------------------


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_outside_message_signed_by_opendkim_passes(
    daemon: Dkimd, signed_by_opendkim: bytes, tmp: Path, protocol: str
) -> None:
    session = run_session(
        daemon,
        protocol,
        [Msg(signed_by_opendkim)],
        client=("mx.outside.example", OUTSIDE),
        tmp=tmp,
    )
    r = session[0]
    assert r.reply == "a", session.output
    assert not r.headers.get("DKIM-Signature"), "an outside message must not be signed"
    assert r.inserted["Authentication-Results"], session.output
    (value,) = r.headers["Authentication-Results"]
    text = ar_text(value)
    assert text.startswith(f"{AUTHSERV_ID}; dkim=pass"), text
    assert "header.d=example.com" in text and "header.s=mail" in text, text


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_tampered_message_fails(
    daemon: Dkimd, signed_by_opendkim: bytes, tmp: Path, protocol: str
) -> None:
    tampered = signed_by_opendkim.replace(b"went through", b"went thru   ")
    assert tampered != signed_by_opendkim
    session = run_session(
        daemon, protocol, [Msg(tampered)], client=("mx.outside.example", OUTSIDE), tmp=tmp
    )
    r = session[0]
    assert r.reply == "a", session.output  # On-BadSignature defaults to accept
    (value,) = r.headers["Authentication-Results"]
    text = ar_text(value)
    assert text.startswith(f"{AUTHSERV_ID}; dkim=fail"), text
    assert "header.d=example.com" in text, text


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_forged_authentication_results_removed(
    daemon: Dkimd, signed_by_opendkim: bytes, tmp: Path, protocol: str
) -> None:
    forged = (
        b"Authentication-Results: someone.else.example; dkim=pass header.d=bank.example\r\n"
        + b"Authentication-Results: "
        + AUTHSERV_ID.encode()
        + b"; dkim=pass header.d=bank.example\r\n"
        + signed_by_opendkim
    )
    session = run_session(
        daemon,
        protocol,
        [Msg(forged, change=("Authentication-Results",))],
        client=("mx.outside.example", OUTSIDE),
        tmp=tmp,
    )
    r = session[0]
    assert r.reply == "a", session.output
    assert r.changed["Authentication-Results"], session.output
    assert r.deleted["Authentication-Results"], session.output
    assert "removing 1 Authentication-Results field(s)" in daemon.log_text()
    # the message is still verified (its signature does not cover A-R) and gets our own A-R
    (value,) = r.headers["Authentication-Results"]
    assert ar_text(value).startswith(f"{AUTHSERV_ID}; dkim=pass"), value


def test_only_our_authserv_id_is_removed(
    daemon: Dkimd, signed_by_opendkim: bytes, tmp: Path
) -> None:
    other = (
        b"Authentication-Results: someone.else.example; dkim=pass header.d=bank.example\r\n"
        + signed_by_opendkim
    )
    session = run_session(
        daemon,
        "v6",
        [Msg(other, change=("Authentication-Results",))],
        client=("mx.outside.example", OUTSIDE),
        tmp=tmp,
    )
    assert not session[0].changed["Authentication-Results"], session.output
    assert not session[0].deleted["Authentication-Results"], session.output


# ---- (d) reject ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_on_bad_signature_reject(
    rejecting: Dkimd, signed_by_opendkim: bytes, tmp: Path, protocol: str
) -> None:
    tampered = signed_by_opendkim.replace(b"Hello Bob", b"Hello Rob")
    # OpenDKIM's reply for a bad signature (dkimf_libstatus): fixed words, nothing from the
    # message.
    text = "bad DKIM signature data"
    session = run_session(
        rejecting,
        protocol,
        [
            Msg(tampered, smtpreply=[("550", "5.7.0", text), ("451", "4.7.0", text)]),
            Msg(signed_by_opendkim, mail_macros={"i": "QID2"}),
        ],
        client=("mx.outside.example", OUTSIDE),
        tmp=tmp,
    )
    assert session[0].reply == "y", session.output  # SMFIR_REPLYCODE
    assert session[0].smtpreply == {1: True, 2: False}, session.output
    assert "bad signature data" in rejecting.log_text()
    # the good message on the same connection still passes
    assert session[1].reply == "a", session.output
    assert ar_text(session[1].headers["Authentication-Results"][0]).startswith(
        f"{AUTHSERV_ID}; dkim=pass"
    )


# ---- (e) two messages, abort between ----------------------------------------------------------


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_two_messages_with_abort_between(
    daemon: Dkimd, key: DkimKey, signed_by_opendkim: bytes, tmp: Path, protocol: str
) -> None:
    canon = daemon.config["Canonicalization"]
    second = MESSAGE.replace(b"Subject: milter interop", b"Subject: the second one")
    session = run_session(
        daemon,
        protocol,
        [Msg(MESSAGE, abort=True), Msg(second, mail_macros={"i": "QID2"})],
        tmp=tmp,
    )
    _assert_signed(session, 0, key, MESSAGE, canon)
    _assert_signed(session, 1, key, second, canon)
    assert session[0].headers["DKIM-Signature"] != session[1].headers["DKIM-Signature"]


def test_abort_mid_body_then_verify(daemon: Dkimd, signed_by_opendkim: bytes, tmp: Path) -> None:
    """An abort after a message (as Postfix sends after RSET) leaves nothing behind: the next
    message of the same outside connection is verified on its own and passes."""
    tampered = signed_by_opendkim.replace(b"Hello Bob", b"Hello Rob")
    session = run_session(
        daemon,
        "v6",
        [Msg(tampered, abort=True), Msg(signed_by_opendkim, mail_macros={"i": "QID2"})],
        client=("mx.outside.example", OUTSIDE),
        tmp=tmp,
    )
    assert ar_text(session[0].headers["Authentication-Results"][0]).startswith(
        f"{AUTHSERV_ID}; dkim=fail"
    )
    assert ar_text(session[1].headers["Authentication-Results"][0]).startswith(
        f"{AUTHSERV_ID}; dkim=pass"
    )


# ---- (g) PeerList -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["v6", "v2"])
def test_peerlist_client_accepted_untouched(daemon: Dkimd, tmp: Path, protocol: str) -> None:
    session = run_session(
        daemon, protocol, [Msg(MESSAGE)], client=("peer.example.net", PEER), tmp=tmp
    )
    assert session.connect == "a", session.output  # SMFIR_ACCEPT at connect: nothing more
    assert session[0].reply == "", session.output  # no message was sent
    assert "(PeerList)" in daemon.log_text()


# ---- the seed's reference configuration -------------------------------------------------------


def test_reference_config_served_as_is(tmp_path: Path, key: DkimKey) -> None:
    """The reference opendkim.conf and its data sets, only paths (and the port)
    rewritten, served by dkimd; a message from 127.0.0.1 and From alice@example.com is signed
    with the KeyTable key."""
    require("miltertest")
    etc = tmp_path / "etc"
    (etc / "keys").mkdir(parents=True)
    etc.chmod(0o755)
    keyfile = etc / "keys" / "mail.private"
    shutil.copy(key.private_key, keyfile)
    port = free_port()
    user = reference_user()
    if user is not None:
        # the daemon drops to opendkim:opendkim, which must read the key and the data sets
        # (the seed recipe: chown opendkim:opendkim on the key)
        os.chown(keyfile, user.pw_uid, -1)
        for p in (tmp_path, etc, etc / "keys"):
            p.chmod(0o755)
    keyfile.chmod(0o600)
    for name in ("KeyTable", "SigningTable", "TrustedHosts"):
        text = (REFERENCE / name).read_text()
        text = text.replace("/etc/opendkim/keys/", f"{etc}/keys/")
        (etc / name).write_text(text)
    conf = (REFERENCE / "opendkim.conf").read_text()
    conf = conf.replace("/etc/opendkim/", f"{etc}/")
    conf = re.sub(r"(?m)^PidFile\s+.*$", f"PidFile {tmp_path}/run/opendkim.pid", conf)
    conf = re.sub(r"(?m)^Socket\s+.*$", f"Socket inet:{port}@127.0.0.1", conf)
    if user is None:
        conf = re.sub(r"(?m)^UserID\s+.*$", "", conf)
    (tmp_path / "run").mkdir()
    # Everything else stays: Syslog yes, UMask 022, MinimumKeyBits 1024, refile: tables. Only
    # TestDNSData is added (never real DNS in tests); signing needs no DNS.
    conf += f"TestDNSData file:{etc}/dns.data\n"
    (etc / "dns.data").write_text(f"{key.dns_name} {key.txt}\n")
    conf_path = etc / "opendkim.conf"
    conf_path.write_text(conf)
    with Dkimd.from_config(tmp_path / "d", conf_path, port=port) as d:
        session = run_session(d, "v2", [Msg(MESSAGE)], tmp=tmp_path)  # milter_protocol = 2
        _assert_signed(session, 0, key, MESSAGE, "relaxed/relaxed")
        # An outside client's message is verified, not signed.
        outside = run_session(
            d, "v2", [Msg(MESSAGE)], client=("mx.outside.example", "198.51.100.7"), tmp=tmp_path
        )
        assert outside[0].reply == "a", outside.output
        assert not outside[0].headers.get("DKIM-Signature"), outside.output
        assert (tmp_path / "run" / "opendkim.pid").exists()
