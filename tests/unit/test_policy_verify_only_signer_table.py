"""Mode v with signing tables: OpenDKIM looks an originating sender up whatever the Mode, and
accepts the message untouched when a signer would sign it; anything else is verified
(observed with OpenDKIM 2.11; the differential matrix runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd.config import parse_config_text
from dkimd.dkim import HeaderField
from dkimd.policy import Client, Decision, SigningPolicy


@pytest.fixture
def policy(tmp_path: Path) -> SigningPolicy:
    key = tmp_path / "mail.private"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    (tmp_path / "KeyTable").write_text(f"mail example.com:mail:{key}\n")
    (tmp_path / "SigningTable").write_text("*@example.com mail\n")
    return SigningPolicy(
        parse_config_text(
            f"Mode v\nRequireSafeKeys no\nKeyTable {tmp_path / 'KeyTable'}\n"
            f"SigningTable refile:{tmp_path / 'SigningTable'}\n"
        )
    )


@pytest.mark.parametrize(
    ("client", "sender", "decision"),
    [
        (Client("127.0.0.1", "localhost"), "a@example.com", Decision.NOTHING),
        (Client("127.0.0.1", "localhost"), "a@sub.example.com", Decision.VERIFY),
        (Client("192.0.2.1", "outside"), "a@example.com", Decision.VERIFY),
        (Client("192.0.2.1", "outside", authenticated=True), "a@example.com", Decision.NOTHING),
    ],
)
def test_originating_sender_with_a_signing_match_is_left_alone(
    policy: SigningPolicy, client: Client, sender: str, decision: Decision
) -> None:
    plan = policy.plan(client, [HeaderField(b"From", f" {sender}".encode())])
    assert plan.decision is decision
