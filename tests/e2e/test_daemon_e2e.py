"""The real daemon (`python -m dkimd`) as an admin runs it: flags, detaching, sockets,
privileges, pid file, signals, reload, logging, workers, start-up refusals.

Every test starts the daemon as a process and talks milter to it (miltertest, or a raw
socket for inet6, which Debian's miltertest cannot reach), then checks what an admin
would look at: exit codes, the pid file, /proc, socket file modes, the log.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.dkimd import Dkimd
from support.opendkim import DkimKey, genkey, lua_string, milter_transaction, run_miltertest
from support.tools import free_port, is_listening, require, unavailable, wait_until_read

pytestmark = [pytest.mark.interop]

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: daemon test\r\n"
    b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
    b"Message-ID: <daemon.test@example.com>\r\n"
    b"\r\n"
    b"Hello,\r\n\r\nthis is a test.\r\n"
)
NET_MESSAGE = MESSAGE.replace(b"alice@example.com", b"carol@example.net")
SIGNED_LINE = "TESTQUEUEID: DKIM-Signature field added (s=mail, d=example.com)"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory others can reach (pytest's tmp_path is under a 0700 directory, and a
    directory nobody else can enter makes every key below it safe)."""
    path = Path(tempfile.mkdtemp(prefix="dkimd-public-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    require("opendkim-genkey")
    return genkey(tmp_path_factory.mktemp("daemon-key"), "example.com", "mail", 1024)


def write_conf(workdir: Path, key: DkimKey, socket_spec: str, **options: str) -> Path:
    """An opendkim.conf in the seed's shape around `key` (RequireSafeKeys off: /tmp)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "KeyTable").write_text(
        f"mail._domainkey.example.com example.com:mail:{key.private_key}\n"
    )
    (workdir / "SigningTable").write_text("*@example.com mail._domainkey.example.com\n")
    (workdir / "TrustedHosts").write_text("127.0.0.1\n::1\nlocalhost\n")
    (workdir / "dns.data").write_text(f"{key.dns_name} {key.txt}\n")
    conf: dict[str, str] = {
        "Canonicalization": "relaxed/relaxed",
        "InternalHosts": f"refile:{workdir / 'TrustedHosts'}",
        "KeyTable": f"refile:{workdir / 'KeyTable'}",
        "SigningTable": f"refile:{workdir / 'SigningTable'}",
        "LogWhy": "yes",
        "Mode": "sv",
        "PidFile": str(workdir / "dkimd.pid"),
        "Socket": socket_spec,
        "Syslog": "no",
        "SyslogSuccess": "yes",
        "UMask": "022",
        "RequireSafeKeys": "no",
        "TestDNSData": f"file:{workdir / 'dns.data'}",
    }
    conf.update(options)
    path = workdir / "opendkim.conf"
    path.write_text("".join(f"{k} {v}\n" for k, v in conf.items() if v))
    return path


def dkimd(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dkimd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists"; it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def wait_for_log(d: Dkimd, pattern: str, count: int = 1, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = d.log_text()
        if len(re.findall(pattern, text)) >= count:
            return text
        time.sleep(0.02)
    raise AssertionError(f"{count}x {pattern!r} not in the log:\n{d.log_text()}")


def proc_ids(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
    gid = int(re.search(r"^Gid:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
    return uid, gid


def signed(socket_spec: str, message: bytes = MESSAGE) -> list[str]:
    result = milter_transaction(socket_spec, message)
    assert result.reply in ("c", "a"), result.output
    return result.headers("DKIM-Signature")


class Background:
    """`dkimd ARGS` without -f; kills what is left at the end."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.pids: list[int] = []

    def start(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = dkimd(*args)
        if proc.returncode == 0 and self.pid_file.exists():
            self.pids.append(int(self.pid_file.read_text()))
        return proc

    def cleanup(self) -> None:
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Background]:
    b = Background(tmp_path / "d" / "dkimd.pid")
    yield b
    b.cleanup()


# -- detaching, pid file, exit codes ---------------------------------------------------------


@pytest.mark.parametrize("form", [["-x"], ["serve", "-x"]], ids=["opendkim-flags", "serve"])
def test_background_start_returns_once_serving_and_stops_cleanly(
    tmp_path: Path, key: DkimKey, background: Background, form: list[str]
) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", UMask="077")
    proc = background.start(*form, str(conf))
    assert proc.returncode == 0, proc.stderr
    # The parent returned: the socket listens, the pid file names the live daemon already.
    assert is_listening(port)
    pid_file = tmp_path / "d" / "dkimd.pid"
    pid = int(pid_file.read_text())
    assert alive(pid)
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600  # written under UMask 077
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")  # detached the classic way
    # A new session (no controlling terminal) it does not lead (so it cannot get one back).
    assert os.getsid(pid) not in (os.getsid(0), pid)
    assert signed(f"inet:{port}@127.0.0.1")
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid), "daemon still running 15 s after SIGTERM"
    assert not pid_file.exists()
    assert not is_listening(port)


def test_background_start_failures_are_reported_by_the_parent(
    tmp_path: Path, key: DkimKey, background: Background
) -> None:
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1")
    # The port is taken: bind fails before detaching.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = background.start("-x", str(conf))
    assert proc.returncode == 1
    assert f"inet:{port}@127.0.0.1: Address already in use" in proc.stderr
    # The pid file names a live process: found after detaching, reported through the parent.
    pid_file = tmp_path / "d" / "dkimd.pid"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(f"{sleeper.pid}\n")
        proc = background.start("-x", str(conf))
        assert proc.returncode == 1
        assert f"another instance is running (pid {sleeper.pid})" in proc.stderr
        assert pid_file.read_text() == f"{sleeper.pid}\n"  # not ours: left alone
        time.sleep(0.2)
        assert not is_listening(port), "the daemon should have exited"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_version_and_check_flags(tmp_path: Path, key: DkimKey) -> None:
    conf = write_conf(tmp_path, key, "inet:8891@localhost")
    version = dkimd("-V")
    assert version.returncode == 0 and version.stdout.startswith("dkimd ")
    assert dkimd("-n", "-x", str(conf)).returncode == 0
    assert dkimd("serve", "-n", "-x", str(conf)).returncode == 0
    # As opendkim -n: the socket and the user are not part of the check (it exits before
    # looking at them), so they do not change the status; dkimd still warns.
    bad_user = dkimd("-n", "-x", str(conf), "-u", "no-such-user-dkimd")
    assert bad_user.returncode == 0 and "warning: UserID: no such user" in bad_user.stderr
    bad_socket = dkimd("-n", "-x", str(conf), "-p", "inet:notaport@localhost")
    assert bad_socket.returncode == 0 and "bad port" in bad_socket.stderr
    no_socket = tmp_path / "no-socket.conf"
    no_socket.write_text("Mode v\n# " + "x" * 25000 + "\n")
    check = dkimd("-n", "-x", str(no_socket))
    assert (check.returncode, check.stderr) == (0, "")
    start = dkimd("-f", "-x", str(no_socket))
    assert start.returncode == 78 and "no milter socket" in start.stderr


# -- sockets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["inet:{port}@127.0.0.1", "inet:{port}@localhost", "inet:{port}", "inet:{port}@[127.0.0.1]"],
)
def test_inet_sockets_serve(tmp_path: Path, key: DkimKey, spec: str) -> None:
    require("miltertest")
    port = free_port()
    text = spec.format(port=port)
    with Dkimd.from_config(tmp_path, write_conf(tmp_path / "d", key, text), port=port) as d:
        assert signed(f"inet:{port}@127.0.0.1")
        if "@" not in text:
            # "all addresses": bound to the wildcard, not to loopback only.
            listen = subprocess.run(
                ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=False
            ).stdout
            assert "0.0.0.0:" in listen or "*:" in listen, listen
        assert SIGNED_LINE in d.log_text()


