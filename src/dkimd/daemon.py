"""The daemon's life cycle: load, bind, detach, pid file, drop privileges, serve, reload, stop.

Order matters and follows opendkim: UMask is applied, keys are read and the listening
socket is bound while still root (a port under 1024, a socket directory only root can
write, a key directory only root can read); then the process detaches (unless `-f` or
`Background no`), writes the PidFile and drops to UserID (`-u`). The process that was
started waits until the daemon reports it is serving and exits 0 only then (exit 1 with
the reason otherwise), so `Type=forking` units and shell scripts see the truth.

Exit codes: 0 after a clean stop; 78 (EX_CONFIG, as opendkim) for a configuration error,
an unsafe key under RequireSafeKeys included; 1 when the daemon cannot start otherwise
(socket in use, no such user, pid file of a live instance).

Signals: SIGTERM/SIGINT stop accepting, let in-flight messages finish, exit 0.
SIGHUP/SIGUSR1 re-read the configuration and data sets; a broken new configuration (or
an unsafe key) is logged with the reason and the old one kept.

Workers: with `Workers N` (N > 1) or `AutoRestart yes` a supervisor process forks the
workers, restarts any that die abnormally (at most AutoRestartCount times in all, and at
most n times in t seconds with AutoRestartRate n/t; default 10 per worker per minute),
and relays SIGTERM/SIGINT/SIGHUP/SIGUSR1 to them. The workers share the one listening
socket, bound before privileges are dropped: whichever worker is free accepts the next
connection. (One SO_REUSEPORT socket per worker was tried first: the kernel then deals
connections out by address hash whatever each worker's load, so a worker that shares its
CPU with the MTA falls behind while another idles; bench/RESULTS.md has the numbers.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NoReturn

from dkimd import __version__, metrics
from dkimd.chroot import (
    EX_OSERR,
    ChrootError,
    change_root,
    syslog_warning,
    without_user_warning,
)
from dkimd.chroot import prepare as prepare_chroot
from dkimd.config import Condition, Config, ConfigError, Severity, load_config
from dkimd.config.basedir import kept_on_failure
from dkimd.config.load import analyze_config, build_config, daemon_refusals
from dkimd.config.operational import split_check_problems, without_operational
from dkimd.dns.base import TxtLookup, TxtStatus
from dkimd.dns.options import EX_SOFTWARE, ResolverConfigError, build_resolver
from dkimd.dns.resolver import DnsResolver
from dkimd.dns.testdata import TestDnsFile
from dkimd.dns.testkeys import KeyRecordsFirst, TestPublicKeysFile
from dkimd.key_guard import KeyGuard, watch_keys
from dkimd.key_trust import validates_keys
from dkimd.keytools.context import txt_lookup
from dkimd.log import flush_logging, get_logger, setup_logging
from dkimd.negotiation import filter_options_for
from dkimd.process import (
    PidFile,
    ProcessError,
    RunAs,
    StartupChannel,
    detach,
    die_with_parent,
    drop_privileges,
    orphaned,
    resolve_user,
)
from dkimd.server import MilterServer
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory
from dkimd.sockets import SocketSpec, bind_socket, parse_socket_spec, resolve_port
from dkimd.stores.dataset import close_stores, close_stores_later
from dkimd.systemd.activation import describe, listen_fds, milter_socket
from dkimd.systemd.notify import stderr_is_journal
from dkimd.systemd.service import Service

if TYPE_CHECKING:
    from dkimd.metrics.setup import Exporter

log = get_logger("daemon")

STOP_GRACE = 30.0  # in-flight messages get this long after SIGTERM
# Idle milter connections get this long after SIGTERM to start a message: Postfix opens
# its milter connection at SMTP connect, so a client between EHLO and MAIL would
# otherwise meet milter_default_action (451 by default) for a message sent a moment later.
STOP_IDLE_GRACE = 5.0


EX_CONFIG = 78  # sysexits.h, what opendkim exits with for configuration errors
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)
ALL_SIGNALS = STOP_SIGNALS + RELOAD_SIGNALS


class StartupError(Exception):
    """The daemon cannot start; the message is for the admin."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DaemonOptions:
    """opendkim's command line (-x -p -P -u -f -v), merged over the config file."""

    config_path: str
    socket: str | None = None
    pid_file: str | None = None
    user: str | None = None
    foreground: bool = False
    verbose: bool = False
    check_signing_table: bool | None = None  # -G (True) / -g (False) over CheckSigningTable


