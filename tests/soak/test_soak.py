"""Soak: 100k messages at concurrency 64 through one dkimd; memory and descriptors stay flat.

Two copies of bench/driver.py (Postfix-faithful milter v6 load driver) run at once: one
signs (internal client, 48 concurrent sessions), one verifies (outside client with an
RSA-2048 signed message, 16 sessions): 64 concurrent milter sessions in all, split 3:1 in
messages. Every DKIMD_SOAK_INTERVAL seconds the daemon's RSS (/proc/PID/status VmRSS) and
open descriptors (/proc/PID/fd) are sampled. After the warm-up (the first
DKIMD_SOAK_WARMUP fraction of the run) RSS must stay within 5% (max / min), descriptors
bounded by the idle count + 2 x 64 (connections being closed while their replacements are
accepted), and back to exactly the idle count at the end.

Knobs (environment): DKIMD_SOAK=1 (else skipped), DKIMD_SOAK_MESSAGES (100000),
DKIMD_SOAK_INTERVAL (3 s), DKIMD_SOAK_WARMUP (0.2), DKIMD_SOAK_OUT (a directory for
samples.csv and summary.json; default: the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from support.dkimd import Dkimd
from support.opendkim import DkimKey

pytestmark = [pytest.mark.soak]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "bench" / "driver.py"
CONCURRENCY = 64
OUTSIDE = "198.51.100.77"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def four_kb_message() -> bytes:
    body = b"".join(
        b"Line %03d of a soak message, long enough to look like ordinary mail text.\r\n" % i
        for i in range(55)
    )
    return (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: soak\r\n"
        b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <soak@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n" + body
    )


def test_soak_memory_and_descriptors_stay_flat(
    tmp_path: Path, make_dkim_key: Callable[..., DkimKey]
) -> None:
    total = _env_int("DKIMD_SOAK_MESSAGES", 100_000)
    interval = _env_float("DKIMD_SOAK_INTERVAL", 3.0)
    warmup = _env_float("DKIMD_SOAK_WARMUP", 0.2)
    out = Path(os.environ.get("DKIMD_SOAK_OUT") or tmp_path / "soak")
    out.mkdir(parents=True, exist_ok=True)

    key = make_dkim_key(bits=2048)
    raw = four_kb_message()
    plain = tmp_path / "plain.eml"
    plain.write_bytes(raw)
    signed = tmp_path / "signed.eml"
    signed.write_bytes(
        dkim.sign(
            raw,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key.read_bytes(),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        + raw
    )
    d = Dkimd(
        tmp_path / "dkimd",
        mode="sv",
        key_table={"mail._domainkey.example.com": f"example.com:mail:{key.private_key}"},
        signing_table={"*@example.com": "mail._domainkey.example.com"},
        dns_records=key.records,
        internal_hosts=["127.0.0.1"],
        authserv_id="mx.soak.example",
        options={"SyslogSuccess": "no", "LogWhy": "no"},
        stop_timeout=60,
    ).start()
    try:
        pid = d.pid
        time.sleep(0.5)
        idle_fds, idle_rss = _fds(pid), _rss_kb(pid)
        sign_n = total * 3 // 4
        runs = [
            ("sign", plain, sign_n, CONCURRENCY * 3 // 4, "127.0.0.1"),
            ("verify", signed, total - sign_n, CONCURRENCY // 4, OUTSIDE),
        ]
        procs = {
            name: subprocess.Popen(
                [
                    sys.executable,
                    str(DRIVER),
                    "--target",
                    f"127.0.0.1:{d.port}",
                    "--message",
                    str(path),
                    "--concurrency",
                    str(conc),
                    "--messages",
                    str(n),
                    "--client-addr",
                    addr,
                    "--timeout",
                    "120",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            for name, path, n, conc, addr in runs
        }
        samples: list[tuple[float, int, int]] = []
        started = time.monotonic()
        done = threading.Event()

        def sample() -> None:
            while not done.wait(interval):
                samples.append((time.monotonic() - started, _rss_kb(pid), _fds(pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        outputs = {name: p.communicate(timeout=3600) for name, p in procs.items()}
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        time.sleep(1.0)
        end_fds, end_rss = _fds(pid), _rss_kb(pid)
        log = d.log_text()
    finally:
        code = d.stop()

    reports = {}
    for (name, _path, n, _conc, _addr), (stdout, stderr) in zip(
        runs, outputs.values(), strict=True
    ):
        assert procs[name].returncode == 0, (name, stderr.decode()[-3000:], stdout[-3000:])
        report = json.loads(stdout)
        reports[name] = report
        assert report["messages"] == n and report["failed"] == 0, report
        assert set(report["final_replies"]) == {"continue"}, report["final_replies"]

    with open(out / "samples.csv", "w") as f:
        f.write("seconds,rss_kb,fds\n")
        f.writelines(f"{t:.1f},{rss},{fds}\n" for t, rss, fds in samples)
    steady = [s for s in samples if s[0] >= warmup * elapsed]
    assert len(steady) >= 5, f"too few samples after the warm-up: {samples}"
    rss_min = min(s[1] for s in steady)
    rss_max = max(s[1] for s in steady)
    fds_min = min(s[2] for s in steady)
    fds_max = max(s[2] for s in steady)
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, nproc {os.cpu_count()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "messages": total,
        "concurrency": CONCURRENCY,
        "elapsed_s": round(elapsed, 1),
        "msgs_per_s": round(total / elapsed, 1),
        "samples": len(samples),
        "interval_s": interval,
        "warmup_fraction": warmup,
        "idle_rss_kb": idle_rss,
        "idle_fds": idle_fds,
        "steady_rss_kb": [rss_min, rss_max],
        "steady_rss_spread": round(rss_max / rss_min - 1, 4),
        "first_rss_kb": samples[0][1] if samples else None,
        "steady_fds": [fds_min, fds_max],
        "end_rss_kb": end_rss,
        "end_fds": end_fds,
        "exit_code": code,
        "drivers": {
            name: {k: r[k] for k in ("messages", "failed", "msgs_per_s", "p50_ms", "p99_ms")}
            for name, r in reports.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))

    assert code == 0
    assert "Traceback" not in log, log[-5000:]
    assert rss_max <= rss_min * 1.05, summary
    # One descriptor per open milter connection; a connection the driver has finished with
    # may still be closing on our side while its replacement is accepted, hence the 2x.
    assert idle_fds <= fds_min and fds_max <= idle_fds + 2 * CONCURRENCY, summary
    assert end_fds == idle_fds, summary
