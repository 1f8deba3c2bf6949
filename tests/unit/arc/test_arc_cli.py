"""`dkimd seal` and the ARC side of `dkimd verify`, as subprocesses with --dns-file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from arc_helpers import DATA

RFC8463 = DATA.parent / "rfc8463"
KEY = str(RFC8463 / "ed25519.seed")
DNS = str(RFC8463 / "dns.txt")  # brisbane._domainkey.football.example.com, the Ed25519 key
MSG = b"From: Joe <joe@football.example.com>\nTo: list@example.net\nSubject: hi\n\nbody  line\n"
SEAL = ("seal", "-d", "football.example.com", "-s", "brisbane", "-k", KEY, "--dns-file", DNS)


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dkimd", *args], input=stdin, capture_output=True, timeout=60
    )


def seal(message: bytes, authserv_id: str = "mx.test", *extra: str) -> bytes:
    out = run(
        *SEAL, "--authserv-id", authserv_id, "--timestamp", "1700000000", *extra, stdin=message
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def verify(message: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return run(
        "verify",
        "--dns-file",
        DNS,
        "--authserv-id",
        "mx.test",
        "--now",
        "1700000100",
        *extra,
        stdin=message,
    )


def test_seal_then_verify_two_hops() -> None:
    one = seal(MSG, "mx.one", "--ar", "spf=pass smtp.mailfrom=football.example.com")
    assert one.startswith(b"ARC-Seal: i=1; a=ed25519-sha256; t=1700000000; cv=none;")
    assert b"\r\n" not in one  # LF in, LF out
    assert b"spf=pass smtp.mailfrom=football.example.com; arc=none" in one.replace(b"\n\t", b" ")
    two = seal(one, "mx.two")
    out = verify(two, "--arc")
    assert out.returncode == 0, out.stdout
    assert out.stdout.splitlines()[-1] == (
        b"Authentication-Results: mx.test; arc=pass header.oldest-pass=0"
    )


def test_seal_default_ar_records_dkim_results() -> None:
    sealed = seal(MSG)
    assert b"i=1; mx.test; dkim=none" in sealed.replace(b"\n\t", b" ")


def test_verify_exit_status_dkim_by_default_arc_with_flag() -> None:
    sealed = seal(MSG)
    assert verify(sealed).returncode == 1  # no DKIM signature
    assert verify(sealed, "--arc").returncode == 0


def test_tampered_body_fails_arc() -> None:
    tampered = seal(MSG).replace(b"body  line", b"body line!")
    out = verify(tampered, "--arc")
    assert out.returncode == 1
    assert b'arc=fail reason="AMS i=1: body hash mismatch"' in out.stdout


def test_verify_without_arc_prints_arc_none() -> None:
    out = verify(MSG)
    assert out.stdout.splitlines()[-1] == b"Authentication-Results: mx.test; arc=none"


def test_crlf_input_gives_crlf_output() -> None:
    sealed = seal(MSG.replace(b"\n", b"\r\n"))
    assert b"\r\n\tb=" in sealed and b"\n\t" not in sealed.replace(b"\r\n", b"")
    assert verify(sealed, "--arc").returncode == 0


def test_seal_refuses_after_cv_fail() -> None:
    broken = seal(MSG).replace(b"body  line", b"body line!")
    failed = seal(broken)  # cv=fail at i=2
    assert failed.startswith(b"ARC-Seal: i=2;") and b"cv=fail" in failed.split(b"\n")[0]
    out = run(*SEAL, "--authserv-id", "mx.test", stdin=failed)
    assert out.returncode == 1 and out.stdout == failed
    assert b"cv=fail" in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--authserv-id", "bad id"),
        ("--authserv-id", "mx", "-H", "from:arc-seal"),
    ],
)
def test_seal_bad_options_exit_2(args: tuple[str, ...]) -> None:
    out = run(*SEAL, *args, stdin=MSG)
    assert out.returncode == 2 and out.stderr.startswith(b"dkimd seal:")


def test_seal_missing_dns_file_exit_2(tmp_path: Path) -> None:
    args = ["seal", "-d", "x.example", "-s", "s", "-k", KEY, "--authserv-id", "mx"]
    out = run(*args, "--dns-file", str(tmp_path / "none.txt"), stdin=MSG)
    assert out.returncode == 2


def test_verify_arc_max_sets() -> None:
    two = seal(seal(MSG))
    assert verify(two, "--arc", "--arc-max-sets", "2").returncode == 0
    out = verify(two, "--arc", "--arc-max-sets", "1")
    assert out.returncode == 1 and b"limit 1" in out.stdout
    assert verify(two, "--arc-max-sets", "51").returncode == 2