def read_config(options: DaemonOptions) -> Config:
    config = load_config(options.config_path)
    refusals = daemon_refusals(config, options.check_signing_table)
    if refusals:
        raise ConfigError([*refusals, *config.warnings])
    changes: dict[str, object] = {}
    if options.pid_file is not None:
        changes["pid_file"] = options.pid_file
    if options.foreground:
        changes["background"] = False
    return replace(config, **changes) if changes else config  # type: ignore[arg-type]


def make_resolver(config: Config) -> TxtLookup:
    """Where TXT records come from: TestDNSData or DNS, with key records from
    TestPublicKeys in front when that is set (as OpenDKIM: both may be set at once)."""
    resolver: TxtLookup
    if config.test_dns_data is not None:
        records: dict[str, list[str]] = {}
        for entry in config.test_dns_data:
            records.setdefault(entry.key, []).append(entry.value or "")
        resolver = _counted(TestDnsFile.from_records(records, missing=TxtStatus.SERVFAIL))
    else:
        timeout = float(config.dns_timeout) if config.dns_timeout > 0 else 3600.0
        factory: Callable[..., DnsResolver] = DnsResolver
        if validates_keys(config):
            # Imported only here: a filter that does not validate keeps dns.dnssec and its
            # objects out of its heap (every full garbage collection walks them).
            from dkimd.dns.validating import validating_resolver

            factory = validating_resolver(config)
        try:
            resolver = build_resolver(config.nameservers, timeout, config.resolver, factory)
        except ResolverConfigError as exc:
            raise StartupError(str(exc), exit_code=EX_SOFTWARE) from None
    if config.test_public_keys is not None:
        return KeyRecordsFirst(TestPublicKeysFile(config.test_public_keys), resolver)
    return resolver


def _counted(lookup: TxtLookup) -> TxtLookup:
    """With metrics on, a records file's answers count as lookups (dkimd.metrics.lookups)."""
    if not metrics.recorder.enabled:
        return lookup
    from dkimd.metrics.lookups import counted

    return counted(lookup)


def build_runtime(config: Config, run_as: RunAs | None, *, load_keys: bool = True) -> Runtime:
    """Runtime for `config`, every key loaded and judged for the user we run as (unless
    not `load_keys`: then `preload_keys` must follow)."""
    runtime = Runtime.build(
        config, make_resolver(config), check_uid=run_as.uid if run_as is not None else None
    )
    if load_keys:
        preload_keys(runtime)
    return runtime


def preload_keys(runtime: Runtime) -> None:
    """Load the keys now (as root); an unsafe one stops the start (StartupError)."""
    problems = runtime.policy.keys.preload()
    unsafe = [p for p in problems if p.condition is Condition.SECURITY]
    if unsafe:
        raise StartupError(
            "; ".join(f"key {p.key_name}: {p.message}" for p in unsafe), exit_code=EX_CONFIG
        )
    for problem in problems:
        log.warning("key %s: %s", problem.key_name, problem.message)


def enter_new_root(config: Config, run_as: RunAs | None) -> None:
    """ChangeRootDirectory (dkimd.chroot); raises StartupError (exit 71) on failure."""
    assert config.change_root_directory is not None
    root = config.change_root_directory
    for warning in (
        without_user_warning(os.getuid() == 0, run_as is not None),
        syslog_warning(root, config.syslog),
    ):
        if warning is not None:
            log.warning("%s", warning)
    prepare_chroot()
    try:
        change_root(root)
    except ChrootError as exc:
        raise StartupError(str(exc), exit_code=EX_OSERR) from None


