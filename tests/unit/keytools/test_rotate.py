"""`dkimd keys rotate` / `retire`: each step on real files, DNS from TestDNSData or a local
DNS server, and the safety rules (no switch before the record is visible, no removal of a
key the SigningTable names, files replaced atomically with their modes kept)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dkimd.cli import keys as keys_cli
from dkimd.config import load_config
from dkimd.dkim.keys import load_private_key_file
from dkimd.dns.testdata import TestDnsFile
from dkimd.keytools.atomic import replace_file
from dkimd.keytools.generate import generate_rsa
from dkimd.keytools.published import Publication, check_publication
from dkimd.keytools.record import KeyRecordOptions, record_value, zone_txt_strings
from dkimd.keytools.reload import reload_daemon
from dkimd.keytools.retire import retire_due
from dkimd.keytools.rotate import DomainRotation, RotateOptions, RotationError, pick_selectors
from dkimd.keytools.rotation_state import (
    KeyRecordState,
    KeyState,
    RotationState,
    StateFileError,
)
from dkimd.keytools.table_writer import FlatFileTables, NewKeyEntry, TableWriteError
from support.fakedns import FakeDns

NOW = datetime(2026, 12, 4, 17, 50, tzinfo=UTC)
OLD_KEY = generate_rsa(1024)


class Site:
    """An opendkim.conf with a KeyTable, a refile SigningTable and a key for example.com."""

    def __init__(self, root: Path, *, dns: str = "testdata", extra: str = "") -> None:
        self.root = root
        root.chmod(0o700)  # the keys below must pass RequireSafeKeys
        self.keys = root / "keys"
        self.keys.mkdir(mode=0o700)
        old = self.keys / "mail.private"
        old.write_bytes(OLD_KEY.private_pem)
        old.chmod(0o600)
        self.keytable = root / "keytable"
        self.keytable.write_text(
            f"# signing keys\nmail._domainkey.example.com\texample.com:mail:{old}\n"
        )
        self.keytable.chmod(0o640)
        self.signingtable = root / "signingtable"
        self.signingtable.write_text(
            "# who signs with what\n"
            "*@example.com    mail._domainkey.example.com   # everyone\n"
            "*@list.example.com mail._domainkey.example.com:%\n"
        )
        self.dns = root / "dns"
        self.dns.write_text("")
        self.publish("mail", record_value(OLD_KEY.public_key_b64, KeyRecordOptions()))
        lines = [
            f"KeyTable file:{self.keytable}",
            f"SigningTable refile:{self.signingtable}",
            f"PidFile {root / 'dkimd.pid'}",
        ]
        if dns == "testdata":
            lines.append(f"TestDNSData file:{self.dns}")
        else:
            lines.append(f"Nameservers {dns}")
        self.conf = root / "opendkim.conf"
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.state_path = str(root / "dkimd-rotation.state")

    def publish(self, selector: str, record: str, domain: str = "example.com") -> None:
        with self.dns.open("a") as fh:
            fh.write(f"{selector}._domainkey.{domain} {record}\n")

    def publish_txt(self, txt_path: str) -> None:
        record = "".join(zone_txt_strings(Path(txt_path).read_text()))
        name = Path(txt_path).read_text().split()[0].rstrip(".")
        with self.dns.open("a") as fh:
            fh.write(f"{name} {record}\n")

    def rotation(self, **options: object) -> DomainRotation:
        config = load_config(str(self.conf))
        tables = FlatFileTables.for_config(config)
        state = RotationState.read(self.state_path)
        settings: dict[str, object] = {"bits": 1024, "timeout": 0, "interval": 0.01}
        settings.update(options)
        opts = RotateOptions(**settings)  # type: ignore[arg-type]
        return DomainRotation(config, tables, state, self.state_path, opts, now=lambda: NOW)

    def lookup(self) -> TestDnsFile:
        return TestDnsFile(str(self.dns))

    def run(self, domain: str = "example.com", **options: object):  # type: ignore[no-untyped-def]
        return asyncio.run(self.rotation(**options).run(domain, self.lookup))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def entries(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


# -- the steps --


def test_new_key_waits_pending_until_its_record_is_visible(site: Site) -> None:
    signing_before = site.signingtable.read_text()
    outcome = site.run()
    assert not outcome.done
    [new] = outcome.created
    assert new.entry.name == "202612._domainkey.example.com"
    assert [c.state for c in outcome.not_visible] == [Publication.MISSING]
    # In the KeyTable, but nothing signs with it yet.
    assert f"202612._domainkey.example.com\texample.com:202612:{new.entry.key_path}" in entries(
        site.keytable
    )
    assert site.signingtable.read_text() == signing_before
    state = RotationState.read(site.state_path)
    pending = state.get(new.entry.name)
    assert pending is not None and pending.state is KeyState.PENDING
    # The key file: genkey's rules (0600), the zone text names the full owner name.
    key_path = Path(new.entry.key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert new.zone_text.startswith("202612._domainkey.example.com.\tIN\tTXT\t(")
    assert Path(new.txt_path or "").read_text() == new.zone_text


def test_resume_switches_once_published_and_old_key_retires(site: Site) -> None:
    first = site.run()
    [new] = first.created
    assert site.run().created == []  # still not published: no second key is made
    site.publish_txt(new.txt_path or "")
    outcome = site.run()
    assert outcome.done and outcome.created == []
    assert outcome.switched == [new.entry.name]
    assert outcome.retiring == ["mail._domainkey.example.com"]
    assert entries(site.signingtable) == [
        "*@example.com    202612._domainkey.example.com   # everyone",
        "*@list.example.com 202612._domainkey.example.com:%",
    ]
    assert site.signingtable.read_text().startswith("# who signs with what\n")
    state = RotationState.read(site.state_path)
    old = state.get("mail._domainkey.example.com")
    assert old is not None and old.state is KeyState.RETIRING
    assert old.retire_after == NOW + timedelta(days=7)
    active = state.get(new.entry.name)
    assert active is not None and active.state is KeyState.ACTIVE
    # The KeyTable keeps its mode through the atomic rewrite.
    assert stat.S_IMODE(site.keytable.stat().st_mode) == 0o640


def test_a_record_for_another_key_is_not_visible(site: Site) -> None:
    other = generate_rsa(1024)
    site.publish("202612", record_value(other.public_key_b64, KeyRecordOptions()))
    outcome = site.run()
    assert not outcome.done
    assert [c.state for c in outcome.not_visible] == [Publication.MISMATCH]


def test_no_wait_switches_at_once(site: Site) -> None:
    outcome = site.run(wait=False)
    assert outcome.done
    assert "202612._domainkey.example.com" in site.signingtable.read_text()


def test_wait_polls_until_the_record_appears(site: Site) -> None:
    rotation = site.rotation(timeout=30.0)
    calls: list[float] = []

    async def sleep(seconds: float) -> None:
        # The admin publishes the record while rotate waits.
        calls.append(seconds)
        if len(calls) == 2:
            site.publish_txt(str(site.keys / "example.com.202612.txt"))

    async def go() -> list[object]:
        config = rotation.config
        current = rotation.current_keys("example.com")
        created = rotation.create("example.com", current)
        assert config is rotation.config
        return list(await rotation.wait_visible([k.entry for k in created], site.lookup, sleep))

    assert asyncio.run(go()) == []
    assert len(calls) == 2


def test_second_rotation_in_a_month_gets_a_new_selector(site: Site) -> None:
    site.run(wait=False)
    outcome = site.run(wait=False)
    assert outcome.switched == ["202612b._domainkey.example.com"]
    assert outcome.retiring == ["202612._domainkey.example.com"]


def test_pick_selectors() -> None:
    assert pick_selectors("202612", ["rsa"], set()) == {"rsa": "202612"}
    assert pick_selectors("202612", ["rsa", "ed25519"], {"202612-rsa"}) == {
        "rsa": "202612b-rsa",
        "ed25519": "202612b-ed25519",
    }


def test_both_key_types_give_one_signing_entry_each(tmp_path: Path) -> None:
    site = Site(tmp_path, extra="MultipleSignatures yes\n")
    outcome = site.run(wait=False, key_types=("rsa", "ed25519"))
    assert outcome.switched == [
        "202612-rsa._domainkey.example.com",
        "202612-ed25519._domainkey.example.com",
    ]
    assert entries(site.signingtable) == [
        "*@example.com    202612-rsa._domainkey.example.com   # everyone",
        "*@example.com    202612-ed25519._domainkey.example.com   # everyone",
        "*@list.example.com 202612-rsa._domainkey.example.com:%",
        "*@list.example.com 202612-ed25519._domainkey.example.com:%",
    ]
    ed = load_private_key_file(str(site.keys / "example.com.202612-ed25519.private"))
    assert ed.key_type == "ed25519"
    # Back to one RSA key: each pattern gets one entry again.
    outcome = site.run(wait=False, selector="202701")
    assert outcome.switched == ["202701._domainkey.example.com"]
    assert entries(site.signingtable) == [
        "*@example.com    202701._domainkey.example.com   # everyone",
        "*@list.example.com 202701._domainkey.example.com:%",
    ]


def test_unknown_domain_and_bad_selector_are_refused(site: Site) -> None:
    with pytest.raises(RotationError, match="nothing to rotate"):
        site.run("example.org")
    with pytest.raises(RotationError, match="selector"):
        site.run(selector="bad selector")
    assert entries(site.keytable) == [
        f"mail._domainkey.example.com\texample.com:mail:{site.keys / 'mail.private'}"
    ]


def test_existing_key_file_is_not_overwritten(site: Site) -> None:
    (site.keys / "example.com.202612.private").write_text("mine")
    with pytest.raises(RotationError, match="exists"):
        site.run()
    assert (site.keys / "example.com.202612.private").read_text() == "mine"
    assert "202612" not in site.keytable.read_text()


def test_new_key_the_filter_could_not_read_is_not_added(site: Site) -> None:
    # The old key is root's, so the new one is too; a filter running as another user
    # (UserID) could not load it after the reload, so nothing is added.
    with pytest.raises(RotationError, match="could not read"):
        site.run(key_owner_uid=65534)
    assert "202612" not in site.keytable.read_text()
    assert not (site.keys / "example.com.202612.private").exists()


def test_rotation_through_a_local_dns_server(tmp_path: Path, fake_dns: FakeDns) -> None:
    site = Site(tmp_path, dns=f"127.0.0.1:{fake_dns.port}")
    config = load_config(str(site.conf))
    factory = keys_cli.lookup_factory(config, [], 53)
    rotation = site.rotation(timeout=30.0)
    published: list[bool] = []

    async def sleep(seconds: float) -> None:
        if not published:
            txt = (site.keys / "example.com.202612.txt").read_text()
            fake_dns.txt("202612._domainkey.example.com", "".join(zone_txt_strings(txt)))
            published.append(True)

    async def go() -> None:
        current = rotation.current_keys("example.com")
        created = rotation.create("example.com", current)
        failing = await rotation.wait_visible([k.entry for k in created], factory, sleep)
        assert failing == []

    asyncio.run(go())
    assert fake_dns.count("202612._domainkey.example.com") == 2  # missing, then found


# -- publication check --


def test_publication_states(site: Site) -> None:
    key = load_private_key_file(str(site.keys / "mail.private"))
    lookup = site.lookup()
    assert asyncio.run(check_publication(lookup, "mail", "example.com", key)).state is (
        Publication.MATCHES
    )
    assert asyncio.run(check_publication(lookup, "none", "example.com", key)).state is (
        Publication.MISSING
    )
    site.publish("revoked", "v=DKIM1; k=rsa; p=")
    site.publish("junk", "v=DKIM1; k=rsa; p=!!!")
    lookup = site.lookup()
    revoked = asyncio.run(check_publication(lookup, "revoked", "example.com", key))
    assert revoked.state is Publication.MISMATCH and "revoked" in revoked.detail
    junk = asyncio.run(check_publication(lookup, "junk", "example.com", key))
    assert junk.state is Publication.MISMATCH and "unreadable" in junk.detail


# -- tables --


def test_table_writer_keeps_other_lines_and_refuses_duplicates(site: Site) -> None:
    tables = FlatFileTables(str(site.keytable), str(site.signingtable))
    tables.add_keys([NewKeyEntry("n._domainkey.example.com", "example.com", "n", "/k/n.private")])
    with pytest.raises(TableWriteError, match="already"):
        tables.add_keys(
            [NewKeyEntry("n._domainkey.example.com", "example.com", "n", "/k/n.private")]
        )
    assert tables.switch_keys(["none"], ["n._domainkey.example.com"]) == 0
    with pytest.raises(TableWriteError, match="still names"):
        tables.remove_keys(["mail._domainkey.example.com"])
    before = site.keytable.read_text()
    assert before == site.keytable.read_text()  # nothing visible before commit
    tables.commit()
    assert (
        site.keytable.read_text()
        == before + "n._domainkey.example.com\texample.com:n:/k/n.private\n"
    )


def test_csl_signing_table_is_refused(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.conf.write_text(
        site.conf.read_text().replace(
            f"SigningTable refile:{site.signingtable}",
            "SigningTable csl:example.com=mail._domainkey.example.com",
        )
    )
    with pytest.raises(TableWriteError, match="not a file"):
        FlatFileTables.for_config(load_config(str(site.conf)))


# -- state file --


def test_state_file_round_trip_and_errors() -> None:
    state = RotationState(
        [
            KeyRecordState("a", "example.com", "a", KeyState.ACTIVE, NOW),
            KeyRecordState("b", "example.com", "b", KeyState.RETIRING, NOW, NOW + timedelta(1)),
        ]
    )
    again = RotationState.parse(state.text())
    assert list(again) == list(state)
    assert "b example.com b retiring 2026-12-04T17:50:00Z 2026-12-05T17:50:00Z" in state.text()
    with pytest.raises(StateFileError, match=":1: unknown state"):
        RotationState.parse("a example.com a shiny 2026-12-04T17:50:00Z")
    with pytest.raises(StateFileError, match="needs a RETIRE-AFTER"):
        RotationState.parse("a example.com a retiring 2026-12-04T17:50:00Z")
    with pytest.raises(StateFileError, match="ISO 8601"):
        RotationState.parse("a example.com a active yesterday")
    with pytest.raises(StateFileError, match="expected"):
        RotationState.parse("a example.com")


# -- retire --


def test_retire_only_after_the_grace_period(site: Site) -> None:
    site.run(wait=False)
    config = load_config(str(site.conf))
    state = RotationState.read(site.state_path)
    tables = FlatFileTables.for_config(config)
    early = retire_due(config, tables, state, site.state_path, now=NOW + timedelta(days=6))
    assert early.retired == [] and [r.key_name for r in early.not_due] == [
        "mail._domainkey.example.com"
    ]
    dry = retire_due(
        config, tables, state, site.state_path, now=NOW + timedelta(days=8), dry_run=True
    )
    assert [k.key_name for k in dry.retired] == ["mail._domainkey.example.com"]
    assert (site.keys / "mail.private").exists()
    done = retire_due(config, tables, state, site.state_path, now=NOW + timedelta(days=8))
    [retired] = done.retired
    assert retired.record_name == "mail._domainkey.example.com"
    assert retired.removed_files == (str(site.keys / "mail.private"),)
    assert not (site.keys / "mail.private").exists()
    assert "mail._domainkey" not in site.keytable.read_text()
    record = RotationState.read(site.state_path).get("mail._domainkey.example.com")
    assert record is not None and record.state is KeyState.RETIRED


def test_retire_keeps_a_key_the_signing_table_still_names(site: Site) -> None:
    state = RotationState(
        [
            KeyRecordState(
                "mail._domainkey.example.com", "example.com", "mail", KeyState.RETIRING, NOW, NOW
            )
        ]
    )
    config = load_config(str(site.conf))
    tables = FlatFileTables.for_config(config)
    outcome = retire_due(config, tables, state, site.state_path, now=NOW + timedelta(days=1))
    assert outcome.retired == []
    assert [r.key_name for r in outcome.still_signing] == ["mail._domainkey.example.com"]
    assert (site.keys / "mail.private").exists()


# -- reload --


def test_reload_sends_sighup_to_the_pid_file(tmp_path: Path) -> None:
    marker = tmp_path / "got-hup"
    script = (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).touch())\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        pid_file = tmp_path / "dkimd.pid"
        pid_file.write_text(f"{child.pid}\n")
        outcome = reload_daemon(str(pid_file))
        assert outcome.sent
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert not reload_daemon(str(tmp_path / "absent.pid")).sent
    assert not reload_daemon(None).sent
    (tmp_path / "junk.pid").write_text("nope")
    assert "no process id" in reload_daemon(str(tmp_path / "junk.pid")).message


# -- the command --


def test_cli_rotate_then_resume_then_retire(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    conf = str(site.conf)
    assert (
        keys_cli.main(
            ["rotate", "-x", conf, "--domain", "example.com", "--timeout", "0", "--bits", "1024"]
        )
        == keys_cli.EX_TEMPFAIL
    )
    out = capsys.readouterr().out
    assert "publish this record" in out and "still signing with the old key" in out
    selector = datetime.now(UTC).strftime("%Y%m")
    site.publish_txt(str(site.keys / f"example.com.{selector}.txt"))
    assert keys_cli.main(["rotate", "-x", conf, "--all", "--timeout", "0"]) == 0
    captured = capsys.readouterr()
    assert f"now signing with {selector}._domainkey.example.com" in captured.out
    assert "does not exist" in captured.err  # no daemon running: says so, still succeeds
    assert keys_cli.main(["retire", "-x", conf]) == 0
    assert "grace ends" in capsys.readouterr().out
    state = Path(site.state_path)
    # The admin moves RETIRE-AFTER into the past (the state file is meant to be edited).
    text = state.read_text()
    retiring = next(line for line in text.splitlines() if " retiring " in line)
    state.write_text(text.replace(retiring, retiring.rsplit(" ", 1)[0] + " 2000-01-01T00:00:00Z"))
    assert keys_cli.main(["retire", "-x", conf, "--no-reload"]) == 0
    out = capsys.readouterr().out
    assert "retired mail._domainkey.example.com" in out
    assert "mail._domainkey.example.com.\tIN\tTXT" in out
    assert keys_cli.main(["status", "-x", conf]) == 0
    assert " retired " in capsys.readouterr().out


def test_cli_refusals(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    conf = str(site.conf)
    assert keys_cli.main(["rotate", "-x", conf]) == keys_cli.EX_USAGE
    assert keys_cli.main(["rotate", "-x", conf, "--all", "--key-type", "both"]) == (
        keys_cli.EX_CONFIG
    )
    assert "MultipleSignatures" in capsys.readouterr().err
    assert keys_cli.main(["rotate", "-x", str(site.root / "absent.conf"), "--all"]) == (
        keys_cli.EX_CONFIG
    )
    Path(site.state_path).write_text("garbage line\n")
    assert keys_cli.main(["status", "-x", conf]) == keys_cli.EX_CONFIG
    assert "expected KEY-NAME" in capsys.readouterr().err


def test_cli_all_rotates_every_domain_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = Site(tmp_path)
    other = site.keys / "org.private"
    other.write_bytes(OLD_KEY.private_pem)
    other.chmod(0o600)
    with site.keytable.open("a") as fh:
        fh.write(f"mail._domainkey.example.org\texample.org:mail:{other}\n")
    with site.signingtable.open("a") as fh:
        fh.write("*@example.org mail._domainkey.example.org\n")
    conf = str(site.conf)
    args = ["rotate", "-x", conf, "--all", "--no-wait", "--bits", "1024", "--no-reload"]
    assert keys_cli.main(args) == 0
    selector = datetime.now(UTC).strftime("%Y%m")
    assert entries(site.signingtable) == [
        f"*@example.com    {selector}._domainkey.example.com   # everyone",
        f"*@list.example.com {selector}._domainkey.example.com:%",
        f"*@example.org {selector}._domainkey.example.org",
    ]
    # Same key directory, same selector: the file names keep the domains apart.
    assert (site.keys / f"example.com.{selector}.private").is_file()
    assert (site.keys / f"example.org.{selector}.private").is_file()
    state = RotationState.read(site.state_path)
    assert {k.key_name for k in state if k.state is KeyState.RETIRING} == {
        "mail._domainkey.example.com",
        "mail._domainkey.example.org",
    }
    capsys.readouterr()
    # A failing domain makes the run fail, whatever else waits for DNS.
    args = ["rotate", "-x", conf, "--domain", "example.net", "--domain", "example.com"]
    assert keys_cli.main([*args, "--timeout", "0", "--bits", "1024"]) == keys_cli.EX_FAILED
    assert "example.net: no SigningTable entry" in capsys.readouterr().err


def test_state_file_that_is_not_text_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"\xff\xfe junk\n")
    with pytest.raises(StateFileError, match="not UTF-8"):
        RotationState.read(str(path))


def test_replace_file_keeps_owner_and_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "KeyTable"
    target.write_text("old\n")
    target.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(target, 65534, 65534)
    before = target.stat()
    replace_file(target, b"new\n")
    after = target.stat()
    assert target.read_bytes() == b"new\n"
    assert after.st_ino != before.st_ino  # a new file renamed over the old one
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["KeyTable"]
    replace_file(tmp_path / "fresh", b"x", mode=0o600)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o600


def test_cli_pid_file_overrides_the_configuration(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = site.root / "elsewhere.pid"
    args = ["rotate", "-x", str(site.conf), "--all", "--no-wait", "--bits", "1024"]
    assert keys_cli.main([*args, "--pid-file", str(pid_file)]) == 0
    assert f"{pid_file} does not exist" in capsys.readouterr().err
