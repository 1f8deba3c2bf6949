"""`dkimd genkey`: files, modes, refusals and the record matching the key it was made from."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dkimd.cli import genkey
from dkimd.keytools.record import zone_txt_strings


@pytest.fixture
def umask() -> Iterator[None]:
    # Restore the process umask whatever a test sets it to.
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def tags(txt_path: Path) -> dict[str, str]:
    record = "".join(zone_txt_strings(txt_path.read_text()))
    pairs = [t.strip().split("=", 1) for t in record.split(";") if t.strip()]
    return {k.strip(): v.strip() for k, v in pairs}


def run(*args: str) -> int:
    return genkey.main(list(args))


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
def test_private_key_is_0600_whatever_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    assert run("-D", str(tmp_path), "-s", "mail", "-d", "example.com", "-b", "1024") == 0
    assert stat.S_IMODE((tmp_path / "mail.private").stat().st_mode) == 0o600
    # The record is public: 0644 less the umask.
    assert stat.S_IMODE((tmp_path / "mail.txt").stat().st_mode) == 0o644 & ~mask


def test_rsa_key_and_record_match(tmp_path: Path) -> None:
    assert run("-D", str(tmp_path), "-s", "mail", "-d", "example.com") == 0
    pem = (tmp_path / "mail.private").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, as OpenSSL 3 writes
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048  # Debian's default
    record = tags(tmp_path / "mail.txt")
    assert record == {"v": "DKIM1", "h": "sha256", "k": "rsa", "p": record["p"]}
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64decode(record["p"]) == spki
    assert (tmp_path / "mail.txt").read_text().endswith("; ----- DKIM key mail for example.com\n")


def test_ed25519_record_holds_the_raw_public_key(tmp_path: Path) -> None:
    assert run("-D", str(tmp_path), "--ed25519", "-s", "ed", "-d", "example.com") == 0
    key = serialization.load_pem_private_key((tmp_path / "ed.private").read_bytes(), None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    record = tags(tmp_path / "ed.txt")
    assert record["k"] == "ed25519"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(record["p"]) == raw  # RFC 8463: 32 bytes, not an SPKI


def test_flags_reach_the_record(tmp_path: Path) -> None:
    argv = ["-D", str(tmp_path), "-b", "1024", "-aStr", "-n", "hi", "-h", "sha1:sha256"]
    assert run(*argv) == 0
    text = (tmp_path / "default.txt").read_text()
    assert text.startswith("default._domainkey.localhost.\tIN\tTXT\t")
    record = tags(tmp_path / "default.txt")
    assert record["t"] == "y:s"
    assert record["s"] == "email"
    assert record["n"] == '"hi"'
    assert record["h"] == "sha1:sha256"


def test_long_options_and_negations(tmp_path: Path) -> None:
    argv = [
        "--directory",
        str(tmp_path),
        "--bits=1024",
        "--selector=x",
        "--domain=example.net",
        "--testmode",
        "--notestmode",
        "--nosubdomains",
        "--restrict",
        "--no-restrict",
        "--hash-algorithms=",
    ]
    assert run(*argv) == 0
    assert tags(tmp_path / "x.txt") == {
        "v": "DKIM1",
        "k": "rsa",
        "t": "s",
        "p": tags(tmp_path / "x.txt")["p"],
    }


def test_refuses_to_overwrite_either_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mail.txt").write_text("old record\n")
    assert run("-D", str(tmp_path), "-s", "mail") == 1
    assert "mail.txt exists" in capsys.readouterr().err
    assert not (tmp_path / "mail.private").exists()  # nothing half-made
    assert (tmp_path / "mail.txt").read_text() == "old record\n"


def test_refuses_to_follow_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "mail.private").symlink_to(victim)
    assert run("-D", str(tmp_path), "-s", "mail", "-b", "1024") == 1
    assert victim.read_text() == "precious\n"


def test_force_replaces_both_files_with_a_matching_pair(tmp_path: Path) -> None:
    assert run("-D", str(tmp_path), "-s", "mail", "-b", "1024") == 0
    old_p = tags(tmp_path / "mail.txt")["p"]
    (tmp_path / "mail.private").chmod(0o644)
    assert run("-D", str(tmp_path), "-s", "mail", "-b", "1024", "--force") == 0
    new_p = tags(tmp_path / "mail.txt")["p"]
    assert new_p != old_p
    key = serialization.load_pem_private_key((tmp_path / "mail.private").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert base64.b64decode(new_p) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert stat.S_IMODE((tmp_path / "mail.private").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mail.private", "mail.txt"]


def test_short_keys_warn_and_tiny_keys_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("-D", str(tmp_path), "-s", "tiny", "-b", "511") == 1
    err = capsys.readouterr().err
    assert "refused" in err and "WARNING" not in err
    assert list(tmp_path.iterdir()) == []
    assert run("-D", str(tmp_path), "-s", "short", "-b", "512") == 0
    assert "WARNING: RFC6376 advises minimum 1024-bit keys" in capsys.readouterr().err
    key = serialization.load_pem_private_key((tmp_path / "short.private").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 512
    assert run("-D", str(tmp_path), "-s", "ok", "-b", "1024") == 0
    assert "WARNING" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["-s", "../escape"],
        ["-s", "a/b"],
        ["-s", ""],
        ["-d", "bad domain"],
        ["-n", 'quote"d'],
        ["-h", "sha256;"],
        ["-b", "many"],
        ["--no-such-flag"],
        ["-b", "20000"],
    ],
)
def test_bad_input_exits_1_and_writes_nothing(tmp_path: Path, argv: list[str]) -> None:
    assert run("-D", str(tmp_path), *argv) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("-D", str(tmp_path / "nope")) == 1
    assert "not a directory" in capsys.readouterr().err


def test_version_help_and_verbose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("-V") == 0
    assert capsys.readouterr().out.startswith("dkimd genkey v")
    assert run("--help") == 0
    assert "--hash-algorithms" in capsys.readouterr().out
    assert run("-D", str(tmp_path), "-v", "-b", "1024") == 0
    err = capsys.readouterr().err
    assert "generating private key" in err and "DNS TXT record written to" in err


def test_private_key_material_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("-D", str(tmp_path), "-vvv", "-b", "1024") == 0
    out = capsys.readouterr()
    body = b"".join((tmp_path / "default.private").read_bytes().splitlines()[1:-1]).decode()
    for chunk in (body[i : i + 16] for i in range(0, len(body) - 16, 16)):
        assert chunk not in out.out and chunk not in out.err