def socket_spec(config: Config, options: DaemonOptions) -> str:
    spec = options.socket or (str(config.socket) if config.socket is not None else None)
    if not spec:
        raise StartupError(
            "no milter socket: set Socket in the configuration or use -p", exit_code=EX_CONFIG
        )
    return spec


def user_spec(config: Config, options: DaemonOptions) -> str | None:
    """`-u` over UserID, as `user` or `user:group`."""
    if options.user:
        return options.user
    if config.user_id is None:
        return None
    if config.user_id.group:
        return f"{config.user_id.user}:{config.user_id.group}"
    return config.user_id.user


def supervised(config: Config) -> bool:
    return config.workers > 1 or config.auto_restart


def bind_listener(spec: SocketSpec, config: Config) -> socket.socket:
    """The listening socket, shared by every worker."""
    return bind_socket(spec, umask=config.umask)


def start_metrics(config: Config, run_as: RunAs | None) -> Exporter | None:
    """MetricsSocket: bind it and install the recorder (dkimd.metrics.setup), or None."""
    if config.metrics_socket is None:
        return None
    from dkimd.metrics.setup import MetricsUnavailable, prepare

    many = supervised(config)
    if many and config.change_root_directory is not None:
        # The workers' value files live in a directory outside the new root.
        raise StartupError(
            "MetricsSocket with Workers or AutoRestart does not work with ChangeRootDirectory",
            exit_code=EX_CONFIG,
        )
    try:
        owner = (run_as.uid, run_as.gid) if run_as is not None else None
        return prepare(config, multiprocess=many, owner=owner)
    except MetricsUnavailable as exc:
        raise StartupError(str(exc), exit_code=EX_CONFIG) from None
    except OSError as exc:
        raise StartupError(f"MetricsSocket {config.metrics_socket}: {exc.strerror}") from None


def _config_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        if problem.severity is Severity.WARNING:
            log.warning("%s", problem)
        else:
            log.error("%s", problem)


def _read_config_or_report(options: DaemonOptions) -> Config | None:
    """The configuration, or None after telling the admin on stderr what is wrong."""
    try:
        return read_config(options)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"dkimd: {problem}\n")
    except OSError as exc:
        sys.stderr.write(f"dkimd: {options.config_path}: {exc.strerror or exc}\n")
    return None


def check(options: DaemonOptions) -> int:
    """`-n`: read the configuration, report problems, exit 0 or 78.

    As opendkim -n: only what loading the configuration finds decides the exit status (an
    unsafe key under RequireSafeKeys included, which start-up refuses too); the options
    opendkim reads only when really starting (Socket, UserID, AutoRestartRate...:
    `dkimd.config.operational`) are not checked, so a file without Socket, or with one that
    would not work, passes. What would stop a real start is still said, as a warning.
    """
    config = _check_config(options)
    if config is None:
        return EX_CONFIG
    run_as: RunAs | None = None
    try:
        given = options.socket or (str(config.socket) if config.socket is not None else None)
        if given:
            spec = parse_socket_spec(given)
            if spec.family != "local":
                resolve_port(spec)
        wanted = user_spec(config, options)
        if wanted:
            run_as = resolve_user(wanted)
    except (ValueError, ProcessError) as exc:
        sys.stderr.write(f"dkimd: warning: {exc}; the daemon would not start\n")
    try:
        build_runtime(config, run_as)
    except StartupError as exc:
        if exc.exit_code == EX_SOFTWARE:
            # The resolver (ResolverConfiguration): opendkim sets it up after -n returns.
            sys.stderr.write(f"dkimd: warning: {exc}; the daemon would not start\n")
            return 0
        sys.stderr.write(f"dkimd: {exc}\n")
        return exc.exit_code
    return 0


