"""ReplaceRules / ReplaceHeaders (dkimd.replace_rules) and their loading from opendkim.conf."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkimd.config import ConfigError, parse_config_text
from dkimd.replace_rules import (
    MAX_REPLACEMENTS,
    ReplaceRules,
    ReplaceRulesError,
    bre_to_python,
)

# OpenDKIM's t-sign-ss-replace.txt.
SUITE_RULE = b"@host.example.com\t@example.com\n"


def test_the_suite_rule_rewrites_the_from_domain() -> None:
    rules = ReplaceRules.parse(SUITE_RULE)
    assert rules.rewrite(b"From", b" user@host.example.com") == b" user@example.com"
    assert rules.rewrite(b"Subject", b" nothing to do") == b" nothing to do"


def test_file_format() -> None:
    text = (
        b"# a comment line\n"
        b"\n"
        b"   \t  \n"  # blank, even with a TAB in it
        b"a\tb # the rest of the line is a comment, TAB or not\n"
        b"x\ty\tz\n"  # the last TAB splits: pattern "x\ty", text "z"
    )
    rules = ReplaceRules.parse(text)
    assert [r.replacement for r in rules.rules] == [b"z", b"b "]
    assert rules.rewrite(b"X", b"a x\ty") == b"b  z"


def test_rules_apply_last_line_first_each_until_it_no_longer_matches() -> None:
    # Observed with OpenDKIM 2.11: rules "@a -> @b" then "@b -> @c" turn @a into @b only.
    rules = ReplaceRules.parse(b"@a\t@b\n@b\t@c\n")
    assert rules.rewrite(b"From", b" user@a") == b" user@b"
    rules = ReplaceRules.parse(b"ab\tX\naa\ta\n")
    # "aaaab" -> "aa" rule (last line) until none is left -> "ab" -> the first line -> "X".
    assert rules.rewrite(b"X", b"aaaab") == b"X"


def test_a_rule_that_keeps_matching_is_stopped() -> None:
    rules = ReplaceRules.parse(b"a\taa\n")
    assert rules.rewrite(b"X", b"a") == b"a" * (MAX_REPLACEMENTS + 1)


@pytest.mark.parametrize(
    "bad", [b"no tab here\n", b"\\(unbalanced\tx\n", b"[abc\tx\n", b"x\\\tx\n"]
)
def test_a_bad_line_fails_the_file(bad: bytes) -> None:
    with pytest.raises(ReplaceRulesError):
        ReplaceRules.parse(b"ok\tfine\n" + bad)


@pytest.mark.parametrize(
    ("bre", "text", "matched"),
    [
        ("a.c", "xabcx", "abc"),
        ("a+b", "aab a+b", "a+b"),  # "+" is literal in a basic expression
        ("a\\+b", "xaab", "aab"),  # GNU: "\+" is one or more
        ("\\(ab\\)\\1", "xababx", "abab"),
        ("x\\{2,3\\}", "xxxx", "xxx"),
        ("^ab", "ab ab", "ab"),
        ("b$", "ab b", "b"),
        ("a^b$c", "a^b$c", "a^b$c"),  # anchors only at the ends
        ("*a", "x*a", "*a"),  # a leading "*" is literal
        ("[[:digit:]]\\{3\\}", "ab1234", "123"),
        ("[]x]*", "]x]y", "]x]"),
        ("[a\\]", "\\", "\\"),  # a backslash is literal in a bracket
        ("a|b", "a|b", "a|b"),
        ("(x)", "(x)", "(x)"),
    ],
)
def test_basic_regular_expressions(bre: str, text: str, matched: str) -> None:
    import re

    m = re.search(bre_to_python(bre), text)
    assert m is not None and m.group(0) == matched


def test_config_loads_rules_and_limits_them_to_replace_headers(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_bytes(SUITE_RULE)
    config = parse_config_text(f"Mode v\nReplaceRules {rules}\nReplaceHeaders csl:from,sender\n")
    assert config.replace_rules is not None
    assert config.replace_rules.rewrite(b"FROM", b"u@host.example.com") == b"u@example.com"
    assert config.replace_rules.rewrite(b"To", b"u@host.example.com") == b"u@host.example.com"
    unlimited = parse_config_text(f"Mode v\nReplaceRules {rules}\n").replace_rules
    assert unlimited is not None
    assert unlimited.rewrite(b"To", b"u@host.example.com") == b"u@example.com"


def test_config_refuses_a_broken_or_missing_rules_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_bytes(b"no tab\n")
    with pytest.raises(ConfigError, match="failed to load ReplaceRules from"):
        parse_config_text(f"Mode v\nReplaceRules {broken}\n")
    with pytest.raises(ConfigError, match="fopen"):
        parse_config_text(f"Mode v\nReplaceRules {tmp_path / 'missing'}\n")


def test_signing_sees_the_rewritten_from_and_the_message_is_unchanged(tmp_path: Path) -> None:
    """t-sign-ss-replace: From user@host.example.com is signed for example.com."""
    import base64

    import dkim  # dkimpy, the oracle
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from dkimd import milter
    from support.negotiated import Mta

    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key = tmp_path / "test.private"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    (tmp_path / "rules").write_bytes(SUITE_RULE)
    mta = Mta(
        f"Domain example.com\nSelector test\nKeyFile {key}\nRequireSafeKeys no\n"
        f"ReplaceRules {tmp_path / 'rules'}\nCanonicalization simple/simple\n",
        client="127.0.0.1",
    )
    headers = [
        (b"From", b" user@host.example.com"),
        (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
        (b"Subject", b" Signing test"),
    ]
    mta.run(headers, b"This is a test!\r\n")
    # A signer wants the whole body: never a SKIP (in Mode sv no body reply at all).
    assert milter.Skip() not in mta.at("body")
    eom = mta.at("eom")
    assert not any(isinstance(a, milter.ChangeHeader) for a in eom)
    [sig] = [a.value for a in eom if isinstance(a, milter.InsertHeader)]
    assert b"d=example.com" in sig and b"s=test" in sig
    # The signature covers the filter's copy: From as rewritten.
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    rewritten = b"From: user@example.com\r\n" + b"".join(
        n + b":" + v + b"\r\n" for n, v in headers[1:]
    )
    message = b"DKIM-Signature:" + sig.replace(b"\n", b"\r\n") + b"\r\n" + rewritten
    message += b"\r\nThis is a test!\r\n"
    assert dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
