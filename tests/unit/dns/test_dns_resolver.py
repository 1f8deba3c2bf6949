"""DnsResolver against a local authoritative server (support.fakedns): never real DNS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import dns.rcode
import pytest

from dkimd.dns.base import TxtLookup, TxtResult, TxtStatus
from dkimd.dns.resolver import DnsResolver, parse_nameservers
from support.fakedns import FakeDns


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[FakeDns]:
    with FakeDns() as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(server: FakeDns, clock: Clock | None = None, **kw: object) -> DnsResolver:
    kw.setdefault("timeout", 2.0)
    return DnsResolver(["127.0.0.1"], port=server.port, clock=clock or time.monotonic, **kw)  # type: ignore[arg-type]


def lookup(resolver: DnsResolver, name: str) -> TxtResult:
    return asyncio.run(resolver.lookup_txt(name))


def test_is_a_txt_lookup(server: FakeDns) -> None:
    resolver: TxtLookup = make(server)
    assert hasattr(resolver, "lookup_txt")


def test_ok_single_record(server: FakeDns) -> None:
    server.txt("sel._domainkey.example.com", "v=DKIM1; k=rsa; p=AAAA")
    r = lookup(make(server), "sel._domainkey.example.com")
    assert r == TxtResult("sel._domainkey.example.com", TxtStatus.OK, (b"v=DKIM1; k=rsa; p=AAAA",))
    assert r.ok and not r.status.is_temporary


def test_character_strings_are_joined_without_separator(server: FakeDns) -> None:
    server.txt("split.example", [b"v=DKIM1; ", b"p=abc", b"def"])
    assert lookup(make(server), "split.example").records == (b"v=DKIM1; p=abcdef",)


def test_several_records_are_kept_apart(server: FakeDns) -> None:
    server.txt("multi.example", "v=DKIM1; p=one", "v=DKIM1; p=two", "unrelated")
    r = lookup(make(server), "multi.example")
    assert r.status is TxtStatus.OK
    assert sorted(r.records) == [b"unrelated", b"v=DKIM1; p=one", b"v=DKIM1; p=two"]


def test_huge_record_over_tcp_fallback(server: FakeDns) -> None:
    big = b"v=DKIM1; p=" + b"A" * 10240
    server.txt("big.example", big)
    r = lookup(make(server), "big.example")
    assert r.status is TxtStatus.OK
    assert r.records == (big,)


def test_non_utf8_bytes_survive(server: FakeDns) -> None:
    server.txt("bin.example", [b"v=DKIM1; p=\xff\xfe\x00\x80"])
    assert lookup(make(server), "bin.example").records == (b"v=DKIM1; p=\xff\xfe\x00\x80",)


def test_nxdomain(server: FakeDns) -> None:
    r = lookup(make(server), "nothing.example")
    assert r.status is TxtStatus.NXDOMAIN
    assert r.records == ()
    assert not r.status.is_temporary


def test_nodata_is_nxdomain(server: FakeDns) -> None:
    server.nodata("empty.example")
    assert lookup(make(server), "empty.example").status is TxtStatus.NXDOMAIN


def test_servfail(server: FakeDns) -> None:
    server.rcode("broken.example", dns.rcode.SERVFAIL)
    r = lookup(make(server), "broken.example")
    assert r.status is TxtStatus.SERVFAIL
    assert r.status.is_temporary
    assert "SERVFAIL" in r.detail


def test_refused_is_error(server: FakeDns) -> None:
    server.rcode("refused.example", dns.rcode.REFUSED)
    r = lookup(make(server), "refused.example")
    assert r.status is TxtStatus.ERROR
    assert "REFUSED" in r.detail


def test_timeout(server: FakeDns) -> None:
    server.drop("blackhole.example")
    t0 = time.monotonic()
    r = lookup(make(server, timeout=0.4), "blackhole.example")
    elapsed = time.monotonic() - t0
    assert r.status is TxtStatus.TIMEOUT
    assert r.status.is_temporary
    assert 0.3 < elapsed < 2.0


def test_slow_answer_within_timeout_is_ok(server: FakeDns) -> None:
    server.txt("slow.example", "v=DKIM1; p=x")
    server.delay("slow.example", 0.2)
    assert lookup(make(server, timeout=2.0), "slow.example").records == (b"v=DKIM1; p=x",)


def test_unreachable_server_is_temporary() -> None:
    # nothing listens on this UDP port: ICMP port unreachable or silence, never OK
    with FakeDns() as s:
        port = s.port
    r = asyncio.run(DnsResolver(["127.0.0.1"], port=port, timeout=0.5).lookup_txt("x.example"))
    assert r.status in (TxtStatus.SERVFAIL, TxtStatus.TIMEOUT)


def test_cname_chain_is_followed(server: FakeDns) -> None:
    server.cname("alias.example", "middle.example")
    server.cname("middle.example", "target.example")
    server.txt("target.example", "v=DKIM1; p=t")
    assert lookup(make(server), "alias.example").records == (b"v=DKIM1; p=t",)


def test_cname_loop_is_error(server: FakeDns) -> None:
    server.cname("loop1.example", "loop2.example")
    server.cname("loop2.example", "loop1.example")
    r = lookup(make(server), "loop1.example")
    assert r.status is TxtStatus.ERROR
    assert "Chain" in r.detail or "chain" in r.detail


def test_cname_to_nothing_is_nxdomain(server: FakeDns) -> None:
    server.cname("dangling.example", "void.example")
    assert lookup(make(server), "dangling.example").status is TxtStatus.NXDOMAIN


def test_garbage_reply_does_not_crash(server: FakeDns) -> None:
    server.garbage("junk.example", b"\x00\x01garbage")
    r = lookup(make(server, timeout=0.5), "junk.example")
    assert not r.ok
    assert r.status in (TxtStatus.ERROR, TxtStatus.TIMEOUT)


@pytest.mark.parametrize("name", ["", ".", "a" * 64 + ".example", ("a" * 60 + ".") * 5 + "example"])
def test_bad_names_are_errors_without_a_query(server: FakeDns, name: str) -> None:
    resolver = make(server)
    r = lookup(resolver, name)
    assert r.status is TxtStatus.ERROR
    assert resolver.queries == 0


def test_result_name_echoes_the_caller(server: FakeDns) -> None:
    server.txt("case.example", "v=DKIM1; p=x")
    resolver = make(server)
    assert lookup(resolver, "Case.Example.").name == "Case.Example."
    assert lookup(resolver, "case.example").name == "case.example"
    assert server.count("case.example") == 1  # one cache entry for both spellings


# ---- cache --------------------------------------------------------------------------------


def test_positive_answer_cached_for_its_ttl(server: FakeDns, clock: Clock) -> None:
    server.txt("ttl.example", "v=DKIM1; p=1", ttl=100)
    resolver = make(server, clock)
    assert lookup(resolver, "ttl.example").ok
    clock.now += 99
    assert lookup(resolver, "ttl.example").ok
    assert server.count("ttl.example") == 1
    server.txt("ttl.example", "v=DKIM1; p=2", ttl=100)
    clock.now += 2
    assert lookup(resolver, "ttl.example").records == (b"v=DKIM1; p=2",)
    assert server.count("ttl.example") == 2


def test_positive_ttl_is_minimum_over_the_cname_chain(server: FakeDns, clock: Clock) -> None:
    server.cname("short.example", "long.example", ttl=10)
    server.txt("long.example", "v=DKIM1; p=1", ttl=1000)
    resolver = make(server, clock)
    assert lookup(resolver, "short.example").ok
    clock.now += 9
    assert lookup(resolver, "short.example").ok
    assert server.count("short.example") == 1
    clock.now += 2
    assert lookup(resolver, "short.example").ok
    assert server.count("short.example") == 2


def test_max_ttl_caps_the_cache_lifetime(server: FakeDns, clock: Clock) -> None:
    server.txt("forever.example", "x", ttl=10**6)
    resolver = make(server, clock, max_ttl=50)
    lookup(resolver, "forever.example")
    clock.now += 51
    lookup(resolver, "forever.example")
    assert server.count("forever.example") == 2


def test_zero_ttl_is_not_cached(server: FakeDns, clock: Clock) -> None:
    server.txt("zero.example", "x", ttl=0)
    resolver = make(server, clock)
    lookup(resolver, "zero.example")
    lookup(resolver, "zero.example")
    assert server.count("zero.example") == 2


def test_negative_answer_cached_per_soa_minimum(server: FakeDns, clock: Clock) -> None:
    server.nxdomain("neg.example", soa=(30, 20))  # min(ttl 30, minimum 20) = 20 s
    resolver = make(server, clock)
    assert lookup(resolver, "neg.example").status is TxtStatus.NXDOMAIN
    clock.now += 19
    assert lookup(resolver, "neg.example").status is TxtStatus.NXDOMAIN
    assert server.count("neg.example") == 1
    clock.now += 2
    lookup(resolver, "neg.example")
    assert server.count("neg.example") == 2


def test_nodata_cached_per_soa(server: FakeDns, clock: Clock) -> None:
    server.nodata("nodata.example", soa=(5, 3600))  # SOA TTL 5 is the smaller
    resolver = make(server, clock)
    lookup(resolver, "nodata.example")
    clock.now += 4
    lookup(resolver, "nodata.example")
    assert server.count("nodata.example") == 1
    clock.now += 2
    lookup(resolver, "nodata.example")
    assert server.count("nodata.example") == 2


def test_negative_answer_without_soa_uses_default(server: FakeDns, clock: Clock) -> None:
    resolver = make(server, clock, negative_ttl=60)
    lookup(resolver, "nosoa.example")
    clock.now += 59
    lookup(resolver, "nosoa.example")
    assert server.count("nosoa.example") == 1
    clock.now += 2
    lookup(resolver, "nosoa.example")
    assert server.count("nosoa.example") == 2


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_failures_are_not_cached(server: FakeDns, clock: Clock, rcode: int) -> None:
    server.rcode("fail.example", rcode)
    resolver = make(server, clock)
    assert not lookup(resolver, "fail.example").ok
    assert not lookup(resolver, "fail.example").ok
    assert server.count("fail.example") == 2
    assert len(resolver) == 0


def test_timeouts_are_not_cached(server: FakeDns, clock: Clock) -> None:
    server.drop("slowpoke.example")
    resolver = make(server, clock, timeout=0.3)
    assert lookup(resolver, "slowpoke.example").status is TxtStatus.TIMEOUT
    assert len(resolver) == 0


def test_cache_is_lru_bounded(server: FakeDns, clock: Clock) -> None:
    for n in "abc":
        server.txt(f"{n}.example", n)
    resolver = make(server, clock, cache_size=2)
    lookup(resolver, "a.example")
    lookup(resolver, "b.example")
    lookup(resolver, "a.example")  # a is now the most recently used
    lookup(resolver, "c.example")  # evicts b
    assert len(resolver) == 2
    lookup(resolver, "a.example")
    assert server.count("a.example") == 1
    lookup(resolver, "b.example")
    assert server.count("b.example") == 2


def test_cache_size_zero_disables_caching(server: FakeDns, clock: Clock) -> None:
    server.txt("nocache.example", "x")
    resolver = make(server, clock, cache_size=0)
    lookup(resolver, "nocache.example")
    lookup(resolver, "nocache.example")
    assert server.count("nocache.example") == 2


# ---- coalescing ---------------------------------------------------------------------------


def test_concurrent_lookups_share_one_query(server: FakeDns) -> None:
    server.txt("popular.example", "v=DKIM1; p=pop")
    server.delay("popular.example", 0.3)
    resolver = make(server)

    async def main() -> list[TxtResult]:
        return await asyncio.gather(*(resolver.lookup_txt("popular.example") for _ in range(20)))

    results = asyncio.run(main())
    assert server.count("popular.example") == 1
    assert resolver.queries == 1
    assert {r.records for r in results} == {(b"v=DKIM1; p=pop",)}


def test_concurrent_different_names_run_in_parallel(server: FakeDns) -> None:
    for n in range(5):
        server.txt(f"p{n}.example", str(n))
        server.delay(f"p{n}.example", 0.3)
    resolver = make(server)

    async def main() -> list[TxtResult]:
        return await asyncio.gather(*(resolver.lookup_txt(f"p{n}.example") for n in range(5)))

    t0 = time.monotonic()
    results = asyncio.run(main())
    assert time.monotonic() - t0 < 1.2  # not 5 x 0.3 s in a row
    assert [r.records for r in results] == [(str(n).encode(),) for n in range(5)]


def test_cancelled_waiter_does_not_cancel_the_shared_query(server: FakeDns) -> None:
    server.txt("shared.example", "v=DKIM1; p=s")
    server.delay("shared.example", 0.3)
    resolver = make(server)

    async def main() -> TxtResult:
        first = asyncio.create_task(resolver.lookup_txt("shared.example"))
        second = asyncio.create_task(resolver.lookup_txt("shared.example"))
        # Cancel once the shared query is on the wire (the server holds its answer 0.3 s).
        async with asyncio.timeout(5):
            while server.count("shared.example") == 0:
                await asyncio.sleep(0.005)
        first.cancel()
        result = await second
        assert first.cancelled()
        return result

    assert asyncio.run(main()).records == (b"v=DKIM1; p=s",)
    assert server.count("shared.example") == 1


def test_concurrent_failures_are_shared_but_not_cached(server: FakeDns) -> None:
    server.rcode("down.example", dns.rcode.SERVFAIL)
    server.delay("down.example", 0.2)
    resolver = make(server)

    async def main() -> list[TxtResult]:
        return await asyncio.gather(*(resolver.lookup_txt("down.example") for _ in range(5)))

    assert {r.status for r in asyncio.run(main())} == {TxtStatus.SERVFAIL}
    assert server.count("down.example") == 1
    lookup(resolver, "down.example")
    assert server.count("down.example") == 2


# ---- configuration ------------------------------------------------------------------------


def test_parse_nameservers() -> None:
    assert parse_nameservers("192.0.2.1,192.0.2.2") == ["192.0.2.1", "192.0.2.2"]
    assert parse_nameservers(" 192.0.2.1 , 2001:db8::1 ") == ["192.0.2.1", "2001:db8::1"]
    assert parse_nameservers("") == []


def test_explicit_nameservers_override_resolv_conf() -> None:
    resolver = DnsResolver(parse_nameservers("192.0.2.1,192.0.2.2"), timeout=1.0)
    assert resolver.nameservers == ["192.0.2.1", "192.0.2.2"]


def test_default_nameservers_come_from_the_system() -> None:
    resolver = DnsResolver()  # reads /etc/resolv.conf (or falls back to 127.0.0.1); no query sent
    assert resolver.nameservers
