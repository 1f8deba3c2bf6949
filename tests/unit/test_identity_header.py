"""IdentityHeader and IdentityHeaderRemove (dkimd.identity_header) through MilterSession.

OpenDKIM's Debian build refuses both names, so there is no binary to compare with: the
expectations are opendkim.conf(5)'s and opendkim.c's (_FFR_IDENTITY_HEADER), and dkimpy
checks that the signatures verify.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.negotiation import filter_options_for
from support.negotiated import Mta

HEADERS = [
    (b"From", b" user@example.com"),
    (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b" Signing test"),
]
BODY = b"hi\r\n"


@pytest.fixture
def signing(tmp_path: Path) -> tuple[str, bytes]:
    """A configuration signing example.com mail from 127.0.0.1, and the key's TXT record."""
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
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    config = f"Mode s\nDomain example.com\nSelector test\nKeyFile {key}\nRequireSafeKeys no\n"
    return config, record


def sign(config: str, headers: list[tuple[bytes, bytes]]) -> Mta:
    mta = Mta(config, "127.0.0.1")
    mta.run(headers, BODY)
    return mta


def signature(mta: Mta) -> bytes:
    [value] = [
        a.value
        for a in mta.at("eom")
        if isinstance(a, milter.InsertHeader) and a.name == b"DKIM-Signature"
    ]
    return value


def verifies(mta: Mta, headers: list[tuple[bytes, bytes]], record: bytes) -> bool:
    kept = list(headers)
    for a in mta.at("eom"):
        if isinstance(a, milter.ChangeHeader) and a.value == b"":
            kept = [h for h in kept if h[0].lower() != a.name.lower()]
    lines = [b"DKIM-Signature:" + signature(mta).replace(b"\n", b"\r\n")]
    lines += [n + b":" + v for n, v in kept]
    message = b"\r\n".join(lines) + b"\r\n\r\n" + BODY
    return bool(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))


def test_identity_from_the_named_field(signing: tuple[str, bytes]) -> None:
    config, record = signing
    headers = [*HEADERS, (b"X-Identity", b" Sales <sales@mail.example.com>")]
    mta = sign(config + "IdentityHeader x-identity\nSignHeaders *,+X-Identity\n", headers)
    assert b"i=sales@mail.example.com;" in signature(mta)
    assert b"x-identity" in signature(mta).lower()  # signed, as SignHeaders asks
    assert not any(isinstance(a, milter.ChangeHeader) for a in mta.at("eom"))
    assert verifies(mta, headers, record)


def test_missing_field_gives_the_author_domain(
    signing: tuple[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    config, _ = signing
    with caplog.at_level(logging.INFO):
        mta = sign(config + "IdentityHeader X-Identity\n", HEADERS)
    assert b"i=@example.com;" in signature(mta)
    assert "cannot find identity header X-Identity" in caplog.text


def test_identity_outside_the_signing_domain_is_left_out(signing: tuple[str, bytes]) -> None:
    config, record = signing
    headers = [*HEADERS, (b"X-Identity", b" someone@example.org")]
    mta = sign(config + "IdentityHeader X-Identity\n", headers)
    assert b"i=" not in signature(mta)
    assert verifies(mta, headers, record)


def test_remove_leaves_the_field_unsigned_and_deletes_it(signing: tuple[str, bytes]) -> None:
    config, record = signing
    headers = [*HEADERS, (b"X-Identity", b" sales@example.com")]
    remove = "IdentityHeader X-Identity\nIdentityHeaderRemove yes\nSignHeaders *,+X-Identity\n"
    mta = sign(config + remove, headers)
    sig = signature(mta)
    assert b"i=sales@example.com;" in sig and b"x-identity" not in sig.lower()
    assert milter.ChangeHeader(1, b"X-Identity", b"") in mta.at("eom")
    assert verifies(mta, headers, record)
    # Without the field there is nothing to delete.
    mta = sign(config + remove, HEADERS)
    assert not any(isinstance(a, milter.ChangeHeader) for a in mta.at("eom"))


def test_remove_needs_the_right_to_change_headers() -> None:
    flag = milter.ActionFlag.CHGHDRS
    config = parse_config_text("KeepAuthResults yes\nIdentityHeader X-Id\n")
    assert flag not in filter_options_for(config).actions
    config = parse_config_text("KeepAuthResults yes\nIdentityHeaderRemove yes\n")
    assert flag in filter_options_for(config).actions
