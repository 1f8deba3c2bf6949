"""`dkimd keys rotate` / `retire` on a running dkimd behind a real Postfix, with mail flowing
throughout (issue 17's done-when).

DNS is a local server (support.fakedns) that dkimd and `dkimd keys` both ask (Nameservers).
The test plays the admin: it publishes the new key's record only a while after `rotate`
printed it, and deletes the old record only after `retire` said it may. Every message sent
meanwhile must arrive signed, by a selector whose record was published when the message
was signed (its t=), and must verify against the zone as it stood then.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from dkimd.keytools.record import zone_txt_strings
from support.dkimd import Dkimd
from support.fakedns import FakeDns
from support.mail import crlf, header_values, message
from support.opendkim import DkimKey
from support.postfix import PrivatePostfix
from support.tools import require

pytestmark = [pytest.mark.e2e]


class Zone:
    """The records the DNS server serves, with the second each appeared and went."""

    def __init__(self, server: FakeDns) -> None:
        self.server = server
        # name -> (record, published at, deleted at or None); times are whole seconds
        self.history: dict[str, tuple[str, int, int | None]] = {}

    def _next_second(self) -> int:
        # Changes happen on a second boundary, so a signature's t= (whole seconds) says
        # without doubt whether it was made before or after.
        now = time.time()
        boundary = math.floor(now) + 1
        time.sleep(boundary - now)
        return boundary

    def publish(self, name: str, record: str) -> None:
        when = self._next_second()
        self.server.txt(name, record)
        self.history[name] = (record, when, None)

    def delete(self, name: str) -> None:
        when = self._next_second()
        self.server.nxdomain(name)
        record, published, _ = self.history[name]
        self.history[name] = (record, published, when)

    def at(self, second: int) -> dict[str, str]:
        return {
            name: record
            for name, (record, published, deleted) in self.history.items()
            if published <= second and (deleted is None or second < deleted)
        }


class Sender:
    """Sends numbered messages through Postfix, one after another, until stopped."""

    def __init__(self, postfix: PrivatePostfix) -> None:
        self.postfix = postfix
        self.sent: list[str] = []
        self.failures: list[tuple[str, int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            subject = f"rotation {n:05d}"
            code, reply = self.postfix.send_smtp(
                "alice@example.com", "bob@example.net", message(subject)
            )
            if code == 250:
                self.sent.append(subject)
            else:
                self.failures.append((subject, code, reply))
            n += 1
            time.sleep(0.02)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def tag(signature: str, name: str) -> str:
    for part in signature.replace("\n", "").replace("\t", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name}= in {signature}")


def keys_command(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dkimd", "keys", *args, "-x", str(conf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rotation_under_load(
    tmp_path: Path,
    dkim_key: DkimKey,
    fake_dns: FakeDns,
    private_postfix: Callable[..., PrivatePostfix],
) -> None:
    require("postfix")
    zone = Zone(fake_dns)
    zone.publish(dkim_key.dns_name, dkim_key.txt)
    d = Dkimd(
        tmp_path / "dkimd",
        mode="sv",
        key_table={"mail._domainkey.example.com": f"example.com:mail:{dkim_key.private_key}"},
        signing_table={"*@example.com": "mail._domainkey.example.com"},
        internal_hosts=["127.0.0.1", "::1", "localhost"],
    )
    del d.config["TestDNSData"]
    d.config["Nameservers"] = f"127.0.0.1:{fake_dns.port}"
    d.write_config()
    d.start()
    try:
        pf = private_postfix(milter=d.postfix_milter, milter_protocol=6)
        sender = Sender(pf).start()
        try:
            time.sleep(1.0)
            rotate = subprocess.Popen(
                [
                    *(sys.executable, "-m", "dkimd", "keys", "rotate", "-x", str(d.conf_path)),
                    *("--domain", "example.com", "--bits", "1024", "--interval", "0.2"),
                    *("--timeout", "90", "--grace", "0"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # What rotate prints before it waits: the record to publish.
            assert rotate.stdout is not None
            printed = ""
            while "waiting for" not in printed:
                line = rotate.stdout.readline()
                assert line, (printed, rotate.communicate())
                printed += line
            zone_text = printed.split("publish this record", 1)[1].split(":\n", 1)[1]
            new_name = zone_text.split()[0].rstrip(".")
            new_selector = new_name.split(".")[0]
            assert f"waiting for {new_name} in DNS" in printed
            # The admin takes a while to publish: mail keeps flowing with the old key.
            time.sleep(2.0)
            assert rotate.poll() is None, rotate.communicate()
            zone.publish(new_name, "".join(zone_txt_strings(zone_text)))
            out, err = rotate.communicate(timeout=60)
            assert rotate.returncode == 0, (out, err)
            assert f"now signing with {new_name}" in out
            assert "reload sent" in out, (out, err)
            d.wait_for_log("configuration reloaded")
            time.sleep(2.0)  # mail signed with the new key

            retire = keys_command(d.conf_path, "retire")
            assert retire.returncode == 0, (retire.stdout, retire.stderr)
            assert "retired mail._domainkey.example.com" in retire.stdout
            assert "mail._domainkey.example.com.\tIN\tTXT" in retire.stdout
            zone.delete(dkim_key.dns_name)
            time.sleep(1.5)
        finally:
            sender.stop()

        assert sender.failures == []
        delivered = pf.wait_for_delivery(len(sender.sent), timeout=60)
        assert len(delivered) == len(sender.sent)
        selectors: dict[str, int] = {}
        for raw in delivered:
            signatures = header_values(raw, "DKIM-Signature")
            assert len(signatures) == 1, raw  # every message signed, once
            selector = tag(signatures[0], "s")
            signed_at = int(tag(signatures[0], "t"))
            records = zone.at(signed_at)
            # Never signed with a selector whose record was not (or no longer) published.
            assert f"{selector}._domainkey.example.com" in records, (selector, signed_at)

            def dnsfunc(
                name: bytes | str, timeout: int = 5, zone: dict[str, str] = records
            ) -> bytes | None:
                text = name.decode() if isinstance(name, bytes) else name
                found = zone.get(text.rstrip("."))
                return found.encode() if found is not None else None

            assert dkim.verify(crlf(raw), dnsfunc=dnsfunc), raw
            selectors[selector] = selectors.get(selector, 0) + 1
        # Mail flowed before and after the switch.
        assert selectors.get("mail", 0) > 0 and selectors.get(new_selector, 0) > 0, selectors
        assert "key mail._domainkey.example.com" not in d.log_text()  # the guard: all fine
        assert pf.queue_count() == 0
    finally:
        d.stop()