def _optneg(family: int, address: tuple[str, int]) -> tuple[int, int, int]:
    """A milter v6 option negotiation on a raw socket; returns (version, actions, protocol)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(address)
        body = b"O" + struct.pack(">III", 6, 0x1FF, 0x1FFFFF)
        s.sendall(struct.pack(">I", len(body)) + body)
        header = b""
        while len(header) < 4:
            chunk = s.recv(4 - len(header))
            assert chunk, "connection closed before the reply"
            header += chunk
        (length,) = struct.unpack(">I", header)
        reply = b""
        while len(reply) < length:
            chunk = s.recv(length - len(reply))
            assert chunk
            reply += chunk
    assert reply[:1] == b"O", reply
    version, actions, protocol = struct.unpack(">III", reply[1:13])
    return version, actions, protocol


def _require_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        unavailable(
            f"no IPv6 loopback ({exc}); scripts/bootstrap.sh enables it as root with "
            "sysctl net.ipv6.conf.lo.disable_ipv6=0"
        )


def test_inet6_socket_serves(tmp_path: Path, key: DkimKey) -> None:
    _require_ipv6_loopback()
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet6:{port}@[::1]")
    with Dkimd.from_config(tmp_path, conf, port=port):
        version, actions, protocol = _optneg(socket.AF_INET6, ("::1", port))
        assert version == 6
        assert actions & 0x01  # SMFIF_ADDHDRS: we insert DKIM-Signature
        assert protocol & 0x100000  # SMFIP_HDR_LEADSPC, as dkimd asks for it
        with pytest.raises(OSError):  # bound to ::1 only
            _optneg(socket.AF_INET, ("127.0.0.1", port))


@pytest.mark.parametrize("prefix", ["local", "unix"])
def test_unix_socket_mode_from_umask_and_stale_file_replaced(
    tmp_path: Path, key: DkimKey, prefix: str
) -> None:
    require("miltertest")
    path = tmp_path / "d" / "milter.sock"
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # left behind: nobody accepts on it
    stale.close()
    assert path.is_socket()
    conf = write_conf(tmp_path / "d", key, f"{prefix}:{path}", UMask="007")
    d = Dkimd.from_config(tmp_path, conf, socket_path=path)
    d.socket_path = None  # keep the stale file: the daemon must replace it, not the harness
    d.port = 0
    with open(d.log_path, "ab") as log:
        proc = subprocess.Popen(
            d.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    d.proc = proc
    try:
        deadline = time.monotonic() + 15
        while not is_accepting(path) and time.monotonic() < deadline:
            assert proc.poll() is None, d.log_text()
            time.sleep(0.02)
        assert stat.S_IMODE(path.stat().st_mode) == 0o770  # 0777 & ~UMask 007
        assert signed(f"local:{path}")
    finally:
        assert d.stop() == 0, d.log_text()
    assert not path.exists(), "socket file left behind after a clean stop"


def is_accepting(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def test_unix_socket_in_use_is_not_stolen(tmp_path: Path, key: DkimKey) -> None:
    path = tmp_path / "in-use.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        conf = write_conf(tmp_path / "d", key, f"local:{path}")
        proc = dkimd("-f", "-x", str(conf))
        assert proc.returncode == 1
        assert "in use by another process" in proc.stderr
        assert path.is_socket()


# -- privileges -------------------------------------------------------------------------------


def _opendkim_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        unavailable("dropping privileges needs root")
    try:
        return pwd.getpwnam("opendkim")
    except KeyError:
        unavailable("no opendkim user (apt-get install opendkim)")


@pytest.mark.parametrize("how", ["UserID", "-u"])
def test_drops_to_user_after_binding(tmp_path: Path, key: DkimKey, how: str) -> None:
    require("miltertest")
    user = _opendkim_user()
    port = free_port()
    if how == "UserID":
        conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", UserID="opendkim")
        extra: list[str] = []
    else:
        # -u wins over UserID.
        conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", UserID="root")
        extra = ["-u", "opendkim:opendkim"]
    d = Dkimd.from_config(tmp_path, conf, port=port, extra_args=extra)
    with d:
        # It listens as soon as it has bound, before the drop; this line comes after it.
        d.wait_for_log(", as opendkim)")
        assert proc_ids(d.pid) == (user.pw_uid, user.pw_gid)
        # The key (root's, 0600, in a root-only directory) was read before the drop.
        assert signed(d.socket_spec)


# -- key safety -------------------------------------------------------------------------------


def test_require_safe_keys_refuses_to_start_with_opendkims_reason(
    tmp_path: Path, key: DkimKey, public_dir: Path
) -> None:
    unsafe = public_dir / "mail.private"
    unsafe.write_bytes(key.private_key.read_bytes())
    unsafe.chmod(0o644)
    shown = DkimKey(key.domain, key.selector, unsafe, key.txt)
    conf = write_conf(tmp_path / "d", shown, f"inet:{free_port()}@127.0.0.1", RequireSafeKeys="")
    proc = dkimd("-f", "-x", str(conf))
    assert proc.returncode == 78, proc.stderr
    assert f"{unsafe} can be read or written by other users (mode 0644)" in proc.stderr
    assert "key mail._domainkey.example.com" in proc.stderr
    # In the background the refusal happens before detaching: same code, same words.
    proc = dkimd("-x", str(conf))
    assert proc.returncode == 78
    assert "can be read or written by other users" in proc.stderr


def test_minimum_key_bits_warns_at_start_and_does_not_sign(tmp_path: Path, key: DkimKey) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", MinimumKeyBits="2048")
    with Dkimd.from_config(tmp_path, conf, port=port) as d:
        assert "is 1024 bits, below MinimumKeyBits 2048" in d.log_text()
        result = milter_transaction(d.socket_spec, MESSAGE)
        assert result.headers("DKIM-Signature") == []


# -- signals -----------------------------------------------------------------------------------


def test_sigterm_mid_message_finishes_it_then_exits_zero(tmp_path: Path, key: DkimKey) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1")
    d = Dkimd.from_config(tmp_path, conf, port=port).start()
    d.wait_for_log(" starting (")  # it listens before it writes the pid file; this comes after
    pid_file = tmp_path / "d" / "dkimd.pid"
    assert int(pid_file.read_text()) == d.pid
    spec = lua_string(d.socket_spec)
    # miltertest stops half-way through the body and says so in `ready`; the test sends
    # SIGTERM, waits for dkimd's graceful stop to begin, then lets the script go on (`go`).
    ready, go = tmp_path / "ready", tmp_path / "go"
    script = f"""
