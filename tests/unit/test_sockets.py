"""dkimd.sockets: the one Socket parser (what libmilter accepts) and binding by name."""

from __future__ import annotations

import socket

import pytest

from dkimd.config import analyze_config_text, parse_config_text
from dkimd.sockets import SocketSpec, bind_socket, parse_socket_spec, resolve_port


def local(path: str) -> SocketSpec:
    return SocketSpec("local", path=path)


def inet(port: int | str, host: str | None = None) -> SocketSpec:
    return SocketSpec("inet", port=port, host=host)


def inet6(port: int | str, host: str | None = None) -> SocketSpec:
    return SocketSpec("inet6", port=port, host=host)


# Every input of the two former parsers (server.parse_socket_spec and config.parse_socket),
# plus libmilter's forms that neither accepted. Where they disagreed, libmilter decides.
ACCEPTED = [
    # both former parsers agreed
    ("inet:8891@localhost", inet(8891, "localhost")),
    ("inet:8891", inet(8891)),
    ("INET:8891", inet(8891)),
    ("inet:8891@127.0.0.1", inet(8891, "127.0.0.1")),
    ("inet:8891@[127.0.0.1]", inet(8891, "127.0.0.1")),
    ("inet6:8891@[::1]", inet6(8891, "::1")),
    ("inet6:8891@[2001:db8::1]", inet6(8891, "2001:db8::1")),
    ("inet6:8891@[2001:DB8:0::1]", inet6(8891, "2001:db8::1")),  # canonical form kept
    ("inet6:8891@::1", inet6(8891, "::1")),
    ("inet6:8891", inet6(8891)),
    ("inet:25@mail.example.com.", inet(25, "mail.example.com.")),
    ("local:/run/opendkim/opendkim.sock", local("/run/opendkim/opendkim.sock")),
    ("unix:/var/run/dkimd.sock", local("/var/run/dkimd.sock")),
    ("LOCAL:/run/x.sock", local("/run/x.sock")),
    ("/var/spool/postfix/dkimd/sock", local("/var/spool/postfix/dkimd/sock")),
    ("  inet:25@host  ", inet(25, "host")),
    # a service name: the server resolved it while parsing, config kept it; kept as a
    # name now and resolved when binding, so parsing needs no /etc/services entry
    ("inet:milter@mail.example.com", inet("milter", "mail.example.com")),
    ("inet6:smtp", inet6("smtp")),
    # port 0: config refused it, the server and libmilter take it (the kernel picks one)
    ("inet:0@127.0.0.1", inet(0, "127.0.0.1")),
    # no type prefix is a path (opendkim(8): "local is assumed"); the server read a
    # leading number as an inet port, which libmilter never did
    ("8891@localhost", local("8891@localhost")),
    ("8891", local("8891")),
    ("relative/path", local("relative/path")),
    # an empty type is local in libmilter; neither former parser took it
    (":/run/x.sock", local("/run/x.sock")),
]

