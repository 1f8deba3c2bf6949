"""ResolverConfiguration: the unbound.conf(5) file Debian's opendkim hands to libunbound.

An admin who set `ResolverConfiguration /etc/opendkim/unbound.conf` for opendkim keeps the
file; dkimd reads from it what a forwarding stub resolver can apply:

* `forward-addr: ADDR[@PORT]` of the `forward-zone:` whose `name:` is `"."`: the servers
  asked (unless opendkim.conf's `Nameservers` names some; that option wins);
* `tcp-upstream: yes` or `do-udp: no` in `server:`: queries over TCP (as `DNSConnect yes`);
* `include: FILE`: read in place (at most 8 levels).

Everything else configures unbound's own recursion, DNSSEC or cache, which dkimd does not
have; each such keyword is returned in `ignored` so the daemon can say it is not applied.
`forward-tls-upstream: yes` is refused: the servers expect DNS over TLS, which dkimd does
not speak, and every lookup would fail. The syntax is read line by line, one
`keyword: value` per line (`#` starts a comment outside quotes); a line that is not of
that form, or a keyword before the first clause, is an error with its file:line, as
unbound reports it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

__all__ = ["UnboundConfError", "UnboundSettings", "read_unbound_conf"]

MAX_INCLUDE_DEPTH = 8
_LINE = re.compile(r"([A-Za-z0-9-]+):\s*(.*)")
# Clauses dkimd reads or knows to be unbound's own; their keywords come after them.
_CLAUSES = frozenset(
    {
        "server",
        "forward-zone",
        "stub-zone",
        "remote-control",
        "auth-zone",
        "view",
        "python",
        "dynlib",
        "rpz",
        "cachedb",
        "dnscrypt",
        "dnstap",
        "ipset",
    }
)


class UnboundConfError(Exception):
    """The file cannot be used; the message names file:line."""


@dataclass
class UnboundSettings:
    forwarders: list[str] = field(default_factory=list)  # dkimd's Nameservers syntax
    tcp: bool = False
    ignored: list[str] = field(default_factory=list)  # keywords dkimd does not apply


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _forwarder(text: str, where: str) -> str:
    """unbound's `ADDR[@PORT][#NAME]` as dkimd's `ADDR`, `ADDR:PORT` or `[ADDR]:PORT`."""
    address, _, port = text.partition("#")[0].partition("@")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UnboundConfError(f"{where}: forward-addr: {text!r} is not an IP address") from None
    if not port:
        return str(ip)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UnboundConfError(f"{where}: forward-addr: bad port in {text!r}")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _yes(value: str) -> bool:
    return value.lower() == "yes"


class _Reader:
    def __init__(self) -> None:
        self.settings = UnboundSettings()
        self.clause = ""
        self.zone_name: str | None = None
        self.zone_forwarders: list[str] = []

    def read(self, path: str, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise UnboundConfError(f"{path}: includes nested too deeply")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UnboundConfError(f"{path}: {exc.strerror or exc}") from None
        for number, raw in enumerate(lines, 1):
            line = _strip_comment(raw).strip()
            if not line:
                continue
            where = f"{path}:{number}"
            match = _LINE.fullmatch(line)
            if match is None:
                raise UnboundConfError(f"{where}: syntax error: {line!r} is not 'keyword: value'")
            self.keyword(match[1].lower(), _unquote(match[2]), where, depth)

    def keyword(self, keyword: str, value: str, where: str, depth: int) -> None:
        if keyword == "include":
            self.read(value, depth + 1)
            return
        if keyword in _CLAUSES and not value:
            self.end_zone()
            self.clause = keyword
            return
        if not self.clause:
            # unbound's grammar has no attribute outside a clause
            raise UnboundConfError(f"{where}: {keyword}: not inside a clause such as server:")
        if self.clause == "forward-zone":
            if keyword == "name":
                self.zone_name = value.rstrip(".") or "."
            elif keyword == "forward-addr":
                self.zone_forwarders.append(_forwarder(value, where))
            elif keyword == "forward-tls-upstream" and _yes(value):
                raise UnboundConfError(
                    f"{where}: forward-tls-upstream: DNS over TLS is not supported by dkimd"
                )
            else:
                self.ignore(keyword)
            return
        if self.clause == "server" and keyword == "tcp-upstream":
            self.settings.tcp = self.settings.tcp or _yes(value)
        elif self.clause == "server" and keyword == "do-udp":
            self.settings.tcp = self.settings.tcp or not _yes(value)
        else:
            self.ignore(keyword)

    def ignore(self, keyword: str) -> None:
        if keyword not in self.settings.ignored:
            self.settings.ignored.append(keyword)

    def end_zone(self) -> None:
        if self.clause == "forward-zone":
            if self.zone_name == ".":
                self.settings.forwarders.extend(self.zone_forwarders)
            elif self.zone_forwarders:
                self.ignore(f"forward-zone {self.zone_name}")
        self.zone_name = None
        self.zone_forwarders = []


def read_unbound_conf(path: str) -> UnboundSettings:
    """What dkimd applies of the unbound.conf at `path`; raises UnboundConfError."""
    reader = _Reader()
    reader.read(path, 0)
    reader.end_zone()
    return reader.settings
