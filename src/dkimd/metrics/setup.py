"""Turning metrics on in the daemon: the listener, the recorder, where the page is served.

Without ``Workers``/``AutoRestart`` the one process counts in plain numbers
(dkimd.metrics.local) and serves the page from its own event loop (rendering it is CPU
work of a millisecond or so, no I/O). With a supervisor, every worker counts the same way
and copies its numbers every tick to prometheus_client's multiprocess files
(dkimd.metrics.shared) in a directory of this daemon's own (made fresh at start, removed at
stop), and one exporter process, forked and restarted by the supervisor like a worker,
sums them per scrape. A worker that dies leaves its files behind, so its counts stay in
the sums and its replacement starts from zero in files of its own: nothing is reset or
counted twice; ``process_dead`` drops its live gauges (open connections). The exporter
stops when the supervisor does, even one killed by SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable

from dkimd.config.values import Config
from dkimd.metrics import EXTRA_HINT, install
from dkimd.metrics.http import Render, serve_http
from dkimd.process import die_with_parent, orphaned
from dkimd.sockets import bind_socket

__all__ = ["Exporter", "MetricsUnavailable", "prepare"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsUnavailable(Exception):
    """MetricsSocket is set but prometheus_client is not installed."""


class Exporter:
    """The metrics listener of one daemon and how its page is made."""

    def __init__(self, sock: socket.socket, render: Render, directory: str | None) -> None:
        self.sock = sock
        self.render = render
        self.directory = directory  # multiprocess mode: every process's value files

    @property
    def multiprocess(self) -> bool:
        return self.directory is not None

    def serve_here(self) -> asyncio.Future[None] | None:
        """Single process: serve the page from this event loop (None under a supervisor)."""
        if self.multiprocess:
            return None
        return asyncio.ensure_future(serve_http(self.sock, self.render))

    def fork_process(self, before_serving: Callable[[], None]) -> int:
        """Under a supervisor: fork the process that serves the page; its pid."""
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            before_serving()
            # A reload is not ours to do, and SIGHUP would otherwise end us (default action).
            for sig in (signal.SIGHUP, signal.SIGUSR1):
                signal.signal(sig, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(signal.SIGTERM, supervisor)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            asyncio.run(_serve_while(supervisor, self.sock, self.render))
            code = 0
        finally:
            os._exit(code)

    def process_dead(self, pid: int) -> None:
        if self.directory is not None:
            from prometheus_client.multiprocess import mark_process_dead

            with contextlib.suppress(OSError):
                mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]


async def _serve_while(supervisor: int, sock: socket.socket, render: Render) -> None:
    """Serve the page until the supervisor is gone (where no parent-death signal exists;
    with one, SIGTERM comes first)."""
    serving = asyncio.ensure_future(serve_http(sock, render))
    while not serving.done() and not orphaned(supervisor):
        await asyncio.wait([serving], timeout=PARENT_CHECK)
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


#: Seconds between the exporter process's looks at whether the supervisor is still there.
PARENT_CHECK = 1.0


def prepare(config: Config, *, multiprocess: bool, owner: tuple[int, int] | None) -> Exporter:
    """Bind ``MetricsSocket`` and install the Prometheus recorder.

    Call while still root (a port under 1024), before anything is counted (keys are
    preloaded after this). ``owner`` (uid, gid): who the workers run as, to own the
    multiprocess directory. Raises MetricsUnavailable, OSError (bind) or ValueError.
    """
    spec = config.metrics_socket
    assert spec is not None
    directory = None
    if multiprocess:
        # Fresh for every start: no stale file of an earlier run can count again.
        directory = tempfile.mkdtemp(prefix="dkimd-metrics-")
        # Removed when the process that serves exits (the supervisor, or the daemon after
        # detaching: the processes that fork away leave through os._exit, past atexit).
        atexit.register(shutil.rmtree, directory, True)
        if owner is not None:
            os.chown(directory, *owner)
        os.environ[_MULTIPROC_ENV] = directory
    else:
        os.environ.pop(_MULTIPROC_ENV, None)  # in-memory values, whatever the environment
    try:
        try:
            from prometheus_client import CollectorRegistry

            from dkimd.metrics.exporter import (
                PrometheusRecorder,
                multiprocess_page,
                registry_page,
            )
        except ImportError:
            raise MetricsUnavailable(
                f"MetricsSocket needs prometheus_client, which is not installed: {EXTRA_HINT}"
            ) from None
        sock = bind_socket(spec, umask=config.umask)
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    domains = frozenset(config.metrics_domains)
    render: Render
    if directory is not None:
        install(PrometheusRecorder(None, domains))
        path = directory
        render = lambda: multiprocess_page(path)  # noqa: E731 - the one-line closure
    else:
        registry = CollectorRegistry()
        install(PrometheusRecorder(registry, domains))
        render = lambda: registry_page(registry)  # noqa: E731
    return Exporter(sock, render, directory)
