"""The daemon's life cycle: load, bind, detach, pid file, drop privileges, serve, reload, stop.

Order matters and follows opendkim: the listening socket is bound while still root (a
port under 1024, a socket directory only root can write), keys are read while still
root, then the pid file is written and privileges dropped before the first message.

Signals: SIGTERM/SIGINT stop accepting, let in-flight messages finish, exit 0.
SIGHUP/SIGUSR1 re-read the configuration and data sets; a broken new configuration is
logged and the old one kept. With `Workers N` (N > 1) a supervisor process forks N
workers that share the listening socket, restarts any that die, and relays signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from typing import NoReturn

from dkimd import __version__
from dkimd.config import Condition, Config, ConfigError, load_config
from dkimd.dns.base import TxtLookup
from dkimd.dns.resolver import DnsResolver
from dkimd.dns.testdata import TestDnsFile
from dkimd.log import get_logger, setup_logging
from dkimd.milter import ActionFlag as MilterActions
from dkimd.milter import FilterOptions, ProtocolFlag
from dkimd.process import PidFile, ProcessError, RunAs, detach, drop_privileges, resolve_user
from dkimd.server import MilterServer, bind_socket, parse_socket_spec
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory

log = get_logger("daemon")

# What we ask the MTA for: header changes (A-R removal), inserts, quarantine; the header
# leading space as sent (v6) and no per-header/body-chunk replies, which halves the
# round trips for a typical message.
FILTER_OPTIONS = FilterOptions(
    actions=MilterActions.ADDHDRS | MilterActions.CHGHDRS | MilterActions.QUARANTINE,
    protocol=ProtocolFlag.HDR_LEADSPC | ProtocolFlag.NR_HDR | ProtocolFlag.NR_BODY,
)
STOP_GRACE = 30.0


class StartupError(Exception):
    """The daemon cannot start; the message is for the admin."""


@dataclass(frozen=True)
class DaemonOptions:
    """opendkim's command line (-x -p -P -u -f -v), merged over the config file."""

    config_path: str
    socket: str | None = None
    pid_file: str | None = None
    user: str | None = None
    foreground: bool = False
    verbose: bool = False


def read_config(options: DaemonOptions) -> Config:
    config = load_config(options.config_path)
    changes: dict[str, object] = {}
    if options.pid_file is not None:
        changes["pid_file"] = options.pid_file
    if options.foreground:
        changes["background"] = False
    return replace(config, **changes) if changes else config  # type: ignore[arg-type]


def make_resolver(config: Config) -> TxtLookup:
    if config.test_dns_data is not None:
        records: dict[str, list[str]] = {}
        for entry in config.test_dns_data:
            records.setdefault(entry.key, []).append(entry.value or "")
        return TestDnsFile.from_records(records)
    timeout = float(config.dns_timeout) if config.dns_timeout > 0 else 3600.0
    return DnsResolver(list(config.nameservers) or None, timeout=timeout)


def build_runtime(config: Config, run_as: RunAs | None) -> Runtime:
    runtime = Runtime.build(
        config, make_resolver(config), check_uid=run_as.uid if run_as is not None else None
    )
    problems = runtime.policy.keys.preload()
    unsafe = [p for p in problems if p.condition is Condition.SECURITY]
    if unsafe:
        raise StartupError("; ".join(p.message for p in unsafe))
    for problem in problems:
        log.warning("key %s: %s", problem.key_name, problem.message)
    return runtime


def socket_spec(config: Config, options: DaemonOptions) -> str:
    spec = options.socket or (str(config.socket) if config.socket is not None else None)
    if not spec:
        raise StartupError("no milter socket: set Socket in the configuration or use -p")
    return spec


def run(options: DaemonOptions) -> int:
    """Start the daemon; returns the exit code (0 after a clean stop)."""
    setup_logging(syslog=False, stderr=True, verbose=options.verbose)
    try:
        config = read_config(options)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"dkimd: {problem}\n")
        return 78  # EX_CONFIG, as opendkim
    setup_logging(
        syslog=config.syslog,
        facility=config.syslog_facility,
        stderr=not config.background,
        verbose=options.verbose,
    )
    for warning in config.warnings:
        log.warning("%s", warning)
    try:
        user_spec = options.user or (
            f"{config.user_id.user}:{config.user_id.group}"
            if config.user_id is not None and config.user_id.group
            else (config.user_id.user if config.user_id is not None else None)
        )
        run_as = resolve_user(user_spec) if user_spec else None
        runtime = build_runtime(config, run_as)
        spec = parse_socket_spec(socket_spec(config, options))
        sock = bind_socket(spec, umask=config.umask, reuse_port=False)
    except (StartupError, ProcessError, ValueError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    if config.background:
        detach()
    pid_file = PidFile(config.pid_file) if config.pid_file else None
    try:
        if pid_file is not None:
            pid_file.write()
        if run_as is not None:
            drop_privileges(run_as)
    except ProcessError as exc:
        log.error("cannot start: %s", exc)
        return 1
    log.info(
        "dkimd %s starting (%s, listening on %s, %d worker%s)",
        __version__,
        config.source or options.config_path,
        spec,
        config.workers,
        "" if config.workers == 1 else "s",
    )
    try:
        if config.workers > 1:
            return _supervise(config, options, runtime, sock)
        return asyncio.run(_serve(options, runtime, sock))
    finally:
        if pid_file is not None:
            pid_file.remove()


async def _serve(options: DaemonOptions, runtime: Runtime, sock: socket.socket) -> int:
    holder = RuntimeHolder(runtime)
    stats = SessionStats()
    server = MilterServer(
        handler_factory(holder, stats),
        FILTER_OPTIONS,
        progress_interval=30.0,
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def reload() -> None:
        try:
            config = read_config(options)
            new = build_runtime(config, None)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error("reload failed; keeping the previous configuration")
            return
        except (StartupError, OSError) as exc:
            log.error("reload failed (%s); keeping the previous configuration", exc)
            return
        if str(new.config.socket) != str(holder.current.config.socket):
            log.warning("reload: a new Socket needs a restart; keeping the old one")
        holder.current = new
        for warning in config.warnings:
            log.warning("%s", warning)
        log.info("configuration reloaded from %s", options.config_path)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        loop.add_signal_handler(sig, reload)

    serving = asyncio.ensure_future(server.serve(sock))
    await stopping.wait()
    log.info("stopping: finishing in-flight messages")
    await server.stop(STOP_GRACE)
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    log.info(
        "stopped: %d messages (%d signed, %d verified: %d pass, %d fail), %d errors",
        stats.messages,
        stats.signed,
        stats.verified,
        stats.passed,
        stats.failed,
        stats.errors,
    )
    return 0


def _worker(options: DaemonOptions, runtime: Runtime, sock: socket.socket) -> NoReturn:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)
    code = 1
    try:
        code = asyncio.run(_serve(options, runtime, sock))
    finally:
        os._exit(code)


def _supervise(
    config: Config, options: DaemonOptions, runtime: Runtime, sock: socket.socket
) -> int:
    """Pre-fork `config.workers` processes on the shared socket; the kernel spreads accepts."""
    children: dict[int, float] = {}
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            _worker(options, runtime, sock)
        children[pid] = time.monotonic()

    def relay(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, relay)
    for _ in range(config.workers):
        spawn()
    restarts: list[float] = []
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        log.error("worker %d exited (status %d); restarting", pid, status)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > 10 * config.workers:
            log.error("workers keep dying; giving up")
            relay(signal.SIGTERM, None)
            stopping = True
            continue
        spawn()
    return 0
