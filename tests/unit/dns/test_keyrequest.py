"""NeedKeys: key-record lookups as a request (answered now from a cache, performed, failed)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.dns.keyrequest import NeedKeys
from dkimd.server import perform_request

A = "a._domainkey.example.com"
B = "b._domainkey.example.com"


class Lookup:
    """Answers after `delay`; raises for names in `broken`; counts concurrent lookups."""

    def __init__(self, *, delay: float = 0.0, broken: tuple[str, ...] = ()) -> None:
        self.delay = delay
        self.broken = broken
        self.running = 0
        self.most = 0
        self.cache: dict[str, TxtResult] = {}

    async def lookup_txt(self, name: str) -> TxtResult:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if name in self.broken:
            raise RuntimeError(f"bug on {name}")
        return TxtResult(name, TxtStatus.OK, (b"v=DKIM1; p=" + name.encode(),))

    def cached(self, name: str) -> TxtResult | None:
        return self.cache.get(name)


def test_answer_now_only_when_every_name_is_cached() -> None:
    lookup = Lookup()
    request = NeedKeys([A, B], lookup, cached=lookup.cached, timeout=1)
    assert request.answer_now() is None
    lookup.cache[A] = TxtResult(A, TxtStatus.OK, (b"x",))
    assert request.answer_now() is None  # all or nothing: B still needs a lookup
    lookup.cache[B] = TxtResult(B, TxtStatus.NXDOMAIN)
    assert request.answer_now() == {A: lookup.cache[A], B: lookup.cache[B]}
    assert NeedKeys([A], lookup, timeout=1).answer_now() is None  # no cache given


def test_names_are_looked_up_concurrently() -> None:
    lookup = Lookup(delay=0.05)
    answer = asyncio.run(perform_request(NeedKeys([A, B], lookup, timeout=5)))
    assert set(answer) == {A, B} and all(r.ok for r in answer.values())
    assert lookup.most == 2


def test_one_failing_name_keeps_the_others_answers(caplog: pytest.LogCaptureFixture) -> None:
    lookup = Lookup(broken=(B,))
    with caplog.at_level(logging.ERROR, logger="dkimd.dns"):
        answer = asyncio.run(perform_request(NeedKeys([A, B], lookup, timeout=5)))
    assert answer[A].ok
    assert answer[B].status is TxtStatus.SERVFAIL and answer[B].status.is_temporary
    assert f"bug on {B}" in caplog.text


def test_timeout_is_a_temporary_failure_for_every_name() -> None:
    lookup = Lookup(delay=30)
    answer = asyncio.run(perform_request(NeedKeys([A, B], lookup, timeout=0.1)))
    assert {r.status for r in answer.values()} == {TxtStatus.TIMEOUT}
    assert all(r.name == n for n, r in answer.items())
