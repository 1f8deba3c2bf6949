"""Smoke test of the benchmark harness (bench/): the load driver against real milters.

Runs bench/driver.py's load function for a handful of messages against real OpenDKIM (and
against dkimd, in the tests marked so below) with the configs bench/workload.py writes, and
checks what came back: final replies, the inserted header, a DKIM-Signature that dkimpy
verifies against the test DNS records, dkim=pass when verifying. No timing assertions.

Without opendkim the OpenDKIM tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from support.tools import require

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import checks  # noqa: E402  (bench/ is a directory of scripts, not a package)
import driver  # noqa: E402
import mta_codec  # noqa: E402
import results  # noqa: E402
import workload  # noqa: E402
from mta_message import load_message, parse_message  # noqa: E402
from procs import Milter, free_port  # noqa: E402

pytestmark = pytest.mark.interop

MESSAGES = 6


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> workload.Workload:
    return workload.prepare(tmp_path_factory.mktemp("bench"), free_port(), big_mb=1)


@contextmanager
def _started(kind: str, work: workload.Workload) -> Iterator[Milter]:
    log = work.root / f"{kind}.log"
    milter = Milter.start(kind, work.conf_rsa, work.port, None, log)
    try:
        yield milter
    finally:
        milter.stop()


@pytest.fixture
def opendkim(work: workload.Workload) -> Iterator[Milter]:
    require("opendkim")
    with _started("opendkim", work) as milter:
        yield milter


@pytest.fixture
def dkimd(work: workload.Workload) -> Iterator[Milter]:
    # dkimd is this repository's package, importable wherever the tests run: no skip.
    with _started("dkimd", work) as milter:
        yield milter


def _load(work: workload.Workload, message: Path, client: str) -> dict[str, Any]:
    msg = load_message(message)
    env = driver.Envelope(client_addr=client, sender=msg.from_address() or "")
    report = driver.run_load(
        f"127.0.0.1:{work.port}", msg, env, messages=MESSAGES, concurrency=2, per_connection=2
    )
    return asdict(report)


def _assert_all_handled(report: dict[str, Any], header: str) -> None:
    assert report["errors"] == {}
    assert report["failed"] == 0
    assert report["messages"] == MESSAGES
    assert set(report["final_replies"]) <= checks.ACCEPTED, report["final_replies"]
    added = {k: n for k, n in report["header_edits"].items() if k.endswith(" " + header)}
    assert sum(added.values()) == MESSAGES, report["header_edits"]


def _sign_and_check(work: workload.Workload) -> bytes:
    report = _load(work, work.msg_4k, "127.0.0.1")
    _assert_all_handled(report, "DKIM-Signature")
    signed = checks.sample_message(report, work.msg_4k, "DKIM-Signature")
    assert signed is not None
    import dkim

    assert dkim.verify(signed, dnsfunc=checks.dns_lookup(work.dns))
    assert checks.check_report("DKIM-Signature", report, work.msg_4k, work.dns)[0] == []
    return signed


def _verify_and_check(work: workload.Workload, signed: bytes) -> None:
    path = work.root / "signed.eml"
    path.write_bytes(signed)
    report = _load(work, path, "192.0.2.77")
    _assert_all_handled(report, "Authentication-Results")
    ar = checks.sample_message(report, path, "Authentication-Results")
    assert ar is not None
    assert b"dkim=pass" in ar.split(b"\r\n\r\n", 1)[0]


# ---- real OpenDKIM ----


def test_opendkim_signs_what_dkimpy_verifies(work: workload.Workload, opendkim: Milter) -> None:
    _sign_and_check(work)


def test_opendkim_verifies_its_own_signature(work: workload.Workload, opendkim: Milter) -> None:
    _verify_and_check(work, _sign_and_check(work))


# ---- dkimd, the milter under test ----


def test_dkimd_signs_what_dkimpy_verifies(work: workload.Workload, dkimd: Milter) -> None:
    _sign_and_check(work)


def test_dkimd_verifies_an_opendkim_signature(work: workload.Workload) -> None:
    require("opendkim")
    with _started("opendkim", work):
        signed = _sign_and_check(work)
    with _started("dkimd", work):
        _verify_and_check(work, signed)


# ---- no sockets: what the driver puts on the wire ----


def test_optneg_is_postfix_37s() -> None:
    pkt = mta_codec.optneg()
    assert pkt == b"\0\0\0\x0dO" + bytes.fromhex("00000006000001ff001fffff")


def test_message_split_like_postfix() -> None:
    msg = parse_message(b"Subject: a\r\n\tb\r\nX-Y :  c\r\n\r\nline1\nline2")
    assert msg.headers == ((b"Subject", b" a\n\tb"), (b"X-Y", b"  c"))
    assert msg.header_values(leading_space=False) == [(b"Subject", b"a\n\tb"), (b"X-Y", b" c")]
    assert msg.body == b"line1\r\nline2\r\n"


def test_results_section_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Body canonicalization\n\nkeep me\n")
    results.write_section(path, "## Mine\n\nv1")
    results.write_section(path, "## Mine\n\nv2")
    text = path.read_text()
    assert "keep me" in text
    assert "v2" in text
    assert "v1" not in text
    assert text.count(results.BEGIN) == 1


# ---- the whole harness, once, tiny ----


def test_run_py_quick_writes_every_case(tmp_path: Path) -> None:
    """`bench/run.py --quick` end to end (tiny counts, a 1 MB "big" message): every case runs
    against both milters, every run passes its checks, and the generated section has every
    table. Numbers are not looked at: this only keeps the harness from rotting."""
    require("opendkim")
    import json
    import subprocess

    import cases

    out = tmp_path / "RESULTS.md"
    work_dir = tmp_path / "work"
    cmd = [sys.executable, str(BENCH / "run.py"), "--quick", "--big-mb", "1"]
    cmd += ["--max-seconds", "2", "--out", str(out), "--workdir", str(work_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((work_dir / "results.json").read_text())
    runs = data["runs"]
    expected = {(c.group, c.concurrency, m) for c in cases.CASES for m in c.milters}
    expected |= {(c.group, c.concurrency, "dkimd-1worker") for c in cases.CASES if c.baseline}
    assert {(r["group"], r["concurrency"], r["milter"]) for r in runs} == expected
    for r in runs:
        assert "error" not in r, r
        assert r["ok"], (r["group"], r["milter"], r["notes"])
        assert r["report"]["driver_cpu_ms"] > 0
        if r["group"] != "sign-big":
            assert r["cpu_ms"] > 0
    text = out.read_text()
    assert text.count(results.BEGIN) == 1
    for title in {c.title for c in cases.CASES if c.group != "nagle"}:
        assert f"### {title}" in text
    assert "two-CPU bound" in text


def _inproc(*args: str) -> list[str]:
    # A process of its own: inproc.py sets up dkimd's logging and silences stderr for good.
    import subprocess

    cmd = [sys.executable, str(BENCH / "inproc.py"), *args, "--messages", "3", "--warmup", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_inproc_replays_the_conversation_without_sockets(
    work: workload.Workload, tmp_path: Path
) -> None:
    """bench/inproc.py (dkimd's own CPU per message, no sockets) signs for an internal client
    and verifies for an external one, with the replies the real daemon gives (ACCEPT at end
    of message, as OpenDKIM)."""
    import dkim

    lines = _inproc(str(work.conf_rsa), str(work.msg_4k))
    assert lines[0].startswith("insheader DKIM-Signature:  v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert lines[1] == "accept"
    assert lines[2].startswith("3 messages, CPU ")

    raw = work.msg_4k.read_bytes()
    key = (work.root / "keys" / "rsa.private").read_bytes()
    sig = dkim.sign(
        raw, b"rsa", workload.DOMAIN.encode(), key, canonicalize=(b"relaxed", b"relaxed")
    )
    signed = tmp_path / "signed.eml"
    signed.write_bytes(sig + raw)
    lines = _inproc(str(work.conf_rsa), str(signed), "--client-addr", "192.0.2.77")
    assert lines[0].startswith("insheader Authentication-Results:")
    assert "dkim=pass" in lines[1]
    assert lines[2] == "accept"
    assert lines[3].startswith("3 messages, CPU ")
