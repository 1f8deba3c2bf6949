"""Keys shared by the ARC engine tests (generated once per session)."""

from __future__ import annotations

import pytest
from arc_helpers import record
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.dkim import PrivateKey


@pytest.fixture(scope="session")
def rsa_key() -> PrivateKey:
    return PrivateKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ed_key() -> PrivateKey:
    return PrivateKey(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def records(rsa_key: PrivateKey, ed_key: PrivateKey) -> dict[str, bytes]:
    """hop1..hop3.example publish the RSA key at arc._domainkey, ed.example the Ed25519 one."""
    out = {f"arc._domainkey.hop{n}.example": record(rsa_key) for n in (1, 2, 3)}
    out["arc._domainkey.hop.example"] = record(rsa_key)
    out["arc._domainkey.ed.example"] = record(ed_key)
    return out
