"""Host lists (InternalHosts, ExternalIgnoreList, PeerList) with OpenDKIM's matching rules.

OpenDKIM does not parse host list entries at all: it turns the client into a series of
strings and looks each one up in the data set (util.c dkimf_checkhost/dkimf_checkip), and the
first string found decides. We do the same, so `refile:` wildcards (`*.example.com`,
`192.0.2.*`) and case-blind matching behave exactly as they do there. The order:

* host name `a.b.example.com`: `!a.b.example.com`, `a.b.example.com`, then for each parent
  `!.b.example.com`, `.b.example.com`, `!.example.com`, `.example.com`, `!.com`, `.com`.
  A `!` entry found first means "no"; so the most specific entry wins.
* IPv4 `192.0.2.5`: `!192.0.2.5`, `192.0.2.5`, `![192.0.2.5]`, `[192.0.2.5]`, then for each
  prefix length from /32 down to /0 the network in CIDR form: `!192.0.2.5/32`,
  `192.0.2.5/32`, the same in brackets, ..., `!192.0.2.0/24`, `192.0.2.0/24`, ... So
  `192.0.2.0/24` with `!192.0.2.5` excludes just that address.
* IPv6 the same with the address in inet_ntop() form (lower case, `::` compression, an
  IPv4-mapped address as `::ffff:192.0.2.5`) and prefixes from /128 down to /0.
* the host name is tried first; when it gives no positive answer (absent, or negated) the
  address is tried (`dkimf_checkhost(...) || dkimf_checkip(...)` in mlfi_connect), so a `!`
  on a host name does not stop its address from matching.

A consequence OpenDKIM users rarely expect (checked against opendkim 2.11 with miltertest):
in a `refile:` list a pattern starting with `*`, like `*.example.com`, also matches the
negated lookup `!mx.example.com`, which comes first, so it *excludes* those hosts. We keep
that behaviour (a drop-in must decide the same way) and warn about such patterns; the
working spelling is `.example.com`.

Because matching compares text, an entry that is not written in that canonical form never
matches in OpenDKIM (`2001:0DB8::/32`, or `192.0.2.1/24` with host bits set). When loading a
`file:` or `csl:` list we check every entry: a malformed address or prefix is an error; a
valid address written non-canonically is accepted, matched by its canonical form, and warned
about (OpenDKIM would never have matched it); a network with host bits set is warned about
and, like in OpenDKIM, never matches.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator

from dkimd.config.datasets import Dataset, DatasetEntry, DatasetKind
from dkimd.config.problems import Problem, Severity

__all__ = ["HostList", "candidate_keys", "check_host_entries", "host_keys", "inet_ntop6"]

_IPV4_LIKE = re.compile(r"[0-9.]+")
_HOSTNAME = re.compile(r"\.?[A-Za-z0-9_*](?:[A-Za-z0-9_.*-]*[A-Za-z0-9_*])?\.?")


def inet_ntop6(address: ipaddress.IPv6Address) -> str:
    """glibc inet_ntop(AF_INET6) text: longest run (>= 2) of zero groups as `::`, lower
    case, and a trailing IPv4 address for IPv4-mapped and IPv4-compatible addresses."""
    packed = address.packed
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len, cur_start, cur_len = -1, 0, -1, 0
    for i, word in enumerate(words):
        if word == 0:
            if cur_start == -1:
                cur_start, cur_len = i, 1
            else:
                cur_len += 1
            if cur_len > best_len:
                best_start, best_len = cur_start, cur_len
        else:
            cur_start, cur_len = -1, 0
    if best_len < 2:
        best_start, best_len = -1, 0
    parts: list[str] = []
    i = 0
    while i < 8:
        if i == best_start:
            parts.append("")
            if i == 0:
                parts.append("")
            i += best_len
            if i == 8:
                parts.append("")
            continue
        # glibc: "::a.b.c.d" (compatible) and "::ffff:a.b.c.d" (mapped) keep a dotted tail.
        if i == 6 and best_start == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            parts.append(str(ipaddress.IPv4Address(packed[12:])))
            break
        parts.append(f"{words[i]:x}")
        i += 1
    return ":".join(parts)


def _address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return inet_ntop6(address)
    return str(address)


def _format_address(value: int, bits: int) -> str:
    if bits == 32:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def candidate_keys(address: str) -> Iterator[tuple[str, bool]]:
    """The (key, positive) lookups dkimf_checkip() makes for `address`, in order.

    `positive` is False for the `!` form. Yields nothing for an unparseable address.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    text = _address_text(ip)
    yield from ((f"!{text}", False), (text, True), (f"![{text}]", False), (f"[{text}]", True))
    # Masking the integer and formatting with the C library (what OpenDKIM's inet_ntop
    # gives) is ~20x cheaper than building an ip_network per prefix length.
    bits = ip.max_prefixlen
    value = int(ip)
    full = (1 << bits) - 1
    for prefix in range(bits, -1, -1):
        masked = value & (full ^ ((1 << (bits - prefix)) - 1))
        net = _format_address(masked, bits)
        yield f"!{net}/{prefix}", False
        yield f"{net}/{prefix}", True
        yield f"![{net}]/{prefix}", False
        yield f"[{net}]/{prefix}", True


