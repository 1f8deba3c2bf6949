"""DNSConnect, ResolverTracing, QueryCache and ResolverConfiguration (dkimd.dns.options):
read from opendkim.conf, applied to the resolver, against a local server (support.fakedns)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd import daemon
from dkimd.config import parse_config_text
from dkimd.daemon import DaemonOptions, StartupError, make_resolver
from dkimd.dns.options import ResolverConfigError, ResolverOptions, build_resolver
from dkimd.dns.resolver import DnsResolver
from dkimd.dns.unbound_conf import UnboundConfError, read_unbound_conf
from support.fakedns import FakeDns


@pytest.fixture
def server() -> Iterator[FakeDns]:
    with FakeDns() as s:
        s.txt("sel._domainkey.example.com", "v=DKIM1; p=AAAA")
        yield s


def _resolver(server: FakeDns, options: ResolverOptions) -> DnsResolver:
    return build_resolver([f"127.0.0.1:{server.port}"], 2.0, options)


def _twice(resolver: DnsResolver) -> None:
    async def go() -> None:
        for _ in range(2):
            assert (await resolver.lookup_txt("sel._domainkey.example.com")).ok

    asyncio.run(go())


def test_options_are_read_from_the_config(tmp_path: Path) -> None:
    assert parse_config_text("").resolver == ResolverOptions()
    conf = tmp_path / "unbound.conf"
    conf.write_text("server:\n")
    config = parse_config_text(
        f"DNSConnect yes\nResolverTracing yes\nQueryCache no\nResolverConfiguration {conf}\n"
    )
    assert config.resolver == ResolverOptions(True, True, False, str(conf))
    assert parse_config_text("QueryCache yes\n").resolver.caches
    assert parse_config_text("").resolver.caches  # not set: dkimd keeps its TTL cache


def test_dnsconnect_asks_over_tcp_from_the_start(server: FakeDns) -> None:
    _twice(_resolver(server, ResolverOptions(tcp=True, query_cache=False)))
    assert server.transports == {"tcp": 2}
    server.transports.clear()
    _twice(_resolver(server, ResolverOptions(query_cache=False)))
    assert server.transports == {"udp": 2}


def test_query_cache(server: FakeDns) -> None:
    cached = _resolver(server, ResolverOptions())
    _twice(cached)
    assert cached.queries == 1 and cached.cached("sel._domainkey.example.com") is not None
    uncached = _resolver(server, ResolverOptions(query_cache=False))
    _twice(uncached)
    assert uncached.queries == 2 and uncached.cached("sel._domainkey.example.com") is None


def test_resolver_tracing_logs_each_query_and_answer(
    server: FakeDns, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dkimd.dns"):
        _twice(_resolver(server, ResolverOptions(tracing=True, query_cache=False)))
        asyncio.run(_resolver(server, ResolverOptions(tracing=True)).lookup_txt("no.example"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("DNS query sel._domainkey.example.com TXT (UDP)") == 2
    assert "DNS answer sel._domainkey.example.com TXT: 'v=DKIM1; p=AAAA' (ttl 300)" in lines
    assert any(line.startswith("DNS answer no.example TXT: nxdomain") for line in lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dkimd.dns"):
        _twice(_resolver(server, ResolverOptions(query_cache=False)))
    assert not caplog.records


def test_unbound_conf_forwarders_and_tcp(tmp_path: Path) -> None:
    extra = tmp_path / "extra.conf"
    extra.write_text("server:\n  tcp-upstream: yes\n")
    conf = tmp_path / "unbound.conf"
    conf.write_text(
        "# opendkim's resolver\n"
        "server:\n"
        '  trust-anchor-file: "/usr/share/dns/root.key"\n'
        "  verbosity: 1\n"
        f"include: {extra}\n"
        "forward-zone:\n"
        '  name: "."\n'
        "  forward-addr: 192.0.2.1\n"
        "  forward-addr: 192.0.2.2@5353  # another port\n"
        "  forward-addr: 2001:db8::1@53#dns.example\n"
        "forward-zone:\n"
        "  name: corp.example\n"
        "  forward-addr: 10.0.0.1\n"
    )
    settings = read_unbound_conf(str(conf))
    assert settings.forwarders == ["192.0.2.1", "192.0.2.2:5353", "[2001:db8::1]:53"]
    assert settings.tcp
    assert settings.ignored == ["trust-anchor-file", "verbosity", "forward-zone corp.example"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("root:x:0:0:root:/root:/bin/bash\n", "unbound.conf:1: root: not inside a clause"),
        ("server:\n  just words\n", "unbound.conf:2: syntax error"),
        ("forward-zone:\n name: .\n forward-addr: dns.example\n", "not an IP address"),
        ("forward-zone:\n forward-addr: 192.0.2.1@99999\n", "bad port"),
        ("forward-zone:\n forward-tls-upstream: yes\n", "DNS over TLS is not supported"),
        ("include: /nonexistent/unbound.conf\n", "/nonexistent/unbound.conf: No such file"),
    ],
)
def test_unbound_conf_errors(tmp_path: Path, text: str, fragment: str) -> None:
    conf = tmp_path / "unbound.conf"
    conf.write_text(text)
    with pytest.raises(UnboundConfError, match=fragment):
        read_unbound_conf(str(conf))


def test_resolver_configuration_gives_the_servers_unless_nameservers_does(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "unbound.conf"
    conf.write_text("forward-zone:\n name: .\n forward-addr: 192.0.2.7\nserver:\n do-udp: no\n")
    options = ResolverOptions(configuration=str(conf))
    from_file = build_resolver([], 5.0, options)
    assert from_file.nameservers == ["192.0.2.7"] and from_file.tcp
    assert build_resolver(["192.0.2.9"], 5.0, options).nameservers == ["192.0.2.9"]


def test_an_unusable_resolver_configuration_stops_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ResolverConfigError, match="failed to add resolver configuration file"):
        build_resolver([], 5.0, ResolverOptions(configuration=str(tmp_path / "none.conf")))
    config = parse_config_text(f"ResolverConfiguration {tmp_path / 'none.conf'}\n")
    with pytest.raises(StartupError) as info:
        make_resolver(config)
    assert info.value.exit_code == 70  # opendkim: EX_SOFTWARE
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nResolverConfiguration {tmp_path / 'none.conf'}\n")
    assert daemon.run(DaemonOptions(str(conf), socket="inet:1@127.0.0.1")) == 70
    assert "can't configure DKIM library" in capsys.readouterr().err
    # opendkim -n returns before it sets the resolver up (observed: rc 0): a warning
    assert daemon.check(DaemonOptions(str(conf))) == 0
    assert "the daemon would not start" in capsys.readouterr().err


def test_query_cache_is_not_reloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # opendkim(8): QueryCache is among the values a reload does not change
    from dkimd.daemon import _Reloader
    from dkimd.session import RuntimeHolder

    conf = tmp_path / "opendkim.conf"
    conf.write_text("Mode v\nQueryCache no\n")
    seen: list[bool | None] = []
    monkeypatch.setattr(
        daemon, "build_runtime", lambda config, run_as: seen.append(config.resolver.query_cache)
    )

    class Current:
        config = parse_config_text("Mode v\n")

    holder = RuntimeHolder(Current())  # type: ignore[arg-type]
    asyncio.run(_Reloader(DaemonOptions(str(conf)), holder, None, query_cache=None).off_loop())
    assert seen == [None]