mt.set_timeout(20)
local conn = mt.connect({spec}, 100, 0.05)
local function ok(r, what) if r ~= nil then error(what .. ': ' .. r) end end
ok(mt.macro(conn, SMFIC_CONNECT, "j", "mx.test.example", "i", "TESTQUEUEID"), "macro")
ok(mt.conninfo(conn, "localhost", "127.0.0.1"), "conninfo")
ok(mt.mailfrom(conn, "<alice@example.com>"), "mailfrom")
-- no RCPT: dkimd declines it (SMFIP_NORCPT), so Postfix would not send one either
ok(mt.header(conn, "From", "Alice <alice@example.com>"), "header")
ok(mt.header(conn, "To", "Bob <bob@example.net>"), "header")
ok(mt.header(conn, "Subject", "interrupted"), "header")
ok(mt.eoh(conn), "eoh")
ok(mt.bodystring(conn, "first half\\r\\n"), "body")
local f = assert(io.open({lua_string(str(ready))}, "w"))
f:close()
local waited = 0
while true do
  local g = io.open({lua_string(str(go))}, "r")
  if g ~= nil then g:close() break end
  if waited > 30 then error("the test never said go") end
  mt.sleep(0.01)
  waited = waited + 0.01
end
local refused, err = pcall(mt.connect, {spec}, 1, 0.01)
io.write("second-connection ", tostring(refused), "\\n")
ok(mt.bodystring(conn, "second half\\r\\n"), "body")
ok(mt.eom(conn), "eom")
io.write("reply ", string.char(mt.getreply(conn)), "\\n")
local sig = mt.getheader(conn, "DKIM-Signature", 0)
io.write("signature ", tostring(sig ~= nil), "\\n")
mt.disconnect(conn)
"""
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_miltertest, script, 60.0)
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert not running.done(), running.result()
                assert time.monotonic() < deadline, "miltertest never got half-way"
                time.sleep(0.01)
            # The body's first half needs no reply: the kernel says when dkimd has read it.
            assert wait_until_read(port), "dkimd did not read the first half"
            d.terminate()
            go.touch()
            out = running.result(timeout=60).stdout
        assert "second-connection false" in out, out  # no longer accepting
        assert "reply c" in out or "reply a" in out, out
        assert "signature true" in out, out
        assert d.proc is not None
        assert d.proc.wait(timeout=15) == 0, d.log_text()
    finally:
        # A failed run must not leave the daemon behind for the rest of the suite.
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    assert not pid_file.exists()
    log = d.log_text()
    assert "SIGTERM: stopping" in log
    assert "stopped: 1 messages (1 signed" in log, log


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=["SIGHUP", "SIGUSR1"])
def test_reload_applies_new_tables_and_survives_a_broken_config(
    tmp_path: Path, key: DkimKey, sig: signal.Signals, public_dir: Path
) -> None:
    require("miltertest")
    port = free_port()
    workdir = tmp_path / "d"
    conf = write_conf(workdir, key, f"inet:{port}@127.0.0.1")
    with Dkimd.from_config(tmp_path, conf, port=port) as d:
        assert signed(d.socket_spec)
        assert not signed(d.socket_spec, NET_MESSAGE)  # example.net: not in the SigningTable
        table = workdir / "SigningTable"
        table.write_text(table.read_text() + "*@example.net mail._domainkey.example.com\n")
        os.kill(d.pid, sig)
        wait_for_log(d, "configuration reloaded")
        assert signed(d.socket_spec, NET_MESSAGE)

        good = conf.read_text()
        conf.write_text(good + "SigningTabel refile:/nowhere\n")
        os.kill(d.pid, sig)
        log = wait_for_log(d, "reload failed")
        line = len(good.splitlines()) + 1
        assert f'{conf}:{line}: unknown option "SigningTabel"' in log
        assert 'did you mean "SigningTable"?' in log
        assert signed(d.socket_spec, NET_MESSAGE)  # the old configuration still serves

        # A key that became unsafe is a failed reload too (RequireSafeKeys judged again).
        conf.write_text(good.replace("RequireSafeKeys no", "RequireSafeKeys yes"))
        unsafe = public_dir / "unsafe.private"
        unsafe.write_bytes(key.private_key.read_bytes())
        unsafe.chmod(0o644)
        (workdir / "KeyTable").write_text(
            f"mail._domainkey.example.com example.com:mail:{unsafe}\n"
        )
        os.kill(d.pid, sig)
        log = wait_for_log(d, "reload failed", count=2)
        assert "can be read or written by other users (mode 0644)" in log
        assert signed(d.socket_spec)
        assert d.running()


# -- logging -----------------------------------------------------------------------------------


def test_log_lines_have_the_queue_id_and_never_key_material(tmp_path: Path, key: DkimKey) -> None:
    require("miltertest")
    pem = key.private_key.read_text()
    lines = [x for x in pem.splitlines() if x and not x.startswith("-----")]
    # Damage the middle of the base64: the file still looks like a key but cannot load.
    broken = [*lines[:3], lines[3][:20] + "!!!!" + lines[3][24:], *lines[4:]]
    bad = tmp_path / "keys" / "bad.private"
    bad.parent.mkdir()
    bad.write_text(pem.splitlines()[0] + "\n" + "\n".join(broken) + "\n" + pem.splitlines()[-1])
    bad.chmod(0o600)
    port = free_port()
    workdir = tmp_path / "d"
    conf = write_conf(workdir, key, f"inet:{port}@127.0.0.1")
    (workdir / "KeyTable").write_text(
        f"mail._domainkey.example.com example.com:mail:{key.private_key}\n"
        f"bad._domainkey.example.org example.org:mail:{bad}\n"
    )
    (workdir / "SigningTable").write_text(
        "*@example.com mail._domainkey.example.com\n*@example.org bad._domainkey.example.org\n"
    )
    with Dkimd.from_config(tmp_path, conf, port=port) as d:
        assert signed(d.socket_spec)
        milter_transaction(d.socket_spec, MESSAGE.replace(b"example.com>", b"example.org>"))
        wait_for_log(d, "TESTQUEUEID: .*" + re.escape(str(bad)))
    log = d.log_text()
    assert SIGNED_LINE in log
    assert f"can't load key from {bad}" in log
    body = "".join(lines)
    windows = {body[i : i + 12] for i in range(0, len(body) - 12)}
    leaked = [w for w in windows if w in log]
    assert not leaked, f"key material in the log: {leaked[:3]}"


def test_syslog_yes_without_a_syslog_daemon_still_serves_quietly(
    tmp_path: Path, key: DkimKey
) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", Syslog="yes")
    with Dkimd.from_config(tmp_path, conf, port=port) as d:
        assert signed(d.socket_spec)
    log = d.log_text()
    assert SIGNED_LINE in log  # stderr in the foreground, whatever syslog does
    assert "Traceback" not in log and "Logging error" not in log


# -- configuration problems -------------------------------------------------------------------


def test_unknown_option_is_an_error_with_location_and_suggestion(
    tmp_path: Path, key: DkimKey
) -> None:
    conf = write_conf(tmp_path / "d", key, f"inet:{free_port()}@127.0.0.1")
    line = len(conf.read_text().splitlines()) + 1
    conf.write_text(conf.read_text() + "Canonicalisation relaxed/simple\n")
    expected = (
        f'{conf}:{line}: unknown option "Canonicalisation" (did you mean "Canonicalization"?)'
    )
    for args in (["-n", "-x", str(conf)], ["-f", "-x", str(conf)], ["-x", str(conf)]):
        proc = dkimd(*args)
        assert proc.returncode == 78, (args, proc.stderr)
        assert expected in proc.stderr, proc.stderr


def test_unimplemented_opendkim_option_warns_once_and_runs(tmp_path: Path, key: DkimKey) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", Diagnostics="yes")
    check = dkimd("-n", "-x", str(conf))
    assert check.returncode == 0
    assert check.stderr.count('"Diagnostics" is an OpenDKIM option dkimd does not implement') == 1
    with Dkimd.from_config(tmp_path, conf, port=port) as d:
        assert signed(d.socket_spec)
    assert d.log_text().count('"Diagnostics" is an OpenDKIM option dkimd does not implement') == 1


# -- workers and restarts -----------------------------------------------------------------------


def _many_connections(spec: str, count: int) -> str:
    s = [f"for n = 1, {count} do", f"  local conn = mt.connect({lua_string(spec)}, 100, 0.05)"]
    s += [
        '  mt.macro(conn, SMFIC_CONNECT, "j", "mx.test.example", "i", "TESTQUEUEID")',
        '  mt.conninfo(conn, "localhost", "127.0.0.1")',
        '  mt.mailfrom(conn, "<alice@example.com>")',
        '  mt.header(conn, "From", "Alice <alice@example.com>")',
        '  mt.header(conn, "Subject", "worker " .. n)',
        "  mt.eoh(conn)",
        '  mt.bodystring(conn, "hello\\r\\n")',
        "  mt.eom(conn)",
        '  if mt.getheader(conn, "DKIM-Signature", 0) ~= nil then io.write("signed\\n") end',
        "  mt.disconnect(conn)",
        "end",
    ]
    return run_miltertest("\n".join(s) + "\n").stdout


def _signing_pids(log: str) -> set[int]:
    return {int(p) for p in re.findall(r"dkimd\[(\d+)\]: " + re.escape(SIGNED_LINE), log)}


def test_two_workers_both_serve_reload_and_stop(tmp_path: Path, key: DkimKey) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", Workers="2")
    d = Dkimd.from_config(tmp_path, conf, port=port).start()
    try:
        text = wait_for_log(d, r"worker \d+ started", count=2)
        workers = {int(p) for p in re.findall(r"worker (\d+) started", text)}
        assert len(workers) == 2 and d.pid not in workers
        out = _many_connections(d.socket_spec, 24)
        assert out.count("signed") == 24
        assert _signing_pids(d.log_text()) == workers  # both took connections

        os.kill(d.pid, signal.SIGHUP)
        text = wait_for_log(d, "configuration reloaded", count=2)
        reloaded = {int(p) for p in re.findall(r"dkimd\[(\d+)\]: configuration reloaded", text)}
        assert reloaded == workers
    finally:
        code = d.stop()
    assert code == 0, d.log_text()
    for pid in workers:
        assert wait_gone(pid, 5), f"worker {pid} outlived the supervisor"
    assert not (tmp_path / "d" / "dkimd.pid").exists()


def test_auto_restart_replaces_a_dead_worker_and_gives_up_past_the_rate(
    tmp_path: Path, key: DkimKey
) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(
        tmp_path / "d", key, f"inet:{port}@127.0.0.1", AutoRestart="yes", AutoRestartRate="1/1m"
    )
    d = Dkimd.from_config(tmp_path, conf, port=port).start()
    try:
        text = wait_for_log(d, r"worker \d+ started")
        first = int(re.findall(r"worker (\d+) started", text)[0])
        assert first != d.pid  # AutoRestart yes: supervised even with one worker
        os.kill(first, signal.SIGKILL)
        text = wait_for_log(d, r"worker \d+ started", count=2)
        assert f"worker {first} killed by signal 9; restarting" in text
        second = int(re.findall(r"worker (\d+) started", text)[1])
        assert signed(d.socket_spec)
        assert _signing_pids(d.log_text()) == {second}
        os.kill(second, signal.SIGKILL)  # the second restart within a minute: over 1/1m
        assert d.proc is not None
        assert d.proc.wait(timeout=15) == 1
        assert "too many restarts, giving up" in d.log_text()
    finally:
        d.stop()


def test_background_no_stays_in_the_foreground_and_sigint_stops_it(
    tmp_path: Path, key: DkimKey
) -> None:
    require("miltertest")
    port = free_port()
    conf = write_conf(tmp_path / "d", key, f"inet:{port}@127.0.0.1", Background="no")
    log_path = tmp_path / "out.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dkimd", "-x", str(conf)],  # no -f: the config says so
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while not is_listening(port) and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.02)
        assert int((tmp_path / "d" / "dkimd.pid").read_text()) == proc.pid  # did not fork
        assert signed(f"inet:{port}@127.0.0.1")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert SIGNED_LINE in text  # stderr logging in the foreground
    assert "SIGINT: stopping" in text
    assert not (tmp_path / "d" / "dkimd.pid").exists()


def test_a_reload_waiting_for_a_silent_store_does_not_hold_up_mail(
    tmp_path: Path, key: DkimKey
) -> None:
    """The new configuration names a table behind a server that accepts connections and
    never answers: its log-in check takes the stores' whole open timeout (5 s). Meanwhile
    the running configuration goes on answering the MTA at its usual pace."""
    require("miltertest")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepted by the kernel, never read
    port = free_port()
    workdir = tmp_path / "d"
    conf = write_conf(workdir, key, f"inet:{port}@127.0.0.1")
    try:
        with Dkimd.from_config(tmp_path, conf, port=port) as d:
            assert signed(d.socket_spec)
            conf.write_text(
                conf.read_text() + f"ExemptDomains redis://127.0.0.1:{silent.getsockname()[1]}/0\n"
            )
            os.kill(d.pid, signal.SIGHUP)
            wait_for_log(d, "reloading configuration")
            started = time.monotonic()
            assert signed(d.socket_spec)
            assert time.monotonic() - started < 2.5, "the reload held the event loop"
            log = wait_for_log(d, "reload failed", timeout=15.0)
            assert "ExemptDomains" in log
            assert "configuration reloaded" not in log
            assert signed(d.socket_spec)  # the old configuration still serves
    finally:
        silent.close()
