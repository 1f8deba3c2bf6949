"""Start-up, key and signing options against the real OpenDKIM 2.11: the same configuration
and message through both filters (miltertest), the same replies and the same signatures.

* a malformed KeyTable line, a SigningTable naming a key the KeyTable lacks: both start, and
  the senders routed there get a bare TEMPFAIL at end of headers;
* MultipleSignatures, RequestReports, ATPSDomains, BodyLengthDB, MaximumSignedBytes: the
  DKIM-Signature fields (t= and b= aside) are OpenDKIM's, tag for tag, fold for fold;
* TestPublicKeys: key records from a flat file verify on both.

dkimd oversigns From on purpose (README, "Where dkimd differs"): its h= ends with one more
":From", which is taken off before comparing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.dkimd import Dkimd
from support.opendkim import DkimKey, OpenDKIM, genkey, lua_string, run_miltertest
from support.tools import require

pytestmark = pytest.mark.interop

BODY = "This is a test!\r\n"


@contextmanager
def both(tmp_path: Path, **kw: Any) -> Iterator[tuple[str, str]]:
    """The socket specs of a real OpenDKIM and a dkimd, both on the same configuration."""
    require("miltertest")
    with OpenDKIM(tmp_path / "od", **kw) as od, Dkimd(tmp_path / "dk", **kw) as dk:
        yield od.socket_spec, dk.socket_spec


def converse(socket_spec: str, sender: str, recipient: str = "recipient@example.com") -> str:
    """One message from 127.0.0.1: the reply at end of headers and, unless the message ended
    there, each DKIM-Signature added (t= and b= values blanked)."""
    script = [
        "mt.set_timeout(20)",
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'if conn == nil then error("connect") end',
        'mt.conninfo(conn, "localhost", "127.0.0.1")',
        f"mt.mailfrom(conn, {lua_string('<' + sender + '>')})",
        # A filter that declines RCPT (SMFIP_NORCPT) is not sent one, as Postfix does.
        f"pcall(mt.rcptto, conn, {lua_string('<' + recipient + '>')})",
        f"mt.header(conn, 'From', {lua_string(sender)})",
        "mt.header(conn, 'Date', 'Tue, 22 Dec 2009 13:04:12 -0800')",
        "mt.header(conn, 'Subject', 'Signing test')",
        "mt.eoh(conn)",
        "local r = mt.getreply(conn)",
        'io.write("eoh=", string.char(r), "\\n")',
        "if r == SMFIR_CONTINUE then",
        f"  mt.bodystring(conn, {lua_string(BODY)})",
        "  mt.eom(conn)",
        "  for n = 0, 9 do",
        '    local v = mt.getheader(conn, "DKIM-Signature", n)',
        "    if v == nil then break end",
        '    io.write("sig=", v, "\\n")',
        "  end",
        "end",
        "mt.disconnect(conn)",
    ]
    out = run_miltertest("\n".join(script) + "\n").stdout
    out = re.sub(r"t=\d+;", "t=T;", out)
    out = re.sub(r"b=[A-Za-z0-9+/=\s]+$", "b=B", out, flags=re.MULTILINE)
    return re.sub(r"(h=[^;]*):From;", r"\1;", out)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    require("opendkim-genkey")
    return genkey(tmp_path_factory.mktemp("key"), "example.com", "test", bits=1024)


def test_broken_tables_start_and_tempfail_at_end_of_headers(tmp_path: Path, key: DkimKey) -> None:
    path = key.private_key
    keys = tmp_path / "keys"
    # First line for "bad" wins, and it is not domain:selector:key.
    keys.write_text(f"bad\texample.com test {path}\nbad example.com:test:{path}\n")
    keys.write_text(keys.read_text() + f"good example.net:test:{path}\n")
    signing = {"*@example.com": "bad", "*@example.org": "gone", "*@example.net": "good"}
    with both(tmp_path, key_table=keys, signing_table=signing) as (theirs, ours):
        for sender in ("user@example.com", "user@example.org", "user@example.net"):
            expected = converse(theirs, sender)
            assert converse(ours, sender) == expected, sender
            assert expected.startswith("eoh=t" if "example.net" not in sender else "eoh=c")


@pytest.mark.parametrize(
    "options",
    [
        {"MultipleSignatures": "yes"},
        {"RequestReports": "true"},
        {"ATPSDomains": "example.com", "RequestReports": "1"},
        {"ATPSDomains": "example.com", "ATPSHashAlgorithm": "none"},
        {"BodyLengthDB": "csl:*@.com"},
        {"BodyLengthDB": "csl:nobody@example.com"},
        {"MaximumSignedBytes": "10"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_signature_tags(tmp_path: Path, key: DkimKey, options: dict[str, str]) -> None:
    path = key.private_key
    keys = {"k1": f"example.com:test:{path}", "k2": f"example.net:test2:{path}"}
    (tmp_path / "sign").write_text("user@example.com k1\nexample.com k2\n")
    with both(
        tmp_path,
        key_table=keys,
        canonicalization="relaxed/simple",
        options={"SigningTable": f"file:{tmp_path / 'sign'}", **options},
    ) as (theirs, ours):
        expected = converse(theirs, "user@example.com")
        assert expected.count("sig=") == (2 if "MultipleSignatures" in options else 1)
        assert converse(ours, "user@example.com") == expected


def test_test_public_keys_verify_on_both(tmp_path: Path, key: DkimKey) -> None:
    """A message OpenDKIM signs verifies with TestPublicKeys (no TestDNSData record) on both."""
    require("miltertest")
    pubkeys = tmp_path / "pubkeys"
    pubkeys.write_text(
        f"other._domainkey.example.com\tv=DKIM1; p=\ntest._domainkey.example.com {key.txt}\n"
    )
    script_headers = [("From", "user@example.com"), ("Subject", "Signing test")]
    with OpenDKIM(
        tmp_path / "signer", domain="example.com", selector="test", keyfile=key.private_key
    ) as signer:
        signed = _sign(signer.socket_spec, script_headers)
    results = []
    for name, cls in (("od", OpenDKIM), ("dk", Dkimd)):
        with cls(tmp_path / name, mode="v", options={"TestPublicKeys": str(pubkeys)}) as f:
            results.append(_verify(f.socket_spec, [("DKIM-Signature", signed), *script_headers]))
    assert all("dkim=pass" in r for r in results), results


def _sign(socket_spec: str, headers: list[tuple[str, str]]) -> str:
    script = [
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'mt.conninfo(conn, "localhost", "127.0.0.1")',
        "mt.mailfrom(conn, '<user@example.com>')",
        *(f"mt.header(conn, {lua_string(n)}, {lua_string(v)})" for n, v in headers),
        "mt.eoh(conn)",
        f"mt.bodystring(conn, {lua_string(BODY)})",
        "mt.eom(conn)",
        'io.write(mt.getheader(conn, "DKIM-Signature", 0))',
        "mt.disconnect(conn)",
    ]
    return run_miltertest("\n".join(script) + "\n").stdout


def _verify(socket_spec: str, headers: list[tuple[str, str]]) -> str:
    script = [
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'mt.conninfo(conn, "outside.example", "192.0.2.9")',
        "mt.mailfrom(conn, '<user@example.com>')",
        *(f"mt.header(conn, {lua_string(n)}, {lua_string(v)})" for n, v in headers),
        "mt.eoh(conn)",
        f"mt.bodystring(conn, {lua_string(BODY)})",
        "mt.eom(conn)",
        'io.write(mt.getheader(conn, "Authentication-Results", 0) or "none")',
        "mt.disconnect(conn)",
    ]
    return run_miltertest("\n".join(script) + "\n").stdout
