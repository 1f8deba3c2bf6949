"""dkimd.metrics: the no-op recorder, the Prometheus recorder's bounded labels, the options,
the scrape endpoint. (The daemon end to end: tests/e2e/test_metrics_e2e.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dkimd import metrics
from dkimd.cli.check import main as check_main
from dkimd.config import ConfigError, load_config
from dkimd.config.values import Action, Condition
from dkimd.daemon import EX_CONFIG, DaemonOptions, check
from dkimd.dkim.results import DkimResult, SignatureResult
from dkimd.metrics import http as metrics_http
from dkimd.metrics import options as metrics_options
from dkimd.metrics.exporter import MAX_SIGNING_DOMAINS, PrometheusRecorder
from dkimd.milter import Accept, Discard, Reject, ReplyCode, TempFail

# -- off: nothing imported, nothing done ------------------------------------------------------


def test_off_imports_no_prometheus_client() -> None:
    code = (
        "import sys, dkimd.daemon, dkimd.session, dkimd.server, dkimd.dns.resolver;"
        "from dkimd import metrics;"
        "assert type(metrics.recorder) is metrics.Recorder and not metrics.recorder.enabled;"
        "assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_no_op_recorder_has_every_method_of_the_real_one() -> None:
    public = {n for n in vars(PrometheusRecorder) if not n.startswith("_")} - {"enabled"}
    assert public <= set(vars(metrics.Recorder))


# -- the Prometheus recorder --------------------------------------------------------------------


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def result(
    res: DkimResult, domain: str | None = "example.net", algorithm: str | None = "rsa-sha256"
) -> SignatureResult:
    return SignatureResult(res, domain=domain, algorithm=algorithm)


def test_verify_labels_are_bounded_whatever_the_mail_says() -> None:
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset({"example.net"}))
    for n in range(300):  # a flood of random domains and made-up algorithms
        rec.message_verified(0.0, [result(DkimResult.FAIL, f"r{n}.example", f"x-{n}")])
    rec.message_verified(0.0, [result(DkimResult.PASS, "EXAMPLE.NET.")])
    rec.message_verified(0.0, [result(DkimResult.PERMERROR, None, None)])
    assert samples(registry, "dkimd_verify_signatures_total") == {
        (("algorithm", "other"), ("domain", "other"), ("result", "fail")): 300,
        (("algorithm", "rsa-sha256"), ("domain", "example.net"), ("result", "pass")): 1,
        (("algorithm", "none"), ("domain", "other"), ("result", "permerror")): 1,
    }
    # Only bounded keys are remembered.
    assert len(rec._verify_children) == 1


def test_message_result_is_pass_if_any_passed_else_the_first() -> None:
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset())
    rec.message_verified(0.0, [result(DkimResult.FAIL), result(DkimResult.PASS)])
    rec.message_verified(0.0, [result(DkimResult.PERMERROR), result(DkimResult.FAIL)])
    rec.message_verified(0.0, [SignatureResult(DkimResult.NONE)])
    got = {k: v for k, v in samples(registry, "dkimd_verified_messages_total").items() if v}
    assert got == {
        (("result", "pass"),): 1,
        (("result", "permerror"),): 1,
        (("result", "none"),): 1,
    }
    # The unsigned message has no signature to count.
    assert sum(samples(registry, "dkimd_verify_signatures_total").values()) == 4
    assert samples(registry, "dkimd_messages_total")[(("action", "verified"),)] == 3


class _Request:
    def __init__(self, domain: str, algorithm: str) -> None:
        self.domain = domain
        self.algorithm = algorithm


def test_signing_domains_are_capped() -> None:
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset())
    total = MAX_SIGNING_DOMAINS + 50
    for n in range(total):
        rec.message_signed(0.0, [_Request(f"d{n}.example", "rsa-sha256")])  # type: ignore[list-item]
    rec.message_signed(0.0, [_Request("d0.example", "ed25519-sha256")])  # type: ignore[list-item]
    got = samples(registry, "dkimd_signatures_added_total")
    assert len(got) == MAX_SIGNING_DOMAINS + 2  # the cap, then "other" per algorithm
    assert got[(("algorithm", "rsa-sha256"), ("domain", "other"))] == 50
    assert got[(("algorithm", "rsa-sha256"), ("domain", "d0.example"))] == 1
    assert got[(("algorithm", "ed25519-sha256"), ("domain", "other"))] == 1
    assert sum(got.values()) == total + 1


def test_on_actions_reloads_and_dns() -> None:
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset())
    rec.on_action(Condition.DNS_ERROR, Action.TEMPFAIL)
    rec.on_action(Condition.DNS_ERROR, Action.TEMPFAIL)
    rec.on_action(Condition.NO_SIGNATURE, Action.ACCEPT)
    assert samples(registry, "dkimd_on_actions_total") == {
        (("action", "tempfail"), ("condition", "dnserror")): 2,
        (("action", "accept"), ("condition", "nosignature")): 1,
    }
    rec.config_loaded(False, reload=True)
    assert samples(registry, "dkimd_config_last_reload_successful") == {(): 0}
    assert samples(registry, "dkimd_config_reloads_total")[(("result", "failed"),)] == 1
    rec.config_loaded(True, reload=True)
    assert samples(registry, "dkimd_config_last_reload_successful") == {(): 1}
    rec.dns_lookup("timeout", 1.5)
    rec.dns_lookup("not-a-status", 0.1)  # the histogram still counts it
    rec.dns_cache(True)
    rec.dns_cache(False)
    rec.dns_cache(False)
    assert samples(registry, "dkimd_dns_lookups_total")[(("outcome", "timeout"),)] == 1
    assert samples(registry, "dkimd_dns_lookup_duration_seconds_count") == {(): 2}
    assert samples(registry, "dkimd_dns_cache_hits_total") == {(): 1}
    assert samples(registry, "dkimd_dns_cache_misses_total") == {(): 2}
    rec.connection_opened()
    rec.connection_opened()
    rec.connection_closed()
    assert samples(registry, "dkimd_connections_open") == {(): 1}
    assert samples(registry, "dkimd_connections_total") == {(): 2}


def test_messages_stopped_at_end_of_headers_count_by_their_reply() -> None:
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset())
    for final in (Reject(), ReplyCode(550, "5.7.1", "bad"), TempFail(), ReplyCode(451), Accept()):
        rec.message_stopped(final)
    rec.message_stopped(Discard())
    rec.message_stopped(TempFail())
    got = {k: v for k, v in samples(registry, "dkimd_messages_total").items() if v}
    assert got == {
        (("action", "rejected"),): 2,
        (("action", "deferred"),): 3,
        (("action", "unchecked"),): 1,
        (("action", "discarded"),): 1,
    }


def test_a_forked_worker_counts_from_zero_and_leaves_reloads_to_the_supervisor() -> None:
    registry = CollectorRegistry()
    rec = PrometheusRecorder(registry, frozenset())
    rec.key_load_error()  # the supervisor's preload, before the fork
    rec.message_verified(0.0, [result(DkimResult.PASS)])
    rec.worker_forked()
    assert samples(registry, "dkimd_key_load_errors_total") == {(): 0}
    assert samples(registry, "dkimd_message_duration_seconds_count") == {
        (("operation", "sign"),): 0,
        (("operation", "verify"),): 0,
    }
    assert sum(samples(registry, "dkimd_build_info").values()) == 1  # gauges keep their state
    rec.config_loaded(False, reload=True)
    assert sum(samples(registry, "dkimd_config_reloads_total").values()) == 0
    assert samples(registry, "dkimd_config_last_reload_successful") == {(): 0}


def test_muted_counts_nothing_and_gives_the_recorder_back(tmp_path: Path) -> None:
    from dkimd.daemon import make_resolver

    data = tmp_path / "dns.data"
    data.write_text("s._domainkey.example.com v=DKIM1; p=\n")
    config = load_config(str(conf(tmp_path, f"TestDNSData file:{data}")))
    registry = CollectorRegistry()
    real = PrometheusRecorder(registry, frozenset())
    metrics.install(real)
    try:
        with metrics.muted():
            metrics.recorder.key_load_error()
            # Still "on": a resolver built meanwhile (the supervisor's re-read, for the
            # workers it starts later) counts once the recorder is back.
            resolver = make_resolver(config)
        assert metrics.recorder is real
        asyncio.run(resolver.lookup_txt("s._domainkey.example.com"))
    finally:
        metrics.install(metrics.Recorder())
    assert samples(registry, "dkimd_key_load_errors_total") == {(): 0}
    assert samples(registry, "dkimd_dns_lookups_total")[(("outcome", "ok"),)] == 1
    with metrics.muted():
        assert not metrics.recorder.enabled


# -- under a supervisor: plain numbers published to the multiprocess files -------------------


def test_published_counts_sum_as_prometheus_clients_own_across_a_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Publisher writes, summed by the exporter's MultiProcessCollector, renders as
    prometheus_client's own in-memory metrics given every process's updates; a forked
    child (a worker) adds its own counts without the parent's being counted twice."""
    import os

    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.multiprocess import MultiProcessCollector

    from dkimd.metrics.local import LocalCounter, LocalGauge, LocalHistogram, LocalMetrics
    from dkimd.metrics.shared import Publisher

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    buckets = (0.001, 0.01, 0.1, 1, 10)
    theirs = CollectorRegistry()
    local = LocalMetrics(None)
    counter: Any = local.add(LocalCounter("c", "doc", ["a"]))
    gauge: Any = local.add(LocalGauge("g", "doc", (), "livesum"))
    histogram: Any = local.add(LocalHistogram("h_seconds", "doc", ["op"], buckets))
    their_counter = Counter("c", "doc", ["a"], registry=theirs)
    their_gauge = Gauge("g", "doc", registry=theirs)
    their_histogram = Histogram("h_seconds", "doc", ["op"], registry=theirs, buckets=buckets)
    publisher = Publisher(local)

    def update(c: Any, g: Any, h: Any, amounts: tuple[float, ...]) -> None:
        c.labels("x").inc()
        c.labels("y").inc(2)
        g.inc()
        for v in amounts:
            h.labels("sign").observe(v)

    update(counter, gauge, histogram, (0.0005, 0.001, 5, 11))
    publisher.publish()
    update(counter, gauge, histogram, (0.1,))  # changed since: written again
    publisher.publish()
    pid = os.fork()
    if pid == 0:  # a worker: counts from zero, into files of its own
        code = 1
        try:
            for family in local.families:
                family.reset()
            gauge.set(0)
            update(counter, gauge, histogram, (0.02,))
            publisher.publish()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for amounts in ((0.0005, 0.001, 5, 11), (0.1,), (0.02,)):
        update(their_counter, their_gauge, their_histogram, amounts)

    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=str(tmp_path))  # type: ignore[no-untyped-call]

    def rendered(registry: CollectorRegistry) -> set[str]:
        lines = generate_latest(registry).decode().splitlines()
        return {line for line in lines if "_created" not in line and not line.startswith("#")}

    assert rendered(summed) == rendered(theirs)
    assert samples(summed, "c_total") == {(("a", "x"),): 3, (("a", "y"),): 6}


