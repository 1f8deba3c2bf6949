"""Session options read at end of headers: ExemptDomains, MTA, SenderMacro, RequiredHeaders.

The session negotiates with `filter_options_for`, as the server does, against an MTA that
offers everything; the expected replies are OpenDKIM 2.11's (observed with the Debian
binary: tests/interop/test_session_options_interop.py compares the two).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dkim import HeaderField
from dkimd.header_limit import HeaderBudget
from dkimd.mta import listed_mta, no_match_note
from dkimd.negotiation import decides_at_eoh, filter_options_for
from dkimd.required_headers import header_count_error
from dkimd.sender_macro import macro_author
from support.negotiated import Mta

DATE = (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800")
HEADERS = [(b"From", b" user@example.com"), DATE, (b"Subject", b" Signing test")]
INSIDE = "127.0.0.1"


@pytest.fixture
def signing(tmp_path: Path) -> str:
    """A configuration that signs mail from example.com, for InternalHosts' default."""
    key = tmp_path / "test.private"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return f"Mode sv\nDomain example.com\nSelector test\nKeyFile {key}\nRequireSafeKeys no\n"


def signatures(mta: Mta) -> list[bytes]:
    return [
        a.value
        for a in mta.at("eom")
        if isinstance(a, milter.InsertHeader) and a.name == b"DKIM-Signature"
    ]


# -- ExemptDomains ---------------------------------------------------------------------------


def test_exempt_domain_is_accepted_at_end_of_headers(
    signing: str, caplog: pytest.LogCaptureFixture
) -> None:
    mta = Mta(signing + "ExemptDomains csl:Example.COM\nLogWhy yes\n", INSIDE)
    with caplog.at_level(logging.INFO):
        mta.run([(b"From", b" User <user@EXAMPLE.com>"), *HEADERS[1:]])
    assert mta.at("eoh") == [milter.Accept()]
    assert mta.at("body") == mta.at("eom") == []
    assert "domain 'example.com' exempted, accepting" in caplog.text


def test_exempt_domains_apply_to_verified_mail_too() -> None:
    mta = Mta("Mode v\nExemptDomains csl:example.com\n")
    mta.run(HEADERS)
    assert mta.at("eoh") == [milter.Accept()]


def test_other_domains_are_processed_as_usual(signing: str) -> None:
    mta = Mta(signing + "ExemptDomains csl:example.org\n", INSIDE)
    mta.run(HEADERS)
    assert mta.at("eoh") == [milter.Continue()]
    assert len(signatures(mta)) == 1 and mta.final() == milter.Accept()


def test_no_author_is_the_bad_format_path_before_the_exemption() -> None:
    mta = Mta("Mode v\nExemptDomains csl:example.com\n")
    mta.run(HEADERS[1:])
    assert mta.at("body") == [milter.Skip()]
    assert b"permerror" in mta.at("eom")[0].value  # type: ignore[attr-defined]


# -- MTA -------------------------------------------------------------------------------------


def test_listed_daemon_makes_an_outside_client_originating(signing: str) -> None:
    config = signing + "MTA csl:MSA\n"
    mta = Mta(config, mail_macros={"{daemon_name}": "MSA"})
    mta.run(HEADERS)
    assert len(signatures(mta)) == 1
    # Another daemon, or none named: verified, as any outside mail.
    for macros in ({"{daemon_name}": "MTA"}, {}):
        mta = Mta(config, mail_macros=macros)
        mta.run(HEADERS)
        assert signatures(mta) == []
        assert mta.final() == milter.Accept()


def test_an_mta_miss_leaves_internal_hosts_and_auth_deciding(signing: str) -> None:
    mta = Mta(signing + "MTA csl:MSA\n", INSIDE, mail_macros={"{daemon_name}": "MTA"})
    mta.run(HEADERS)
    assert len(signatures(mta)) == 1
    mta = Mta(signing + "MTA csl:MSA\n", mail_macros={"{auth_type}": "PLAIN"})
    mta.run(HEADERS)
    assert len(signatures(mta)) == 1


