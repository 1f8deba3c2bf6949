"""`dkimd testkey` on the cases an admin meets: pass, mismatch, no record, revoked key,
unsafe key file, key too short, plus the KeyTable walk and its summary and exit codes."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.cli import testkey
from dkimd.dns.base import TxtResult, TxtStatus
from dkimd.keytools.generate import GeneratedKey, generate_ed25519, generate_rsa
from dkimd.keytools.record import KeyRecordOptions, record_value
from dkimd.keytools.testkey import (
    EX_CONFIG,
    EX_DATAERR,
    EX_OSERR,
    EX_UNAVAILABLE,
    KeyPolicy,
    KeySpec,
    check_key,
)
from support.tools import unavailable

_KEYS: dict[int, GeneratedKey] = {}


def rsa_key(bits: int = 1024) -> GeneratedKey:
    # RSA generation is the slow part: share one key per size across the tests.
    if bits not in _KEYS:
        _KEYS[bits] = generate_rsa(bits)
    return _KEYS[bits]


class Setup:
    """A key directory (mode 0700) and a TestDNSData file under one tmp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.keys.mkdir()
        self.keys.chmod(0o755)
        self.dns = root / "dns"
        self.dns.write_text("")

    def key(self, name: str, key: GeneratedKey, mode: int = 0o600) -> Path:
        path = self.keys / f"{name}.private"
        path.write_bytes(key.private_pem)
        path.chmod(mode)
        return path

    def publish(self, selector: str, text: str, domain: str = "example.com") -> None:
        with self.dns.open("a") as fh:
            fh.write(f"{selector}._domainkey.{domain} {text}\n")

    def publish_key(self, selector: str, key: GeneratedKey, **options: object) -> None:
        opts = KeyRecordOptions(key_type=key.key_type, **options)  # type: ignore[arg-type]
        self.publish(selector, record_value(key.public_key_b64, opts))

    def run(self, *argv: str) -> int:
        return testkey.main(["--dns-file", str(self.dns), *argv])


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    # Key file safety walks the path from /: pytest's tmp_path sits under a 0700
    # directory, which (rightly) makes anything below it safe. Use a searchable 0755
    # directory of our own so the checks reach the key directory and file.
    root = Path(tempfile.mkdtemp(prefix="dkimd-testkey-"))
    root.chmod(0o755)
    # Never read the host's /etc/opendkim.conf.
    monkeypatch.setattr("dkimd.keytools.context.DEFAULT_CONFIG", str(root / "absent.conf"))
    try:
        yield Setup(root)
    finally:
        shutil.rmtree(root)


def test_pass_is_silent_and_vvv_says_key_ok(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    key = setup.key("mail", rsa_key())
    setup.publish_key("mail", rsa_key())
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == 0
    assert capsys.readouterr().out == ""
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key), "-vvv") == 0
    assert capsys.readouterr().out == "dkimd testkey: key OK\n"


def test_ed25519_pass(setup: Setup) -> None:
    ed = generate_ed25519()
    key = setup.key("ed", ed)
    setup.publish_key("ed", ed)
    assert setup.run("-d", "example.com", "-s", "ed", "-k", str(key)) == 0


