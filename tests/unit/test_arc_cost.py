"""What ARC costs per message, counted through the real milter session (docs/arc.md, "Cost").

Private-key operations are counted by wrapping the real key dkimd loads from its KeyTable:
every signature still comes from that key (dkimpy verifies the results), the wrapper only
counts. RFC 8617 forces two signatures per ARC set (the ARC-Message-Signature and the
ARC-Seal), and the DKIM-Signature is a third over different data, so:

    sign only      1      seal only      2      sign and seal      3

Body passes are counted as body canonicalizers fed; header canonicalization as the relaxed
forms actually worked out (per field value).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_arc_session import chain_of, dkimpy_arc, leaving
from test_session import (
    BODY,
    MESSAGE_HEADERS,
    OUTSIDE,
    Driver,
    FakeKeyTable,
    _signed_headers,
    inserted,
    make_config,
    run,
)

import dkimd.arc.verifier as arc_verifier
import dkimd.dkim.canonicalization as canonicalization
import dkimd.dkim.signature as dkim_signature
import dkimd.signing_keys as signing_keys
from dkimd.arc import ChainState
from dkimd.dkim import HeaderField, PrivateKey, split_message
from dkimd.dns.testdata import TestDnsFile


class CountingKey:
    """The real `cryptography` private key, with its sign() calls counted."""

    def __init__(self, real: Any, counter: collections.Counter[str]) -> None:
        self._real = real
        self._counter = counter

    def sign(self, *args: Any) -> bytes:
        self._counter["sign"] += 1
        return self._real.sign(*args)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Costs:
    def __init__(self) -> None:
        self.signatures: collections.Counter[str] = collections.Counter()
        self.body_hashers: set[int] = set()
        self.relaxed: collections.Counter[bytes] = collections.Counter()

    def reset(self) -> None:
        self.signatures.clear()
        self.body_hashers.clear()
        self.relaxed.clear()


@pytest.fixture
def costs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Costs]:
    c = Costs()
    load = signing_keys.load_private_key

    def counting_load(data: bytes, password: bytes | None = None) -> PrivateKey:
        key = load(data, password)
        key._key = CountingKey(key._key, c.signatures)  # type: ignore[assignment]
        return key

    monkeypatch.setattr(signing_keys, "load_private_key", counting_load)
    update = canonicalization.BodyCanonicalizer.update

    def counting_update(self: canonicalization.BodyCanonicalizer, chunk: bytes) -> None:
        c.body_hashers.add(id(self))
        update(self, chunk)

    monkeypatch.setattr(canonicalization.BodyCanonicalizer, "update", counting_update)
    canonicalize = canonicalization.canonicalize_header

    def counting_canonicalize(field: HeaderField, canon: str, *, crlf: bool = True) -> bytes:
        if canon == "relaxed" and field.relaxed is None:  # worked out now, not remembered
            c.relaxed[field.raw] += 1
        return canonicalize(field, canon, crlf=crlf)

    # Every caller of the header canonicalization: DKIM signer and verifier, AMS, ARC-Seal.
    monkeypatch.setattr(dkim_signature, "canonicalize_header", counting_canonicalize)
    monkeypatch.setattr(arc_verifier, "canonicalize_header", counting_canonicalize)
    yield c


@pytest.fixture
def keys(tmp_path: Path) -> FakeKeyTable:
    return FakeKeyTable(tmp_path)


def send(
    tmp_path: Path,
    keys: FakeKeyTable,
    costs: Costs,
    extra: str,
    *,
    internal: bool,
    signing_key: str = "mail",
) -> tuple[list[tuple[bytes, bytes]], list[Any]]:
    text = make_config(tmp_path, keys, extra)
    (tmp_path / "SigningTable").write_text(f"*@example.com {signing_key}._domainkey.example.com\n")
    d = Driver(text, TestDnsFile.from_records(keys.records))
    headers = MESSAGE_HEADERS if internal else _signed_headers(keys, BODY)
    costs.reset()  # the test's own signing of the incoming message is not dkimd's cost
    if internal:
        actions = run(d.message(headers, BODY))
    else:
        actions = run(d.message(headers, BODY, client=OUTSIDE))
    return list(headers), actions


def test_sign_only_costs_one_signature(tmp_path: Path, keys: FakeKeyTable, costs: Costs) -> None:
    _, actions = send(tmp_path, keys, costs, "", internal=True)
    assert len(inserted(actions, b"DKIM-Signature")) == 1
    assert costs.signatures["sign"] == 1
    assert len(costs.body_hashers) == 1


def test_seal_only_costs_two(tmp_path: Path, keys: FakeKeyTable, costs: Costs) -> None:
    """Mail dkimd verifies and seals: AMS + AS, and the AMS takes the body hash the DKIM
    verifier computes anyway."""
    extra = "ArcMode s\nArcKey mail._domainkey.example.com\n"
    headers, actions = send(tmp_path, keys, costs, extra, internal=False)
    assert inserted(actions, b"DKIM-Signature") == []
    assert len(inserted(actions, b"ARC-Seal")) == 1
    assert costs.signatures["sign"] == 2
    assert len(costs.body_hashers) == 1
    assert dkimpy_arc(leaving(headers, BODY, actions), keys) == b"pass"


@pytest.mark.parametrize("canonicalization", ["relaxed/relaxed", "simple/simple", "relaxed/simple"])
@pytest.mark.parametrize("key", ["mail", "ed"])
def test_sign_and_seal_cost_three_and_one_body_pass(
    tmp_path: Path, keys: FakeKeyTable, costs: Costs, canonicalization: str, key: str
) -> None:
    """One DKIM signature, one AMS, one AS: RFC 8617's minimum. One body pass whatever the
    DKIM canonicalization (the AMS uses the signer's body canonicalization), and no header
    field's relaxed form worked out twice though the DKIM-Signature and the AMS both sign
    From, To, Subject, Date."""
    extra = f"ArcMode s\nCanonicalization {canonicalization}\n"
    headers, actions = send(tmp_path, keys, costs, extra, internal=True, signing_key=key)
    assert len(inserted(actions, b"DKIM-Signature")) == 1
    [ams] = inserted(actions, b"ARC-Message-Signature")
    assert costs.signatures["sign"] == 3
    assert len(costs.body_hashers) == 1
    body_canon = canonicalization.split("/")[1]
    assert f"c=relaxed/{body_canon}".encode() in ams
    assert costs.relaxed and [v for v, n in costs.relaxed.items() if n > 1] == []
    message = leaving(headers, BODY, actions)
    assert chain_of(message, keys) is ChainState.PASS
    if key == "mail":  # dkimpy's arc_verify: "unknown signature algorithm: b'ed25519-sha256'"
        assert dkimpy_arc(message, keys) == b"pass"


def test_a_chain_is_canonicalized_once(tmp_path: Path, keys: FakeKeyTable, costs: Costs) -> None:
    """Verifying three seals hashes set 1 three times, and the new seal a fourth: its
    fields' relaxed forms are still worked out once each."""
    extra = "ArcMode sv\nArcKey mail._domainkey.example.com\n"
    headers: list[tuple[bytes, bytes]] = _signed_headers(keys, BODY)
    for _ in range(3):
        d = Driver(make_config(tmp_path, keys, extra), TestDnsFile.from_records(keys.records))
        costs.reset()
        actions = run(d.message(headers, BODY, client=OUTSIDE))
        message = leaving(headers, BODY, actions)
        headers = [(h.name, h.value) for h in split_message(message)[0]]
    assert [s for s in inserted(actions, b"ARC-Seal") if b"i=3;" in s]
    assert costs.signatures["sign"] == 2
    assert costs.relaxed and [v for v, n in costs.relaxed.items() if n > 1] == []
    assert dkimpy_arc(message, keys) == b"pass"
