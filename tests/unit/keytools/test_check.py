"""`dkimd check` on broken copies of the reference configuration (tests/data/config/reference,
the files the seed recipe leaves on disk), one problem kind per test."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.cli import check
from dkimd.config import Severity, analyze_config
from dkimd.keytools.generate import GeneratedKey, generate_rsa
from dkimd.keytools.lint import lint
from support.reference import REFERENCE, postfix_snippet, reference_user
from support.tools import unavailable

KEY = generate_rsa(2048)


class Site:
    """A copy of the reference files with /etc/opendkim/ pointing at a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "opendkim.conf"
        for name in ("opendkim.conf", "KeyTable", "SigningTable", "TrustedHosts"):
            text = (REFERENCE / name).read_text().replace("/etc/opendkim/", f"{root}/")
            (root / name).write_text(text)
        keys = root / "keys"
        keys.mkdir()
        keys.chmod(0o700)
        self.key_path = keys / "mail.private"
        self.put_key(KEY)
        # A free port instead of 8891, which a running OpenDKIM may hold.
        self.set("Socket", f"inet:{_free_port()}@127.0.0.1")
        self.set("PidFile", f"{root}/opendkim.pid")
        user = reference_user()
        if user is None:
            self.set("UserID", None)  # the reference's user does not exist here
        else:
            # As the seed recipe: the keys belong to the filter's user.
            os.chown(keys, user.pw_uid, user.pw_gid)
            os.chown(self.key_path, user.pw_uid, user.pw_gid)

    def put_key(self, key: GeneratedKey | bytes, mode: int = 0o600) -> None:
        data = key if isinstance(key, bytes) else key.private_pem
        self.key_path.write_bytes(data)
        self.key_path.chmod(mode)
        user = reference_user()
        if user is not None:
            os.chown(self.key_path, user.pw_uid, user.pw_gid)

    def set(self, option: str, value: str | None) -> None:
        lines = [
            line
            for line in self.conf.read_text().splitlines()
            if line.split(None, 1)[:1] != [option]
        ]
        if value is not None:
            lines.append(f"{option} {value}")
        self.conf.write_text("\n".join(lines) + "\n")

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.root / name
        text = path.read_text()
        assert old in text, (old, text)
        path.write_text(text.replace(old, new))

    def run(self, *argv: str) -> int:
        return check.main(["-x", str(self.conf), "--no-postfix", *argv])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site() -> Iterator[Site]:
    # Searchable from / so the key safety walk looks at the key directory and file.
    root = Path(tempfile.mkdtemp(prefix="dkimd-check-"))
    root.chmod(0o755)
    try:
        yield Site(root)
    finally:
        shutil.rmtree(root)


REFERENCE_WARNINGS = 2  # TrustedHosts:7 "*.example.com", once per list that uses the file


