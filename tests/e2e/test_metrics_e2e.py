"""MetricsSocket: the real daemon, real milter connections, a real HTTP scrape.

Each test starts ``python -m dkimd`` with MetricsSocket on loopback and key records from a
FakeDns server on loopback, sends messages over the milter socket as Postfix would, scrapes
``/metrics`` with urllib and checks every counter against what the messages must have
caused: signing, verifying (pass, fail, missing key, DNS timeout, no signature, a broken
signature field, no usable sender, past MaximumHeaders), a key that cannot be loaded,
reloads that work and one that fails, key records from TestDNSData, and ``Workers 2``
with a worker killed (its counts stay, nothing is counted twice) and reloads (one count
per signal, whatever the number of workers).

Under Workers each worker publishes its counts once a second (dkimd.metrics.shared):
those tests scrape until the page shows what was sent and no longer changes
(``settled``), then check every value exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from support import milterwire as w
from support.dkimd import Dkimd
from support.fakedns import FakeDns
from support.signed import signed_message
from support.tools import free_port, require

HEADERS = [
    (b"From", b" Alice <alice@example.com>"),
    (b"To", b" Bob <bob@example.net>"),
    (b"Subject", b" metrics"),
    (b"Date", b" Thu, 26 Nov 2026 12:00:00 +0000"),
    (b"Message-ID", b" <metrics@example.com>"),
]
BODY = b"Hello,\r\n\r\nthis is a test.\r\n"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- a milter client and a scraper ---------------------------------------------------------


# Which command a NO* flag suppresses and which NR_* flag silences its reply (mfdef.h).
_SKIPPED = {b"C": 0x01, b"H": 0x02, b"M": 0x04, b"R": 0x08, b"B": 0x10, b"L": 0x20, b"N": 0x40}
_SILENT = {
    b"C": 0x1000,
    b"H": 0x2000,
    b"M": 0x4000,
    b"R": 0x8000,
    b"L": 0x80,
    b"N": 0x40000,
    b"B": 0x80000,
}
_VERDICTS = frozenset("artdy")  # accept, reject, tempfail, discard, reply code


def _read_packet(s: socket.socket) -> tuple[str, bytes]:
    head = _read_exactly(s, 4)
    (length,) = struct.unpack(">I", head)
    data = _read_exactly(s, length)
    return chr(data[0]), data[1:]


def _read_exactly(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("milter connection closed")
        data += chunk
    return bytes(data)


def milter_message(
    port: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes = BODY,
    *,
    client: str = "192.0.2.1",
    before_eom: Callable[[], None] | None = None,
) -> list[tuple[str, bytes]]:
    """One message over a fresh milter connection, stage by stage as Postfix sends it
    (stopping at a verdict); the filter's replies from the first to the verdict.
    ``before_eom`` is called with the message in flight, before its end is sent."""
    stages = [
        w.connect("client.example", "4", 40000, client),
        w.helo(),
        w.mail("<sender@example.com>"),
        w.rcpt("<bob@example.net>"),
        *(w.header(name, value.lstrip(b" ")) for name, value in headers),
        w.EOH,
        w.body(body),
    ]
    got: list[tuple[str, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(w.optneg())
        letter, payload = _read_packet(s)
        assert letter == "O"
        _version, _actions, protocol = struct.unpack(">III", payload[:12])
        s.sendall(w.macro("C", {"j": "mx.example.com", "i": "QUEUE1"}))
        for packet in stages:
            command = packet[4:5]
            if protocol & _SKIPPED.get(command, 0):
                continue
            s.sendall(packet)
            if protocol & _SILENT.get(command, 0):
                continue
            got.append(_read_packet(s))
            if got[-1][0] in _VERDICTS:
                s.sendall(w.QUIT)
                return got
        if before_eom is not None:
            before_eom()
        s.sendall(w.macro("E", {"i": "QUEUE1"}) + w.eom())
        while not got or got[-1][0] not in _VERDICTS:
            got.append(_read_packet(s))
        s.sendall(w.QUIT)
    return got


def final(replies: list[tuple[str, bytes]]) -> str:
    """The verdict letter: a accept, t tempfail, r reject (a 5xx reply code too), ..."""
    letter, payload = replies[-1]
    if letter == "y":  # SMFIR_REPLYCODE: the On-* actions' replies carry text
        return {b"5": "r", b"4": "t"}[payload[:1]]
    return letter


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def values(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name and v}


def settled(port: int, ready: Callable[[Samples], bool], timeout: float = 15.0) -> Samples:
    """Scrape until ``ready`` says the page shows what the test caused and two scrapes in
    a row agree (no worker is half-way through publishing); the last scrape on timeout,
    for the exact assertions that follow to show what is missing."""
    deadline = time.monotonic() + timeout
    previous: Samples | None = None
    while True:
        m = scrape(port)
        if (ready(m) and m == previous) or time.monotonic() > deadline:
            return m
        previous = m
        time.sleep(0.1)


def messages_seen(m: Samples) -> float:
    return sum(values(m, "dkimd_messages_total").values())


# -- the set-up -------------------------------------------------------------------------------


def private_key(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def start_dkimd(tmp_path: Path, dns_port: int, **options: str) -> tuple[Dkimd, int]:
    """dkimd signing for example.com (and broken.example, whose key file is missing)."""
    work = tmp_path / "dkimd"
    work.mkdir()
    key = private_key(work / "mail.key")
    (work / "KeyTable").write_text(
        f"mail._domainkey.example.com example.com:mail:{key}\n"
        f"bad._domainkey.broken.example broken.example:bad:{work / 'missing.key'}\n"
    )
    (work / "SigningTable").write_text(
        "*@example.com mail._domainkey.example.com\n"
        "*@broken.example bad._domainkey.broken.example\n"
    )
    metrics_port = free_port()
    conf = {
        "KeyTable": f"file:{work / 'KeyTable'}",
        "SigningTable": f"refile:{work / 'SigningTable'}",
        "InternalHosts": "127.0.0.1",
        "Nameservers": f"127.0.0.1:{dns_port}",
        "DNSTimeout": "1",
        "MetricsSocket": f"inet:{metrics_port}@127.0.0.1",
        "MetricsDomains": "example.net",
        "On-BadSignature": "reject",
        "On-KeyNotFound": "reject",
        "ExemptDomains": "exempt.example",
    }
    conf.update(options)
    d = Dkimd(work, options=conf)
    del d.config["TestDNSData"]  # the helper's default: key records come from DNS here
    d.write_config()
    return d, metrics_port


def wait_for_metrics(port: int, timeout: float = 15.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def verify_cases(fake_dns: FakeDns) -> dict[str, list[tuple[bytes, bytes]]]:
    """Signed messages for each verify outcome, their key records served by fake_dns."""
    cases: dict[str, list[tuple[bytes, bytes]]] = {}
    fields, records = signed_message(HEADERS, BODY, domain="example.net")
    for name, record in records.items():
        fake_dns.txt(name, record)
    cases["pass"] = fields
    cases["fail"] = fields  # sent with another body
    missing, _ = signed_message(HEADERS, BODY, domain="missing.example")
    fake_dns.nxdomain("test._domainkey.missing.example")
    cases["nokey"] = missing
    slow, _ = signed_message(HEADERS, BODY, domain="slow.example")
    fake_dns.drop("test._domainkey.slow.example")
    cases["timeout"] = slow
    return cases


# -- the tests --------------------------------------------------------------------------------


def test_off_by_default_no_listener(tmp_path: Path, fake_dns: FakeDns) -> None:
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port)
    del d.config["MetricsSocket"]
    d.write_config()
    with d:
        assert final(milter_message(d.port, HEADERS, client="127.0.0.1")) == "a"
        with pytest.raises(urllib.error.URLError):
            scrape(metrics_port)


def test_single_process_counts_every_outcome(tmp_path: Path, fake_dns: FakeDns) -> None:
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port, MaximumHeaders="4000")
    cases = verify_cases(fake_dns)
    with d:
        # At start the key guard looks up the record of the key it signs with (NXDOMAIN).
        d.wait_for_log("no key record in DNS")
        before = wait_for_metrics(metrics_port)
        # Start: the broken.example key is preloaded and fails once; nothing else yet.
        assert value(before, "dkimd_key_load_errors_total") == 1
        assert value(before, "dkimd_dns_lookups_total", outcome="nxdomain") == 1
        assert value(before, "dkimd_build_info", version="0.1.0", python=_python()) == 1
        assert value(before, "dkimd_config_last_reload_successful") == 1
        assert values(before, "dkimd_messages_total") == {}

        # Signed twice, from an internal client.
        for _ in range(2):
            assert final(milter_message(d.port, HEADERS, client="127.0.0.1")) == "a"
        # Ignored: From a domain in ExemptDomains.
        other = [(b"From", b" x@exempt.example"), *HEADERS[1:]]
        assert final(milter_message(d.port, other, client="127.0.0.1")) == "a"
        # Key cannot be loaded: tempfail at end of headers.
        broken = [(b"From", b" x@broken.example"), *HEADERS[1:]]
        assert final(milter_message(d.port, broken, client="127.0.0.1")) == "t"
        # Verified: pass (twice: the second from the cache), fail, no key, DNS timeout.
        assert final(milter_message(d.port, cases["pass"])) == "a"
        assert final(milter_message(d.port, cases["pass"])) == "a"
        assert final(milter_message(d.port, cases["fail"], b"tampered\r\n")) == "r"
        assert final(milter_message(d.port, cases["nokey"])) == "r"
        assert final(milter_message(d.port, cases["timeout"])) == "t"
        # No signature; a DKIM-Signature field that does not parse.
        assert final(milter_message(d.port, HEADERS)) == "a"
        garbled = [(b"DKIM-Signature", b" v=1; a=rsa-sha256; d="), *HEADERS]
        assert final(milter_message(d.port, garbled)) == "r"
        # Past MaximumHeaders: On-Security (tempfail by default), at the header.
        huge = [*HEADERS, (b"X-Huge", b" " + b"x" * 5000)]
        assert final(milter_message(d.port, huge)) == "t"
        # No From: no usable sender, accepted with an A-R saying so, neither signed nor
        # verified.
        assert final(milter_message(d.port, HEADERS[1:])) == "a"

        m = scrape(metrics_port)
    # The last three stopped at end of headers: by how they were answered.
    assert values(m, "dkimd_messages_total") == {
        (("action", "signed"),): 2,
        (("action", "ignored"),): 1,
        (("action", "tempfailed"),): 1,
        (("action", "verified"),): 6,
        (("action", "rejected"),): 1,
        (("action", "deferred"),): 1,
        (("action", "unchecked"),): 1,
    }
    assert values(m, "dkimd_verified_messages_total") == {
        (("result", "pass"),): 2,
        (("result", "fail"),): 1,
        (("result", "permerror"),): 1,
        (("result", "temperror"),): 1,
        (("result", "none"),): 1,
    }
    assert values(m, "dkimd_signatures_added_total") == {
        (("algorithm", "rsa-sha256"), ("domain", "example.com")): 2
    }
    # example.net is in MetricsDomains; the others are "other".
    assert values(m, "dkimd_verify_signatures_total") == {
        (("algorithm", "rsa-sha256"), ("domain", "example.net"), ("result", "pass")): 2,
        (("algorithm", "rsa-sha256"), ("domain", "example.net"), ("result", "fail")): 1,
        (("algorithm", "rsa-sha256"), ("domain", "other"), ("result", "permerror")): 1,
        (("algorithm", "rsa-sha256"), ("domain", "other"), ("result", "temperror")): 1,
    }
    assert values(m, "dkimd_on_actions_total") == {
        (("action", "reject"), ("condition", "badsignature")): 2,  # fail, and the garbled one
        (("action", "reject"), ("condition", "keynotfound")): 1,
        (("action", "tempfail"), ("condition", "dnserror")): 1,
        (("action", "accept"), ("condition", "nosignature")): 1,
        (("action", "tempfail"), ("condition", "security")): 1,
    }
    # DNS: example.net asked once (then from the cache for the second pass and the fail),
    # missing.example once (and the key
    # guard's look at our own key at start), slow.example timed out once.
    assert values(m, "dkimd_dns_lookups_total") == {
        (("outcome", "ok"),): 1,
        (("outcome", "nxdomain"),): 2,
        (("outcome", "timeout"),): 1,
    }
    assert value(m, "dkimd_dns_lookup_duration_seconds_count") == 4
    assert value(m, "dkimd_dns_lookup_duration_seconds_bucket", le="0.5") == 3
    assert value(m, "dkimd_dns_cache_misses_total") == 4
    assert value(m, "dkimd_dns_cache_hits_total") == 2
    assert value(m, "dkimd_key_load_errors_total") == 2  # start, and the message
    assert value(m, "dkimd_connections_total") == 13
    assert value(m, "dkimd_connections_open") == 0
    assert value(m, "dkimd_message_duration_seconds_count", operation="sign") == 2
    assert value(m, "dkimd_message_duration_seconds_count", operation="verify") == 6
    # The timed-out lookup kept its message at least DNSTimeout (1 s).
    assert value(m, "dkimd_message_duration_seconds_bucket", operation="verify", le="0.5") == 5


def test_test_dns_data_answers_count_as_lookups(tmp_path: Path, fake_dns: FakeDns) -> None:
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port)
    fields, records = signed_message(HEADERS, BODY, domain="example.net")
    missing, _ = signed_message(HEADERS, BODY, domain="missing.example")
    data = tmp_path / "dns.data"
    data.write_text("".join(f"{name} {record}\n" for name, record in records.items()))
    d.config["TestDNSData"] = f"file:{data}"
    d.write_config()
    with d:
        d.wait_for_log("no key record in DNS")  # the key guard's look at our own key
        assert final(milter_message(d.port, fields)) == "a"
        assert final(milter_message(d.port, fields)) == "a"
        # A name the file lacks is a failed lookup (as OpenDKIM takes it): On-DNSError.
        assert final(milter_message(d.port, missing)) == "t"
        m = scrape(metrics_port)
    assert values(m, "dkimd_verified_messages_total") == {
        (("result", "pass"),): 2,
        (("result", "temperror"),): 1,
    }
    # Each answer counts (a file has no cache in front): the messages' two passes and the
    # missing key, and the key guard's look at our own key (its reader of the file, as
    # dkimd testkey's, takes a missing name as NXDOMAIN).
    assert values(m, "dkimd_dns_lookups_total") == {
        (("outcome", "ok"),): 2,
        (("outcome", "servfail"),): 1,
        (("outcome", "nxdomain"),): 1,
    }
    assert value(m, "dkimd_dns_lookup_duration_seconds_count") == 4
    assert value(m, "dkimd_dns_lookup_duration_seconds_bucket", le="0.001") == 4
    assert value(m, "dkimd_dns_cache_hits_total") == 0
    assert value(m, "dkimd_dns_cache_misses_total") == 0
    assert not fake_dns.transports  # nothing went to DNS


def test_reload_ok_and_failed(tmp_path: Path, fake_dns: FakeDns) -> None:
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port)
    with d:
        started = wait_for_metrics(metrics_port)
        loaded = value(started, "dkimd_config_last_reload_success_timestamp_seconds")
        assert abs(loaded - time.time()) < 60
        time.sleep(1.1)
        d.reload()
        m = scrape(metrics_port)
        assert value(m, "dkimd_config_reloads_total", result="ok") == 1
        assert value(m, "dkimd_config_reloads_total", result="failed") == 0
        assert value(m, "dkimd_config_last_reload_successful") == 1
        reloaded = value(m, "dkimd_config_last_reload_success_timestamp_seconds")
        assert reloaded > loaded
        assert value(m, "dkimd_key_load_errors_total") == 2  # preloaded again

        good = d.conf_path.read_text()
        d.conf_path.write_text(good + "NoSuchOption yes\n")
        d.reload(wait_for="reload failed")
        m = scrape(metrics_port)
        assert value(m, "dkimd_config_reloads_total", result="ok") == 1
        assert value(m, "dkimd_config_reloads_total", result="failed") == 1
        assert value(m, "dkimd_config_last_reload_successful") == 0
        assert value(m, "dkimd_config_last_reload_success_timestamp_seconds") == reloaded

        d.conf_path.write_text(good)
        d.reload()
        m = scrape(metrics_port)
        assert value(m, "dkimd_config_reloads_total", result="ok") == 2
        assert value(m, "dkimd_config_last_reload_successful") == 1


def _python() -> str:
    import platform

    return platform.python_version()


def _worker_pids(d: Dkimd) -> list[int]:
    pids = []
    for line in d.log_text().splitlines():
        if "worker " in line and " started (slot " in line:
            pids.append(int(line.split("worker ", 1)[1].split()[0]))
    return pids


def _count_in_log(d: Dkimd, text: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while d.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"not {count} x {text!r}:\n{d.log_text()}"
        time.sleep(0.05)


def test_two_workers_sum_and_survive_a_killed_worker(
    tmp_path: Path, fake_dns: FakeDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))  # where the daemon makes its metrics directory
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port, Workers="2")
    cases = verify_cases(fake_dns)
    with d:
        wait_for_metrics(metrics_port)
        d.wait_for_log("worker ")
        for _ in range(6):
            assert final(milter_message(d.port, HEADERS, client="127.0.0.1")) == "a"
        assert final(milter_message(d.port, cases["fail"], b"tampered\r\n")) == "r"
        m = settled(metrics_port, lambda m: messages_seen(m) == 7)
        assert values(m, "dkimd_messages_total") == {
            (("action", "signed"),): 6,
            (("action", "verified"),): 1,
        }
        assert value(m, "dkimd_connections_total") == 7
        # Preloaded once, in the supervisor, before the workers were forked.
        assert value(m, "dkimd_key_load_errors_total") == 1

        # A connection held open (by one of the workers), then both workers killed.
        held = socket.create_connection(("127.0.0.1", d.port))
        held.sendall(w.optneg())
        held.recv(1024)
        m = settled(metrics_port, lambda m: value(m, "dkimd_connections_open") == 1)
        assert value(m, "dkimd_connections_open") == 1
        assert value(m, "dkimd_connections_total") == 8
        victims = _worker_pids(d)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        os.kill(victims[1], signal.SIGKILL)
        d.wait_for_log(f"worker {victims[1]} killed by signal 9; restarting")
        deadline = time.monotonic() + 10
        while len(_worker_pids(d)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        held.close()
        # The exporter process too: restarted, it reads the same files.
        [exporter] = [
            int(line.split("metrics exporter ", 1)[1].split()[0])
            for line in d.log_text().splitlines()
            if "metrics exporter " in line and " started (slot " in line
        ]
        os.kill(exporter, signal.SIGKILL)
        d.wait_for_log(f"metrics exporter {exporter} killed by signal 9; restarting")

        m = wait_for_metrics(metrics_port)
        assert value(m, "dkimd_messages_total", action="signed") == 6  # not reset
        assert value(m, "dkimd_connections_open") == 0  # the dead workers' gauges are gone
        for _ in range(3):
            assert final(milter_message(d.port, HEADERS, client="127.0.0.1")) == "a"
        # Stopped at end of headers (a DKIM-Signature field that does not parse): summed too.
        garbled = [(b"DKIM-Signature", b" v=1; a=rsa-sha256; d="), *HEADERS]
        assert final(milter_message(d.port, garbled)) == "r"

        # One SIGHUP, two workers reloading: one reload.
        d.reload(wait_for=None)
        _count_in_log(d, "configuration reloaded", 2)
        m = settled(
            metrics_port,
            lambda m: messages_seen(m) == 11 and bool(values(m, "dkimd_config_reloads_total")),
        )
        assert len(list(spool.glob("dkimd-metrics-*"))) == 1
        assert values(m, "dkimd_config_reloads_total") == {(("result", "ok"),): 1}
        assert value(m, "dkimd_config_last_reload_successful") == 1

        # A configuration both workers refuse: one failed reload.
        good = d.conf_path.read_text()
        d.conf_path.write_text(good + "NoSuchOption yes\n")
        d.reload(wait_for=None)
        _count_in_log(d, "reload failed", 2)
        m = settled(
            metrics_port, lambda m: value(m, "dkimd_config_reloads_total", result="failed") > 0
        )
        assert values(m, "dkimd_config_reloads_total") == {
            (("result", "ok"),): 1,
            (("result", "failed"),): 1,
        }
        assert value(m, "dkimd_config_last_reload_successful") == 0
        d.conf_path.write_text(good)
    assert values(m, "dkimd_messages_total") == {
        (("action", "signed"),): 9,  # not doubled
        (("action", "verified"),): 1,
        (("action", "rejected"),): 1,
    }
    assert (
        value(m, "dkimd_signatures_added_total", domain="example.com", algorithm="rsa-sha256") == 9
    )
    assert values(m, "dkimd_on_actions_total") == {
        (("action", "reject"), ("condition", "badsignature")): 2,
    }
    assert value(m, "dkimd_connections_total") == 12  # the held one included
    assert value(m, "dkimd_message_duration_seconds_count", operation="sign") == 9
    # Each worker preloads the keys on its (good) reload: the start's one and two.
    assert value(m, "dkimd_key_load_errors_total") == 3
    assert not list(spool.glob("dkimd-metrics-*"))  # removed at stop


def test_scraper_gets_404_elsewhere_and_bad_requests_are_harmless(
    tmp_path: Path, fake_dns: FakeDns
) -> None:
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port)
    with d:
        wait_for_metrics(metrics_port)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/nothing", timeout=10)
        assert caught.value.code == 404
        caught.value.close()
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=10) as s:
            s.sendall(b"\x00" * 20000)  # no request head at all, past the limit
            assert s.recv(100) == b""
        assert value(scrape(metrics_port), "dkimd_build_info", version="0.1.0", python=_python())


def _prometheus_query(port: int, query: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_the_real_prometheus_scrapes_it(tmp_path: Path, fake_dns: FakeDns) -> None:
    prometheus = require("prometheus")
    d, metrics_port = start_dkimd(tmp_path, fake_dns.port)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: dkimd\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    with d, open(tmp_path / "prometheus.log", "wb") as log:
        for _ in range(3):
            assert final(milter_message(d.port, HEADERS, client="127.0.0.1")) == "a"
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=log,
        )
        try:
            query = 'sum(dkimd_messages_total{job="dkimd", action="signed"})'
            deadline = time.monotonic() + 60
            got: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                with contextlib.suppress(urllib.error.URLError, ConnectionError):
                    got = _prometheus_query(prom_port, query)
                    if got:
                        break
                time.sleep(0.5)
            assert got, (tmp_path / "prometheus.log").read_text(errors="replace")
            assert got[0]["value"][1] == "3"  # type: ignore[index]
            [up] = _prometheus_query(prom_port, 'up{job="dkimd"}')
            assert up["value"][1] == "1"  # type: ignore[index]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