def _check_config(options: DaemonOptions) -> Config | None:
    """The configuration as `-n` judges it, or None after saying on stderr why it fails."""
    report = analyze_config(options.config_path)
    failing, warnings = split_check_problems(report.problems, report.raw.problems)
    config = report.config
    if config is None and not failing:
        # Only operational options are wrong: check the rest as opendkim -n does.
        stripped = build_config(without_operational(report.raw))
        failing = list(stripped.errors)
        config = stripped.config
    if config is not None and not failing:
        failing = daemon_refusals(config, options.check_signing_table)
    for problem in [*failing, *warnings]:
        sys.stderr.write(f"dkimd: {problem}\n")
    return None if failing or config is None else config


def run(options: DaemonOptions) -> int:
    """Start the daemon; returns the exit code (0 after a clean stop)."""
    setup_logging(syslog=False, stderr=True, verbose=options.verbose)
    # Reloads read the file again after BaseDirectory has moved us: keep where it is.
    config_path = os.path.abspath(options.config_path)
    config = _read_config_or_report(options)
    if config is None:
        return EX_CONFIG
    options = replace(options, config_path=config_path)
    # Until we detach, stderr is the admin's terminal (or the journal): say everything there.
    setup_logging(
        syslog=config.syslog,
        facility=config.syslog_facility,
        stderr=True,
        verbose=options.verbose,
        ident=config.syslog_name,
        log_format=config.log_format,
    )
    for warning in config.warnings:
        log.warning("%s", warning)
    # Read before detaching: LISTEN_PID and WATCHDOG_PID name this process.
    service = Service.from_environment()
    spec: SocketSpec | None = None
    try:
        activated = listen_fds()  # socket activation: the milter socket is systemd's
        if not activated or options.socket or config.socket is not None:
            spec = parse_socket_spec(socket_spec(config, options))
        wanted = user_spec(config, options)
        run_as = resolve_user(wanted) if wanted else None
        if config.umask is not None:
            os.umask(config.umask)  # as opendkim: for the socket file and the pid file
        new_root = config.change_root_directory is not None
        exporter = start_metrics(config, run_as)  # before keys load: their errors count
        runtime = build_runtime(config, run_as, load_keys=not new_root)
        # A TCP socket's host name is resolved outside a new root; a local: path is one
        # inside it, as opendkim opens the socket after the chroot.
        early: socket.socket | None = None
        if activated:
            early, mismatch = milter_socket(activated, spec)
            if mismatch:
                log.warning("%s", mismatch)
            service.socket_from_systemd = True
        elif spec is not None and (not new_root or spec.family != "local"):
            early = bind_listener(spec, config)
        if new_root:
            enter_new_root(config, run_as)
            preload_keys(runtime)  # KeyTable keys are read inside the new root from now on
        if early is None:
            assert spec is not None  # no socket from systemd: parsed above
            early = bind_listener(spec, config)
        sock = early
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return exc.exit_code
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return EX_CONFIG
    except (ProcessError, OSError) as exc:
        log.error("cannot start: %s", _os_error_text(exc, spec))
        return 1
    channel = StartupChannel(None)
    # In the foreground under systemd with Syslog yes, the journal gets syslog's copy of
    # each line already: stderr is dropped once started, as detaching drops it.
    if config.background or (config.syslog and stderr_is_journal()):
        if config.background:
            channel = detach(keep_directory=config.base_directory is not None)
        setup_logging(
            syslog=config.syslog,
            facility=config.syslog_facility,
            stderr=False,
            verbose=options.verbose,
            ident=config.syslog_name,
            log_format=config.log_format,
        )
    pid_file = PidFile(config.pid_file) if config.pid_file else None
    try:
        if pid_file is not None:
            pid_file.write()
        if run_as is not None:
            drop_privileges(run_as)
    except (ProcessError, OSError) as exc:
        log.error("cannot start: %s", exc)
        channel.failed(f"cannot start: {exc}")
        if pid_file is not None:
            pid_file.remove()
        return 1
    service.listening_on = describe(sock) if service.socket_from_systemd else str(spec)
    log.info(
        "dkimd %s starting (%s, listening on %s%s, %d worker%s%s)",
        __version__,
        config.source or options.config_path,
        service.listening_on,
        " from systemd" if service.socket_from_systemd else "",
        config.workers,
        "" if config.workers == 1 else "s",
        f", as {run_as.user}" if run_as is not None else "",
    )
    try:
        if supervised(config):
            return _supervise(config, options, runtime, sock, run_as, channel, service, exporter)
        return asyncio.run(_serve(options, runtime, sock, run_as, channel, service, exporter))
    finally:
        channel.failed("the daemon stopped during start-up")  # no-op once ready
        if pid_file is not None:
            leftover = pid_file.remove()
            if leftover is not None:
                log.warning("%s", leftover)


