"""dkimd.daemon pieces that need no running daemon: flags over config, sockets per worker,
restart limits, and reload keeping the run-as user for key safety."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from dkimd import daemon
from dkimd.config import Config, ConfigError, parse_config_text
from dkimd.daemon import (
    DaemonOptions,
    _Reloader,
    _restart_limit,
    bind_listener,
    supervised,
    user_spec,
)
from dkimd.keytools.generate import generate_rsa
from dkimd.process import RunAs
from dkimd.session import RuntimeHolder
from dkimd.sockets import parse_socket_spec

BASE = "Mode v\nSocket inet:8891@127.0.0.1\n"


def test_user_flag_overrides_user_id() -> None:
    config = parse_config_text(BASE + "UserID opendkim:opendkim\n")
    assert user_spec(config, DaemonOptions("c")) == "opendkim:opendkim"
    assert user_spec(config, DaemonOptions("c", user="root")) == "root"
    assert user_spec(parse_config_text(BASE + "UserID opendkim\n"), DaemonOptions("c")) == (
        "opendkim"
    )
    assert user_spec(parse_config_text(BASE), DaemonOptions("c")) is None


def test_supervised_with_workers_or_auto_restart() -> None:
    assert not supervised(parse_config_text(BASE))
    assert supervised(parse_config_text(BASE + "Workers 2\n"))
    assert supervised(parse_config_text(BASE + "AutoRestart yes\n"))


def test_restart_limit_from_auto_restart_rate() -> None:
    assert _restart_limit(parse_config_text(BASE + "AutoRestartRate 3/10s\n")) == (3, 10.0)
    assert _restart_limit(parse_config_text(BASE + "AutoRestartRate 5/2m\n")) == (5, 120.0)
    assert _restart_limit(parse_config_text(BASE + "Workers 4\n")) == (40, 60.0)


def test_tcp_workers_share_one_listening_socket() -> None:
    # Whichever worker is free accepts: no SO_REUSEPORT, so the kernel does not deal
    # connections out to a busy worker by hash.
    config = parse_config_text(BASE + "Workers 3\n")
    sock = bind_listener(parse_socket_spec("inet:0@127.0.0.1"), config)
    try:
        assert sock.getsockname()[1] != 0
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        sock.close()


def test_unix_listener_for_workers(tmp_path: Path) -> None:
    config = parse_config_text(BASE + "Workers 3\n")
    sock = bind_listener(parse_socket_spec(f"local:{tmp_path / 's'}"), config)
    try:
        assert stat.S_ISSOCK((tmp_path / "s").stat().st_mode)
    finally:
        sock.close()


def test_reload_judges_keys_for_the_run_as_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "opendkim.conf"
    conf.write_text(BASE)
    seen: list[RunAs | None] = []
    built = object()

    def fake_build(config: object, run_as: RunAs | None) -> object:
        seen.append(run_as)
        return built

    monkeypatch.setattr(daemon, "build_runtime", fake_build)
    run_as = RunAs(uid=4242, gid=4242, user="dkim", home="/")

    class Current:
        config = parse_config_text(BASE)

    holder = RuntimeHolder(Current())  # type: ignore[arg-type]
    asyncio.run(_Reloader(DaemonOptions(str(conf)), holder, run_as).off_loop())
    assert seen == [run_as]
    assert holder.current is built


def test_reload_keeps_the_old_runtime_on_any_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conf = tmp_path / "opendkim.conf"
    conf.write_text(BASE)

    def broken(config: object, run_as: object) -> object:
        raise RuntimeError("resolver exploded")

    monkeypatch.setattr(daemon, "build_runtime", broken)
    old = object()
    holder = RuntimeHolder(old)  # type: ignore[arg-type]
    logger = daemon.log
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger.parent, "propagate", True)
    with caplog.at_level("INFO", logger="dkimd"):
        asyncio.run(_Reloader(DaemonOptions(str(conf)), holder, None).off_loop())
        conf.unlink()
        asyncio.run(_Reloader(DaemonOptions(str(conf)), holder, None).off_loop())
    assert holder.current is old
    messages = [r.getMessage() for r in caplog.records]
    assert "reload failed (resolver exploded); keeping the previous configuration" in messages
    assert any(f'cannot read configuration file "{conf}"' in m for m in messages)
    assert messages[-1] == "reload failed; keeping the previous configuration"


def test_reload_keeps_the_test_public_keys_of_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # opendkim reads TestPublicKeys in main() only; after the detach (cwd /) a relative
    # name would point elsewhere anyway.
    conf = tmp_path / "opendkim.conf"
    conf.write_text(BASE + "TestPublicKeys changed-keys\n")
    seen: list[str | None] = []

    def fake_build(config: Config, run_as: RunAs | None) -> object:
        seen.append(config.test_public_keys)
        return object()

    monkeypatch.setattr(daemon, "build_runtime", fake_build)

    class Current:
        config = parse_config_text(BASE)

    holder = RuntimeHolder(Current())  # type: ignore[arg-type]
    reloader = _Reloader(DaemonOptions(str(conf)), holder, None, test_public_keys="/start/pubkeys")
    asyncio.run(reloader.off_loop())
    assert seen == ["/start/pubkeys"]


def test_daemon_refuses_what_opendkim_refuses_at_start(tmp_path: Path) -> None:
    (tmp_path / "kt").write_text("k example.com:s:/k\n")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(BASE.replace("Mode v", "Mode s") + f"KeyTable file:{tmp_path / 'kt'}\n")
    with pytest.raises(ConfigError, match="KeyTable requires either SigningTable"):
        daemon.read_config(DaemonOptions(str(conf)))
    assert daemon.check(DaemonOptions(str(conf))) == 78


def test_syslog_name_is_the_ident_of_the_log_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_config_text("SyslogName mail-dkim\n").syslog_name == "mail-dkim"
    conf = tmp_path / "opendkim.conf"
    conf.write_text("Mode v\nSyslogName mail-dkim\n")  # no Socket: it stops before serving
    assert daemon.run(DaemonOptions(str(conf))) == 78
    assert "mail-dkim[" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot be a syslog tag"):
        parse_config_text("SyslogName two words\n")


def test_check_refuses_an_unsafe_key_file_as_start_up_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """opendkim -n loads KeyFile (dkimf_config_load) and refuses an unsafe one."""
    # Reachable by others (pytest's tmp_path is not: its key would be safe whatever its mode).
    root = Path(tempfile.mkdtemp(prefix="dkimd-unsafe-"))
    try:
        root.chmod(0o755)
        key = root / "mail.private"
        key.write_bytes(generate_rsa(1024).private_pem)
        key.chmod(0o666)  # anyone may write it
        conf = root / "opendkim.conf"
        conf.write_text(f"Domain example.com\nSelector mail\nKeyFile {key}\n")
        assert daemon.check(DaemonOptions(str(conf))) == 78
        assert "not secure" in capsys.readouterr().err
        conf.write_text(conf.read_text() + "RequireSafeKeys no\n")
        assert daemon.check(DaemonOptions(str(conf))) == 0
    finally:
        shutil.rmtree(root)


def test_a_worker_publishes_its_metrics_and_stops_once_the_supervisor_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import os
    import signal

    from dkimd import metrics

    published: list[int] = []

    class Spy(metrics.Recorder):
        def publish(self) -> None:
            published.append(1)

    monkeypatch.setattr(metrics, "recorder", Spy())
    monkeypatch.setattr(daemon, "WORKER_TICK", 0.01)
    stops: list[int] = []

    async def run(supervisor: int) -> None:
        await asyncio.wait_for(daemon._worker_tick(supervisor, stops.append), 5)

    # Its supervisor is there: it publishes every tick and goes on.
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(daemon._worker_tick(os.getppid(), stops.append), 0.2))
    assert len(published) >= 3 and stops == []
    # Re-parented (the supervisor died): it publishes once more and stops, as on SIGTERM.
    asyncio.run(run(os.getppid() + 1))
    assert stops == [signal.SIGTERM]
