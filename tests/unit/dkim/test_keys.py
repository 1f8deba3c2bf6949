"""Key records (RFC 6376 3.6.1, RFC 8463 4) and private key loading in every format we meet."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim_helpers import DATA, ed_record, rsa_record
from hypothesis import given
from hypothesis import strategies as st

from dkimd.dkim import KeyLoadError, KeyRecordError, load_private_key, load_private_key_file
from dkimd.dkim import parse_key_record as parse


def test_rsa_record(rsa_key: rsa.RSAPrivateKey) -> None:
    rec = parse(rsa_record(rsa_key, " h=sha256; s=email; t=y:s; n=hi there;"))
    assert rec.key_type == "rsa" and rec.key_bits == 2048
    assert rec.hash_algorithms == ("sha256",) and rec.allows_hash("sha256")
    assert not rec.allows_hash("sha1")
    assert rec.allows_email() and rec.testing and rec.strict and not rec.revoked


def test_rsa_record_pkcs1_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    rec = parse(b"k=rsa; p=" + base64.b64encode(der))
    assert rec.key_bits == 2048


def test_ed25519_record_is_raw_32_bytes(ed_key: ed25519.Ed25519PrivateKey) -> None:
    rec = parse(ed_record(ed_key))
    assert rec.key_type == "ed25519" and rec.key_bits == 256
    spki = ed_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyRecordError, match="32 bytes"):
        parse(b"k=ed25519; p=" + base64.b64encode(spki))


def test_defaults_and_revoked() -> None:
    rec = parse("v=DKIM1; p=")
    assert rec.revoked and rec.key_type == "rsa"
    assert rec.service_types == ("*",) and rec.hash_algorithms is None and rec.flags == ()


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("v=DKIM2; p=", "unsupported key record version"),
        ("k=rsa; v=DKIM1; p=", "v= is not the first tag"),
        ("v=DKIM1; k=dsa; p=", "unknown key type k="),
        ("v=DKIM1; k=rsa", "key record has no p="),
        ("v=DKIM1; p=not*base64", "p= is not valid base64"),
        ("v=DKIM1; p=AAAA", "p= is not a valid RSA public key"),
        ("v=DKIM1; k=ed25519; p=AAAA", "ed25519 public key is not 32 bytes"),
        ("v=DKIM1; p=; p=", "key record: duplicate tag 'p'"),
        ("v=DKIM1; p=\x00", "key record: invalid character in value of tag 'p'"),
    ],
)
def test_bad_records(record: str, reason: str) -> None:
    with pytest.raises(KeyRecordError) as info:
        parse(record)
    assert info.value.reason == reason


@given(st.binary(max_size=300))
def test_arbitrary_records_parse_or_raise_key_record_error(data: bytes) -> None:
    try:
        parse(data)
    except KeyRecordError as exc:
        assert exc.reason


# --- private keys ---


def _pem(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, fmt: serialization.PrivateFormat
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def test_rsa_pkcs1_and_pkcs8(rsa_key: rsa.RSAPrivateKey) -> None:
    pkcs1 = _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    pkcs8 = _pem(rsa_key, serialization.PrivateFormat.PKCS8)
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert pkcs8.startswith(b"-----BEGIN PRIVATE KEY-----")
    for data in (pkcs1, pkcs8):
        key = load_private_key(data)
        assert (key.key_type, key.bits, key.algorithm) == ("rsa", 2048, "rsa-sha256")
        assert key.matches(parse(rsa_record(rsa_key)))
    der = rsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert load_private_key(der).bits == 2048
    assert load_private_key(base64.b64encode(der)).bits == 2048


def test_ed25519_pem_and_raw_seed(ed_key: ed25519.Ed25519PrivateKey) -> None:
    pem = _pem(ed_key, serialization.PrivateFormat.PKCS8)
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    for data in (pem, base64.b64encode(seed) + b"\n", base64.b64encode(seed + pub)):
        key = load_private_key(data)
        assert (key.key_type, key.algorithm) == ("ed25519", "ed25519-sha256")
        assert key.dns_public_key() == pub
        assert key.matches(parse(ed_record(ed_key)))
    with pytest.raises(KeyLoadError, match="public half"):
        load_private_key(base64.b64encode(seed + bytes(32)))


def test_base64_seed_starting_with_zero_is_not_taken_for_der() -> None:
    """0x30 opens DER and is also "0": a seed whose base64 starts with "0" (first byte
    0xd0-0xd3, one seed in 64) loads, as a bare seed and as seed || public key; binary
    that starts with 0x30 and is not a key still fails cleanly."""
    seed = b"\xd0" + bytes(range(1, 32))
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for data in (base64.b64encode(seed), base64.b64encode(seed + pub) + b"\n"):
        assert data[:1] == b"0"
        assert load_private_key(data).dns_public_key() == pub
    with pytest.raises(KeyLoadError, match="could not be decoded"):
        load_private_key(b"\x30\x82\x01\x00\xff\xfe")
    with pytest.raises(KeyLoadError):
        load_private_key(b"0AAAA")  # base64 text, but no key


def test_rfc8463_keys_match_their_records() -> None:
    records = {}
    for line in (DATA / "rfc8463" / "dns.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split(" ", 1)
            records[name.split(".")[0]] = parse(value)
    assert load_private_key_file(DATA / "rfc8463" / "ed25519.seed").matches(records["brisbane"])
    assert load_private_key_file(DATA / "rfc8463" / "rsa.pem").matches(records["test"])


SECRET = base64.b64encode(b"\x30" + b"secret-key-material" * 3)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"-----BEGIN PRIVATE KEY-----\n" + SECRET + b"\n-----END PRIVATE KEY-----\n",
        SECRET,
        b"not a key at all!",
        base64.b64encode(b"x" * 31),
    ],
)
def test_bad_private_keys_never_echo_key_bytes(data: bytes) -> None:
    with pytest.raises(KeyLoadError) as info:
        load_private_key(data)
    text = str(info.value) + repr(info.value)
    assert SECRET.decode() not in text and "secret-key" not in text


def test_key_repr_hides_material(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_pem(rsa_key, serialization.PrivateFormat.PKCS8))
    key = load_private_key_file(path)
    assert repr(key) == "<PrivateKey rsa 2048 bits>"
    with pytest.raises(KeyLoadError, match="cannot read key file"):
        load_private_key_file(tmp_path / "missing.pem")


def test_der_ending_in_whitespace_bytes_loads() -> None:
    """DER is binary: a key whose encoding ends in 0x20 or 0x0a must not be 'stripped'."""
    # Ed25519 PKCS#8 DER ends with the 32 seed bytes; choose seeds ending in whitespace.
    for last in (b" ", b"\n", b"\t\r"):
        seed = bytes(range(32 - len(last))) + last
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        assert der.endswith(last)
        assert load_private_key(der).key_type == "ed25519"
