"""The key guard: unpublished signing keys logged once, and with SkipUnpublishedKeys yes
skipped in favour of the next SigningTable match (dkimd.key_guard, dkimd.signing_keys)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dkimd.cli import check, testkey
from dkimd.config import Config, load_config
from dkimd.dns.base import TxtStatus
from dkimd.dns.testdata import TestDnsFile
from dkimd.key_guard import KeyGuard, watch_keys
from dkimd.keytools.generate import GeneratedKey, generate_ed25519
from dkimd.keytools.published import Publication, guarded_entries
from dkimd.keytools.record import KeyRecordOptions, record_value
from dkimd.session import Runtime, RuntimeHolder

KEYS = {"new": generate_ed25519(), "old": generate_ed25519(), "other": generate_ed25519()}


def record(key: GeneratedKey) -> str:
    return record_value(key.public_key_b64, KeyRecordOptions(key_type="ed25519"))


class Site:
    def __init__(self, root: Path, options: str = "") -> None:
        root.chmod(0o700)
        self.root = root
        table = []
        for selector, key in KEYS.items():
            path = root / f"{selector}.private"
            path.write_bytes(key.private_pem)
            path.chmod(0o600)
            table.append(f"{selector} example.com:{selector}:{path}")
        (root / "keytable").write_text("\n".join(table) + "\n")
        # Two matches for example.com, the new key first; "other" is in no SigningTable.
        (root / "signingtable").write_text("*@example.com new\n*@*example.com old\n")
        self.dns = root / "dns"
        self.dns.write_text("")
        (root / "opendkim.conf").write_text(
            f"KeyTable file:{root / 'keytable'}\n"
            f"SigningTable refile:{root / 'signingtable'}\n"
            f"TestDNSData file:{self.dns}\n" + options
        )

    def publish(self, selector: str, text: str) -> None:
        with self.dns.open("a") as fh:
            fh.write(f"{selector}._domainkey.example.com {text}\n")

    def config(self) -> Config:
        return load_config(str(self.root / "opendkim.conf"))

    def runtime(self) -> Runtime:
        config = self.config()
        return Runtime.build(config, TestDnsFile(str(self.dns)))


def signing_selectors(runtime: Runtime) -> list[str]:
    requests, problems = runtime.policy.keys.for_sender("user@example.com")
    assert problems == []
    return [r.selector for r in requests]


def test_guarded_keys_are_the_signing_table_ones(tmp_path: Path) -> None:
    assert [e.name for e in guarded_entries(Site(tmp_path).config())] == ["new", "old"]


def test_default_logs_once_and_still_signs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    site = Site(tmp_path)
    site.publish("new", record(KEYS["other"]))  # a record, for another key
    site.publish("old", record(KEYS["old"]))
    runtime = site.runtime()
    guard = KeyGuard()
    results = asyncio.run(guard.check(runtime))
    assert results["new"].state is Publication.MISMATCH
    assert results["old"].state is Publication.MATCHES
    assert runtime.policy.keys.unpublished == {"new"}
    assert signing_selectors(runtime) == ["new"]  # OpenDKIM's behaviour: used anyway
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "key new: new._domainkey.example.com: the key record does not match the private key "
        "(another key); still signing with it (SkipUnpublishedKeys no)"
    ]
    # A reload's new runtime is checked again, but the same finding is not logged again.
    caplog.clear()
    asyncio.run(guard.check(site.runtime()))
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_skip_uses_the_next_match_until_the_record_is_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dkimd")
    site = Site(tmp_path, "SkipUnpublishedKeys yes\n")
    site.publish("old", record(KEYS["old"]))
    runtime = site.runtime()
    assert signing_selectors(runtime) == ["new"]  # nothing known yet: the first match
    guard = KeyGuard()
    asyncio.run(guard.check(runtime))
    assert signing_selectors(runtime) == ["old"]
    assert "no key record in DNS; skipped in favour of the next SigningTable match" in (caplog.text)
    site.publish("new", record(KEYS["new"]))
    runtime = site.runtime()  # TestDNSData is read with the configuration: a reload
    asyncio.run(guard.check(runtime))
    assert signing_selectors(runtime) == ["new"]
    assert "key new: new._domainkey.example.com: record published again" in caplog.text


def test_skip_with_no_published_key_left_signs_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path, "SkipUnpublishedKeys yes\n")
    runtime = site.runtime()
    asyncio.run(KeyGuard().check(runtime))
    assert runtime.policy.keys.unpublished == {"new", "old"}
    assert signing_selectors(runtime) == []
    # So the log says why the message goes unsigned.
    assert runtime.policy.keys.only_unpublished("user@example.com")
    assert not runtime.policy.keys.only_unpublished("user@example.org")


def test_skip_with_multiple_signatures_drops_only_the_unpublished(tmp_path: Path) -> None:
    site = Site(tmp_path, "SkipUnpublishedKeys yes\nMultipleSignatures yes\n")
    site.publish("new", record(KEYS["new"]))
    runtime = site.runtime()
    assert signing_selectors(runtime) == ["new", "old"]
    asyncio.run(KeyGuard().check(runtime))
    assert signing_selectors(runtime) == ["new"]
    assert not runtime.policy.keys.only_unpublished("user@example.com")


def test_a_failed_lookup_changes_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path, "SkipUnpublishedKeys yes\n")
    site.dns.write_text("new._domainkey.example.com v=DKIM1; k=ed25519; p=!!\n")
    runtime = site.runtime()
    asyncio.run(KeyGuard().check(runtime))
    assert runtime.policy.keys.unpublished == {"new", "old"}

    def failing(config: Config) -> TestDnsFile:
        return TestDnsFile.from_records({}, missing=TxtStatus.SERVFAIL)

    asyncio.run(KeyGuard(failing).check(runtime))
    assert runtime.policy.keys.unpublished == {"new", "old"}


def test_watch_checks_again_after_a_reload(tmp_path: Path) -> None:
    site = Site(tmp_path, "SkipUnpublishedKeys yes\n")
    site.publish("old", record(KEYS["old"]))
    holder = RuntimeHolder(site.runtime())

    async def go() -> Runtime:
        task = asyncio.ensure_future(watch_keys(holder, poll=0.01))
        try:
            for _ in range(500):
                await asyncio.sleep(0.01)
                if holder.current.policy.keys.unpublished:
                    break
            assert holder.current.policy.keys.unpublished == {"new"}
            holder.current = site.runtime()  # a reload
            for _ in range(500):
                await asyncio.sleep(0.01)
                if holder.current.policy.keys.unpublished:
                    break
            return holder.current
        finally:
            task.cancel()

    reloaded = asyncio.run(go())
    assert reloaded.policy.keys.unpublished == {"new"}
    assert signing_selectors(reloaded) == ["old"]


def test_check_dns_reports_what_the_guard_would_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = Site(tmp_path, "SkipUnpublishedKeys yes\n")
    site.publish("new", record(KEYS["new"]))
    site.publish("old", record(KEYS["other"]))
    conf = str(tmp_path / "opendkim.conf")
    assert check.main(["-x", conf, "--no-postfix", "-q"]) == 0
    assert "does not match" not in capsys.readouterr().out  # offline unless --dns
    assert check.main(["-x", conf, "--no-postfix", "-q", "--dns"]) == 0
    out = capsys.readouterr().out
    assert (
        f'{tmp_path / "keytable"}:2: warning: key "old": old._domainkey.example.com: the key '
        in out
    )
    assert "the daemon skips it for the next SigningTable match (SkipUnpublishedKeys yes)" in out
    assert 'key "new": new._domainkey' not in out


def test_testkey_says_what_the_daemon_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = Site(tmp_path)
    site.publish("new", record(KEYS["new"]))
    site.publish("other", record(KEYS["new"]))
    assert testkey.main(["-x", str(tmp_path / "opendkim.conf")]) != 0
    err = capsys.readouterr().err
    assert "key old: 'old._domainkey.example.com' record not found" in err
    assert "key old: the daemon still signs with it" in err
    # "other" fails too, but no SigningTable entry signs with it: no daemon note.
    assert "key other: keys do not match" in err
    assert "key other: the daemon" not in err
