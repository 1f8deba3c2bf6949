"""Published ARC test vectors: the ValiMail arc_test_suite (arc-draft-validation-tests.yml),
the suite dkimpy and OpenARC were tested with, two passing i=1 chains signed by an
independent implementation, with their key record (tests/data/arc/README.md)."""

from __future__ import annotations

import asyncio

import pytest
from arc_helpers import DATA, verify

from dkimd.arc import ArcVerifyOptions, ChainState
from dkimd.dns.testdata import TestDnsFile

NOW = 20_000  # the vectors were sealed with t=12345


def records() -> dict[str, bytes]:
    dns = TestDnsFile(DATA / "dns.txt")
    return {n: asyncio.run(dns.lookup_txt(n)).records[0] for n in dns.names}


def load(name: str) -> bytes:
    return (DATA / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.mark.parametrize("name", ["cv_pass_i1_1.eml", "cv_pass_i1_2.eml"])
def test_valimail_passing_chains(name: str) -> None:
    result = verify(load(name), records(), ArcVerifyOptions(now=NOW))
    assert result.state is ChainState.PASS and result.oldest_pass == 0


@pytest.mark.parametrize("name", ["cv_pass_i1_1.eml", "cv_pass_i1_2.eml"])
def test_valimail_chain_tampered_fails(name: str) -> None:
    message = load(name).replace(b"This is a test message", b"This is a test massage")
    result = verify(message, records(), ArcVerifyOptions(now=NOW))
    assert result.state is ChainState.FAIL and "body hash" in result.reason


def test_valimail_timestamps_are_checked() -> None:
    # Sealed at t=12345: a verifier whose clock reads 1970-01-01 sees a future timestamp.
    result = verify(load("cv_pass_i1_1.eml"), records(), ArcVerifyOptions(now=0))
    assert result.state is ChainState.FAIL and "future" in result.reason