def host_keys(hostname: str) -> Iterator[str]:
    """The name, then each parent domain with its leading dot (dkimf_checkhost's order)."""
    yield hostname
    dot = hostname.find(".")
    while dot != -1:
        yield hostname[dot:]
        dot = hostname.find(".", dot + 1)


class HostList:
    """A host list data set and OpenDKIM's way of asking whether a client is on it."""

    __slots__ = ("_aliases", "_memo", "dataset")

    # Answers remembered per client: a lookup walks up to 4 x 129 keys through the data set,
    # and the same few clients (Postfix on 127.0.0.1, a handful of relays) ask again and again.
    # A list never changes once loaded (a reload builds a new one), so no invalidation.
    MEMO_SIZE = 4096

    def __init__(self, dataset: Dataset, aliases: dict[str, DatasetEntry] | None = None) -> None:
        self.dataset = dataset
        # Non-canonical spellings of addresses, re-keyed to their canonical text.
        self._aliases = aliases or {}
        self._memo: dict[tuple[str | None, str | None], bool] = {}

    @classmethod
    def default_internal(cls) -> HostList:
        """OpenDKIM 2.11's InternalHosts default, DEFINTERNAL = "csl:127.0.0.1,::1"."""
        return cls(Dataset.from_csl("127.0.0.1,::1"))

    @classmethod
    def empty(cls) -> HostList:
        return cls(Dataset.empty())

    def _find(self, key: str) -> bool:
        return key in self.dataset or key.lower() in self._aliases

    def matches_host(self, hostname: str) -> bool:
        """dkimf_checkhost(): the full name, then each parent `.domain`; `!` first."""
        if not hostname:
            return False
        for key in host_keys(hostname):
            if self._find("!" + key):
                return False
            if self._find(key):
                return True
        return False

    def matches_address(self, address: str) -> bool:
        """dkimf_checkip(): the address, then its networks from most to least specific."""
        for key, positive in candidate_keys(address):
            if self._find(key):
                return positive
        return False

    def matches(self, address: str | None, hostname: str | None) -> bool:
        """Whether a client (its IP address text and/or host name) is on this list."""
        if not len(self.dataset):
            return False
        key = (address, hostname)
        found = self._memo.get(key)
        if found is None:
            found = bool(hostname and self.matches_host(hostname)) or (
                bool(address) and self.matches_address(address or "")
            )
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = found
        return found

    def __len__(self) -> int:
        return len(self.dataset)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostList):
            return NotImplemented
        return self.dataset == other.dataset and self._aliases.keys() == other._aliases.keys()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HostList({self.dataset.spec!r})"