def _os_error_text(exc: Exception, spec: SocketSpec | None) -> str:
    if isinstance(exc, OSError) and spec is not None and exc.errno is not None:
        return f"{spec}: {exc.strerror}"
    return str(exc)


class _Reloader:
    """SIGHUP/SIGUSR1: build a new Runtime from the files; keep the old one on any error."""

    def __init__(
        self,
        options: DaemonOptions,
        holder: RuntimeHolder,
        run_as: RunAs | None,
        *,
        test_public_keys: str | None = None,
        start_nameservers: tuple[str, ...] = (),
        query_cache: bool | None = None,
    ):
        self.options = options
        self.holder = holder
        self.run_as = run_as
        # OpenDKIM reads TestPublicKeys once, at start (main), not on reload.
        self.test_public_keys = test_public_keys
        # After ChangeRootDirectory: the servers of the start, for a new root that has no
        # etc/resolv.conf of its own.
        self.start_nameservers = start_nameservers
        # QueryCache is read in opendkim's main, so not on reload (opendkim(8))
        self.query_cache = query_cache

    @classmethod
    def keeping_start(
        cls, options: DaemonOptions, holder: RuntimeHolder, run_as: RunAs | None, runtime: Runtime
    ) -> _Reloader:
        """The reloader of a daemon started with `runtime`: what is read only at start
        (TestPublicKeys, QueryCache, the DNS servers of a new root) stays as it was."""
        return cls(
            options,
            holder,
            run_as,
            test_public_keys=runtime.config.test_public_keys,
            start_nameservers=_start_nameservers(runtime),
            query_cache=runtime.config.resolver.query_cache,
        )

    def read(self) -> tuple[Config, Runtime]:
        """The configuration and Runtime of the files as they are now; raises ConfigError
        or anything else that stops them being built (the caller keeps what it has)."""
        # BaseDirectory: a failed reload must leave the running one's directory
        with kept_on_failure():
            config = read_config(self.options)
            config = replace(
                config,
                test_public_keys=self.test_public_keys,
                resolver=replace(config.resolver, query_cache=self.query_cache),
            )
            if (
                self.start_nameservers
                and not config.nameservers
                and config.resolver.configuration is None
                and not os.path.exists("/etc/resolv.conf")
            ):
                config = replace(config, nameservers=self.start_nameservers)
            return config, build_runtime(config, self.run_as)

    async def off_loop(self) -> bool:
        """Reload: the files read and the Runtime built in a thread (reading tables behind
        a server, a log-in check or whole lists, may take seconds, during which the event
        loop goes on serving messages under the old configuration), then put in force on
        the loop. True when the new configuration is in force."""
        log.info("reloading configuration from %s", self.options.config_path)
        try:
            built = await asyncio.to_thread(self.read)
        except Exception as exc:
            return self._refused(exc)
        return self._apply(*built)

    def _refused(self, exc: Exception) -> bool:
        if isinstance(exc, ConfigError):
            _config_problems(exc)
            log.error("reload failed; keeping the previous configuration")
        else:  # anything at all: the running config stays
            log.error("reload failed (%s); keeping the previous configuration", exc)
        metrics.recorder.config_loaded(False, reload=True)
        return False

    def _apply(self, config: Config, new: Runtime) -> bool:
        old = self.holder.current.config
        if str(config.socket) != str(old.socket) and self.options.socket is None:
            log.warning("reload: a new Socket needs a restart; still listening on the old one")
        if config.workers != old.workers or config.user_id != old.user_id:
            log.warning("reload: Workers and UserID changes need a restart")
        self.holder.current = new
        metrics.recorder.config_loaded(True, reload=True)
        close_stores_later(old)  # remote data sets' connections (dkimd.stores)
        for warning in config.warnings:
            log.warning("%s", warning)
        log.info("configuration reloaded from %s", self.options.config_path)
        return True


