"""Keys shared by the DKIM engine tests (generated once per session)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