def test_mismatch_is_dataerr_on_stdout(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    key = setup.key("mail", rsa_key())
    setup.publish_key("mail", generate_rsa(1024))
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_DATAERR
    assert capsys.readouterr().out == "dkimd testkey: keys do not match\n"


def test_key_type_mismatch(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    key = setup.key("mail", generate_ed25519())
    setup.publish_key("mail", rsa_key())
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_DATAERR
    assert "private key is ed25519, record has k=rsa" in capsys.readouterr().out


def test_missing_record_is_unavailable(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    key = setup.key("mail", rsa_key())
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_UNAVAILABLE
    assert "'mail._domainkey.example.com' record not found" in capsys.readouterr().err


def test_revoked_key(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    key = setup.key("mail", rsa_key())
    setup.publish("mail", "v=DKIM1; k=rsa; p=")
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_UNAVAILABLE
    assert "Revoked key" in capsys.readouterr().err


def test_unparsable_record(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.publish("mail", "v=DKIM1; k=rsa; p=!!!notbase64")
    assert setup.run("-d", "example.com", "-s", "mail") == EX_UNAVAILABLE
    assert "syntax error in key data" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o666, 0o602])
def test_unsafe_key_file_fails_while_require_safe_keys_is_on(
    setup: Setup, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    key = setup.key("mail", rsa_key(), mode)
    setup.publish_key("mail", rsa_key())
    if mode & 0o060:
        # Group bits are only unsafe when another user can be in the file's group.
        os.chown(key, 0, _shared_gid())
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_DATAERR
    assert "unsafe permissions" in capsys.readouterr().out


def _shared_gid() -> int:
    import grp
    import pwd

    for group in grp.getgrall():
        if any(m not in ("root",) for m in group.gr_mem):
            return group.gr_gid
    for user in pwd.getpwall():
        if user.pw_uid != 0 and user.pw_gid != 0:
            return user.pw_gid
    unavailable("no group with users other than root on this system")


def test_unsafe_key_file_only_warns_with_require_safe_keys_off(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    key = setup.key("mail", rsa_key(), 0o644)
    setup.publish_key("mail", rsa_key())
    conf = setup.root / "opendkim.conf"
    conf.write_text(f"RequireSafeKeys no\nTestDNSData file:{setup.dns}\n")
    assert testkey.main(["-x", str(conf), "-d", "example.com", "-s", "mail", "-k", str(key)]) == 0
    assert (
        "WARNING" in capsys.readouterr().err
        and "unsafe permissions" in str(key) + " unsafe permissions"
    )


def test_unsafe_directory(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    key = setup.key("mail", rsa_key())
    setup.publish_key("mail", rsa_key())
    setup.keys.chmod(0o777)  # anyone can swap the key file
    try:
        assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_DATAERR
    finally:
        setup.keys.chmod(0o755)
    assert "can be written by other users" in capsys.readouterr().out


def test_key_shorter_than_minimum_key_bits(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    short = rsa_key(512)
    key = setup.key("short", short)
    setup.publish_key("short", short)
    assert setup.run("-d", "example.com", "-s", "short", "-k", str(key)) == EX_DATAERR
    out = capsys.readouterr().out
    assert "512 bits, shorter than MinimumKeyBits (1024)" in out
    conf = setup.root / "opendkim.conf"
    conf.write_text(f"MinimumKeyBits 512\nTestDNSData file:{setup.dns}\n")
    assert testkey.main(["-x", str(conf), "-d", "example.com", "-s", "short", "-k", str(key)]) == 0


def test_testing_flag_warns_but_passes(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    key = setup.key("mail", rsa_key())
    setup.publish_key("mail", rsa_key(), testing=True)
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == 0
    assert "t=y" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tags", "message"),
    [("s=tlsrpt; ", "does not allow e-mail"), ("h=sha1; ", "does not allow sha256")],
)
def test_record_that_verifiers_would_refuse(
    setup: Setup, capsys: pytest.CaptureFixture[str], tags: str, message: str
) -> None:
    key = setup.key("mail", rsa_key())
    setup.publish("mail", f"v=DKIM1; k=rsa; {tags}p={rsa_key().public_key_b64}")
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(key)) == EX_DATAERR
    assert message in capsys.readouterr().out


def test_missing_key_file_is_oserr(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.publish_key("mail", rsa_key())
    missing = setup.keys / "nope.private"
    assert setup.run("-d", "example.com", "-s", "mail", "-k", str(missing)) == EX_OSERR
    assert "stat(): No such file or directory" in capsys.readouterr().err


def test_record_only_check_without_k(setup: Setup) -> None:
    setup.publish_key("mail", rsa_key())
    assert setup.run("-d", "example.com", "-s", "mail") == 0


def test_usage_and_config_errors_are_ex_config(setup: Setup) -> None:
    assert setup.run("-s", "mail") == EX_CONFIG  # no domain
    assert setup.run("--bogus") == EX_CONFIG
    conf = setup.root / "broken.conf"
    conf.write_text("KeyTable file:/nonexistent/KeyTable\n")
    assert testkey.main(["-x", str(conf)]) == EX_CONFIG


def test_keytable_walk(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    good = setup.key("good", rsa_key())
    setup.publish_key("good", rsa_key())
    other = setup.key("other", generate_rsa(1024))
    setup.publish_key("other", rsa_key())
    inline = rsa_key().private_pem.decode().strip().replace("\n", "")
    keytable = setup.root / "KeyTable"
    keytable.write_text(
        f"good example.com:good:{good}\n"
        f"other example.com:other:{other}\n"
        f"gone example.com:gone:{good}\n"
        f"any %:good:{good}\n"
    )
    del inline
    conf = setup.root / "opendkim.conf"
    conf.write_text(f"KeyTable file:{keytable}\nTestDNSData file:{setup.dns}\n")
    assert testkey.main(["-x", str(conf), "-vvv"]) == EX_DATAERR
    captured = capsys.readouterr()
    assert "dkimd testkey: key good: OK\n" in captured.out
    assert "dkimd testkey: key other: keys do not match" in captured.err
    assert "dkimd testkey: key gone: 'gone._domainkey.example.com' record not found" in captured.err
    assert 'key any: WARNING: the KeyTable domain is "%"' in captured.err
    assert captured.out.endswith("dkimd testkey: 4 keys checked; 2 pass, 2 fail\n")


def test_keytable_walk_all_good_is_silent(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    good = setup.key("good", rsa_key())
    setup.publish_key("good", rsa_key())
    keytable = setup.root / "KeyTable"
    keytable.write_text(f"good example.com:good:{good}\n")
    conf = setup.root / "opendkim.conf"
    conf.write_text(f"KeyTable file:{keytable}\nTestDNSData file:{setup.dns}\n")
    assert testkey.main(["-x", str(conf)]) == 0
    assert capsys.readouterr() == ("", "")
    assert testkey.main(["-x", str(conf), "-v"]) == 0
    assert capsys.readouterr().out == "dkimd testkey: 1 key checked; 1 pass, 0 fail\n"


class _Failing:
    async def lookup_txt(self, name: str) -> TxtResult:
        return TxtResult(name, TxtStatus.SERVFAIL, detail="upstream down")


def test_dns_failure_is_unavailable_not_a_mismatch() -> None:
    spec = KeySpec("k", "example.com", "mail")
    result = asyncio.run(check_key(spec, _Failing(), KeyPolicy()))
    assert result.exit_code == EX_UNAVAILABLE
    assert "servfail" in result.errors[0].message and "upstream down" in result.errors[0].message
