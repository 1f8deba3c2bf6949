"""ResignMailTo and ResignAll (dkimd.resign) through MilterSession.

OpenDKIM's Debian build refuses both names (no _FFR_RESIGN), so there is no binary to
compare with: the expectations are opendkim.conf(5)'s and opendkim.c's, and dkimpy checks
the signatures dkimd adds.
"""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.negotiation import filter_options_for
from dkimd.resign import resign_hit
from support.negotiated import Mta
from support.signed import Fields, signed_message

HEADERS = [
    (b"From", b" user@example.com"),
    (b"Date", b" Tue, 22 Dec 2009 13:04:12 -0800"),
    (b"Subject", b" Signing test"),
]
BODY = b"This is a test!\r\n"
OUTSIDE = "198.51.100.7"


@pytest.fixture(scope="module")
def incoming() -> tuple[Fields, dict[str, str]]:
    """A message signed elsewhere (s=test), and its key record."""
    return signed_message(HEADERS, BODY)


@pytest.fixture
def resigner(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A single-key configuration (s=resign) that re-signs mail to example.net, and the
    record of its key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key = tmp_path / "resign.private"
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
    config = (
        f"Mode sv\nDomain example.org\nSelector resign\nKeyFile {key}\nRequireSafeKeys no\n"
        "ResignMailTo csl:.example.net\n"
    )
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
    return config, {"resign._domainkey.example.com": record}


def added(mta: Mta, name: bytes) -> list[bytes]:
    return [a.value for a in mta.at("eom") if isinstance(a, milter.InsertHeader) and a.name == name]


def delivered(mta: Mta, headers: Fields, body: bytes) -> bytes:
    """The message as the MTA would pass it on: the inserted fields on top."""
    top = [a for a in mta.at("eom") if isinstance(a, milter.InsertHeader)]
    fields = [(a.name, a.value) for a in reversed(top)] + list(headers)
    lines = [n + b":" + v.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for n, v in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def run(config: str, records: dict[str, str], headers: Fields, body: bytes = BODY) -> Mta:
    mta = Mta(config, OUTSIDE, records=records, recipients=["<bob@mail.example.net>"])
    mta.run(headers, body)
    return mta


def test_verified_mail_is_signed_again(
    incoming: tuple[Fields, dict[str, str]], resigner: tuple[str, dict[str, str]]
) -> None:
    headers, records = incoming
    config, ours = resigner
    mta = run(config, records, headers)
    [ar] = added(mta, b"Authentication-Results")
    assert b"dkim=pass" in ar
    [sig] = added(mta, b"DKIM-Signature")
    assert b"d=example.com" in sig and b"s=resign" in sig
    assert mta.final() == milter.Accept()
    message = delivered(mta, headers, BODY)
    everything = {**records, **ours}

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        value = everything.get(name.decode().rstrip("."))
        return value.encode() if value else None

    # Both signatures verify on the message as delivered: ours (on top) and the original.
    assert dkim.verify(message, dnsfunc=dns)
    assert dkim.DKIM(message).verify(idx=1, dnsfunc=dns)


def test_failed_mail_is_signed_again_only_with_resign_all(
    incoming: tuple[Fields, dict[str, str]], resigner: tuple[str, dict[str, str]]
) -> None:
    headers, records = incoming
    config, _ = resigner
    mta = run(config, records, headers, b"changed\r\n")
    assert b"dkim=fail" in added(mta, b"Authentication-Results")[0]
    assert added(mta, b"DKIM-Signature") == []
    mta = run(config + "ResignAll yes\n", records, headers, b"changed\r\n")
    assert len(added(mta, b"DKIM-Signature")) == 1


def test_unsigned_mail_to_a_listed_recipient_is_signed(
    resigner: tuple[str, dict[str, str]],
) -> None:
    config, _ = resigner
    mta = run(config, {}, HEADERS)
    assert len(added(mta, b"DKIM-Signature")) == 1
    assert added(mta, b"Authentication-Results") == []
    # Not listed: verified as any outside mail, nothing signed.
    mta = Mta(config, OUTSIDE, recipients=["<bob@example.org>"])
    mta.run(HEADERS, BODY)
    assert added(mta, b"DKIM-Signature") == []


def test_lookup_order() -> None:
    config = parse_config_text("ResignMailTo csl:a@x.example,y.example,.z.example\n")
    hit = resign_hit(config, ["a@x.example"])
    assert hit is not None and hit.recipient == "a@x.example" and hit.key_name == ""
    assert resign_hit(config, ["b@y.example"]) is not None
    assert resign_hit(config, ["b@mail.z.example"]) is not None
    assert resign_hit(config, ["b@z.example", "b@x.example"]) is None
    # Newest recipient first (OpenDKIM's list is built by prepending).
    both = resign_hit(config, ["b@y.example", "c@mail.z.example"])
    assert both is not None and both.recipient == "c@mail.z.example"


def test_key_table_key_named_by_the_value(tmp_path: Path) -> None:
    key = tmp_path / "k.private"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    (tmp_path / "keys").write_text(f"rk example.net:rs:{key}\n")
    (tmp_path / "sign").write_text("*@example.com rk\n")
    base = (
        f"Mode sv\nKeyTable file:{tmp_path / 'keys'}\nSigningTable refile:{tmp_path / 'sign'}\n"
        "RequireSafeKeys no\n"
    )
    mta = run(base + "ResignMailTo csl:.example.net=rk\n", {}, HEADERS)
    [sig] = added(mta, b"DKIM-Signature")
    assert b"d=example.net" in sig and b"s=rs" in sig
    # A key the KeyTable lacks tempfails at end of headers.
    mta = run(base + "ResignMailTo csl:.example.net=missing\n", {}, HEADERS)
    assert mta.at("eoh") == [milter.TempFail()]


def test_mode_without_signing_accepts_at_end_of_headers() -> None:
    config = "Mode v\nResignMailTo csl:example.net\n"
    mta = Mta(config, OUTSIDE, recipients=["<bob@example.net>"])
    mta.run(HEADERS, BODY)
    assert mta.at("eoh") == [milter.Accept()]
    options = filter_options_for(parse_config_text(config))
    assert milter.ProtocolFlag.NORCPT not in options.protocol