def test_a_publish_interrupted_by_another_still_writes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor's SIGALRM handler may count and publish in the middle of a publish:
    what it counted is written before the outer one returns."""
    from prometheus_client.multiprocess import MultiProcessCollector

    from dkimd.metrics.local import LocalCounter, LocalMetrics
    from dkimd.metrics.shared import Publisher

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    local = LocalMetrics(None)
    first: Any = local.add(LocalCounter("a", "doc", ()))
    second: Any = local.add(LocalCounter("b", "doc", ()))
    first.inc()
    second.inc()
    publisher = Publisher(local)
    make = publisher._value_class
    interrupted: list[int] = []

    def value_class(*args: Any, **kwargs: Any) -> Any:
        value = make(*args, **kwargs)
        if args[1] != "b":
            return value

        class Interrupting:
            def set(self, number: float) -> None:
                if not interrupted:  # "a" was written already: the handler counts more
                    interrupted.append(1)
                    first.inc()
                    publisher.publish()
                value.set(number)

        return Interrupting()

    publisher._value_class = value_class
    publisher.publish()
    assert interrupted
    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert samples(summed, "a_total") == {(): 2}
    assert samples(summed, "b_total") == {(): 1}


def test_test_dns_data_answers_are_counted_when_metrics_are_on() -> None:
    from dkimd.dns.base import TxtStatus
    from dkimd.dns.testdata import TestDnsFile
    from dkimd.metrics.lookups import CountedLookup, counted

    records = TestDnsFile.from_records({"s._domainkey.example.com": "v=DKIM1; p="})
    assert counted(records) is records  # metrics off: nothing in between
    registry = CollectorRegistry()
    real = metrics.recorder
    metrics.install(PrometheusRecorder(registry, frozenset()))
    try:
        lookup = counted(records)
        assert isinstance(lookup, CountedLookup)
        assert lookup.cached("s._domainkey.example.com").status is TxtStatus.OK  # type: ignore[union-attr]
        missing = asyncio.run(lookup.lookup_txt("x._domainkey.example.com"))
        assert missing.status is TxtStatus.NXDOMAIN
    finally:
        metrics.install(real)
    got = {k: v for k, v in samples(registry, "dkimd_dns_lookups_total").items() if v}
    assert got == {(("outcome", "ok"),): 1, (("outcome", "nxdomain"),): 1}
    assert samples(registry, "dkimd_dns_lookup_duration_seconds_count") == {(): 2}


# -- the options ------------------------------------------------------------------------------


def conf(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "opendkim.conf"
    path.write_text("Socket inet:8891@127.0.0.1\nMode v\n" + "".join(f"{x}\n" for x in lines))
    return path


@pytest.mark.parametrize(
    ("given", "port"), [("inet:9318@127.0.0.1", 9318), ("9319@localhost", 9319)]
)
def test_metrics_socket_takes_socket_syntax(tmp_path: Path, given: str, port: int) -> None:
    config = load_config(
        str(conf(tmp_path, f"MetricsSocket {given}", "MetricsDomains a.example, B.example."))
    )
    assert config.metrics_socket is not None and config.metrics_socket.port == port
    assert config.metrics_domains == ("a.example", "b.example")


def test_off_by_default(tmp_path: Path) -> None:
    config = load_config(str(conf(tmp_path)))
    assert config.metrics_socket is None and config.metrics_domains == ()


@pytest.mark.parametrize("given", ["local:/run/dkimd/metrics.sock", "inet:99999@x", "nine@x"])
def test_bad_metrics_socket_is_a_config_error(tmp_path: Path, given: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(conf(tmp_path, f"MetricsSocket {given}")))
    assert "MetricsSocket" in str(caught.value)


def test_missing_extra_refuses_the_config_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(metrics_options.importlib.util, "find_spec", lambda name: None)
    path = conf(tmp_path, "MetricsSocket inet:9318@127.0.0.1")
    # The daemon's -n (and a start: the same reading of the file) exits 78.
    assert check(DaemonOptions(str(path))) == EX_CONFIG
    assert "dkimd[metrics]" in capsys.readouterr().err
    # dkimd check says it as an error.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert check_main(["-x", str(path), "--no-postfix"]) == 2
    assert "dkimd[metrics]" in out.getvalue()


def test_daemon_start_without_the_extra_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dkimd import daemon

    monkeypatch.setattr(metrics_options.importlib.util, "find_spec", lambda name: None)
    path = conf(tmp_path, "MetricsSocket inet:9318@127.0.0.1")
    assert daemon.run(DaemonOptions(str(path), foreground=True)) == EX_CONFIG


# -- the scrape endpoint ----------------------------------------------------------------------


async def _request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def test_http_endpoint() -> None:
    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        served = asyncio.ensure_future(
            metrics_http.serve_http(sock, lambda: (b"x_total 1\n", "text/plain; version=0.0.4"))
        )
        await asyncio.sleep(0.01)
        ok = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nx_total 1\n")
        assert b"Content-Length: 10\r\n" in ok
        head = await _request(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
        assert (await _request(port, b"GET /x HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _request(port, b"POST / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 405")
        # A head past the limit, or none at all: closed without an answer.
        assert await _request(port, b"G" * (metrics_http.MAX_HEAD + 10)) == b""
        assert (await _request(port, b"\r\n\r\n")).startswith(b"HTTP/1.1 405")
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served

    asyncio.run(main())


def test_http_endpoint_bounds_concurrent_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_http, "MAX_CLIENTS", 2)
    monkeypatch.setattr(metrics_http, "READ_TIMEOUT", 0.5)

    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        served = asyncio.ensure_future(metrics_http.serve_http(sock, lambda: (b"", "text/plain")))
        await asyncio.sleep(0.01)
        # Two silent clients take both places; a third is closed at once.
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.05)
        with contextlib.suppress(ConnectionResetError):
            assert await _request(port, b"GET /metrics HTTP/1.0\r\n\r\n") == b""
        # The silent ones time out and are closed; then scrapes are served again.
        for reader, writer in silent:
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        answer = await _request(port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served

    asyncio.run(main())


def test_daemon_start_with_the_metrics_port_taken_exits_1(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from dkimd import daemon

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = conf(tmp_path, f"MetricsSocket inet:{port}@127.0.0.1")
        assert daemon.run(DaemonOptions(str(path), foreground=True)) == 1
    err = capfd.readouterr().err
    assert f"cannot start: MetricsSocket inet:{port}@127.0.0.1: Address already in use" in err


def test_local_metrics_render_as_prometheus_clients_own() -> None:
    """The same updates through dkimd.metrics.local and through prometheus_client's metrics
    give the same samples (its *_created ones aside)."""
    from prometheus_client import Counter, Gauge, Histogram

    from dkimd.metrics.local import LocalCounter, LocalGauge, LocalHistogram, LocalMetrics

    buckets = (0.001, 0.01, 0.1, 1, 10)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    local = LocalMetrics(ours)
    pairs = [
        (Counter("c", "doc", ["a"], registry=theirs), local.add(LocalCounter("c", "doc", ["a"]))),
        (Gauge("g", "doc", registry=theirs), local.add(LocalGauge("g", "doc", ()))),
        (
            Histogram("h_seconds", "doc", ["op"], registry=theirs, buckets=buckets),
            local.add(LocalHistogram("h_seconds", "doc", ["op"], buckets)),
        ),
    ]
    for counter in (pairs[0][0], pairs[0][1]):
        counter.labels("x").inc()
        counter.labels("x").inc(2)
        counter.labels("y").inc()
    for gauge in (pairs[1][0], pairs[1][1]):
        gauge.inc()
        gauge.inc()
        gauge.dec()
        gauge.set(7)
    for histogram in (pairs[2][0], pairs[2][1]):
        for v in (0.0005, 0.001, 0.0011, 0.1, 5, 10, 11, 1000):  # on the bounds, between, past
            histogram.labels("sign").observe(v)
        histogram.labels("verify").observe(0.02)

    def rendered(registry: CollectorRegistry) -> set[str]:
        lines = generate_latest(registry).decode().splitlines()
        return {line for line in lines if "_created" not in line}

    assert rendered(ours) == rendered(theirs)
