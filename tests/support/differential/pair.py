"""A real OpenDKIM 2.11 and a dkimd on the same configuration, fed the same messages.

    with FilterPair(tmp / "cfg", mode="sv", key_table=..., options={...}) as pair:
        theirs, ours = pair.exchange(message, Envelope(client_addr="192.0.2.77"))
        diffs = compare(theirs, ours)

Both daemons start at once (threads) and each message goes to both at once; `exchange_all`
sends many messages concurrently. The keyword arguments are those of support.opendkim.OpenDKIM
and support.dkimd.Dkimd, which write the same opendkim.conf.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from support.differential.client import Envelope, Transcript, milter_exchange
from support.dkimd import Dkimd
from support.opendkim import OpenDKIM
from support.tools import require

__all__ = ["DEFAULT_ENVELOPE", "FilterPair", "OneSidedStart"]

DEFAULT_ENVELOPE = Envelope()


class OneSidedStart(Exception):
    """One daemon started on the configuration and the other did not."""

    def __init__(self, opendkim: str, dkimd: str) -> None:
        super().__init__(f"OpenDKIM {opendkim}; dkimd {dkimd}")
        self.opendkim = opendkim
        self.dkimd = dkimd


class FilterPair:
    def __init__(self, workdir: Path, *, threads: int = 4, **config: Any) -> None:
        require("opendkim")
        self.opendkim = OpenDKIM(workdir / "opendkim", **config)
        self.dkimd = Dkimd(workdir / "dkimd", **config)
        self.pool = ThreadPoolExecutor(max_workers=max(2, threads))

    def start(self) -> FilterPair:
        """Start both; OneSidedStart when exactly one of them refuses the configuration."""
        started = [self.pool.submit(self.opendkim.start), self.pool.submit(self.dkimd.start)]
        od_error, dk_error = (f.exception() for f in started)
        if od_error is None and dk_error is None:
            return self
        self.stop()
        if od_error is not None and dk_error is not None:
            raise od_error
        raise OneSidedStart(
            "started" if od_error is None else f"refused: {od_error}",
            "started" if dk_error is None else f"refused: {dk_error}",
        )

    def stop(self) -> None:
        self.opendkim.stop()
        self.dkimd.stop()
        self.pool.shutdown()

    def __enter__(self) -> FilterPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def exchange(
        self, message: bytes, envelope: Envelope = DEFAULT_ENVELOPE
    ) -> tuple[Transcript, Transcript]:
        """(OpenDKIM's transcript, dkimd's) for one message."""
        od = ("127.0.0.1", self.opendkim.port)
        dk = ("127.0.0.1", self.dkimd.port)
        theirs = self.pool.submit(milter_exchange, od, envelope, message)
        ours = milter_exchange(dk, envelope, message)
        return theirs.result(), ours

    def exchange_all(
        self, items: Sequence[tuple[bytes, Envelope]]
    ) -> list[tuple[Transcript, Transcript]]:
        """exchange() for each (message, envelope), several at a time, in order."""
        od = ("127.0.0.1", self.opendkim.port)
        dk = ("127.0.0.1", self.dkimd.port)
        theirs = [self.pool.submit(milter_exchange, od, e, m) for m, e in items]
        ours = [self.pool.submit(milter_exchange, dk, e, m) for m, e in items]
        return [(a.result(), b.result()) for a, b in zip(theirs, ours, strict=True)]
