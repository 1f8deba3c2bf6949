"""TestDnsFile: OpenDKIM's TestDNSData `file:` data set as a TxtLookup."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.dns.testdata import TestDnsFile, parse_records_file


def lookup(source: TestDnsFile, name: str) -> TxtResult:
    return asyncio.run(source.lookup_txt(name))


SAMPLE = b"""\
# TestDNSData for the tests
mail._domainkey.example.com v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEB
   spaced._domainkey.example.com\t\t v=DKIM1;  p=abc   \t
multi._domainkey.example.net v=DKIM1; p=first
multi._domainkey.example.net v=DKIM1; p=second  # trailing comment

keyonly.example.org
crlf.example.org v=DKIM1; p=crlf\r
"""


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "dns.data"
    path.write_bytes(SAMPLE)
    return path


def test_first_word_is_the_name_rest_is_the_record(sample: Path) -> None:
    src = TestDnsFile(sample)
    r = lookup(src, "mail._domainkey.example.com")
    assert r == TxtResult(
        "mail._domainkey.example.com",
        TxtStatus.OK,
        (b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEB",),
    )


def test_blanks_around_fields_are_trimmed_inner_ones_kept(sample: Path) -> None:
    r = lookup(TestDnsFile(sample), "spaced._domainkey.example.com")
    assert r.records == (b"v=DKIM1;  p=abc",)


def test_several_lines_are_several_records_in_file_order(sample: Path) -> None:
    r = lookup(TestDnsFile(sample), "multi._domainkey.example.net")
    assert r.records == (b"v=DKIM1; p=first", b"v=DKIM1; p=second")


def test_comments_and_blank_lines_are_ignored(sample: Path) -> None:
    src = TestDnsFile(sample)
    assert sorted(src.names) == sorted(
        [
            "mail._domainkey.example.com",
            "spaced._domainkey.example.com",
            "multi._domainkey.example.net",
            "keyonly.example.org",
            "crlf.example.org",
        ]
    )


def test_name_without_value_is_an_empty_record(sample: Path) -> None:
    assert lookup(TestDnsFile(sample), "keyonly.example.org").records == (b"",)


def test_crlf_line_endings(sample: Path) -> None:
    assert lookup(TestDnsFile(sample), "crlf.example.org").records == (b"v=DKIM1; p=crlf",)


def test_absent_name_is_nxdomain(sample: Path) -> None:
    r = lookup(TestDnsFile(sample), "nope._domainkey.example.com")
    assert r.status is TxtStatus.NXDOMAIN
    assert r.records == ()


def test_names_match_case_insensitively_and_with_trailing_dot(sample: Path) -> None:
    src = TestDnsFile(sample)
    r = lookup(src, "MAIL._domainkey.Example.COM.")
    assert r.ok
    assert r.name == "MAIL._domainkey.Example.COM."


def test_file_prefix_accepted(sample: Path) -> None:
    assert lookup(TestDnsFile(f"file:{sample}"), "mail._domainkey.example.com").ok


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TestDnsFile(tmp_path / "missing")


def test_non_utf8_record_bytes_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "bin.data"
    path.write_bytes(b"bin.example v=DKIM1; p=\xff\xfe\n")
    assert lookup(TestDnsFile(path), "bin.example").records == (b"v=DKIM1; p=\xff\xfe",)


def test_from_records() -> None:
    src = TestDnsFile.from_records(
        {
            "a._domainkey.example.com": "v=DKIM1; p=a",
            "b._domainkey.example.com": b"v=DKIM1; p=b",
            "c._domainkey.example.com": ["v=DKIM1; p=c1", b"v=DKIM1; p=c2"],
        }
    )
    assert lookup(src, "a._domainkey.example.com").records == (b"v=DKIM1; p=a",)
    assert lookup(src, "b._domainkey.example.com").records == (b"v=DKIM1; p=b",)
    assert lookup(src, "c._domainkey.example.com").records == (b"v=DKIM1; p=c1", b"v=DKIM1; p=c2")
    assert lookup(src, "d._domainkey.example.com").status is TxtStatus.NXDOMAIN


def test_parse_records_file_directly() -> None:
    assert parse_records_file(b"x.example  one two # c\n#only comment\n\nX.EXAMPLE three\n") == {
        "x.example": [b"one two", b"three"]
    }