def test_mta_miss_is_logged_under_log_why() -> None:
    config = parse_config_text("MTA csl:MSA\n")
    values = {"j": "mx.example.org", "{daemon_name}": "smtpd"}
    assert no_match_note(config, values.get) == "no MTA name match (host=mx.example.org, MTA=smtpd)"
    assert no_match_note(config, {}.get) == "no MTA name match (host=(null), MTA=?)"
    assert no_match_note(config, {"{daemon_name}": "MSA"}.get) is None
    assert not listed_mta(parse_config_text(""), {"{daemon_name}": "MSA"}.get)


# -- SenderMacro -----------------------------------------------------------------------------


def test_sender_macro_replaces_from_for_the_signing_decision(signing: str) -> None:
    config = signing + "SenderMacro {sender}\n"
    # From names a domain we do not sign for; the macro names one we do.
    foreign = [(b"From", b" someone@example.org"), *HEADERS[1:]]
    mta = Mta(config, INSIDE, mail_macros={"{sender}": "<user@example.com>"})
    mta.run(foreign)
    [sig] = signatures(mta)
    assert b"d=example.com" in sig
    # Without the macro, From decides: nothing to sign for example.org.
    mta = Mta(config, INSIDE)
    mta.run(foreign)
    assert signatures(mta) == []


def test_sender_macro_feeds_exempt_domains(signing: str) -> None:
    mta = Mta(
        signing + "SenderMacro auth_author\nExemptDomains csl:example.net\n",
        INSIDE,
        mail_macros={"auth_author": "boss@example.net"},
    )
    mta.run(HEADERS)
    assert mta.at("eoh") == [milter.Accept()]


def test_unparseable_sender_macro() -> None:
    signs = parse_config_text("SenderMacro x\nMode s\n")
    author = macro_author(signs, {"x": "not an address"}.get)
    assert author is not None and author.address is None
    assert author.bad_format_reason(signs) == "can't parse macro x header value 'not an address'"
    verifies = parse_config_text("SenderMacro x\nMode v\n")
    assert author.bad_format_reason(verifies) is None
    assert macro_author(signs, {"x": ""}.get) is None  # sent empty: the headers decide
    assert macro_author(parse_config_text(""), {"x": "a@b.example"}.get) is None


def test_unparseable_sender_macro_takes_the_bad_format_path_when_signing(signing: str) -> None:
    mta = Mta(signing + "SenderMacro x\n", INSIDE, mail_macros={"x": "nobody"})
    mta.run(HEADERS)
    assert mta.at("body") == [milter.Skip()] or mta.at("body") == []
    assert b"permerror" in mta.at("eom")[0].value  # type: ignore[attr-defined]


# -- RequiredHeaders -------------------------------------------------------------------------


def fields(*names: str) -> list[HeaderField]:
    return [HeaderField(n.encode(), b" x") for n in names]


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (("From", "Date"), None),
        (("From", "Date", "Sender", "Sender"), None),  # Sender is not counted
        (("From", "From", "Date"), "message does not have exactly one From field"),
        (("From",), "message does not have exactly one Date field"),
        (("From", "Date", "Date"), "message does not have exactly one Date field"),
        (("From", "Date", "cc", "CC"), "message has multiple Cc fields"),
        (("From", "Date", "Message-ID", "message-id"), "message has multiple Message-Id fields"),
        # The last failing count in OpenDKIM's order wins (observed).
        (("From", "Subject", "Subject"), "message has multiple Subject fields"),
        (("From", "To", "To"), "message has multiple To fields"),
        (
            ("From", "Date", "In-Reply-To", "References", "In-Reply-To", "References"),
            "message has multiple References fields",
        ),
    ],
)
def test_header_count_error(names: tuple[str, ...], reason: str | None) -> None:
    assert header_count_error(fields(*names)) == reason


def test_required_headers_rejects_at_end_of_headers(signing: str) -> None:
    for config, client in ((signing, INSIDE), ("Mode v\n", "198.51.100.7")):
        mta = Mta(config + "RequiredHeaders yes\nIgnoreMalformedMail yes\n", client)
        mta.run([*HEADERS, (b"From", b" other@example.com")])
        assert mta.at("eoh") == [
            milter.ReplyCode(550, "5.0.0", "message does not have exactly one From field")
        ]
        mta = Mta(config + "RequiredHeaders yes\n", client)
        mta.run(HEADERS)
        assert mta.final() == milter.Accept()


