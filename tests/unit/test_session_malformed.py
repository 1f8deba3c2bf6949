"""Messages OpenDKIM stops at end of headers (dkimd.malformed through MilterSession).

The session negotiates with `filter_options_for`, as the server does, against an MTA that
offers everything (miltertest and Postfix both do), and every reply the MTA would see is
recorded per stage. The expected replies are OpenDKIM 2.11's (observed with the Debian
binary on its own suite: t-verify-syntax, t-verify-malformed, t-verify-double-from).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from support.negotiated import Mta

SIGNATURE = (
    b" v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=test;\r\n"
    b"\tt=1283905216; bh=3VWGQGY+cSNYd1MGM+X6hRXU0stl8JCaQtl4mbX/j2I=;\r\n"
    b"\th=From:Date:Subject;\r\n\tb=AiGrvHu2mODRK2BlLXJy/YjCiBg3qr/QZ7laVq7ccMeA2QDm"
)
BROKEN = SIGNATURE.replace(b"v=1;", b"v=1")
HEADERS = [
    (b"From", b" user@example.com"),
    (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b" Signing test"),
]
PERMERROR = b" unknown.example; dkim=permerror (bad message/signature format)"


def test_broken_signature_with_reject_is_refused_at_end_of_headers() -> None:
    mta = Mta("Mode v\nOn-BadSignature reject\n")
    mta.run([*HEADERS, (b"DKIM-Signature", BROKEN)])
    [reply] = mta.at("eoh")
    assert reply == milter.ReplyCode(550, "5.7.0", "DKIM signature syntax error")
    assert mta.at("body") == [] and mta.at("eom") == []


def test_broken_signature_with_tempfail() -> None:
    mta = Mta("Mode v\nOn-BadSignature tempfail\n")
    mta.run([*HEADERS, (b"DKIM-Signature", BROKEN)])
    assert mta.at("eoh") == [milter.ReplyCode(451, "4.7.0", "DKIM signature syntax error")]


def test_broken_signature_by_default_is_accepted_without_a_header_field() -> None:
    # OpenDKIM replies ACCEPT at end of headers. The default configuration lets the MTA
    # skip that reply, so the same acceptance comes at end of message, with no A-R field.
    mta = Mta("Mode v\n")
    mta.run([*HEADERS, (b"DKIM-Signature", BROKEN)])
    assert mta.at("eoh") == []
    assert mta.at("body") == [milter.Skip()]
    assert mta.at("eom") == [milter.Accept()]


def test_broken_signature_on_a_message_being_signed(tmp_path: Path) -> None:
    # libopendkim reads DKIM-Signature fields in signing mode too (observed: Mode sv,
    # On-BadSignature reject, an internal client: the reply code at end of headers).
    key = tmp_path / "test.private"
    pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    key.write_bytes(pem)
    key.chmod(0o600)
    mta = Mta(
        "Mode sv\nOn-BadSignature reject\nDomain example.com\nSelector test\n"
        f"KeyFile {key}\nRequireSafeKeys no\nInternalHosts 198.51.100.0/24\n"
    )
    mta.run([*HEADERS, (b"DKIM-Signature", BROKEN)])
    assert mta.at("eoh") == [milter.ReplyCode(550, "5.7.0", "DKIM signature syntax error")]


def test_unparseable_from_takes_the_bad_format_path() -> None:
    mta = Mta("Mode v\nOn-BadSignature reject\n")
    mta.run([(b"From", b" user"), *HEADERS[1:]])
    assert mta.at("eoh") == [milter.Continue()] or mta.at("eoh") == []
    assert mta.at("body") == [milter.Skip()]
    assert mta.at("eom") == [
        milter.InsertHeader(0, b"Authentication-Results", PERMERROR),
        milter.Accept(),
    ]


def test_no_from_at_all_takes_the_bad_format_path_in_any_mode() -> None:
    mta = Mta("Mode s\n")
    mta.run(HEADERS[1:])
    assert milter.InsertHeader(0, b"Authentication-Results", PERMERROR) in mta.at("eom")
    assert mta.final() == milter.Accept()


def test_ignore_malformed_mail_accepts_without_a_field() -> None:
    mta = Mta("Mode v\nIgnoreMalformedMail yes\n")
    mta.run([(b"From", b" <>"), *HEADERS[1:]])
    assert mta.at("eom") == [milter.Accept()]


def test_strict_headers_two_from_fields_is_permerror_not_reject() -> None:
    # t-verify-double-from: On-BadSignature reject is not consulted.
    mta = Mta("Mode v\nOn-BadSignature reject\nStrictHeaders yes\n")
    headers = [HEADERS[0], (b"From", b" user@example.net"), *HEADERS[1:]]
    mta.run([*headers, (b"DKIM-Signature", SIGNATURE)])
    assert mta.at("body") == [milter.Skip()]
    assert mta.at("eom") == [
        milter.InsertHeader(0, b"Authentication-Results", PERMERROR),
        milter.Accept(),
    ]


def test_strict_headers_off_two_subjects_are_verified() -> None:
    mta = Mta("Mode v\n")
    mta.run([*HEADERS, (b"Subject", b" again"), (b"DKIM-Signature", SIGNATURE)])
    values = [a.value for a in mta.at("eom") if isinstance(a, milter.InsertHeader)]
    assert values and b"permerror (bad message" not in values[0]


def test_strict_headers_removes_forged_results_when_verifying() -> None:
    mta = Mta("Mode v\nStrictHeaders yes\n")
    forged = (b"Authentication-Results", b" unknown.example; dkim=pass header.d=example.com")
    mta.run([forged, *HEADERS, (b"Subject", b" again")])
    assert mta.at("eom")[0] == milter.ChangeHeader(1, b"Authentication-Results", b"")


def test_unsigned_message_skips_the_body() -> None:
    mta = Mta("Mode v\n")
    mta.run(HEADERS)
    assert mta.at("body") == [milter.Skip()]


def test_signed_message_keeps_the_body_coming() -> None:
    mta = Mta("Mode v\n")
    mta.run([*HEADERS, (b"DKIM-Signature", SIGNATURE)])
    assert mta.at("body") == [milter.Continue()]
