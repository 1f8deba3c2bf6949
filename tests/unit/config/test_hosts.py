"""Host lists: OpenDKIM's dkimf_checkhost/dkimf_checkip semantics."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from dkimd.config.datasets import open_dataset
from dkimd.config.hosts import HostList, candidate_keys, check_host_entries, inet_ntop6
from dkimd.config.problems import Severity

Writer = Callable[[str, str], str]  # the `write` fixture (conftest.py)


def hosts(spec: str) -> HostList:
    ds, problems = open_dataset(spec)
    assert ds is not None and not [p for p in problems if p.is_error]
    host_list, problems = check_host_entries(ds, "InternalHosts")
    assert not [p for p in problems if p.is_error], problems
    return host_list


def test_default_internal_hosts() -> None:
    internal = HostList.default_internal()
    assert internal.matches("127.0.0.1", None)
    assert internal.matches("::1", "localhost")
    assert not internal.matches("127.0.0.2", None)
    assert not internal.matches(None, "localhost")  # the default lists addresses only


def test_ipv4_and_cidr() -> None:
    h = hosts("csl:192.0.2.0/24,198.51.100.7,10.0.0.0/8")
    assert h.matches("192.0.2.1", None) and h.matches("192.0.2.255", None)
    assert not h.matches("192.0.3.1", None)
    assert h.matches("198.51.100.7", None) and not h.matches("198.51.100.8", None)
    assert h.matches("10.200.1.1", None)


def test_most_specific_entry_wins() -> None:
    h = hosts("csl:192.0.2.0/24,!192.0.2.5,!10.0.0.0/8,10.1.2.3")
    assert h.matches("192.0.2.4", None)
    assert not h.matches("192.0.2.5", None)
    assert h.matches("10.1.2.3", None)  # the /32 is checked before the negated /8
    assert not h.matches("10.1.2.4", None)


def test_negated_network_inside_a_network() -> None:
    h = hosts("csl:192.0.2.0/24,!192.0.2.128/25")
    assert h.matches("192.0.2.1", None) and not h.matches("192.0.2.200", None)


def test_ipv6() -> None:
    h = hosts("csl:2001:db8::/32,!2001:db8:dead::/48,::1")
    assert h.matches("2001:db8::1", None)
    assert h.matches("2001:DB8:1::1", None)
    assert not h.matches("2001:db8:dead::1", None)
    assert h.matches("::1", None) and not h.matches("::2", None)
    assert not h.matches("2001:db9::1", None)


def test_bracketed_forms() -> None:
    h = hosts("csl:[192.0.2.1],[2001:db8::]/32")
    assert h.matches("192.0.2.1", None) and h.matches("2001:db8::9", None)


def test_host_names_and_domains() -> None:
    h = hosts("csl:relay.example.net,.example.com,!bad.example.com,!.private.example.com")
    assert h.matches(None, "relay.example.net")
    assert h.matches(None, "RELAY.example.net")  # case-blind
    assert not h.matches(None, "other.example.net")
    assert h.matches(None, "mx.example.com") and h.matches(None, "a.b.example.com")
    assert not h.matches(None, "example.com")  # ".example.com" is subdomains only
    assert not h.matches(None, "bad.example.com")
    assert not h.matches(None, "x.private.example.com")


def test_negated_host_name_does_not_stop_the_address() -> None:
    # mlfi_connect: dkimf_checkhost(host) || dkimf_checkip(ip)
    h = hosts("csl:!bad.example.com,192.0.2.0/24")
    assert h.matches("192.0.2.1", "bad.example.com")
    assert not h.matches("198.51.100.1", "bad.example.com")


def test_refile_wildcards(write: Writer) -> None:
    path = write("th", "192.0.2.*\n.example.com\nmail*.example.org\n")
    h = hosts(f"refile:{path}")
    assert h.matches("192.0.2.77", None)
    assert h.matches(None, "mx.example.com")
    assert h.matches(None, "mail1.example.org")
    assert not h.matches(None, "www.example.org")


def test_refile_leading_star_excludes_like_opendkim(write: Writer) -> None:
    # Verified against opendkim 2.11 with miltertest: "*.example.com" also matches the
    # "!mx.example.com" lookup that comes first, so the host is NOT on the list.
    path = write("th", "*.example.com\n192.0.2.0/24\n")
    ds, _ = open_dataset(f"refile:{path}")
    assert ds is not None
    h, problems = check_host_entries(ds, "InternalHosts")
    assert not h.matches(None, "mx.example.com")
    assert h.matches("192.0.2.5", "mx.example.com")  # the address still counts
    (warning,) = problems
    assert warning.severity is Severity.WARNING and warning.line == 1
    assert warning.hint == 'to include every host in a domain write ".example.com"'


def test_reference_trusted_hosts(reference_dir: object) -> None:
    path = f"{reference_dir}/TrustedHosts"
    h = hosts(f"refile:{path}")
    assert h.matches("127.0.0.1", "localhost")
    assert h.matches("::1", None)
    assert h.matches(None, "localhost")
    assert h.matches("192.0.2.200", None)
    assert h.matches("2001:db8:ffff::1", None)
    assert h.matches(None, "relay.example.net")
    assert not h.matches("203.0.113.9", "mx.example.org")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("300.1.1.1/33", "not a valid IP address"),
        ("300.1.1.1", "not a valid IP address"),
        ("1.2.3.4/abc", "not a prefix length"),
        ("1.2.3.4/33", "longer than /32"),
        ("2001:db8::/129", "longer than /128"),
        ("2001:db8::g/64", "not a valid IP address"),
        ("!192.0.2/24", "not a valid IP address"),
    ],
)
def test_bad_entries_are_errors_with_file_and_line(
    write: Writer, entry: str, fragment: str
) -> None:
    path = write("th", f"127.0.0.1\n{entry}\n")
    ds, _ = open_dataset(f"file:{path}")
    assert ds is not None
    _, problems = check_host_entries(ds, "InternalHosts")
    (problem,) = problems
    assert problem.is_error and (problem.file, problem.line) == (path, 2)
    assert fragment in problem.message
    assert str(problem).startswith(f"{path}:2: InternalHosts: bad entry")


def test_host_bits_set_never_match(write: Writer) -> None:
    path = write("th", "192.0.2.1/24\n")
    ds, _ = open_dataset(f"file:{path}")
    assert ds is not None
    h, (warning,) = check_host_entries(ds, "PeerList")
    assert warning.severity is Severity.WARNING and warning.hint == 'did you mean "192.0.2.0/24"?'
    assert not h.matches("192.0.2.1", None)


def test_non_canonical_address_is_matched_and_warned(write: Writer) -> None:
    path = write("th", "2001:0db8:0000::/32\n192.000.002.001\n")
    ds, _ = open_dataset(f"file:{path}")
    assert ds is not None
    h, problems = check_host_entries(ds, "InternalHosts")
    # Python's ipaddress rejects leading zeros in IPv4, so that one is an error.
    assert [p.severity for p in problems] == [Severity.WARNING, Severity.ERROR]
    assert h.matches("2001:db8::1", None)


def test_candidate_keys_order() -> None:
    keys = list(candidate_keys("192.0.2.5"))
    assert keys[:4] == [
        ("!192.0.2.5", False),
        ("192.0.2.5", True),
        ("![192.0.2.5]", False),
        ("[192.0.2.5]", True),
    ]
    assert keys[4:6] == [("!192.0.2.5/32", False), ("192.0.2.5/32", True)]
    assert ("192.0.2.0/24", True) in keys and keys[-3] == ("0.0.0.0/0", True)
    assert len(list(candidate_keys("::1"))) == 4 + 129 * 4
    assert list(candidate_keys("not an address")) == []


@pytest.mark.parametrize(
    ("address", "text"),
    [
        ("::1", "::1"),
        ("::", "::"),
        ("::ffff:192.0.2.5", "::ffff:192.0.2.5"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("1:0:1:1:1:1:1:1", "1:0:1:1:1:1:1:1"),
        ("2001:DB8::", "2001:db8::"),
    ],
)
def test_inet_ntop6(address: str, text: str) -> None:
    assert inet_ntop6(ipaddress.IPv6Address(address)) == text


def test_inline_list_may_start_with_a_bracketed_ipv6_address() -> None:
    """OpenDKIM's development branch: `[fd00:368::]/40,...` without `csl:` is a list, not a
    data set of type "[fd00"."""
    h = hosts("[fd00:368::]/40, 192.0.2.0/24, ![fd00:368:1::]/48")
    assert h.matches("fd00:368::5", None) and h.matches("192.0.2.7", None)
    assert not h.matches("fd00:368:1::5", None)
    assert not h.matches("fd00:400::1", None)
