"""`dkimd -x CONF -t FILES` (opendkim's test mode) and StrictTestMode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dkimd.cli import serve
from dkimd.keytools.generate import generate_rsa

MESSAGE = b"From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: hi\n\nHello.\n"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    key = generate_rsa(1024)
    (tmp_path / "mail.private").write_bytes(key.private_pem)
    (tmp_path / "dns.data").write_text(
        f"mail._domainkey.example.com v=DKIM1; k=rsa; p={key.public_key_b64}\n"
    )
    (tmp_path / "KeyTable").write_text(f"mail example.com:mail:{tmp_path / 'mail.private'}\n")
    (tmp_path / "SigningTable").write_text("*@example.com mail\n")
    key_file = str(tmp_path / "mail.private")
    signed = subprocess.run(
        [sys.executable, "-m", "dkimd", "sign", "-d", "example.com", "-s", "mail", "-k", key_file],
        input=MESSAGE,
        capture_output=True,
        check=True,
    ).stdout
    (tmp_path / "signed.txt").write_bytes(signed)
    (tmp_path / "bad.txt").write_bytes(signed.replace(b"Hello", b"Hullo"))
    (tmp_path / "crlf.txt").write_bytes(signed.replace(b"\n", b"\r\n"))
    (tmp_path / "plain.txt").write_bytes(MESSAGE)
    return tmp_path


def _run(site: Path, conf: str, files: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    (site / "t.conf").write_text(
        f"TestDNSData file:{site / 'dns.data'}\nRequireSafeKeys no\n{conf}"
    )
    code = serve.main(["-x", str(site / "t.conf"), "-t", files], prog="dkimd")
    return code, capsys.readouterr().err


def test_verifies_each_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = ",".join(str(site / n) for n in ("signed.txt", "bad.txt", "plain.txt"))
    code, err = _run(site, "", files, capsys)
    assert code == 0  # as opendkim: the verdicts do not change the exit status
    signed, bad, plain = (f"dkimd: {site / n}: " for n in ("signed.txt", "bad.txt", "plain.txt"))
    assert f"{signed}header added: Authentication-Results: localhost;" in err
    assert "dkim=pass (1024-bit key) header.d=example.com" in err
    assert f"{signed}accept" in err
    assert 'dkim=fail reason="signature verification failed"' in err and f"{bad}accept" in err
    assert f"{plain}accept\n" in err


def test_without_mode_it_only_verifies(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = f"KeyTable file:{site / 'KeyTable'}\nSigningTable refile:{site / 'SigningTable'}\n"
    code, err = _run(site, tables, str(site / "plain.txt"), capsys)
    assert code == 0 and "DKIM-Signature" not in err
    code, err = _run(site, tables + "Mode sv\n", str(site / "plain.txt"), capsys)
    assert code == 0 and "header added: DKIM-Signature: v=1; a=rsa-sha256;" in err


def test_strict_test_mode_wants_crlf(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(site, "StrictTestMode yes\n", str(site / "signed.txt"), capsys)
    assert code == 65  # EX_DATAERR, as opendkim
    assert f"dkimd: {site / 'signed.txt'}: line 1: not CRLF-terminated" in err
    code, err = _run(site, "StrictTestMode yes\n", str(site / "crlf.txt"), capsys)
    assert code == 0 and "dkim=pass" in err
    (site / "half.txt").write_bytes((site / "crlf.txt").read_bytes() + b"tail")
    code, err = _run(site, "StrictTestMode yes\n", str(site / "half.txt"), capsys)
    assert code == 65 and "not CRLF-terminated" in err


def test_unreadable_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(site, "", str(site / "none.txt"), capsys)
    assert code == 66 and "none.txt: No such file or directory" in err
