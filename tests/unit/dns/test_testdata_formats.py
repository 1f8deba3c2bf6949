"""--dns-file: the `name record` form and the zone-file form genkey writes, strictly read.

The genkey files are made by the tools themselves (`dkimd genkey` and the real
opendkim-genkey) in a temporary directory, then used to verify a message signed with the
key they wrote, through `dkimd verify` and `dkimd testkey` as a user would run them.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkimd.cli import genkey, testkey, verify
from dkimd.config import analyze_config_text
from dkimd.daemon import make_resolver
from dkimd.dns.base import TxtStatus
from dkimd.dns.testdata import RecordsFileError, TestDnsFile, parse_records_file
from support.tools import require

MESSAGE = b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: hi\n\nHello.\n"


def _sign(keyfile: Path, domain: str, selector: str) -> bytes:
    proc = subprocess.run(
        [sys.executable, "-m", "dkimd", "sign", "-d", domain, "-s", selector, "-k", str(keyfile)],
        input=MESSAGE,
        capture_output=True,
        check=True,
    )
    return proc.stdout


def _verify(dns_file: Path | str, message: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dkimd", "verify", "--dns-file", str(dns_file)],
        input=message,
        capture_output=True,
        check=False,
    )


def _dkimd_genkey(directory: Path, *args: str) -> None:
    assert genkey.main(["-D", str(directory), *args]) == 0


# --- files written by the key tools ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [(), ("-a",), ("--ed25519",), ("-t", "-r", "-n", "rotated yearly (see RFC 6376)")],
    ids=["relative", "append-domain", "ed25519", "testing-restricted-note"],
)
def test_dkimd_genkey_txt_verifies(tmp_path: Path, extra: tuple[str, ...]) -> None:
    _dkimd_genkey(tmp_path, "-s", "mail", "-d", "example.com", *extra)
    signed = _sign(tmp_path / "mail.private", "example.com", "mail")
    proc = _verify(tmp_path / "mail.txt", signed)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    # t=y turns a failure into neutral, never a failure into pass: pass is pass.
    assert first.startswith(b"dkim=pass d=example.com ")


@pytest.mark.parametrize("extra", [(), ("-a",)], ids=["relative", "append-domain"])
def test_opendkim_genkey_txt_verifies(tmp_path: Path, extra: tuple[str, ...]) -> None:
    tool = require("opendkim-genkey")
    subprocess.run(
        [tool, "-D", str(tmp_path), "-s", "sel", "-d", "example.com", "-b", "1024", *extra],
        check=True,
    )
    signed = _sign(tmp_path / "sel.private", "example.com", "sel")
    proc = _verify(tmp_path / "sel.txt", signed)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"dkim=pass d=example.com ")


def test_genkey_record_vouches_only_for_its_own_domain(tmp_path: Path) -> None:
    """The relative name takes genkey's domain, not the domain the signature claims."""
    _dkimd_genkey(tmp_path, "-s", "mail", "-d", "example.com")
    forged = _sign(tmp_path / "mail.private", "example.net", "mail")
    proc = _verify(tmp_path / "mail.txt", forged)
    assert proc.returncode == 1
    assert proc.stdout.startswith(b"dkim=permerror d=example.net ")
    assert b"no key" in proc.stdout.splitlines()[0]


def test_testkey_reads_genkey_txt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _dkimd_genkey(tmp_path, "-s", "mail", "-d", "example.com")
    argv = ["-d", "example.com", "-s", "mail", "-k", str(tmp_path / "mail.private")]
    assert testkey.main([*argv, "--dns-file", str(tmp_path / "mail.txt"), "-vvv"]) == 0
    assert "key OK" in capsys.readouterr().out


