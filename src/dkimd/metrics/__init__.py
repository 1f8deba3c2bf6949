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

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dkimd.config.values import Action, Condition
    from dkimd.dkim.results import SignatureResult
    from dkimd.dkim.signer import SigningRequest

__all__ = [
    "EXTRA_HINT",
    "KNOWN_ALGORITHMS",
    "Recorder",
    "install",
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


#: What everyone reports to; replaced by ``install`` when metrics are on.
recorder: Recorder = Recorder()


def install(new: Recorder) -> None:
    global recorder
    recorder = new
