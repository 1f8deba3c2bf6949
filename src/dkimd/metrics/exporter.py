"""The Prometheus side: the recorder that counts the events into metrics, and the page.

Imported only when ``MetricsSocket`` is set (``dkimd.metrics.setup``), after
``PROMETHEUS_MULTIPROC_DIR`` is decided.

Every process counts in plain numbers (dkimd.metrics.local): one process renders them at
each scrape; under a supervisor each process publishes them to prometheus_client's
multiprocess files every tick (dkimd.metrics.shared), which the exporter process sums per
scrape. Labelled children are looked up once and kept in dicts: ``labels()`` builds a
tuple on every call, a cost per message we do not pay.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from dkimd import __version__
from dkimd.dkim.results import DkimResult
from dkimd.dns.base import TxtStatus
from dkimd.metrics import KNOWN_ALGORITHMS, Recorder
from dkimd.metrics.local import LocalCounter, LocalGauge, LocalHistogram, LocalMetrics
from dkimd.milter import Accept, Continue, Discard, ReplyCode, TempFail

if TYPE_CHECKING:
    from dkimd.config.values import Action, Condition
    from dkimd.dkim.results import SignatureResult
    from dkimd.dkim.signer import SigningRequest
    from dkimd.metrics.shared import Publisher
    from dkimd.milter import FinalAction

__all__ = ["MAX_SIGNING_DOMAINS", "PrometheusRecorder", "multiprocess_page", "registry_page"]

#: Signing domains get a label each up to this many (KeyTable entries with "%" sign with
#: the sender's domain, which the sender chooses); later ones count as "other".
MAX_SIGNING_DOMAINS = 500

# Per-message latency: signing is sub-millisecond, verifying waits for DNS.
_MESSAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: dkimd_messages_total's action label: what dkimd did (signed, verified, ignored, or
#: tempfailed for its own reason), or how a message stopped at end of headers was answered.
ACTIONS = (
    "signed",
    "verified",
    "ignored",
    "tempfailed",
    "rejected",
    "deferred",
    "discarded",
    "unchecked",
)


def stopped_action(final: FinalAction) -> str:
    """The action label of a message stopped at end of headers with the reply ``final``."""
    if isinstance(final, ReplyCode):
        return "deferred" if final.code < 500 else "rejected"
    if isinstance(final, TempFail):
        return "deferred"
    if isinstance(final, Discard):
        return "discarded"
    if isinstance(final, Accept | Continue):
        return "unchecked"
    return "rejected"


class _Factory:
    """Makes the metrics, in plain numbers, collected from ``registry`` (one process) or
    published by dkimd.metrics.shared (registry None: under a supervisor)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.local = LocalMetrics(registry)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Any:
        return self.local.add(LocalCounter(name, doc, labels))

    def gauge(self, name: str, doc: str, labels: Sequence[str] = (), *, mode: str) -> Any:
        # mode: how the exporter combines the processes' values (prometheus_client's
        # multiprocess_mode); a single process has only its own.
        return self.local.add(LocalGauge(name, doc, labels, mode))

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> Any:
        return self.local.add(LocalHistogram(name, doc, labels, buckets))