def test_genzone_fqdn_output_and_files_mixed(tmp_path: Path) -> None:
    _dkimd_genkey(tmp_path, "-s", "mail", "-d", "example.com")
    (tmp_path / "KeyTable").write_text(f"k example.com:mail:{tmp_path}/mail.private\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dkimd", "genzone", "-F", "-S", f"file:{tmp_path}/KeyTable"],
        capture_output=True,
        check=True,
    )
    records = parse_records_file(proc.stdout + b"other.example.org v=DKIM1; p=\n")
    # genzone escapes ';' as '\;': the record text has the plain character.
    [text] = records["mail._domainkey.example.com"]
    assert text.startswith(b"v=DKIM1;k=rsa;p=MII")
    assert records["other.example.org"] == [b"v=DKIM1; p="]
    assert set(records) == {"mail._domainkey.example.com", "other.example.org"}  # SOA skipped


# --- the two forms, parsed -------------------------------------------------------------------


def test_zone_entries_in_every_spelling() -> None:
    data = b"""\
; a comment line, and a TestDNSData-style one:
# comment
a._domainkey.example.com.  IN TXT "v=DKIM1; p=one"
b._domainkey.example.com. 300 IN TXT ( "v=DKIM1; "
        "p=two" ) ; trailing comment (with parentheses)
c._domainkey.example.com. in 3600 txt "v=DKIM1;" " p=three"
$ORIGIN example.net.
$TTL 1h
d._domainkey TXT "v=DKIM1\\059 p=four\\"q\\""
@ IN TXT "apex"
name.example.org   v=DKIM1; p=five  # OpenDKIM comment
"""
    assert parse_records_file(data) == {
        "a._domainkey.example.com": [b"v=DKIM1; p=one"],
        "b._domainkey.example.com": [b"v=DKIM1; p=two"],
        "c._domainkey.example.com": [b"v=DKIM1; p=three"],
        "d._domainkey.example.net": [b'v=DKIM1; p=four"q"'],
        "example.net": [b"apex"],
        "name.example.org": [b"v=DKIM1; p=five"],
    }


def test_origin_wins_over_the_genkey_comment() -> None:
    data = b"""\
$ORIGIN example.org.
mail._domainkey IN TXT ( "v=DKIM1; p=x" )  ; ----- DKIM key mail for example.com
"""
    assert list(parse_records_file(data)) == ["mail._domainkey.example.org"]


def test_name_record_form_keeps_opendkim_meaning() -> None:
    data = b'x._domainkey.example.com "v=DKIM1; p=a" "b"\nkeyonly.example.org\n'
    assert parse_records_file(data) == {
        "x._domainkey.example.com": [b'"v=DKIM1; p=a" "b"'],  # verbatim, no zone quoting
        "keyonly.example.org": [b""],
    }


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b'ok.example v=DKIM1\n\nmail._domainkey IN TXT ( "v=DKIM1"\n', 3, "is not closed"),
        (b'mail._domainkey.example.com. IN TXT "v=DKIM1; p=abc\n', 1, "quoted string not closed"),
        (b'mail._domainkey IN TXT "v=DKIM1; p=abc"\n', 1, "is relative and nothing says"),
        (
            b'mail._domainkey IN TXT "v=DKIM1" ; ----- DKIM key other for example.com\n',
            1,
            'the comment names key "other"',
        ),
        (b'  "p=MIIBIjANBgkqhkiG9w0BAQ" )\n', 1, "is not a DNS name"),
        (b"mail._domainkey v=DKIM1; p=abc\n", 1, "names no domain"),
        (b"$INCLUDE other.zone\n", 1, "$INCLUDE is not supported"),
        (b"$ORIGIN example.com\n", 1, "is not a fully qualified name"),
        (b'IN TXT "v=DKIM1"\n', 1, "without an owner name"),
        (b'a.example. IN TXT ( "x" ) )\n', 1, "without a matching"),
        (b"a.example. IN TXT ( )\n", 1, "without any text"),
        (b'a.example. IN TXT "\\300"\n', 1, "is not a byte"),
    ],
)
def test_malformed_line_is_rejected_with_its_place(data: bytes, line: int, reason: str) -> None:
    with pytest.raises(RecordsFileError) as caught:
        parse_records_file(data, "dns.txt")
    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"dns.txt:{line}: ")