def test_dont_sign_mail_to_and_exempt_domains_come_first(signing: str) -> None:
    two_dates = [*HEADERS, DATE]
    mta = Mta(
        signing + "RequiredHeaders yes\nDontSignMailTo csl:bob@example.net\n",
        INSIDE,
        recipients=["<bob@example.net>"],
    )
    mta.run(two_dates)
    assert mta.at("eoh") == [milter.Accept()]
    mta = Mta("Mode v\nRequiredHeaders yes\nExemptDomains csl:example.com\n")
    mta.run(two_dates)
    assert mta.at("eoh") == [milter.Accept()]


# -- negotiation -----------------------------------------------------------------------------


def test_options_that_decide_at_end_of_headers_ask_for_the_reply_there() -> None:
    for text in ("ExemptDomains csl:example.com\n", "RequiredHeaders yes\n"):
        config = parse_config_text(text)
        assert decides_at_eoh(config)
        assert milter.ProtocolFlag.NR_EOH not in filter_options_for(config).protocol
    for text in ("MTA csl:MSA\n", "SenderMacro x\n", "RequiredHeaders no\n"):
        assert filter_options_for(parse_config_text(text)) == filter_options_for(
            parse_config_text("")
        )


# -- MaximumHeaders --------------------------------------------------------------------------

OBSERVED = [
    (b"From", b"user@example.com"),
    (b"Date", b"Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b"x"),
]


@pytest.mark.parametrize(
    ("limit", "leading_space", "spaced", "kept"),
    [
        # Observed with OpenDKIM 2.11: the first field refused is the one named by `kept`.
        (58, True, False, 1),
        (59, True, False, 2),
        (60, True, True, 1),  # the leading space counts, in the check and the total
        (60, False, True, 2),  # without LEADSPC the kept copy loses it
        (0, True, True, 3),
    ],
)
def test_header_budget(limit: int, leading_space: bool, spaced: bool, kept: int) -> None:
    budget = HeaderBudget(limit, leading_space=leading_space)
    taken = 0
    for name, value in OBSERVED:
        if not budget.add(name, b" " + value if spaced else value):
            break
        taken += 1
    assert taken == kept


@pytest.mark.parametrize(
    ("extra", "reply"),
    [("", milter.TempFail()), ("On-Security reject\n", milter.Reject())],
)
def test_maximum_headers_answers_the_header_that_passes_it(
    extra: str, reply: milter.FinalAction, caplog: pytest.LogCaptureFixture
) -> None:
    mta = Mta("Mode v\nMaximumHeaders 40\n" + extra)
    with caplog.at_level(logging.INFO):
        mta.run(HEADERS)
    assert mta.at("header") == [milter.Continue(), reply]
    assert mta.at("eoh") == mta.at("eom") == []
    assert "too much header data" in caplog.text


def test_default_limit_ends_the_message_at_the_next_answered_stage() -> None:
    config = parse_config_text("Mode sv\n")
    assert config.maximum_headers == 65536
    options = filter_options_for(config)
    assert milter.ProtocolFlag.NR_HDR in options.protocol  # no round trip per field
    mta = Mta("Mode sv\n")
    mta.run([*HEADERS, *[(b"X-Filler", b" " + b"x" * 990)] * 70])
    assert mta.at("header") == [] and mta.at("body") == []
    assert mta.at("eom") == [milter.TempFail()]
    mta = Mta("Mode sv\nMaximumHeaders 0\n")
    mta.run([*HEADERS, *[(b"X-Filler", b" " + b"x" * 990)] * 70])
    assert mta.final() == milter.Accept()


def test_an_explicit_limit_asks_for_header_replies() -> None:
    for text, replies in (
        ("MaximumHeaders 65536\n", True),
        ("MaximumHeaders 0\n", False),
        ("", False),
    ):
        protocol = filter_options_for(parse_config_text(text)).protocol
        assert (milter.ProtocolFlag.NR_HDR not in protocol) is replies, text
