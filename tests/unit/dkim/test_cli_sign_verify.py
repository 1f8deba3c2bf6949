"""`dkimd sign` and `dkimd verify` as subprocesses: exit codes, line ends, round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dkim_helpers import DATA

RFC = DATA / "rfc8463"
MSG = b"From: a@football.example.com\nTo: b@example.net\nSubject: hi\n\nbody  line \n\n"


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dkimd", *args], input=stdin, capture_output=True, timeout=60
    )


def sign(message: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    key = str(RFC / "ed25519.seed")
    return run(
        "sign", "-d", "football.example.com", "-s", "brisbane", "-k", key, *extra, stdin=message
    )


def verify(message: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return run(
        "verify",
        "--dns-file",
        str(RFC / "dns.txt"),
        "--authserv-id",
        "mx.test",
        *extra,
        stdin=message,
    )


def test_verify_rfc8463_example() -> None:
    out = verify((RFC / "signed.eml").read_bytes(), "--now", "1528637909")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split(b"\r\n")  # CRLF in, CRLF out
    assert lines[0].startswith(b"dkim=pass d=football.example.com")
    assert lines[1].startswith(b"dkim=pass d=football.example.com")
    assert lines[2] == b"Authentication-Results: mx.test;"
    assert b"header.s=brisbane" in out.stdout and b"header.s=test" in out.stdout


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_sign_then_verify_keeps_line_ends(eol: bytes) -> None:
    message = MSG.replace(b"\n", eol)
    signed = sign(message, "-c", "simple/simple", "-x", "3600", "-i", "@football.example.com")
    assert signed.returncode == 0, signed.stderr
    out = signed.stdout
    assert out.endswith(message)  # the message itself is written back unchanged
    head = out[: -len(message)]
    assert head.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple;")
    if eol == b"\n":
        assert b"\r" not in out
    else:
        assert b"\n" not in out.replace(b"\r\n", b"")
    checked = verify(out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.endswith(eol) and (eol == b"\r\n") == (b"\r\n" in checked.stdout)
    tampered = verify(out.replace(b"body", b"Body"))
    assert tampered.returncode == 1
    assert tampered.stdout.startswith(b"dkim=fail") and b"body hash mismatch" in tampered.stdout


def test_sign_options() -> None:
    out = sign(MSG, "-l", "-H", "subject:to", "-a", "ed25519-sha256").stdout
    assert b" l=" in out and b"h=From:To:Subject:From;" in out.replace(b"\n\t ", b"")


def test_unsigned_message_exit_1() -> None:
    out = verify(MSG)
    assert out.returncode == 1
    assert out.stdout == (
        b"dkim=none reason='no signatures'\nAuthentication-Results: mx.test; dkim=none\n"
        b"Authentication-Results: mx.test; arc=none\n"  # the ARC result (docs/arc.md)
    )


def test_usage_and_input_errors_exit_2(tmp_path: Path) -> None:
    assert run("sign", "-d", "example.com").returncode == 2
    assert run("verify", "--max-signatures", "0").returncode == 2
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    out = run("sign", "-d", "example.com", "-s", "s", "-k", str(bad), stdin=MSG)
    assert out.returncode == 2 and b"private key" in out.stderr and b"AAAA" not in out.stderr
    missing = run("sign", "-d", "example.com", "-s", "s", "-k", str(tmp_path / "nope"), stdin=MSG)
    assert missing.returncode == 2
    garbage = verify(b"no colon here\r\n\r\nbody\r\n")
    assert garbage.returncode == 2 and b"header" in garbage.stderr
    # A missing --dns-file is an input error even for a message with no signature to check.
    assert run("verify", "--dns-file", str(tmp_path / "none.txt"), stdin=MSG).returncode == 2


def test_help_mentions_exit_codes() -> None:
    out = run("verify", "--help")
    assert out.returncode == 0 and b"Exit status" in out.stdout and b"2 usage" in out.stdout


def test_field_names_with_wsp_before_the_colon() -> None:
    """One header-name rule through the CLI: "Subject :" is signed as Subject and found again
    by h=subject; a second From spelled "From :" fails the signature (RFC 6376 8.15)."""
    message = b"From: a@football.example.com\r\nSubject : hi\r\nTo: b@example.net\r\n\r\nbody\r\n"
    signed = sign(message, "-c", "relaxed/relaxed")
    assert signed.returncode == 0, signed.stderr
    assert b"h=From:Subject:To:From;" in signed.stdout.replace(b"\r\n\t ", b"")
    assert verify(signed.stdout).stdout.startswith(b"dkim=pass")
    forged = verify(signed.stdout.replace(b"Subject : hi", b"Subject : ho"))
    assert forged.returncode == 1 and b"signature verification failed" in forged.stdout
    prepended = verify(b"From : mallory@evil.example\r\n" + signed.stdout)
    assert prepended.returncode == 1
    assert prepended.stdout.startswith(b"dkim=fail") and (
        b"reason='message has more than one From field'" in prepended.stdout
    )