def test_testdnsfile_reads_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "records"
    path.write_bytes(b'x._domainkey.example.com. IN TXT "v=DKIM1; p="\n')
    answer = TestDnsFile(path).cached("X._domainkey.example.com.")
    assert answer is not None and answer.status is TxtStatus.OK
    assert answer.records == (b"v=DKIM1; p=",)


def test_test_dns_data_in_opendkim_conf_is_opendkim_s_format(tmp_path: Path) -> None:
    """TestDNSData is OpenDKIM's data set: first word the name, the rest the text."""
    data = tmp_path / "dns.data"
    data.write_text(
        'a._domainkey.example.com v=DKIM1; p=abc\nmail._domainkey IN TXT ( "v=DKIM1" )\n'
    )
    report = analyze_config_text(f"Socket inet:8891@localhost\nTestDNSData file:{data}\n")
    assert report.config is not None
    resolver = make_resolver(report.config)
    assert isinstance(resolver, TestDnsFile)
    assert resolver.records("a._domainkey.example.com") == (b"v=DKIM1; p=abc",)
    assert resolver.records("mail._domainkey") == (b'IN TXT ( "v=DKIM1" )',)


# --- the command line: clear errors, before stdin is read ------------------------------------


def _run_verify(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))  # an empty message would fail differently
    try:
        code = verify.main(argv)
    finally:
        sys.stdin = stdin
    return code, capsys.readouterr().err


def test_verify_missing_dns_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_verify(["--dns-file", "/nonexistent/dns.txt"], capsys)
    assert code == 2
    assert err == "dkimd verify: cannot read /nonexistent/dns.txt: No such file or directory\n"


def test_verify_malformed_dns_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dns.txt"
    path.write_bytes(b'# ok\nmail._domainkey IN TXT "v=DKIM1"\n')
    code, err = _run_verify(["--dns-file", str(path)], capsys)
    assert code == 2
    assert err.startswith(f"dkimd verify: {path}:2: ")
    assert err.count("\n") == 1


def test_testkey_missing_dns_file(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-d", "example.com", "-s", "mail", "--dns-file", "/nonexistent/dns.txt"]
    assert testkey.main(argv) == 78
    err = capsys.readouterr().err
    assert err == "dkimd testkey: cannot read /nonexistent/dns.txt: No such file or directory\n"


# --- hostile input: a records file either parses or names its bad line ------------------------

_PIECES = st.sampled_from(
    [
        b"mail._domainkey",
        b"example.com.",
        b" ",
        b"\t",
        b"\n",
        b"\r\n",
        b"IN",
        b"TXT",
        b"SOA",
        b"300",
        b"(",
        b")",
        b'"',
        b'"v=DKIM1; p=abc"',
        b"\\",
        b"\\059",
        b"\\999",
        b";",
        b"; ----- DKIM key mail for example.com",
        b"#",
        b"$ORIGIN",
        b"$TTL",
        b"$INCLUDE",
        b"@",
        b"\xff",
        b"\x00",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.lists(_PIECES, max_size=40).map(b"".join)))
def test_any_bytes_parse_or_fail_with_a_line(data: bytes) -> None:
    try:
        records = parse_records_file(data, "f")
    except RecordsFileError as exc:
        assert 1 <= exc.line <= data.count(b"\n") + 1
        assert str(exc).startswith(f"f:{exc.line}: ")
        assert "\n" not in exc.reason
    else:
        assert all(isinstance(v, bytes) for values in records.values() for v in values)


def test_error_names_the_continuation_line_at_fault() -> None:
    data = b'a.example. IN TXT ( "v=DKIM1; "\n   "p=abc\n   )\n'
    with pytest.raises(RecordsFileError) as caught:
        parse_records_file(data, "dns.txt")
    assert caught.value.line == 2
    assert "quoted string not closed" in caught.value.reason


def test_a_byte_order_mark_is_not_part_of_the_name() -> None:
    data = b'\xef\xbb\xbfa._domainkey.example.com. IN TXT "v=DKIM1; p="\n'
    assert parse_records_file(data) == {"a._domainkey.example.com": [b"v=DKIM1; p="]}
