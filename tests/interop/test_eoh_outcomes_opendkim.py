"""End-of-headers outcomes, differential: the real OpenDKIM 2.11 and the dkimd daemon, the same
configuration and message through support.differential, the reply compared stage by stage.

Cases (dkimd.malformed): a DKIM-Signature libopendkim cannot read, with On-BadSignature
reject / tempfail / the default accept; an 8-bit header field name; a From without a domain;
no From at all; StrictHeaders with two From fields. Every reply and header change of the two
filters is compared.

One difference is on purpose (docs/differences.md, final-at-eom): with On-BadSignature accept
(the default) OpenDKIM accepts at end of headers, while dkimd, which then lets the MTA skip
its end-of-headers reply, accepts at end of message, adding nothing.

Without opendkim the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.differential import Envelope, FilterPair, assert_same_as_opendkim

SIGNATURE = (
    "v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=test;\n"
    "\tt=1283905216; bh=3VWGQGY+cSNYd1MGM+X6hRXU0stl8JCaQtl4mbX/j2I=;\n"
    "\th=From:Date:Subject;\n\tb=AiGrvHu2mODRK2BlLXJy/YjCiBg3qr/QZ7laVq7ccMeA2QDm"
)
BROKEN = SIGNATURE.replace("v=1;", "v=1")
BASE = [("Date", "Tue, 22 Dec 2009 13:04:12 -0800"), ("Subject", "Signing test")]
FROM = ("From", "user@example.com")

CASES: dict[str, tuple[dict[str, str], list[tuple[str, str]]]] = {
    "broken-signature-reject": (
        {"On-BadSignature": "reject"},
        [FROM, *BASE, ("DKIM-Signature", BROKEN)],
    ),
    "broken-signature-tempfail": (
        {"On-BadSignature": "tempfail"},
        [FROM, *BASE, ("DKIM-Signature", BROKEN)],
    ),
    "broken-signature-default": ({}, [FROM, *BASE, ("DKIM-Signature", BROKEN)]),
    "missing-a-tag-reject": (
        {"On-BadSignature": "reject"},
        [FROM, *BASE, ("DKIM-Signature", SIGNATURE.replace(" a=rsa-sha256;", ""))],
    ),
    "8bit-field-name-reject": (
        {"On-BadSignature": "reject"},
        [FROM, ("X-\xe9t\xe9", "x"), *BASE],
    ),
    "from-without-domain": ({"On-BadSignature": "reject"}, [("From", "user"), *BASE]),
    "no-from": ({}, BASE),
    "strict-two-from": (
        {"On-BadSignature": "reject", "StrictHeaders": "yes"},
        [FROM, ("From", "user@example.net"), *BASE, ("DKIM-Signature", SIGNATURE)],
    ),
    "strict-two-subjects": (
        {"StrictHeaders": "yes"},
        [FROM, *BASE, ("Subject", "again"), ("DKIM-Signature", SIGNATURE)],
    ),
}


CLIENT = Envelope(client_addr="192.0.2.9", client_host="client.example")


def _message(headers: list[tuple[str, str]]) -> bytes:
    fields = b"".join(f"{n}: {v}".encode("latin-1") + b"\r\n" for n, v in headers)
    return fields.replace(b"\n\t", b"\r\n\t") + b"\r\nThis is a test!\r\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_outcome_as_opendkim(case: str, tmp_path: Path) -> None:
    options, headers = CASES[case]
    common = {"mode": "v", "authserv_id": "mx.test.example", "options": options}
    with FilterPair(tmp_path, **common) as pair:  # type: ignore[arg-type]
        theirs, ours = pair.exchange(_message(headers), CLIENT)
    on_purpose = assert_same_as_opendkim(f"eoh/v/{case}", theirs, ours)
    if "final-at-eom" in on_purpose:
        # Only where OpenDKIM's early verdict is an accept the MTA can just as well get later.
        assert theirs.final == ("eoh", "a"), theirs
        assert options.get("On-BadSignature", "accept") == "accept"