async def _serve(
    options: DaemonOptions,
    runtime: Runtime,
    sock: socket.socket,
    run_as: RunAs | None,
    channel: StartupChannel,
    service: Service,
    exporter: Exporter | None = None,
    supervisor: int | None = None,
) -> int:
    """Serve until stopped; `supervisor`: in a worker, the pid of the supervisor."""
    holder = RuntimeHolder(runtime)
    metrics.recorder.process_started()
    stats = SessionStats()
    server = MilterServer(
        handler_factory(holder, stats),
        # Fixed at start: a reload that adds a PeerList or drops Mode v needs a restart.
        filter_options_for(runtime.config),
        progress_interval=30.0,
        # read at start, not on reload, as opendkim
        milter_debug=runtime.config.milter_debug,
    )
    service.count_from(stats, server)  # before a reload signal can arrive
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reload = _Reloader.keeping_start(options, holder, run_as, runtime)

    def stop(signum: int) -> None:
        # From here on further signals stay blocked: a second SIGTERM while in-flight
        # messages finish, or after the loop has given the signals back to SIG_DFL,
        # must not kill the process half-way (exit -15, pid file left behind).
        signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)
        if not stopping.is_set():
            log.info("%s: stopping", signal.Signals(signum).name)
            service.stopping()
        stopping.set()

    reloading: asyncio.Task[None] | None = None
    again = False

    async def reload_until_current() -> None:
        nonlocal again
        while True:
            again = False
            service.reloading()
            service.reloaded(await reload.off_loop())
            if not again:
                return

    def reload_and_tell() -> None:
        nonlocal reloading, again
        if reloading is not None and not reloading.done():
            # The files may have changed again since the running read began: one more
            # read once it is done, however many signals came meanwhile.
            again = True
            return
        reloading = loop.create_task(reload_until_current())

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    for sig in RELOAD_SIGNALS:
        loop.add_signal_handler(sig, reload_and_tell)
    # Workers start with these blocked (see _spawn); pending ones are delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ALL_SIGNALS)

    serving = asyncio.ensure_future(
        server.serve(sock, remove_unix_socket=not service.socket_from_systemd)
    )
    exporting = exporter.serve_here() if exporter is not None else None
    await asyncio.sleep(0)  # let serve() register the listener before we say "ready"
    channel.ready()
    service.ready()
    ticking = asyncio.ensure_future(service.run())  # watchdog pings, STATUS, worker counters
    guarding = asyncio.ensure_future(
        watch_keys(holder, KeyGuard(lambda c: _counted(txt_lookup(c))))
    )
    watching = None
    if supervisor is not None:
        watching = asyncio.ensure_future(_worker_tick(supervisor, stop))
    await stopping.wait()
    guarding.cancel()
    if watching is not None:
        watching.cancel()
    if exporting is not None:
        exporting.cancel()
    log.info("stopping: finishing in-flight messages")
    await server.stop(STOP_GRACE, idle_grace=STOP_IDLE_GRACE)
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await close_stores(holder.current.config)
    ticking.cancel()
    service.tick()  # a worker's last counts, for the supervisor's totals
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


