"""Nothing lost, nothing unsigned: dkimd killed (SIGKILL) or stopped (SIGTERM) under a real Postfix.

A private Postfix with ``milter_default_action = tempfail`` (the recommended setting for a
signing milter) takes a few hundred messages over SMTP from several threads. Mid-stream the
daemon is killed and restarted on the same port. While it is down Postfix answers 451 to the
SMTP client (the milter's reply is unavailable), and a real client retries later; the test does
the same. At the end every message must have been delivered exactly once, signed (dkimpy
verifies each), and nothing may be left in the queue:

    delivered signed == accepted first time + tempfailed, resent and accepted == sent

Every 4xx must fall within the outage (from the signal to the restarted daemon listening,
plus a little slack for SMTP sessions that were already talking to the dead milter).
"""

from __future__ import annotations

import email
import os
import signal
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from support.dkimd import Dkimd
from support.opendkim import DkimKey
from support.postfix import PrivatePostfix
from support.tools import require, wait_for_accepted, wait_until_read

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOTAL = 300
THREADS = 6
SLACK = 0.25  # seconds after the restart in which a 4xx may still come from the outage
PACE = 0.08  # seconds between two messages of one sender thread: traffic goes on after the restart
# Messages each sender thread starts while the daemon is down; then it waits for the restart, so
# that however long a loaded machine takes to restart dkimd, traffic is left to judge it by.
OUTAGE_SENDS = 3


@dataclass
class Attempt:
    index: int
    started: float
    ended: float
    code: int
    text: bytes
    mail_ok: float | None = None  # when MAIL FROM got its 250


def message(i: int) -> bytes:
    return (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: crash-" + str(i).encode() + b"\r\n"
        b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <crash." + str(i).encode() + b"@example.com>\r\n"
        b"\r\n" + b"line of body text number %d\r\n" % i * (1 + i % 40)
    )


def send(pf: PrivatePostfix, i: int) -> Attempt:
    """One SMTP session, one message (as PrivatePostfix.send_smtp, noting when MAIL got 250)."""
    started = time.monotonic()
    mail_ok: float | None = None
    try:
        with smtplib.SMTP(
            pf.host, pf.port, local_hostname="client.test.example", timeout=30
        ) as smtp:
            code, text = smtp.ehlo()
            if code == 250:
                code, text = smtp.mail("alice@example.com")
            if code == 250:
                # Postfix has passed MAIL to the milter (and, without NR_MAIL, had its reply):
                # from here on dkimd's connection for this session is inside a message.
                mail_ok = time.monotonic()
                code, text = smtp.rcpt("bob@example.net")
            if code == 250:
                try:
                    code, text = smtp.data(message(i))
                except smtplib.SMTPDataError as exc:
                    err = exc.smtp_error
                    code, text = exc.smtp_code, err if isinstance(err, bytes) else err.encode()
    except (smtplib.SMTPException, OSError) as exc:  # e.g. 421 and the server hung up
        code, text = -1, repr(exc).encode()
    return Attempt(i, started, time.monotonic(), code, text, mail_ok)


@pytest.fixture
def signer(tmp_path: Path, dkim_key: DkimKey) -> Iterator[Dkimd]:
    require("postfix")
    d = Dkimd(
        tmp_path / "dkimd",
        mode="sv",
        key_table={"mail._domainkey.example.com": f"example.com:mail:{dkim_key.private_key}"},
        signing_table={"*@example.com": "mail._domainkey.example.com"},
        dns_records=dkim_key.records,
        internal_hosts=["127.0.0.1"],
        options={"SyslogSuccess": "no", "LogWhy": "no"},
    )
    d.start()
    try:
        yield d
    finally:
        d.stop()