def test_reference_configuration_is_clean_and_summarized(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert site.run() == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == REFERENCE_WARNINGS and "error:" not in out
    assert "dkimd signs outgoing mail and verifies incoming mail." in out
    assert "*@example.com" in out and "*@*.example.net" in out
    assert "-> d=example.com s=mail (rsa-sha256, 2048 bits;" in out
    assert "Mail is signed when it comes from a client in InternalHosts (127.0.0.1, ::1," in out
    assert "Mail from every other client is verified." in out
    assert "NOT SIGNED" not in out
    # ...and the two warnings make --strict fail.
    assert site.run("--strict") == 1


def test_unknown_option_suggests_the_right_one(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.set("Canonicalisation", "relaxed/relaxed")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert f"{site.conf}:" in out and 'unknown option "Canonicalisation"' in out
    assert 'fix: did you mean "Canonicalization"?' in out


def test_bad_value(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.set("MinimumKeyBits", "lots")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert 'MinimumKeyBits: "lots" is not an integer' in out
    assert "fix: a whole number of bits" in out


def test_missing_dataset_file(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    (site.root / "SigningTable").unlink()
    assert site.run() == 2
    out = capsys.readouterr().out
    assert "SigningTable" in out and "No such file or directory" in out
    assert "The configuration cannot be loaded" in out


def test_bad_keytable_line(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.edit("KeyTable", f":{site.key_path}", "")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert f"{site.root}/KeyTable:2: error:" in out
    assert "is not domain:selector:keyfile" in out
    assert "fix: each line: KEYNAME DOMAIN:SELECTOR:/path/to/SELECTOR.private" in out


def test_signing_table_names_unknown_key(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.edit(
        "SigningTable",
        "*@example.net                          mail._domainkey.example.com",
        "*@example.net                          mail._domainkey.example.net",
    )
    assert site.run() == 2
    out = capsys.readouterr().out
    assert f"{site.root}/SigningTable:4: error:" in out
    assert '"mail._domainkey.example.net", which is not in the KeyTable' in out
    assert "fix: add that key to the KeyTable" in out


def test_key_that_is_not_a_key(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.put_key(b"this is not a PEM key\n")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert f"{site.root}/KeyTable:2: error:" in out and "private key" in out
    assert "NOT SIGNED" in out  # the summary says so too


def test_unsafe_key(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    (site.root / "keys").chmod(0o755)  # let the safety walk see the file
    site.put_key(KEY, mode=0o644)
    assert site.run() == 2
    out = capsys.readouterr().out
    assert "is not safe, so the filter (RequireSafeKeys yes) will refuse it" in out
    assert "can be read or written by other users" in out
    assert "fix: chmod 600" in out
    assert "refused as unsafe: NOT SIGNED" in out
    site.set("RequireSafeKeys", "no")
    assert site.run() == 0
    assert "warning:" in capsys.readouterr().out


def test_key_the_filter_user_cannot_read(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    if reference_user() is None:
        unavailable("needs the opendkim user (apt-get install opendkim)")
    os.chown(site.key_path, 0, 0)  # root's 0600 key: what genkey run as root leaves
    assert site.run() == 2
    out = capsys.readouterr().out
    assert "the filter runs as opendkim (UserID), who cannot read" in out
    assert "unreadable by opendkim: NOT SIGNED" in out


def test_short_keys(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.put_key(generate_rsa(512))
    assert site.run() == 2
    assert "512 bits: verifiers reject RSA keys under 1024 bits" in capsys.readouterr().out
    site.put_key(generate_rsa(1024))
    site.set("MinimumKeyBits", "2048")
    assert site.run() == 0
    assert "1024 bits, under MinimumKeyBits (2048)" in capsys.readouterr().out


def test_invalid_socket(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.set("Socket", "inet:99999@localhost")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert "port 99999 is out of range" in out and "fix: inet:PORT@HOST" in out


def test_no_socket_is_a_check_warning(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    # The daemon takes one from -p; the file alone cannot say, so only `check` warns.
    site.set("Socket", None)
    assert site.run() == 0
    assert site.run("--strict") == 1
    out = capsys.readouterr().out
    assert "warning: no Socket is set" in out and "fix: set Socket, or give one with -p" in out


def test_socket_port_in_use(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        site.set("Socket", f"inet:{port}@127.0.0.1")
        assert site.run() == 0
        assert site.run("--strict") == 1
    out = capsys.readouterr().out
    assert f"Socket: 127.0.0.1 port {port} is in use" in out
    assert "fix: if that is OpenDKIM, stop it" in out


def test_socket_host_that_does_not_resolve(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.set("Socket", "inet:8891@no-such-host.invalid")
    assert site.run() == 2
    assert "Socket: cannot resolve" in capsys.readouterr().out


def test_trusted_hosts_entry_that_is_not_a_network(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.edit("TrustedHosts", "192.0.2.0/24", "192.0.2.0/33")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert f"{site.root}/TrustedHosts:5: error:" in out and "/33" in out
    assert "fix: one IP address, CIDR network" in out


def test_internal_hosts_without_loopback(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    (site.root / "Internal").write_text("192.0.2.0/24\n")
    site.set("InternalHosts", f"refile:{site.root}/Internal")
    assert site.run() == 0
    out = capsys.readouterr().out
    assert "InternalHosts contains neither 127.0.0.1 nor ::1" in out
    assert "fix: add 127.0.0.1 and ::1" in out


def test_unknown_user(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.set("UserID", "nosuchuser:nosuchgroup")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert 'UserID: no user "nosuchuser"' in out and 'no group "nosuchgroup"' in out


def test_postfix_milters_must_point_at_the_socket(site: Site) -> None:
    site.set("Socket", "inet:8891@localhost")
    report = analyze_config(site.conf)

    def postconf(names: list[str]) -> str:
        assert names == ["smtpd_milters", "non_smtpd_milters"]
        return "inet:localhost:8892\ninet:127.0.0.1:8891\n"

    found = [p for p in lint(report, postconf=postconf).problems if p.file == "postconf"]
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert "smtpd_milters (inet:localhost:8892) does not point at Socket inet:8891@localhost" in (
        found[0].message
    )
    # The seed's own Postfix snippet matches the seed's Socket (localhost either way).
    milters = postfix_snippet()

    def seed_postconf(names: list[str]) -> str:
        return "\n".join(milters[n] for n in names) + "\n"

    assert not [p for p in lint(report, postconf=seed_postconf).problems if p.file == "postconf"]


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["-x", str(tmp_path / "nope.conf"), "--no-postfix"]) == 2
    out = capsys.readouterr().out
    assert "nope.conf" in out and "No such file or directory" in out


def test_keytable_algorithm_that_does_not_fit_the_key(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.edit("KeyTable", f":{site.key_path}", f":{site.key_path}:ed25519-sha256")
    assert site.run() == 2
    out = capsys.readouterr().out
    assert f"{site.root}/KeyTable:2: error:" in out
    assert "is rsa but its KeyTable entry names ed25519-sha256" in out


def test_options_without_effect_are_named(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    # The reference signs and verifies (Mode sv): WeakSyntaxChecks cannot matter there.
    for option, value in (
        ("AllowSHA1Only", "yes"),
        ("SelectCanonicalizationHeader", "X-Canon"),
        ("Minimum", "50%"),
        ("WeakSyntaxChecks", "yes"),
        ("ClockDrift", "600"),
    ):
        site.set(option, value)
    assert site.run() == 0
    out = capsys.readouterr().out
    assert out.count("warning:") == REFERENCE_WARNINGS + 4
    for option in ("AllowSHA1Only", "SelectCanonicalizationHeader", "Minimum", "WeakSyntaxChecks"):
        assert f"{option} has no effect:" in out
    assert "ClockDrift has no effect" not in out