#: Seconds between a worker's copies of its metrics (dkimd.metrics.shared) and its looks at
#: whether its supervisor is still there.
WORKER_TICK = 1.0


async def _worker_tick(supervisor: int, stop: Callable[[int], None]) -> None:
    """A worker's chores every WORKER_TICK: publish its metrics; stop (finishing the
    messages in flight) once the supervisor is gone, which the parent-death signal says
    first where there is one (Linux): a supervisor killed with SIGKILL relays nothing."""
    while True:
        await asyncio.sleep(WORKER_TICK)
        metrics.recorder.publish()
        if orphaned(supervisor):
            log.error("the supervisor (pid %d) is gone", supervisor)
            stop(signal.SIGTERM)
            return


def _start_nameservers(runtime: Runtime) -> tuple[str, ...]:
    """The DNS servers asked since start, kept for reloads inside a new root."""
    if runtime.config.change_root_directory is None or runtime.config.nameservers:
        return ()
    resolver = runtime.resolver
    if isinstance(resolver, KeyRecordsFirst):
        resolver = resolver.other
    return tuple(resolver.nameservers) if isinstance(resolver, DnsResolver) else ()


def _worker(
    options: DaemonOptions,
    runtime: Runtime,
    sock: socket.socket,
    run_as: RunAs | None,
    service: Service,
    supervisor: int,
) -> NoReturn:
    code = 1
    try:
        metrics.recorder.worker_forked()
        for sig in ALL_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # still blocked; asyncio takes them over
        # SIGTERM when the supervisor dies (pending until the event loop takes it over).
        die_with_parent(signal.SIGTERM, supervisor)
        code = asyncio.run(
            _serve(options, runtime, sock, run_as, StartupChannel(None), service, None, supervisor)
        )
    except BaseException:
        log.exception("worker failed")
    finally:
        with contextlib.suppress(Exception):
            metrics.recorder.publish()  # its last counts, for the exporter's sums
        flush_logging()
        os._exit(code)


_EXPORTER_SLOT = -2  # the supervisor's child serving the metrics page
_EXPORTER_RESTARTS = 100  # then metrics are given up, not the mail


def _child_name(slot: int) -> str:
    return "metrics exporter" if slot == _EXPORTER_SLOT else "worker"


def _restart_limit(config: Config) -> tuple[int, float]:
    rate = config.auto_restart_rate
    if rate is not None:
        return rate.count, float(rate.seconds)
    return 10 * config.workers, 60.0


