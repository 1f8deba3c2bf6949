"""Metrics: what the daemon counts, behind one small recorder interface.

The session, the server, the resolver and the key store report outcomes to
``dkimd.metrics.recorder``. With ``MetricsSocket`` unset that is a ``Recorder``, whose
methods do nothing (a method call per event, no allocation, no prometheus_client import);
with it set, the daemon installs ``dkimd.metrics.exporter.PrometheusRecorder`` at start.
Callers read the module attribute at each call (``metrics.recorder.x(...)``) so that the
swap is seen everywhere without threading a recorder through every constructor.

Label values are bounded here, not by the callers: algorithms outside the known set, a
verifying domain not in ``MetricsDomains`` and signing domains past a cap become "other",
so a flood of hostile mail cannot grow the exporter's memory (every label set is a time
series kept for ever).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dkimd.config.values import Action, Condition
    from dkimd.dkim.results import SignatureResult
    from dkimd.dkim.signer import SigningRequest
    from dkimd.milter import FinalAction

__all__ = [
    "EXTRA_HINT",
    "KNOWN_ALGORITHMS",
    "Recorder",
    "install",
    "muted",
    "recorder",
]

EXTRA_HINT = "pip install 'dkimd[metrics]'"

#: The a= values a label may take; anything else a message claims is "other".
KNOWN_ALGORITHMS = frozenset({"rsa-sha256", "rsa-sha1", "ed25519-sha256"})


class Recorder:
    """The events dkimd counts; this base class ignores them all (metrics off).

    ``started`` arguments are ``time.monotonic()`` values taken when the message began:
    the recorder reads the clock itself, so with metrics off nobody does.
    """

    __slots__ = ()

    enabled = False

    # -- milter connections (dkimd.server) --
    def connection_opened(self) -> None:
        pass

    def connection_closed(self) -> None:
        pass

    # -- messages (dkimd.session) --
    def message_ignored(self) -> None:
        pass

    def message_failed(self) -> None:
        """A message answered with a temporary failure for our own reason (key, bug)."""

    def message_signed(self, started: float, requests: Sequence[SigningRequest]) -> None:
        """One DKIM-Signature added per request."""

    def message_verified(self, started: float, results: Sequence[SignatureResult]) -> None:
        pass

    def message_stopped(self, final: FinalAction) -> None:
        """A message ended at end of headers for something in it (MaximumHeaders, no usable
        sender, a DKIM-Signature field that does not parse, RequiredHeaders) or by a policy
        script, with the reply `final`; not for the ignored and tempfailed ones above."""

    def on_action(self, condition: Condition, action: Action) -> None:
        """An On-* condition met and the action it configures (accept included)."""

    # -- DNS (dkimd.dns.resolver) --
    def dns_lookup(self, outcome: str, seconds: float) -> None:
        """One query sent; `outcome` a TxtStatus value."""

    def dns_cache(self, hit: bool) -> None:
        pass

    # -- keys and configuration (dkimd.signing_keys, dkimd.daemon) --
    def key_load_error(self) -> None:
        pass

    def config_loaded(self, ok: bool, *, reload: bool) -> None:
        """The configuration read at start (ok) or on SIGHUP/SIGUSR1 (ok or failed)."""

    def process_started(self) -> None:
        """A (worker) process starts serving: per-process gauges are set again."""

    def worker_forked(self) -> None:
        """In a worker just forked by the supervisor: count from zero (what the supervisor
        counted is in its own share), and leave reloads to the supervisor, which counts one
        per signal whatever the number of workers."""

    def publish(self) -> None:
        """Under a supervisor: make this process's counts visible to the exporter process
        (called every worker tick, at a worker's exit, and by the supervisor)."""


#: What everyone reports to; replaced by ``install`` when metrics are on.
recorder: Recorder = Recorder()


def install(new: Recorder) -> None:
    global recorder
    recorder = new


class _Muted(Recorder):
    """Counts nothing, yet says whether metrics are on: what is built meanwhile (a
    resolver that counts its answers) must count once the real recorder is back."""

    __slots__ = ("enabled",)

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Count nothing inside (the supervisor reading a new configuration that its workers
    read, and count, for themselves)."""
    global recorder
    kept = recorder
    recorder = _Muted(kept.enabled)
    try:
        yield
    finally:
        recorder = kept
