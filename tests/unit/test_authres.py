"""Which incoming Authentication-Results fields are ours to delete (dkimd.authres)."""

from __future__ import annotations

import pytest

from dkimd.authres import carries_dkim_result, forged_result_indexes, listed_host
from dkimd.dkim import HeaderField


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b" mx; dkim=pass header.d=example.com", True),
        (b" mx;\r\n\tDKIM = fail", True),
        (b" mx; spf=pass;\n dkim=none", True),
        (b" mx 1; dkim=pass", True),
        (b" mx; spf=pass", False),
        (b" mx; none", False),
        # A method named in a comment or a quoted string is not a resinfo.
        (b" mx; spf=pass (dkim=pass) smtp.mailfrom=a@example.com", False),
        (b' mx; spf=pass reason="x; dkim=pass"', False),
        (b" (dkim=pass) mx; spf=pass", False),
    ],
)
def test_carries_dkim_result(value: bytes, expected: bool) -> None:
    assert carries_dkim_result(value) is expected


def test_only_our_dkim_results_are_deleted() -> None:
    """As OpenDKIM (KeepAuthResults no): our authserv-id and a dkim result, both."""
    headers = [
        HeaderField(b"Authentication-Results", b" other.host; dkim=pass"),
        HeaderField(b"Subject", b" x"),
        HeaderField(b"Authentication-Results", b" MX.example; spf=pass"),
        HeaderField(b"Authentication-Results", b" mx.example; dkim=pass"),
    ]
    assert forged_result_indexes(headers, "mx.example") == [3]


def test_remove_ar_all_takes_any_method_and_remove_ar_from_replaces_our_id() -> None:
    headers = [
        HeaderField(b"Authentication-Results", b" mx.example; spf=pass"),
        HeaderField(b"Authentication-Results", b" relay.corp.example; dkim=pass"),
        HeaderField(b"Authentication-Results", b" mx.example; dkim=pass"),
        HeaderField(b"Authentication-Results", b" corp.example; dkim=fail"),
    ]
    assert forged_result_indexes(headers, "mx.example", any_method=True) == [1, 3]
    # RemoveARFrom names the hosts instead of our authserv-id: full names or ".domain".
    assert forged_result_indexes(headers, "mx.example", hosts={".corp.example"}) == [2]
    assert forged_result_indexes(headers, "mx.example", hosts={"corp.example"}) == [4]


@pytest.mark.parametrize(
    ("host", "listed"),
    [
        ("relay.corp.example", True),
        ("a.b.corp.example", True),
        ("corp.example", False),  # ".corp.example" covers subdomains only
        ("mx.example", True),
        ("other.example", False),
        ("", False),
    ],
)
def test_listed_host(host: str, listed: bool) -> None:
    assert listed_host(host, {".corp.example", "mx.example"}) is listed