def _supervise(
    config: Config,
    options: DaemonOptions,
    runtime: Runtime,
    sock: socket.socket,
    run_as: RunAs | None,
    channel: StartupChannel,
    service: Service,
    exporter: Exporter | None = None,
) -> int:
    """Pre-fork the workers, restart the ones that die, relay signals; returns the exit code.

    With MetricsSocket, one more child serves the metrics page (slot ``_EXPORTER_SLOT``),
    restarted as a worker is.

    On SIGHUP/SIGUSR1 the supervisor reads the configuration too, after relaying the
    signal, so that a worker started later serves the configuration in force, not the
    one of the start (if its read fails, later workers get the one it had before). Its
    read is not counted in the metrics: each worker counts its own, and the supervisor
    counts one reload per signal once the workers have answered (``Service``)."""
    children: dict[int, int] = {}  # pid -> worker slot
    stopping = False
    give_up = False
    current = RuntimeHolder(runtime)  # what a new worker starts with
    reread = _Reloader.keeping_start(options, current, run_as, runtime)

    def spawn(slot: int) -> None:
        metrics.recorder.publish()  # what this process counted, before a child copies it
        # Signals stay blocked across fork so a new worker cannot die of a SIGHUP (default
        # action: terminate) before its event loop has taken the signal over.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)
        supervisor = os.getpid()
        try:
            if slot == _EXPORTER_SLOT:
                assert exporter is not None
                pid = exporter.fork_process(sock.close)
            else:
                pid = os.fork()
                if pid == 0:
                    worker = service.for_worker(slot)
                    _worker(options, current.current, sock, run_as, worker, supervisor)
            children[pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        log.info("%s %d started (slot %d)", _child_name(slot), pid, slot)

    def relay(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in STOP_SIGNALS:
            if not stopping:
                service.stopping()
            stopping = True
        elif not stopping:
            service.relay_reload()  # READY=1 once every worker has reloaded
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum in STOP_SIGNALS else signum)
        if signum in RELOAD_SIGNALS and not stopping:
            reread_configuration()

    def reread_configuration() -> None:
        with metrics.muted():  # the workers count theirs
            try:
                current.current = reread.read()[1]
            except ConfigError:
                log.warning("supervisor: new workers keep the previous configuration")
            except Exception as exc:
                log.warning("supervisor: new workers keep the previous configuration (%s)", exc)

    counting = metrics.recorder  # not the muted one: SIGALRM may come during a re-read

    def reload_counted(ok: bool) -> None:
        # One per signal: ok if every worker took the new configuration (Service).
        counting.config_loaded(ok, reload=True)
        counting.publish()

    def wedged(slot: int) -> None:
        # SIGKILL: a stuck event loop never runs the handlers SIGTERM would need. The
        # restart below replaces it (its in-flight messages get the MTA's milter default).
        for pid, child_slot in list(children.items()):
            if child_slot == slot:
                log.error(
                    "worker %d has not ticked for %gs (WatchdogSec); killing it",
                    pid,
                    service.watchdog or 0.0,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    for sig in ALL_SIGNALS:
        signal.signal(sig, relay)
    service.supervise(config.workers)
    service.on_reload = reload_counted
    service.on_wedged = wedged
    # Before a relayed reload can arm the timer: SIGALRM's default action is to terminate.
    service.start_timer()  # watchdog pings and STATUS from the supervisor
    for slot in range(config.workers):
        spawn(slot)
    if exporter is not None:
        spawn(_EXPORTER_SLOT)
    channel.ready()
    service.ready()
    limit, window = _restart_limit(config)
    restarts: list[float] = []
    total = 0
    exporter_restarts = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot = children.pop(pid, -1)
        if exporter is not None:
            exporter.process_dead(pid)  # its live gauges (open connections) go
        if slot >= 0:
            service.worker_died(slot)
        if slot == -1 or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if slot == _EXPORTER_SLOT:
            # Restarted on its own budget: a failing metrics page must never stop the mail.
            exporter_restarts += 1
            if exporter_restarts > _EXPORTER_RESTARTS:
                log.error("metrics exporter %d %s; not restarted again", pid, how)
            else:
                log.error("metrics exporter %d %s; restarting", pid, how)
                spawn(slot)
            continue
        if code == 0:
            log.info("worker %d exited", pid)
            if all(s == _EXPORTER_SLOT for s in children.values()):
                relay(signal.SIGTERM, None)  # no worker left: the exporter goes too
            continue
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < window] + [now]
        total += 1
        if len(restarts) > limit or (
            config.auto_restart_count and total > config.auto_restart_count
        ):
            log.error("worker %d %s; too many restarts, giving up", pid, how)
            give_up = True
            stopping = True
            relay(signal.SIGTERM, None)
            continue
        log.error("worker %d %s; restarting", pid, how)
        spawn(slot)
    service.stop_timer()
    sock.close()
    log.info("supervisor stopped")
    return 1 if give_up else 0
