"""`dkimd testkey` next to the real opendkim-testkey, both asking the same DNS server.

The real tool is pointed at tests/support's FakeDns through libunbound
(ResolverConfiguration names an unbound.conf forwarding everything to it); dkimd asks the
same server with --nameservers. Exit codes must agree wherever dkimd does not check more
than OpenDKIM does; where it does (key too short, key file unsafe for the filter), the
test pins down both behaviours.

Under CI=true a missing opendkim-testkey fails these tests.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dkimd.cli import testkey
from dkimd.keytools.generate import GeneratedKey, generate_rsa
from dkimd.keytools.record import KeyRecordOptions, record_value
from support.fakedns import FakeDns
from support.tools import require

pytestmark = pytest.mark.interop


@dataclass
class Both:
    root: Path
    dns: FakeDns
    real_conf: Path

    def key(self, name: str, key: GeneratedKey, mode: int = 0o600) -> Path:
        path = self.root / f"{name}.private"
        path.write_bytes(key.private_pem)
        path.chmod(mode)
        return path

    def publish(self, selector: str, key: GeneratedKey) -> None:
        text = record_value(key.public_key_b64, KeyRecordOptions())
        self.dns.txt(f"{selector}._domainkey.example.com", text)

    def real(self, *argv: str) -> subprocess.CompletedProcess[str]:
        tool = require("opendkim-testkey")
        return subprocess.run(
            [tool, "-x", str(self.real_conf), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ours(self, *argv: str) -> int:
        return testkey.main(
            [
                "-x",
                "/dev/null",
                "--nameservers",
                "127.0.0.1",
                "--dns-port",
                str(self.dns.port),
                *argv,
            ]
        )


@pytest.fixture(scope="module")
def key_a() -> GeneratedKey:
    return generate_rsa(1024)


@pytest.fixture(scope="module")
def key_b() -> GeneratedKey:
    return generate_rsa(1024)


@pytest.fixture
def both() -> Iterator[Both]:
    require("opendkim-testkey")
    root = Path(tempfile.mkdtemp(prefix="dkimd-testkey-interop-"))
    root.chmod(0o755)  # searchable, so the safety walk reaches the key files
    try:
        with FakeDns() as dns:
            unbound = root / "unbound.conf"
            unbound.write_text(
                "server:\n"
                "  do-not-query-localhost: no\n"
                '  module-config: "iterator"\n'
                "forward-zone:\n"
                '  name: "."\n'
                f"  forward-addr: 127.0.0.1@{dns.port}\n"
            )
            conf = root / "real.conf"
            conf.write_text(f"ResolverConfiguration {unbound}\n")
            yield Both(root, dns, conf)
    finally:
        shutil.rmtree(root)


def test_pass(both: Both, key_a: GeneratedKey, capsys: pytest.CaptureFixture[str]) -> None:
    path = both.key("mail", key_a)
    both.publish("mail", key_a)
    real = both.real("-d", "example.com", "-s", "mail", "-k", str(path), "-vvv")
    assert real.returncode == 0 and "opendkim-testkey: key OK" in real.stdout
    assert both.ours("-d", "example.com", "-s", "mail", "-k", str(path), "-vvv") == 0
    assert "dkimd testkey: key OK" in capsys.readouterr().out


def test_mismatch(
    both: Both, key_a: GeneratedKey, key_b: GeneratedKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = both.key("mail", key_a)
    both.publish("mail", key_b)
    real = both.real("-d", "example.com", "-s", "mail", "-k", str(path))
    assert real.returncode == 65 and "keys do not match" in real.stdout
    assert both.ours("-d", "example.com", "-s", "mail", "-k", str(path)) == 65
    assert "keys do not match" in capsys.readouterr().out


def test_missing_record(
    both: Both, key_a: GeneratedKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = both.key("mail", key_a)
    real = both.real("-d", "example.com", "-s", "nothere", "-k", str(path))
    assert real.returncode == 69
    assert "'nothere._domainkey.example.com' record not found" in real.stderr
    assert both.ours("-d", "example.com", "-s", "nothere", "-k", str(path)) == 69
    assert "'nothere._domainkey.example.com' record not found" in capsys.readouterr().err


def test_revoked(both: Both, key_a: GeneratedKey, capsys: pytest.CaptureFixture[str]) -> None:
    path = both.key("mail", key_a)
    both.dns.txt("gone._domainkey.example.com", "v=DKIM1; k=rsa; p=")
    real = both.real("-d", "example.com", "-s", "gone", "-k", str(path))
    assert real.returncode == 69 and "Revoked key" in real.stderr
    assert both.ours("-d", "example.com", "-s", "gone", "-k", str(path)) == 69
    assert "Revoked key" in capsys.readouterr().err


def test_record_only(both: Both, key_a: GeneratedKey) -> None:
    both.publish("mail", key_a)
    assert both.real("-d", "example.com", "-s", "mail").returncode == 0
    assert both.ours("-d", "example.com", "-s", "mail") == 0


def test_unsafe_permissions(
    both: Both, key_a: GeneratedKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = both.key("mail", key_a, 0o644)
    both.publish("mail", key_a)
    real = both.real("-d", "example.com", "-s", "mail", "-k", str(path))
    # OpenDKIM's tool only warns...
    assert real.returncode == 0 and f"{path}: WARNING: unsafe permissions" in real.stderr
    # ...while the OpenDKIM filter (RequireSafeKeys, on by default) refuses the key, so
    # dkimd testkey fails it, giving the reason, and keeps the tool's warning.
    assert both.ours("-d", "example.com", "-s", "mail", "-k", str(path)) == 65
    captured = capsys.readouterr()
    assert f"WARNING: {path}: unsafe permissions" in captured.err
    assert "can be read or written by other users" in captured.out


def test_too_short(both: Both, capsys: pytest.CaptureFixture[str]) -> None:
    short = generate_rsa(512)
    path = both.key("short", short)
    both.publish("short", short)
    # opendkim-testkey does not look at key sizes; verifiers (RFC 8301) reject < 1024.
    assert both.real("-d", "example.com", "-s", "short", "-k", str(path)).returncode == 0
    assert both.ours("-d", "example.com", "-s", "short", "-k", str(path)) == 65
    assert "512 bits" in capsys.readouterr().out
