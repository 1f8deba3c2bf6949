"""Policy decisions: sender extraction, sign/verify choice, and results -> On-* conditions."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd.config import Condition, analyze_config_text, parse_config_text
from dkimd.dkim import DkimResult, HeaderField, SignatureResult, VerifyError
from dkimd.policy import (
    Client,
    Decision,
    MessagePlan,
    SigningPolicy,
    count_fields,
    parse_address,
    sender_address,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b" alice@example.com", "alice@example.com"),
        (b' "Alice, Smith" <alice@Example.COM>', "alice@example.com"),
        (b" Alice (the boss) <alice@example.com.>", "alice@example.com"),
        (b" =?utf-8?q?J=C3=B6rg?= <j@sub.example.net>", "j@sub.example.net"),
        (b" a@example.com, b@example.org", "a@example.com"),
        (b" <a@example.com>\r\n\t(comment)", "a@example.com"),
        (b" undisclosed-recipients:;", None),
        (b" no address here", None),
        (b" <@example.com>", None),
        (b" \xff\xfe@example.com", None),
    ],
)
def test_parse_address(value: bytes, expected: str | None) -> None:
    assert parse_address(value) == expected


def test_field_names_match_by_the_one_rule(tmp_path: Path) -> None:
    """RFC 6376 3.4.2: "From " (WSP before the colon) is a From field, for counting (the 8.15
    multiple-From check) as for finding the sender."""
    headers = [
        HeaderField(b"From", b" a@example.com"),
        HeaderField(b"From ", b" mallory@example.org"),
        HeaderField(b"Subject ", b" hi"),
    ]
    assert count_fields(headers, b"from") == 2
    assert count_fields(headers, b"Subject") == 1
    assert count_fields(headers, b"subject ") == 1
    assert sender_address(headers[1:], ("from",)) == "mallory@example.org"
    assert sender_address([HeaderField(b"SENDER\t", b" s@example.net")], ("Sender",)) == (
        "s@example.net"
    )
    key = _key_file(tmp_path / "mail.private")
    policy = _table_policy(tmp_path, f"k example.com:mail:{key}", "*@example.com k")
    internal = Client("127.0.0.1", "localhost")
    assert policy.plan(internal, headers[:1]).decision is Decision.SIGN
    plan = policy.plan(internal, headers)
    assert plan.decision is Decision.VERIFY and "multiple From" in plan.why


def test_sender_headers_order_decides() -> None:
    headers = [HeaderField(b"Sender", b" s@example.org"), HeaderField(b"From", b" f@example.com")]
    assert sender_address(headers, ("from",)) == "f@example.com"
    assert sender_address(headers, ("sender", "from")) == "s@example.org"
    # No field of the list present: From, as OpenDKIM's mlfi_eoh (observed).
    assert sender_address(headers, ("reply-to",)) == "f@example.com"
    assert sender_address(headers[:1], ("reply-to",)) is None


def _policy(text: str) -> SigningPolicy:
    config = parse_config_text(text)
    return SigningPolicy(config)


def test_verify_only_when_no_keys() -> None:
    policy = _policy("Mode sv\n")
    plan = policy.plan(Client("127.0.0.1", "localhost"), [HeaderField(b"From", b" a@example.com")])
    assert plan.decision is Decision.VERIFY
    assert "no signing keys" in plan.why


def test_mode_s_leaves_external_mail_alone() -> None:
    policy = _policy("Mode s\n")
    plan = policy.plan(Client("192.0.2.1", "x"), [HeaderField(b"From", b" a@example.com")])
    assert plan.decision is Decision.NOTHING


def test_peer_list() -> None:
    policy = _policy("PeerList 192.0.2.0/24\n")
    assert policy.is_peer(Client("192.0.2.9", None))
    assert not policy.is_peer(Client("198.51.100.1", None))
    assert not _policy("").is_peer(Client("192.0.2.9", None))


def _result(
    kind: DkimResult, error: VerifyError | None = None, testing: bool = False
) -> SignatureResult:
    return SignatureResult(kind, error, domain="example.com", selector="s", testing=testing)


@pytest.mark.parametrize(
    ("results", "condition"),
    [
        ([_result(DkimResult.PASS)], None),
        ([_result(DkimResult.FAIL), _result(DkimResult.PASS)], None),
        ([_result(DkimResult.NONE)], Condition.NO_SIGNATURE),
        ([_result(DkimResult.FAIL, VerifyError.BODY_HASH_MISMATCH)], Condition.BAD_SIGNATURE),
        ([_result(DkimResult.PERMERROR, VerifyError.SIGNATURE_SYNTAX)], Condition.BAD_SIGNATURE),
        ([_result(DkimResult.PERMERROR, VerifyError.KEY_NOT_FOUND)], Condition.KEY_NOT_FOUND),
        # Decided by the error, not by words: a parse error reading like a missing key.
        (
            [
                SignatureResult(
                    DkimResult.PERMERROR, VerifyError.SIGNATURE_SYNTAX, "no key for signature"
                )
            ],
            Condition.BAD_SIGNATURE,
        ),
        ([_result(DkimResult.PERMERROR, VerifyError.KEY_QUERY_FAILED)], Condition.BAD_SIGNATURE),
        ([_result(DkimResult.FAIL), _result(DkimResult.TEMPERROR)], Condition.DNS_ERROR),
        ([_result(DkimResult.NEUTRAL, testing=True)], None),
        ([_result(DkimResult.POLICY)], None),
    ],
)
def test_results_to_conditions(results: list[SignatureResult], condition: Condition | None) -> None:
    assert _policy("").condition_for(results) is condition


def test_oversign_default_and_override() -> None:
    assert _policy("").oversign_headers == ("from",)
    assert _policy("OversignHeaders From,Subject\n").oversign_headers == ("from", "subject")


def test_omit_headers_never_drop_from() -> None:
    policy = _policy("OmitHeaders From,Subject\n")
    assert "from" in policy.signed_headers and "subject" not in policy.signed_headers


def _rsa_der() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _key_file(path: Path) -> Path:
    """A fresh 1024-bit RSA key at `path`, mode 0600."""
    path.write_bytes(_rsa_der())
    path.chmod(0o600)
    return path


def _table_policy(tmp_path: Path, key_table: str, signing_table: str) -> SigningPolicy:
    """A policy on a KeyTable and a refile: SigningTable with these lines."""
    (tmp_path / "KeyTable").write_text(key_table + "\n")
    (tmp_path / "SigningTable").write_text(signing_table + "\n")
    return _policy(
        f"Mode sv\nRequireSafeKeys no\nMinimumKeyBits 1024\nKeyTable {tmp_path / 'KeyTable'}\n"
        f"SigningTable refile:{tmp_path / 'SigningTable'}\n"
    )


def test_request_is_made_once_per_key_and_anew_for_a_new_key(tmp_path: Path) -> None:
    key = _key_file(tmp_path / "mail.private")
    policy = _table_policy(
        tmp_path,
        f"mail._domainkey.example.com example.com:mail:{key}",
        "*@example.com mail._domainkey.example.com",
    )
    [first], _ = policy.keys.for_sender("a@example.com")
    [again], _ = policy.keys.for_sender("b@example.com")
    assert again is first  # same entry, same unchanged key file: the same ready request
    assert (first.domain, first.selector) == ("example.com", "mail")
    assert first.signed_headers == policy.signed_headers
    assert first.oversign_headers == policy.oversign_headers
    # A rewritten file (new inode, size or mtime) is a new key and a new request.
    _key_file(tmp_path / "fresh").replace(key)
    [rotated], _ = policy.keys.for_sender("a@example.com")
    assert rotated is not first and rotated.key is not first.key
    [still], _ = policy.keys.for_sender("b@example.com")
    assert still is rotated


def test_plan_carries_the_ready_requests(tmp_path: Path) -> None:
    key = _key_file(tmp_path / "mail.private")
    policy = _table_policy(
        tmp_path,
        f"mail._domainkey.example.com example.com:mail:{key}",
        "*@example.com mail._domainkey.example.com",
    )
    headers = [HeaderField(b"From", b" a@example.com")]
    plan = policy.plan(Client("127.0.0.1", None, authenticated=True), headers)
    assert plan.decision is Decision.SIGN
    assert plan.requests == policy.keys.for_sender("a@example.com")[0]
    assert plan.key_problems == []


def test_bad_selector_is_a_key_problem_not_a_crash(tmp_path: Path) -> None:
    """A KeyTable entry whose selector cannot go into s= cannot sign: a per-message problem
    naming the key, as a missing key file is."""
    key = _key_file(tmp_path / "mail.private")
    policy = _table_policy(tmp_path, f"k example.com:bad..sel:{key}", "*@example.com k")
    requests, [problem] = policy.keys.for_sender("a@example.com")
    assert requests == []
    assert problem.key_name == "k" and problem.condition is Condition.SIGNATURE_ERROR


def test_broken_keytable_entry_starts_and_tempfails_its_senders(tmp_path: Path) -> None:
    """t-sign-rs-tables-bad: a KeyTable line in the wrong shape does not stop OpenDKIM; the
    first line for a name wins, so the good duplicate below it does not help, and a sender
    routed to it is tempfailed at end-of-headers. Other senders still sign."""
    key = _key_file(tmp_path / "mail.private")
    policy = _table_policy(
        tmp_path,
        f"bad\texample.com test {key}\nbad example.com:test:{key}\ngood example.net:s:{key}",
        "*@example.com bad\n*@example.net good\n*@example.org missing",
    )
    assert policy.config.key_table is not None
    assert policy.config.key_table.broken("bad") is not None
    assert policy.config.key_table.get("bad") is None and "bad" in policy.config.key_table
    assert policy.config.key_table.broken("good") is None
    problems = [w for w in policy.config.warnings if w.fails_messages]
    assert [(w.option, w.line) for w in problems] == [("KeyTable", 1), ("SigningTable", 3)]
    internal = Client("127.0.0.1", "localhost")

    def plan(sender: str) -> MessagePlan:
        return policy.plan(internal, [HeaderField(b"From", f" {sender}".encode())])

    broken = plan("user@example.com")
    assert broken.decision is Decision.TEMPFAIL and broken.requests == []
    assert "error loading key 'bad'" in broken.why and broken.notable
    unknown = plan("user@example.org")
    assert unknown.decision is Decision.TEMPFAIL
    assert unknown.why == "signing table references unknown key 'missing'"
    assert plan("user@example.net").decision is Decision.SIGN


def test_any_unusable_key_tempfails_even_with_good_ones(tmp_path: Path) -> None:
    """MultipleSignatures: OpenDKIM's SigningTable walk stops at the first key it cannot
    load and tempfails the message, whatever it found before."""
    key = _key_file(tmp_path / "mail.private")
    (tmp_path / "KeyTable").write_text(f"good example.com:s:{key}\n")
    (tmp_path / "SigningTable").write_text("user@example.com good\nexample.com gone\n")
    policy = _policy(
        f"RequireSafeKeys no\nKeyTable file:{tmp_path / 'KeyTable'}\n"
        f"SigningTable file:{tmp_path / 'SigningTable'}\nMultipleSignatures yes\n"
    )
    header = [HeaderField(b"From", b" user@example.com")]
    assert policy.plan(Client("127.0.0.1", None), header).decision is Decision.TEMPFAIL


@pytest.mark.parametrize(
    ("value", "count"),
    [("True", 2), ("yes", 2), ("1", 2), ("Y", 2), ("False", 1), ("no", 1), ("0", 1)],
)
def test_multiple_signatures_walks_every_lookup_key(tmp_path: Path, value: str, count: int) -> None:
    """t-sign-rs-multiple: `user@domain` then `domain` both hit; with MultipleSignatures
    each hit is a request, in lookup order, signed with its own KeyTable domain."""
    key = _key_file(tmp_path / "mail.private")
    (tmp_path / "keys").write_text(
        f"testkey\t\texample.com:test:{key}\ntestkey2\texample.net:test2:{key}\n"
    )
    (tmp_path / "sign").write_text("user@example.com\ttestkey\nexample.com\t\ttestkey2\n")
    policy = _policy(
        f"RequireSafeKeys no\nKeyTable file:{tmp_path / 'keys'}\n"
        f"SigningTable file:{tmp_path / 'sign'}\nMultipleSignatures {value}\n"
    )
    header = [HeaderField(b"From", b" user@example.com")]
    plan = policy.plan(Client("127.0.0.1", None), header)
    assert plan.decision is Decision.SIGN
    made = [(r.domain, r.selector) for r in plan.requests]
    assert made == [("example.com", "test"), ("example.net", "test2")][:count]


def _single_key_policy(tmp_path: Path, extra: str) -> SigningPolicy:
    key = _key_file(tmp_path / "mail.private")
    return _policy(
        f"RequireSafeKeys no\nDomain example.com,example.net\nSelector test\nKeyFile {key}\n{extra}"
    )


def _plan_for(policy: SigningPolicy, sender: str, recipients: list[str]) -> MessagePlan:
    header = [HeaderField(b"From", f" {sender}".encode())]
    return policy.plan(Client("127.0.0.1", None), header, recipients=recipients)


def test_body_length_db_asks_for_l_per_message(tmp_path: Path) -> None:
    policy = _single_key_policy(tmp_path, "BodyLengthDB csl:*@lists.example.org\n")
    plain = _plan_for(policy, "a@example.com", ["<bob@example.net>"])
    [request] = plain.requests
    assert not request.body_length and not plain.notable
    # the shared request is left alone: the message gets a copy
    listed = _plan_for(policy, "a@example.com", ["<x@example.net>", "<ml@lists.example.org>"])
    [with_l] = listed.requests
    assert with_l.body_length and with_l is not request and not request.body_length
    assert listed.why == "BodyLengthDB matched *@lists.example.org, signing with l= requested"
    assert listed.notable
    assert _plan_for(policy, "a@example.com", []).requests == [request]


def test_request_reports_and_atps_tags(tmp_path: Path) -> None:
    policy = _single_key_policy(
        tmp_path, "RequestReports yes\nATPSDomains example.net\nATPSHashAlgorithm SHA1\n"
    )
    [to_com] = _plan_for(policy, "a@example.com", []).requests
    assert to_com.extension_tags == (("r", "y"),)
    [to_net] = _plan_for(policy, "a@Example.NET", []).requests
    # the From domain is listed: atpsh, atps, then r (OpenDKIM's order)
    assert to_net.extension_tags == (("atpsh", "sha1"), ("atps", "example.net"), ("r", "y"))


def test_maximum_signed_bytes_reaches_every_request(tmp_path: Path) -> None:
    policy = _single_key_policy(tmp_path, "MaximumSignedBytes 10\n")
    [request] = _plan_for(policy, "a@example.com", []).requests
    assert request.max_body_bytes == 10 and request.body_hash_key[2] == 10


def test_unknown_atps_hash_is_refused() -> None:
    report = analyze_config_text("ATPSHashAlgorithm md5\n")
    assert [e.message for e in report.errors] == ['unknown ATPS hash "md5"']
    config = parse_config_text("ATPSHashAlgorithm None\n")
    assert config.atps_hash == "none" and not config.warnings


def test_inline_keytable_key_is_parsed_once(tmp_path: Path) -> None:
    """A KeyTable entry carrying the key itself (base64 DER) gives the same key and request
    message after message, not a fresh parse (and a kept copy) per message."""
    inline = base64.b64encode(_rsa_der()).decode()
    policy = _table_policy(tmp_path, f"k example.com:mail:{inline}", "*@example.com k")
    [first], _ = policy.keys.for_sender("a@example.com")
    [again], _ = policy.keys.for_sender("a@example.com")
    assert again is first


def test_percent_path_keys_of_two_domains_are_kept_apart(tmp_path: Path) -> None:
    """`%` only in the key path: senders of two domains share name, d= and s= but not the
    key; alternating between them must not remake (and pile up) requests."""
    for domain in ("a.example", "b.example"):
        _key_file(tmp_path / f"{domain}.private")
    policy = _table_policy(tmp_path, f"k example.com:mail:{tmp_path}/%.private", "*@*.example k")
    made = [policy.keys.for_sender(s)[0][0] for s in ["x@a.example", "x@b.example"] * 3]
    assert made[0].key is not made[1].key
    assert all(k is made[0] for k in made[0::2])
    assert all(k is made[1] for k in made[1::2])


def test_overlong_sender_address_is_answered_but_not_remembered(tmp_path: Path) -> None:
    """What the tables say is remembered per address, but not for an address longer than
    any valid one: a ~100 KB From field must not be kept (4096 of them would be 400 MB)."""
    key = _key_file(tmp_path / "mail.private")
    policy = _policy(
        f"Mode sv\nRequireSafeKeys no\nMinimumKeyBits 1024\nDomain example.com\n"
        f"Selector mail\nKeyFile {key}\n"
    )
    routes = policy.keys._routes
    [short], _ = policy.keys.for_sender("a@example.com")
    assert "a@example.com" in routes
    long_sender = "x" * 100_000 + "@example.com"
    [signing], _ = policy.keys.for_sender(long_sender)
    assert signing is short  # answered as any other sender of the domain
    assert long_sender not in routes


def _ed25519_pem(path: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def test_keytable_fourth_field_names_the_algorithm(tmp_path: Path) -> None:
    """OpenDKIM's development branch: `domain:selector:key:algorithm`, one RSA and one
    Ed25519 signature per message from two KeyTable lines and MultipleSignatures."""
    rsa_key = _key_file(tmp_path / "rsa.private")
    ed_key = _ed25519_pem(tmp_path / "ed.private")
    (tmp_path / "KeyTable").write_text(
        f"rsa example.com:r2026:{rsa_key}:rsa-sha256\n"
        f"ed example.com:e2026:{ed_key}:ED25519-SHA256\n"
    )
    (tmp_path / "SigningTable").write_text("*@example.com rsa\n*@example.com ed\n")
    policy = _policy(
        f"Mode sv\nRequireSafeKeys no\nMultipleSignatures yes\nKeyTable {tmp_path / 'KeyTable'}\n"
        f"SigningTable refile:{tmp_path / 'SigningTable'}\n"
    )
    requests, problems = policy.keys.for_sender("a@example.com")
    assert problems == []
    assert [(r.selector, r.algorithm) for r in requests] == [
        ("r2026", "rsa-sha256"),
        ("e2026", "ed25519-sha256"),
    ]


def test_keytable_algorithm_that_does_not_fit_the_key_fails_its_senders(tmp_path: Path) -> None:
    rsa_key = _key_file(tmp_path / "rsa.private")
    policy = _table_policy(tmp_path, f"k example.com:s:{rsa_key}:ed25519-sha256", "*@example.com k")
    requests, [problem] = policy.keys.for_sender("a@example.com")
    assert requests == [] and problem.condition is Condition.SIGNATURE_ERROR
    assert "names ed25519-sha256 for a rsa key" in problem.message


def test_keytable_unknown_algorithm_refuses_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "KeyTable").write_text(
        "k example.com:s:/etc/dkimkeys/k.private:rsa-sha512\n"
        "old example.com:t:/etc/dkimkeys/t.private:rsa-sha1\n"
    )
    (tmp_path / "SigningTable").write_text("*@example.com k\n")
    report = analyze_config_text(
        f"KeyTable {tmp_path / 'KeyTable'}\nSigningTable refile:{tmp_path / 'SigningTable'}\n"
    )
    assert [p.message for p in report.errors] == [
        'KeyTable entry "k": unknown signing algorithm "rsa-sha512" '
        "(use rsa-sha256, ed25519-sha256)",
        'KeyTable entry "old": rsa-sha1 signatures are forbidden by RFC 8301 and rejected '
        "by most verifiers",
    ]


def test_sender_headers_fall_back_to_from() -> None:
    """mlfi_eoh: with no field of SenderHeaders present, the sender comes from From, unless
    the list names From itself (found by the differential matrix)."""
    from_only = [HeaderField(b"From", b" Author <user@example.com>")]
    assert sender_address(from_only, ("Sender",)) == "user@example.com"
    with_sender = [HeaderField(b"Sender", b" list@example.org"), *from_only]
    assert sender_address(with_sender, ("Sender",)) == "list@example.org"
    assert sender_address([HeaderField(b"Reply-To", b" r@example.net")], ("Sender",)) is None