def run_with_outage(
    pf: PrivatePostfix, d: Dkimd, stop: Callable[[Dkimd], None]
) -> tuple[list[Attempt], list[Attempt], float, float]:
    """Send TOTAL messages from THREADS threads; after a third, `stop` the daemon, restart it."""
    first: list[Attempt] = []
    lock = threading.Lock()
    outage = threading.Event()
    restarted = threading.Event()

    def worker(indexes: range) -> None:
        during = 0
        for i in indexes:
            if outage.is_set() and not restarted.is_set():
                during += 1
                if during > OUTAGE_SENDS:
                    restarted.wait(timeout=60)
            attempt = send(pf, i)
            time.sleep(max(0.0, attempt.started + PACE - time.monotonic()))
            with lock:
                first.append(attempt)

    threads = [
        threading.Thread(target=worker, args=(range(t, TOTAL, THREADS),)) for t in range(THREADS)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(first) < TOTAL // 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    down = time.monotonic()
    outage.set()
    stop(d)
    time.sleep(0.3)  # a real outage: the init system takes a moment to restart the service
    d.start()  # same port, same configuration
    up = time.monotonic()
    restarted.set()
    for t in threads:
        t.join(timeout=120)
    assert len(first) == TOTAL

    # The client's retries: what was tempfailed is sent again until accepted.
    retries: list[Attempt] = []
    pending = sorted(a.index for a in first if a.code != 250)
    for _round in range(5):
        if not pending:
            break
        again = [send(pf, i) for i in pending]
        retries += again
        pending = [a.index for a in again if a.code != 250]
    assert pending == [], [a for a in retries if a.code != 250][:5]
    return first, retries, down, up


def check_everything_delivered_signed(
    pf: PrivatePostfix,
    key: DkimKey,
    first: list[Attempt],
    retries: list[Attempt],
    extra: int = 0,
) -> None:
    """All TOTAL (+ `extra` held) messages delivered once, signed; nothing left queued."""
    pf.flush()
    pf.wait_for_delivery(TOTAL + extra, timeout=60)
    # With the queue empty nothing more can be delivered: a duplicate would be here now.
    pf.wait_for_empty_queue()
    delivered = pf.delivered()

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        n = (name.decode() if isinstance(name, bytes) else name).rstrip(".")
        return key.txt.encode() if n == key.dns_name else None

    subjects: list[str] = []
    for raw in delivered:
        parsed = email.message_from_bytes(raw)
        subject = str(parsed["Subject"])
        subjects.append(subject)
        assert len(parsed.get_all("DKIM-Signature", [])) == 1, f"{subject} not signed once"
        crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert dkim.verify(crlf, dnsfunc=dnsfunc), f"{subject}: signature does not verify"
    assert sorted(subjects) == sorted(f"crash-{i}" for i in range(TOTAL + extra))
    assert pf.queue_count() == 0
    accepted_first = sum(a.code == 250 for a in first)
    accepted_later = len({a.index for a in retries if a.code == 250})
    assert accepted_first + accepted_later == TOTAL == len(delivered) - extra


class HeldMessage:
    """An SMTP session stopped half-way through DATA (the milter has seen MAIL and RCPT)."""

    def __init__(self, pf: PrivatePostfix, i: int) -> None:
        self.index = i
        self.data = message(i) + b".\r\n"
        self.smtp = smtplib.SMTP(pf.host, pf.port, local_hostname="client.test.example", timeout=30)
        assert self.smtp.ehlo()[0] == 250
        assert self.smtp.mail("alice@example.com")[0] == 250
        assert self.smtp.rcpt("bob@example.net")[0] == 250
        assert self.smtp.docmd("DATA")[0] == 354
        self.smtp.send(self.data[: len(self.data) // 2])

    def finish(self) -> tuple[int, bytes]:
        self.smtp.send(self.data[len(self.data) // 2 :])
        reply = self.smtp.getreply()
        self.smtp.quit()
        return reply


def in_flight(first: list[Attempt], down: float) -> tuple[list[Attempt], list[Attempt]]:
    """SMTP sessions open when the signal came: (past MAIL FROM, not yet), for the report.

    Only indicative: with NR_MAIL Postfix does not wait for the milter before answering
    MAIL, so dkimd may not have read that command yet when the signal comes."""
    open_then = [a for a in first if a.started < down < a.ended]
    inside = [a for a in open_then if a.mail_ok is not None and a.mail_ok < down]
    return inside, [a for a in open_then if a not in inside]


def describe(first: list[Attempt], down: float) -> str:
    inside, before = in_flight(first, down)
    return (
        f"in a message at the signal: {sum(a.code == 250 for a in inside)} accepted, "
        f"{sum(a.code != 250 for a in inside)} refused; connected but not yet in one: "
        f"{sum(a.code == 250 for a in before)} accepted, {sum(a.code != 250 for a in before)} "
        "refused"
    )


def check_refusals(first: list[Attempt], down: float, up: float) -> list[Attempt]:
    refused = [a for a in first if a.code != 250]
    for a in refused:
        # 451 from Postfix (milter unavailable / tempfail), or a 421 hang-up; never a 5xx
        assert a.code == -1 or 400 <= a.code < 500, a
        assert a.ended >= down and a.started <= up + SLACK, (a, down, up)
    after = [a for a in first if a.started > up + SLACK]
    assert len(after) >= TOTAL // 10, "too little traffic after the restart to judge it"
    return refused


def test_sigkill_mid_stream_loses_nothing(
    signer: Dkimd, dkim_key: DkimKey, private_postfix: Callable[..., PrivatePostfix]
) -> None:
    pf = private_postfix(milter=signer.postfix_milter, milter_default_action="tempfail")

    def kill(d: Dkimd) -> None:
        assert d.proc is not None
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(timeout=10)

    first, retries, down, up = run_with_outage(pf, signer, kill)
    refused = check_refusals(first, down, up)
    assert refused, "the kill hit no message: the test proved nothing"
    check_everything_delivered_signed(pf, dkim_key, first, retries)
    print(
        f"SIGKILL: {TOTAL} sent, {TOTAL - len(refused)} accepted first time, "
        f"{len(refused)} tempfailed and resent ({sorted({a.code for a in refused})}), "
        f"outage {up - down:.2f}s; {describe(first, down)}"
    )


def test_sigterm_mid_stream_finishes_in_flight_and_loses_nothing(
    signer: Dkimd, dkim_key: DkimKey, private_postfix: Callable[..., PrivatePostfix]
) -> None:
    pf = private_postfix(milter=signer.postfix_milter, milter_default_action="tempfail")
    codes: list[int] = []
    held_replies: list[tuple[int, bytes]] = []

    def terminate(d: Dkimd) -> None:
        # Three messages deliberately half-way through DATA when the signal comes: a
        # graceful stop must let them finish (signed), then exit 0.
        held = [HeldMessage(pf, TOTAL + k) for k in range(3)]
        assert d.proc is not None
        # dkimd has taken in what Postfix passed on for them (MAIL, RCPT: no replies due).
        assert wait_until_read(d.port), "dkimd does not read its milter connections"
        d.terminate()  # returns once dkimd says it is stopping and no longer listens
        assert d.running(), "dkimd exited with messages in flight"
        held_replies.extend(h.finish() for h in held)
        # Wait for the exit without a second SIGTERM (see test_faults: one that lands after
        # the event loop has closed kills the process).
        d.proc.wait(timeout=35)
        codes.append(d.stop())

    first, retries, down, up = run_with_outage(pf, signer, terminate)
    assert codes == [0], (codes, signer.log_text())
    assert [code for code, _ in held_replies] == [250, 250, 250], held_replies
    log = signer.log_text()
    assert "stopping: finishing in-flight messages" in log
    assert "cancelled" not in log, log  # nothing needed the grace period's hard stop
    refused = check_refusals(first, down, up)
    check_everything_delivered_signed(pf, dkim_key, first, retries, extra=3)
    print(
        f"SIGTERM: {TOTAL} sent, {TOTAL - len(refused)} accepted first time, "
        f"{len(refused)} tempfailed and resent, outage {up - down:.2f}s; {describe(first, down)}"
    )


def test_sigterm_lets_a_connected_smtp_session_send_its_message(
    signer: Dkimd, dkim_key: DkimKey, private_postfix: Callable[..., PrivatePostfix]
) -> None:
    pf = private_postfix(milter=signer.postfix_milter, milter_default_action="tempfail")
    assert signer.proc is not None
    with smtplib.SMTP(pf.host, pf.port, local_hostname="client.test.example", timeout=30) as smtp:
        assert smtp.ehlo()[0] == 250
        # smtpd opens its milter connection when the client connects; SIGTERM must find it.
        assert wait_for_accepted(signer.port), "Postfix never connected to dkimd"
        assert wait_until_read(signer.port)  # the negotiation and connect macros are in
        signer.terminate()  # dkimd says it is stopping and no longer listens
        assert smtp.mail("alice@example.com")[0] == 250
        assert smtp.rcpt("bob@example.net")[0] == 250
        code, text = smtp.data(message(0))
        assert code == 250, text
    assert signer.proc.wait(timeout=35) == 0
    [raw] = pf.wait_for_delivery(1)
    assert b"DKIM-Signature:" in raw
