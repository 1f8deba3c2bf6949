"""dkimd.systemd.activation: which passed socket is the milter socket, and LISTEN_FDS parsing
(in a child started the way systemd starts a service)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dkimd.sockets import parse_socket_spec
from dkimd.systemd.activation import (
    ActivatedSocket,
    ActivationError,
    describe,
    listen_fds,
    matches,
    milter_socket,
)
from support.systemd_manager import listening_tcp, listening_unix, spawn_activated
from support.tools import unavailable


def test_matches_unix_path(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    with listening_unix(path) as sock:
        assert matches(sock, parse_socket_spec(f"local:{path}"))
        assert matches(sock, parse_socket_spec(str(path)))
        assert not matches(sock, parse_socket_spec(f"local:{tmp_path / 'other.sock'}"))
        assert not matches(sock, parse_socket_spec("inet:8891@127.0.0.1"))
        assert describe(sock) == f"local:{path}"


def test_matches_inet_family_port_and_host() -> None:
    with listening_tcp() as sock:
        port = sock.getsockname()[1]
        assert matches(sock, parse_socket_spec(f"inet:{port}@127.0.0.1"))
        assert matches(sock, parse_socket_spec(f"inet:{port}"))  # every address: any host
        assert matches(sock, parse_socket_spec(f"inet:{port}@localhost"))  # a name resolving to it
        assert matches(sock, parse_socket_spec("inet:0@127.0.0.1"))  # port 0: any
        assert not matches(sock, parse_socket_spec(f"inet:{port + 1}@127.0.0.1"))
        assert not matches(sock, parse_socket_spec(f"inet:{port}@127.0.0.2"))
        assert not matches(sock, parse_socket_spec(f"inet6:{port}@[::1]"))
        assert describe(sock) == f"inet:{port}@127.0.0.1"


def test_matches_inet6() -> None:
    try:
        sock = listening_tcp("::1")
    except OSError:
        unavailable("no IPv6 loopback here")
    with sock:
        port = sock.getsockname()[1]
        assert matches(sock, parse_socket_spec(f"inet6:{port}@[::1]"))
        assert not matches(sock, parse_socket_spec(f"inet:{port}@127.0.0.1"))
        assert describe(sock) == f"inet6:{port}@[::1]"


def test_choice_address_then_name_then_the_only_one(tmp_path: Path) -> None:
    a, b = listening_tcp(), listening_tcp()
    port_b = b.getsockname()[1]
    both = [ActivatedSocket(a, "milter"), ActivatedSocket(b, "other")]
    # The configured address wins over the name.
    chosen, warning = milter_socket(both, parse_socket_spec(f"inet:{port_b}@127.0.0.1"))
    assert chosen is b and warning is None
    assert not chosen.getblocking()
    # No address match: the one named "milter", with a warning naming both places.
    chosen, warning = milter_socket(both, parse_socket_spec("local:/run/none.sock"))
    assert chosen is a
    assert warning is not None and "local:/run/none.sock" in warning and "(milter)" in warning
    # No Socket configured at all: the name decides, quietly.
    assert milter_socket(both, None) == (a, None)
    # One socket: whatever its name.
    only = [ActivatedSocket(b, "dkimd.socket")]
    assert milter_socket(only, None) == (b, None)
    a.close()
    b.close()


def test_ambiguous_or_unusable_sockets_are_errors(tmp_path: Path) -> None:
    a, b = listening_tcp(), listening_tcp()
    with pytest.raises(ActivationError, match="passed 2 sockets"):
        milter_socket([ActivatedSocket(a, "x"), ActivatedSocket(b, "y")], None)
    # A datagram socket or one not listening is no milter socket.
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(str(tmp_path / "dgram"))
    idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ActivationError, match="no listening stream socket"):
        milter_socket([ActivatedSocket(dgram, "d"), ActivatedSocket(idle, "i")], None)
    for s in (a, b, dgram, idle):
        s.close()


def test_listen_fds_environment_is_ignored_for_another_pid() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "KEEP": "x"}
    assert listen_fds(env, pid=2) == []
    assert env == {"KEEP": "x"}  # unset either way
    assert listen_fds({}) == []
    with pytest.raises(ActivationError, match="malformed"):
        listen_fds({"LISTEN_PID": "me", "LISTEN_FDS": "1"})


PROBE = """
import json, os, sys
from dkimd.systemd.activation import listen_fds, ActivationError
try:
    found = listen_fds()
except ActivationError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({
    "sockets": [[s.fd, s.name, s.sock.family.name, os.get_inheritable(s.fd)] for s in found],
    "left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}))
"""


def probe(sockets: list[tuple[socket.socket, str]]) -> dict[str, object]:
    proc = spawn_activated(
        [sys.executable, "-c", PROBE], sockets, dict(os.environ), stdout=subprocess.PIPE
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    result: dict[str, object] = json.loads(out)
    return result


def test_listen_fds_in_a_service_started_as_systemd_does(tmp_path: Path) -> None:
    unix = listening_unix(tmp_path / "m.sock")
    tcp = listening_tcp()
    result = probe([(unix, "milter"), (tcp, "metrics")])
    assert result == {
        "sockets": [[3, "milter", "AF_UNIX", False], [4, "metrics", "AF_INET", False]],
        "left": [],
    }
    unix.close()
    tcp.close()


def test_listen_fds_that_is_not_a_socket(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[2] / "support" / "listen_fds_exec.py"),
            str(read_end),
            "--",
            sys.executable,
            "-c",
            PROBE,
        ],
        pass_fds=[read_end],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    os.close(read_end)
    os.close(write_end)
    assert "descriptor 3 (unknown) is not a socket" in json.loads(proc.stdout)["error"]