class PrometheusRecorder(Recorder):
    """Counts into metrics collected from ``registry``, or (None: under a supervisor)
    published to prometheus_client's multiprocess files, which the exporter process sums."""

    __slots__ = (
        "_dns_cache_hits",
        "_dns_cache_misses",
        "_dns_duration",
        "_dns_lookups",
        "_domains",
        "_key_errors",
        "_last_ok",
        "_loaded_at",
        "_local",
        "_messages",
        "_on_actions",
        "_on_children",
        "_open",
        "_opened",
        "_publisher",
        "_reload_ok",
        "_reload_ts",
        "_reloads",
        "_result_children",
        "_sign_duration",
        "_signature_children",
        "_signatures",
        "_verify_children",
        "_verify_duration",
        "_verify_signatures",
        "_worker",
    )

    enabled = True

    def __init__(self, registry: CollectorRegistry | None, domains: frozenset[str]) -> None:
        self._domains = domains
        make = _Factory(registry)
        self._local = make.local
        self._publisher: Publisher | None = None
        if registry is None:
            from dkimd.metrics.shared import Publisher

            self._publisher = Publisher(make.local)
        self._worker = False
        messages = make.counter("dkimd_messages", "Messages by what was done to them", ["action"])
        self._messages = {action: messages.labels(action) for action in ACTIONS}
        verified = make.counter(
            "dkimd_verified_messages",
            "Verified messages by result (pass if any signature passed, else the first one's)",
            ["result"],
        )
        self._result_children = {res: verified.labels(res.value) for res in DkimResult}
        self._signatures = make.counter(
            "dkimd_signatures_added",
            "DKIM-Signature fields added, by signing domain and algorithm",
            ["domain", "algorithm"],
        )
        self._signature_children: dict[tuple[str, str], Any] = {}
        self._verify_signatures = make.counter(
            "dkimd_verify_signatures",
            "Signatures verified, by algorithm, result and domain (MetricsDomains, else other)",
            ["algorithm", "result", "domain"],
        )
        self._verify_children: dict[tuple[str | None, DkimResult, str | None], Any] = {}
        self._on_actions = make.counter(
            "dkimd_on_actions",
            "On-* conditions met, by condition and the action configured for it",
            ["condition", "action"],
        )
        self._on_children: dict[tuple[Condition, Action], Any] = {}
        self._opened = make.counter("dkimd_connections", "Milter connections accepted")
        self._open = make.gauge(
            "dkimd_connections_open",
            "Milter connections open now",
            mode="livesum",
        )
        duration = make.histogram(
            "dkimd_message_duration_seconds",
            "From the first header field to the end-of-message reply",
            ["operation"],
            buckets=_MESSAGE_BUCKETS,
        )
        self._sign_duration = duration.labels("sign")
        self._verify_duration = duration.labels("verify")
        lookups = make.counter(
            "dkimd_dns_lookups",
            "TXT lookups by outcome (DNS queries sent, or answers read from TestDNSData)",
            ["outcome"],
        )
        self._dns_lookups = {status.value: lookups.labels(status.value) for status in TxtStatus}
        self._dns_duration = make.histogram(
            "dkimd_dns_lookup_duration_seconds",
            "TXT lookup time (DNS timeouts included)",
            buckets=_DNS_BUCKETS,
        )
        self._dns_cache_hits = make.counter(
            "dkimd_dns_cache_hits", "Key lookups answered from the cache"
        )
        self._dns_cache_misses = make.counter(
            "dkimd_dns_cache_misses", "Key lookups that needed a query"
        )
        self._key_errors = make.counter(
            "dkimd_key_load_errors", "Private keys that could not be loaded or used"
        )
        reloads = make.counter(
            "dkimd_config_reloads",
            "Configuration reloads by result, one per signal (failed if any worker refused)",
            ["result"],
        )
        self._reloads = {True: reloads.labels("ok"), False: reloads.labels("failed")}
        self._reload_ts = make.gauge(
            "dkimd_config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded (Unix time)",
            mode="livemax",
        )
        self._reload_ok = make.gauge(
            "dkimd_config_last_reload_successful",
            "1 if the last reload (or the start) loaded the configuration, else 0",
            mode="livemin",
        )
        self._loaded_at = time.time()
        self._last_ok = True
        build = make.gauge(
            "dkimd_build_info",
            "dkimd's version and Python's (always 1)",
            ["version", "python"],
            mode="max",
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.process_started()

    # -- connections --

    def connection_opened(self) -> None:
        self._opened.inc()
        self._open.inc()

    def connection_closed(self) -> None:
        self._open.dec()

    # -- messages --

    def message_ignored(self) -> None:
        self._messages["ignored"].inc()

    def message_failed(self) -> None:
        self._messages["tempfailed"].inc()

    def message_stopped(self, final: FinalAction) -> None:
        self._messages[stopped_action(final)].inc()

    def message_signed(self, started: float, requests: Sequence[SigningRequest]) -> None:
        self._sign_duration.observe(time.monotonic() - started)
        self._messages["signed"].inc()
        children = self._signature_children
        for request in requests:
            # SigningRequest settles a= when made (from the key when not configured).
            key = (request.domain, request.algorithm or "")
            child = children.get(key)
            if child is None:
                child = self._signature_child(key)
            child.inc()

    def _signature_child(self, key: tuple[str, str]) -> Any:
        domain, algorithm = key
        if algorithm not in KNOWN_ALGORITHMS:
            algorithm = "other"
        if len(self._signature_children) >= MAX_SIGNING_DOMAINS:
            domain = "other"
            key = (domain, algorithm)
            known = self._signature_children.get(key)
            if known is not None:
                return known
        child = self._signatures.labels(domain.lower(), algorithm)
        self._signature_children[key] = child
        return child

    def message_verified(self, started: float, results: Sequence[SignatureResult]) -> None:
        self._verify_duration.observe(time.monotonic() - started)
        self._messages["verified"].inc()
        overall = DkimResult.NONE
        children = self._verify_children
        for r in results:
            result = r.result
            if result is DkimResult.NONE:
                continue
            if overall is not DkimResult.PASS and (overall is DkimResult.NONE or r.passed):
                overall = result
            key = (r.algorithm, result, r.domain)
            child = children.get(key)
            if child is None:
                child = self._verify_child(key)
            child.inc()
        self._result_children[overall].inc()

    def _verify_child(self, key: tuple[str | None, DkimResult, str | None]) -> Any:
        algorithm, result, domain = key
        algo_label = algorithm if algorithm in KNOWN_ALGORITHMS else "other"
        if algorithm is None:
            algo_label = "none"
        name = (domain or "").lower().rstrip(".")
        domain_label = name if name in self._domains else "other"
        child = self._verify_signatures.labels(algo_label, result.value, domain_label)
        # Only bounded keys are kept: a hostile domain or a= maps to an existing child.
        if algorithm in KNOWN_ALGORITHMS and name in self._domains:
            self._verify_children[key] = child
        return child

    def on_action(self, condition: Condition, action: Action) -> None:
        key = (condition, action)
        child = self._on_children.get(key)
        if child is None:
            child = self._on_children[key] = self._on_actions.labels(
                condition.value.lower(), action.name.lower()
            )
        child.inc()

    # -- DNS --

    def dns_lookup(self, outcome: str, seconds: float) -> None:
        counter = self._dns_lookups.get(outcome)
        if counter is not None:
            counter.inc()
        self._dns_duration.observe(seconds)

    def dns_cache(self, hit: bool) -> None:
        (self._dns_cache_hits if hit else self._dns_cache_misses).inc()

    # -- keys, configuration --

    def key_load_error(self) -> None:
        self._key_errors.inc()

    def config_loaded(self, ok: bool, *, reload: bool) -> None:
        if reload and not self._worker:  # a worker's reload: the supervisor counts them
            self._reloads[ok].inc()
        self._last_ok = ok
        if ok:
            self._loaded_at = time.time()
        self.process_started()

    def process_started(self) -> None:
        # A forked worker starts with empty values of its own (multiprocess mode): the
        # gauges it shares in must say its state, not 0.
        self._reload_ok.set(1 if self._last_ok else 0)
        self._reload_ts.set(self._loaded_at)
        self._open.set(0)

    def worker_forked(self) -> None:
        for family in self._local.families:
            family.reset()
        self._worker = True

    def publish(self) -> None:
        if self._publisher is not None:
            self._publisher.publish()


def registry_page(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST


def multiprocess_page(directory: str) -> tuple[bytes, str]:
    """The sum over every process's files in ``directory`` (a fresh registry per scrape,
    as prometheus_client's multiprocess documentation does)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
