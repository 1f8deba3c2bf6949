"""dkimd's own daemon for interop/e2e tests, set up the same way as support.opendkim.OpenDKIM.

    from support.dkimd import Dkimd

    with Dkimd(tmp_path / "dkimd", mode="sv", key_table={...}, signing_table={...},
               dns_records=key.records, internal_hosts=["127.0.0.1"]) as d:
        d.socket_spec       # "inet:PORT@127.0.0.1" (miltertest / opendkim syntax)
        d.postfix_milter    # "inet:127.0.0.1:PORT" (smtpd_milters)
        result = milter_transaction(d.socket_spec, message)   # support.opendkim
        d.log_text()        # everything the daemon wrote to stdout/stderr so far
        d.reload()          # SIGHUP: re-read the configuration and data sets
        d.wait_for_log(text)  # until the daemon has logged `text`
        d.terminate()       # SIGTERM; returns once the graceful stop has begun
    # on exit: SIGTERM, and the daemon must exit 0 (AssertionError otherwise)

`Dkimd` writes opendkim.conf (Mode, Domain/Selector/KeyFile or KeyTable/SigningTable,
Canonicalization, TestDNSData, InternalHosts, PidFile, Socket, extra `options`) into its
directory -- the same keys and defaults as support.opendkim.OpenDKIM, so one test can run
either daemon -- and runs ``sys.executable -m dkimd -x opendkim.conf -f`` with stdout/stderr
in ``dkimd.log`` there. It waits until the port (or unix socket) listens.

`Dkimd.from_config(workdir, conf_path, port=...)` runs an existing configuration file as
is (the caller has already pointed its Socket at `port`, or at a unix socket path).

Notes:

* ``Syslog no`` is written by default so everything lands in ``dkimd.log`` (dkimd logs to
  stderr in the foreground); ``SyslogSuccess yes`` and ``LogWhy yes`` make decisions visible.
* ``RequireSafeKeys no`` because pytest's tmp_path is under /tmp (see support.opendkim).
* DNS always comes from ``TestDNSData file:`` unless the caller passes its own options.
* Leaving the context manager with an exception still stops the daemon but does not mask
  the exception with the exit-code assertion.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from support.opendkim import key_and_table_options
from support.tools import free_port, is_listening, wait_for_listen

__all__ = ["Dkimd", "DkimdError"]


class DkimdError(RuntimeError):
    """The daemon did not start, or did not stop cleanly."""


class Dkimd:
    """A private ``python -m dkimd`` listening on 127.0.0.1:port (or a unix socket)."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        mode: str = "sv",
        domain: str | None = None,
        selector: str | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        key_table: Mapping[str, str] | str | os.PathLike[str] | None = None,
        signing_table: Mapping[str, str] | str | os.PathLike[str] | None = None,
        canonicalization: str = "relaxed/relaxed",
        dns_records: Mapping[str, str | Iterable[str]] | None = None,
        test_dns_data: str | os.PathLike[str] | None = None,
        internal_hosts: Sequence[str] | None = None,
        peer_list: Sequence[str] | None = None,
        authserv_id: str | None = None,
        options: Mapping[str, str] | None = None,
        port: int | None = None,
        unix_socket: bool = False,
        start_timeout: float = 15.0,
        stop_timeout: float = 15.0,
        extra_args: Sequence[str] = (),
        write_config: bool = True,
    ) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.conf_path = self.dir / "opendkim.conf"
        self.log_path = self.dir / "dkimd.log"
        self.pid_path = self.dir / "dkimd.pid"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.port = 0
        self.socket_path: Path | None = None
        if unix_socket:
            self.socket_path = self.dir / "milter.sock"
            self.socket_spec = f"local:{self.socket_path}"
            self.postfix_milter = f"unix:{self.socket_path}"
        else:
            self.port = port or free_port()
            self.socket_spec = f"inet:{self.port}@127.0.0.1"
            self.postfix_milter = f"inet:127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.config: dict[str, str] = {}
        if not write_config:
            return

        conf: dict[str, str] = {
            "Mode": mode,
            "Canonicalization": canonicalization,
            "Socket": self.socket_spec,
            "PidFile": str(self.pid_path),
            "RequireSafeKeys": "no",
            "Syslog": "no",
            "SyslogSuccess": "yes",
            "LogWhy": "yes",
            "UMask": "007",
        }
        conf.update(
            key_and_table_options(
                self.dir,
                domain=domain,
                selector=selector,
                keyfile=keyfile,
                key_table=key_table,
                signing_table=signing_table,
                test_dns_data=test_dns_data,
                dns_records=dns_records,
                internal_hosts=internal_hosts,
                peer_list=peer_list,
            )
        )
        if authserv_id:
            conf["AuthservID"] = authserv_id
        conf.update(options or {})
        self.config = conf
        self.write_config()

    @classmethod
    def from_config(
        cls,
        workdir: str | os.PathLike[str],
        conf_path: str | os.PathLike[str],
        *,
        port: int | None = None,
        socket_path: str | os.PathLike[str] | None = None,
        **kwargs: object,
    ) -> Dkimd:
        """Run an existing configuration file unchanged.

        Give the TCP `port` its Socket names on 127.0.0.1, or the unix `socket_path`."""
        if port is None and socket_path is None:
            raise ValueError("from_config needs the port (or socket_path) the config names")
        d = cls(workdir, port=port, write_config=False, **kwargs)  # type: ignore[arg-type]
        d.conf_path = Path(conf_path)
        if socket_path is not None:
            d.port = 0
            d.socket_path = Path(socket_path)
            d.socket_spec = f"local:{d.socket_path}"
            d.postfix_milter = f"unix:{d.socket_path}"
        return d

    def write_config(self) -> None:
        """(Re)write opendkim.conf from `self.config` (edit it, then `reload()`)."""
        self.conf_path.write_text(
            "# generated by tests/support/dkimd.py\n"
            + "".join(f"{k} {v}\n" for k, v in self.config.items())
        )

    # -- life cycle --

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "dkimd", "-x", str(self.conf_path), "-f", *self.extra_args]

    def start(self) -> Dkimd:
        if self.socket_path is not None and self.socket_path.exists():
            self.socket_path.unlink()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
            )
        if not self._wait_ready():
            code = self.proc.poll()
            self._kill()
            raise DkimdError(
                f"dkimd did not come up on {self.socket_spec} (exit {code}):\n{self.log_text()}"
                f"\n--- {self.conf_path} ---\n{self._conf_text()}"
            )
        return self

    def _conf_text(self) -> str:
        try:
            return self.conf_path.read_text(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if self.socket_path is not None:
                if self.socket_path.exists():
                    return True
            elif wait_for_listen(self.port, 0.05):
                return True
            time.sleep(0.02)
        return False

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise DkimdError("dkimd is not running")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(
        self, wait_for: str | None = "configuration reloaded", timeout: float = 10.0
    ) -> None:
        """SIGHUP; by default wait until the log says the new configuration is in use."""
        if not self.running():
            raise DkimdError(f"dkimd is not running:\n{self.log_text()}")
        text = self.log_text()
        before = (text.count(wait_for), text.count("reload failed")) if wait_for else (0, 0)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        if wait_for is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count(wait_for) > before[0] or text.count("reload failed") > before[1]:
                return
            time.sleep(0.02)
        raise DkimdError(f"no {wait_for!r} in the log after SIGHUP:\n{self.log_text()}")

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the log contains `text`; DkimdError (with the log) on timeout.

        The port listens before the daemon is done starting (it binds before it drops
        privileges, for one): a test that needs a later step waits for the line saying so."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() >= deadline:
                raise DkimdError(f"no {text!r} in the log after {timeout}s:\n{self.log_text()}")
            time.sleep(0.01)

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM without waiting for the exit: returns once the daemon has logged that it is
        finishing in-flight messages and its listening socket is gone, i.e. the graceful stop
        has begun. DkimdError if that does not happen within `timeout` seconds."""
        if not self.running():
            raise DkimdError(f"dkimd is not running:\n{self.log_text()}")
        stopping = "stopping: finishing in-flight messages"
        before = self.log_text().count(stopping)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(stopping) > before and not self._listening():
                return
            time.sleep(0.01)
        raise DkimdError(f"no graceful stop {timeout}s after SIGTERM:\n{self.log_text()}")

    def _listening(self) -> bool:
        if self.socket_path is not None:
            return self.socket_path.exists()
        return is_listening(self.port)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL and DkimdError on a hang)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.returncode if self.returncode is not None else 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                self.returncode = proc.returncode
                raise DkimdError(
                    f"dkimd did not stop within {self.stop_timeout}s of SIGTERM:\n"
                    + self.log_text()
                ) from None
        self.returncode = proc.returncode
        return proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Dkimd:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(DkimdError):
                self.stop()
            return
        code = self.stop()
        assert code == 0, f"dkimd exited {code} after SIGTERM:\n{self.log_text()}"