def _check_address_entry(text: str) -> tuple[str | None, str | None, bool]:
    """Validate an address or CIDR entry (no `!`). Returns (error, canonical, host_bits)."""
    addr, slash, prefix = text.partition("/")
    bracketed = addr.startswith("[") and addr.endswith("]")
    bare = addr[1:-1] if bracketed else addr
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return f'"{addr}" is not a valid IP address', None, False
    canonical = _address_text(ip)
    if bracketed:
        canonical = f"[{canonical}]"
    if not slash:
        return None, canonical, False
    if not prefix.isdigit() or not prefix.isascii():
        return f'"/{prefix}" is not a prefix length', None, False
    if int(prefix) > ip.max_prefixlen:
        return f"prefix /{prefix} is longer than /{ip.max_prefixlen}", None, False
    network = ipaddress.ip_network(f"{bare}/{int(prefix)}", strict=False)
    host_bits = network.network_address != ip
    return None, f"{canonical}/{int(prefix)}", host_bits


def check_host_entries(dataset: Dataset, option: str) -> tuple[HostList, list[Problem]]:
    """Validate a host list's entries and build its `HostList`."""
    if dataset.kind is DatasetKind.REMOTE:
        # Behind a server: nothing to read now; its keys are asked per client.
        from dkimd.stores.hostlist import RemoteHostList

        return RemoteHostList(dataset), []
    problems: list[Problem] = []
    aliases: dict[str, DatasetEntry] = {}
    for entry in dataset.entries:
        body = entry.key[1:] if entry.key.startswith("!") else entry.key
        negation = "!" if entry.key.startswith("!") else ""
        if dataset.kind is DatasetKind.REFILE and "*" in body:
            if entry.key.startswith("*"):
                # "!" + name matches "^.*..." whenever name does, and the "!" lookup comes
                # first: verified against opendkim 2.11 with miltertest.
                problems.append(
                    Problem(
                        entry.file,
                        entry.line,
                        Severity.WARNING,
                        f'{option}: pattern "{entry.key}" also matches the negated lookup '
                        '"!name" that OpenDKIM makes first, so it excludes the hosts it '
                        "matches instead of including them (dkimd does the same)",
                        f'to include every host in a domain write ".{body.lstrip("*.")}"'
                        if body.startswith("*.")
                        else None,
                        option,
                    )
                )
            continue  # a wildcard pattern: any text is fine
        looks_like_address = (
            "/" in body or ":" in body or body.startswith("[") or _IPV4_LIKE.fullmatch(body)
        )
        if not looks_like_address:
            if not _HOSTNAME.fullmatch(body):
                problems.append(
                    Problem(
                        entry.file,
                        entry.line,
                        Severity.WARNING,
                        f'{option}: "{entry.key}" is not a host name, domain or IP address',
                        option=option,
                    )
                )
            continue
        error, canonical, host_bits = _check_address_entry(body)
        if error is not None:
            problems.append(
                Problem(
                    entry.file,
                    entry.line,
                    Severity.ERROR,
                    f'{option}: bad entry "{entry.key}": {error}',
                    option=option,
                )
            )
            continue
        assert canonical is not None
        if host_bits:
            network = ipaddress.ip_network(body.replace("[", "").replace("]", ""), strict=False)
            problems.append(
                Problem(
                    entry.file,
                    entry.line,
                    Severity.WARNING,
                    f'{option}: "{entry.key}" has host bits set and never '
                    "matches (in OpenDKIM either)",
                    f'did you mean "{negation}{network}"?',
                    option,
                )
            )
            continue
        same = (
            (canonical.lower() == body.lower()) if dataset.case_insensitive else canonical == body
        )
        if not same and dataset.kind is not DatasetKind.REFILE:
            aliases[(negation + canonical).lower()] = entry
            problems.append(
                Problem(
                    entry.file,
                    entry.line,
                    Severity.WARNING,
                    f'{option}: "{entry.key}" is matched as '
                    f'"{negation}{canonical}"; OpenDKIM compares text and '
                    "would never match it",
                    f'write "{negation}{canonical}"',
                    option,
                )
            )
    return HostList(dataset, aliases), problems