REJECTED = [
    ("", "empty socket specification"),
    ("   ", "empty socket specification"),
    ("inet:", '"" is not a port'),
    ("inet:@localhost", '"" is not a port'),
    ("inet:8891@", "empty host after @"),
    ("inet:99999@localhost", "port 99999 is out of range"),
    ("inet:-1", '"-1" is not a port'),
    ("inet:88x91", '"88x91" is not a port'),
    ("inet:\u0661\u0662", "is not a port"),  # non-ASCII digits
    ("inet:127.0.0.1:8891", "write inet:PORT@HOST, not HOST:PORT"),  # Postfix's form
    ("inet:8891@[127.0.0.1", 'does not end with "]"'),
    ("inet:8891@[127.0.0.1]x", 'does not end with "]"'),
    ("inet:8891@[not-an-ip]", "is not a host name or IP address"),
    ("inet:8891@bad host", "is not a host name or IP address"),
    ("local:", "no socket path"),
    ("unix:", "no socket path"),
    (":", "no socket path"),
    ("local:/tmp/a\0b", "NUL in the socket path"),
    ("local:/" + "x" * 107, "longer than 107 bytes"),
    ("tcp:8891", 'unknown socket type "tcp"'),
    ("localhost:8891", 'unknown socket type "localhost"'),
    # The server turned these into inet6; libmilter reads inet's bracketed address with
    # inet_addr() and refuses, config refused too.
    ("inet:8891@[::1]", "::1 is not an IPv4 address (use inet6:)"),
    ("inet:8891@::1", "::1 is not an IPv4 address (use inet6:)"),
    ("inet6:8891@[127.0.0.1]", "127.0.0.1 is not an IPv6 address (use inet:)"),
    ("inet6:8891@127.0.0.1", "127.0.0.1 is not an IPv6 address (use inet:)"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted(text: str, expected: SocketSpec) -> None:
    spec = parse_socket_spec(text)
    assert spec == expected
    assert parse_socket_spec(str(spec)) == spec


@pytest.mark.parametrize(("text", "fragment"), REJECTED)
def test_rejected_with_the_reason(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_socket_spec(text)
    assert fragment in str(info.value)
    if text.strip():
        assert f'bad socket "{text}"' in str(info.value)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("inet:8891@127.0.0.1", "inet:8891@127.0.0.1"),
        ("inet:8891@[127.0.0.1]", "inet:8891@127.0.0.1"),
        ("inet6:8891@::1", "inet6:8891@[::1]"),
        ("inet:10", "inet:10"),
        ("unix:/x/y", "local:/x/y"),
        ("/x/y", "local:/x/y"),
        ("inet6:smtp@host", "inet6:smtp@host"),
    ],
)
def test_written_back_in_opendkim_form(text: str, written: str) -> None:
    assert str(parse_socket_spec(text)) == written


# The configuration reader strips a value before the parser sees it.
@pytest.mark.parametrize(("text", "expected"), [c for c in ACCEPTED if c[0] == c[0].strip()])
def test_config_uses_the_same_parser(text: str, expected: SocketSpec) -> None:
    assert parse_config_text(f"Socket {text}\n").socket == expected


def test_bind_resolves_a_service_name_when_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    asked: list[tuple[str, str]] = []

    def getservbyname(name: str, proto: str = "tcp") -> int:
        asked.append((name, proto))
        return free

    monkeypatch.setattr(socket, "getservbyname", getservbyname)
    sock = bind_socket("inet:dkimd-test@127.0.0.1")
    try:
        assert sock.getsockname() == ("127.0.0.1", free)
        assert asked == [("dkimd-test", "tcp")]
    finally:
        sock.close()


def test_unknown_service_name_is_refused_when_resolved_or_bound() -> None:
    spec = parse_socket_spec("inet:no-such-service-here@127.0.0.1")
    reason = 'bad port "no-such-service-here"'
    with pytest.raises(ValueError, match=reason):
        resolve_port(spec)
    with pytest.raises(ValueError, match=reason):
        bind_socket(spec)
    assert resolve_port(parse_socket_spec("inet6:8891")) == 8891


@pytest.mark.parametrize("value", ["8891", "8891@localhost", "run/dkimd.sock", "local:x.sock"])
def test_config_warns_about_a_relative_socket_path(value: str) -> None:
    report = analyze_config_text(f"Socket {value}\n", source="o.conf")
    assert report.config is not None
    (warning,) = [w for w in report.warnings if w.option == "Socket"]
    assert (warning.file, warning.line) == ("o.conf", 1)
    assert "relative to the directory dkimd starts in" in warning.message


def test_config_does_not_warn_about_an_absolute_path_or_tcp() -> None:
    for value in ["/run/dkimd.sock", "local:/run/dkimd.sock", "inet:8891@localhost"]:
        report = analyze_config_text(f"Socket {value}\n")
        assert [w for w in report.warnings if w.option == "Socket"] == []
