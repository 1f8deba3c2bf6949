"""What happens to mail whose signature fails, against the real OpenDKIM 2.11: a message
OpenDKIM signed, its body changed in transit, verified by both filters with two
recipients (and, for comparison, the same message unchanged).

* RedirectFailuresTo: both delete each recipient, record it in an Original-Recipient field
  and add the configured address; a message that verifies keeps its recipients.
* On-BadSignature quarantine, CaptureUnknownErrors, Quarantine: both request quarantine
  exactly when OpenDKIM does (the reason names the filter: "opendkim" or "dkimd").

Without miltertest/opendkim the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.opendkim import DkimKey, OpenDKIM, genkey, lua_string, run_miltertest
from support.tools import require

pytestmark = pytest.mark.interop

BODY = "This is a test!\r\n"
HEADERS = [("From", "user@example.com"), ("Subject", "Signing test")]
RECIPIENTS = ["first@example.net", "second@example.org"]
TARGET = "admin@example.org"


def _sign(socket_spec: str) -> str:
    script = [
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'mt.conninfo(conn, "localhost", "127.0.0.1")',
        "mt.mailfrom(conn, '<user@example.com>')",
        *(f"mt.header(conn, {lua_string(n)}, {lua_string(v)})" for n, v in HEADERS),
        "mt.eoh(conn)",
        f"mt.bodystring(conn, {lua_string(BODY)})",
        "mt.eom(conn)",
        'io.write(mt.getheader(conn, "DKIM-Signature", 0))',
        "mt.disconnect(conn)",
    ]
    return run_miltertest("\n".join(script) + "\n").stdout


def _verify(socket_spec: str, signature: str, body: str) -> list[str]:
    """What the filter did at end of message, as miltertest's checks see it."""
    checks = [(f"del {r}", f"MT_RCPTDELETE, {lua_string(r)}") for r in RECIPIENTS]
    checks += [(f"add {TARGET}", f"MT_RCPTADD, {lua_string(TARGET)}")]
    checks += [
        (f"orcpt {r}", f'MT_HDRADD, "Original-Recipient", {lua_string("rfc822;" + r)}')
        for r in RECIPIENTS
    ]
    checks += [("quarantine", "MT_QUARANTINE")]
    script = [
        f"local conn = mt.connect({lua_string(socket_spec)}, 100, 0.05)",
        'mt.conninfo(conn, "outside.example", "192.0.2.9")',
        "mt.mailfrom(conn, '<user@example.com>')",
        # A filter that declines RCPT (SMFIP_NORCPT) is not sent one, as Postfix does.
        *(f"pcall(mt.rcptto, conn, {lua_string('<' + r + '>')})" for r in RECIPIENTS),
        f"mt.header(conn, 'DKIM-Signature', {lua_string(signature)})",
        *(f"mt.header(conn, {lua_string(n)}, {lua_string(v)})" for n, v in HEADERS),
        "mt.eoh(conn)",
        f"mt.bodystring(conn, {lua_string(body)})",
        "mt.eom(conn)",
        "io.write('reply=', string.char(mt.getreply(conn)), '\\n')",
        *(
            f"if mt.eom_check(conn, {args}) then io.write({lua_string(label)}, '\\n') end"
            for label, args in checks
        ),
        "mt.disconnect(conn)",
    ]
    return run_miltertest("\n".join(script) + "\n").stdout.splitlines()


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    require("opendkim-genkey")
    return genkey(tmp_path_factory.mktemp("key"), "example.com", "test", bits=1024)


CASES: dict[str, dict[str, str]] = {
    "redirect": {"RedirectFailuresTo": TARGET},
    "redirect-reject": {"RedirectFailuresTo": TARGET, "On-BadSignature": "reject"},
    "quarantine-action": {"On-BadSignature": "quarantine"},
    "quarantine-action-capture": {"On-BadSignature": "quarantine", "CaptureUnknownErrors": "yes"},
    "quarantine-option-capture": {"Quarantine": "yes", "CaptureUnknownErrors": "yes"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failed_mail_as_opendkim(tmp_path: Path, key: DkimKey, case: str) -> None:
    require("miltertest")
    pubkeys = tmp_path / "pubkeys"
    pubkeys.write_text(f"test._domainkey.example.com {key.txt}\n")
    with OpenDKIM(
        tmp_path / "signer", domain="example.com", selector="test", keyfile=key.private_key
    ) as signer:
        signature = _sign(signer.socket_spec)
    options = {"TestPublicKeys": str(pubkeys), **CASES[case]}
    seen = []
    for name, cls in (("od", OpenDKIM), ("dk", Dkimd)):
        with cls(tmp_path / name, mode="v", options=options) as f:
            seen.append(
                (
                    _verify(f.socket_spec, signature, "This is a changed test!\r\n"),
                    _verify(f.socket_spec, signature, BODY),
                )
            )
    (bad, good), (our_bad, our_good) = seen
    assert our_bad == bad and our_good == good
    assert good == ["reply=a"]
    if "RedirectFailuresTo" in options:
        assert len(bad) == 6
    assert ("quarantine" in bad) is (case == "quarantine-action-capture")
