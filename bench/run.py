"""One command for the whole milter benchmark: dkimd and OpenDKIM, same config, same load.

    python bench/run.py [--quick] [--out bench/RESULTS.md]

Generates keys, DNS data, messages and opendkim.conf files under bench/out/work, then for
each config starts OpenDKIM (`opendkim -f -x CONF -p SOCKET`) and dkimd (`python -m dkimd
-x CONF -f -p SOCKET`) side by side, both pinned to CPU 0, and runs bench/driver.py pinned
to CPU 1 for every case (bench/cases.py), alternating between the two milters run by run.
Writes its section of RESULTS.md (between its markers; the rest of the file is left alone)
and the raw numbers to bench/out/work/results.json.

A milter that cannot start is reported as such, with its own words, never with numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import results
import workload
from cases import CASES, EXTERNAL_CLIENT, INTERNAL_CLIENT, Case
from checks import check_report, sample_message
from procs import (
    CLOCK_TICKS,
    Milter,
    MilterStartError,
    RssSampler,
    free_port,
    opendkim_path,
    pin_self,
    read_cpu_ticks,
    taskset,
)

BENCH = Path(__file__).resolve().parent
# The one-worker dkimd that the `Workers 2` cases are measured against, in the same rotation.
BASELINE = "dkimd-1worker"
DRIVER = BENCH / "driver.py"


def run_driver(
    target: str,
    message: Path,
    *,
    concurrency: int,
    messages: int,
    client: str,
    warmup: int = 0,
    max_seconds: float | None = None,
    cpus: str | None = "1",
    quickack: bool = False,
    per_connection: int = 1,
) -> dict[str, Any]:
    """Run bench/driver.py in its own (pinned) process and return its JSON report."""
    cmd = [
        sys.executable,
        str(DRIVER),
        "--target",
        target,
        "--message",
        str(message),
        "--concurrency",
        str(concurrency),
        "--messages",
        str(messages),
        "--warmup",
        str(warmup),
        "--client-addr",
        client,
        "--json",
    ]
    if max_seconds:
        cmd += ["--max-seconds", str(max_seconds)]
    if quickack:
        cmd.append("--quickack")
    if per_connection > 1:
        cmd += ["--per-connection", str(per_connection)]
    limit = (max_seconds or 300) + 300
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(taskset(cpus, cmd), capture_output=True, text=True, timeout=limit)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not out.stdout.strip():
        raise RuntimeError(f"driver produced no report: {out.stderr.strip()[-500:]}")
    report: dict[str, Any] = json.loads(out.stdout)
    # The driver's own CPU (start-up included), so a table can say what the load costs the
    # CPUs it shares with a milter.
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    handled = report["messages"] + warmup
    report["driver_cpu_ms"] = round(spent * 1000 / handled, 3) if handled else None
    return report


def make_signed_message(w: workload.Workload, port: int, log_dir: Path) -> tuple[Path, str]:
    """The verify cases' input: msg-4k signed by OpenDKIM (dkimpy if OpenDKIM is missing)."""
    out = w.root / "msg-4k-signed-by-opendkim.eml"
    if opendkim_path():
        milter = Milter.start("opendkim", w.conf_rsa, port, None, log_dir / "opendkim-sign.log")
        try:
            rep = run_driver(
                f"127.0.0.1:{port}", w.msg_4k, concurrency=1, messages=1, client=INTERNAL_CLIENT
            )
        finally:
            milter.stop()
        signed = sample_message(rep, w.msg_4k, "DKIM-Signature")
        if signed is None:
            raise RuntimeError(f"OpenDKIM did not sign the 4 KB message: {rep}")
        out.write_bytes(signed)
        return out, "signed by OpenDKIM"
    import dkim

    key = (w.root / "keys" / "rsa.private").read_bytes()
    raw = w.msg_4k.read_bytes()
    sig = dkim.sign(
        raw, b"rsa", workload.DOMAIN.encode(), key, canonicalize=(b"relaxed", b"relaxed")
    )
    out.write_bytes(sig + raw)
    return out, "signed by dkimpy (OpenDKIM is not installed)"


def dkimd_available() -> str | None:
    """None if dkimd can be tried, else why not."""
    if importlib.util.find_spec("dkimd") is None:
        return f"dkimd is not importable from {sys.executable}"
    return None


def measure_once(
    case: Case,
    milter: Milter,
    message: Path,
    quick: bool,
    max_seconds: float,
    driver_cpus: str | None,
    warmup: int,
) -> tuple[dict[str, Any], float | None]:
    """One measured run of a throughput case: the driver's report, milter CPU ms/msg."""
    count = case.count(quick)
    ticks = read_cpu_ticks(milter.pid)
    rep = run_driver(
        f"127.0.0.1:{milter.port}",
        message,
        concurrency=case.concurrency,
        messages=count,
        client=case.client,
        warmup=warmup,
        max_seconds=max_seconds,
        cpus=driver_cpus,
        quickack=case.quickack,
        per_connection=case.per_connection,
    )
    # CPU time the milter spent per message (warm-up messages included on both sides of
    # the division): a per-core cost that other load on the machine hardly moves, unlike
    # msgs/s.
    spent = read_cpu_ticks(milter.pid) - ticks
    handled = rep["messages"] + warmup
    return rep, (spent * 1000 / CLOCK_TICKS / handled if handled else None)


def summarize(
    case: Case, runs: list[tuple[dict[str, Any], float | None]], message: Path, dns: Path
) -> dict[str, Any]:
    """A case's result for one milter from its measured runs; every run is checked."""
    reports = [rep for rep, _ in runs]
    cpu_ms = [cpu for _, cpu in runs if cpu is not None]
    # Other work on the machine only ever slows a run down, so the best one is the least
    # disturbed.
    report = max(reports, key=lambda r: r["msgs_per_s"])
    failing = [check_report(case.expect_header, r, message, dns) for r in reports]
    notes = sorted({n for f in failing for n in f[0]})
    warnings = sorted({x for f in failing for x in f[1]})
    return {
        "report": report,
        "rates": [r["msgs_per_s"] for r in reports],
        "cpu_ms": min(cpu_ms) if cpu_ms else None,
        "cpu_ms_runs": cpu_ms,
        "ok": not notes,
        "notes": notes,
        "warnings": warnings,
        "rss": {},
    }


def run_interleaved(
    case: Case,
    milters: dict[str, Milter],
    message: Path,
    dns: Path,
    quick: bool,
    max_seconds: float,
    driver_cpus: str | None,
    repeat: int,
) -> dict[str, dict[str, Any]]:
    """A throughput case against every running milter, their runs alternating (A B A B...),
    so a slow spell of a shared machine falls on both rather than on whichever ran then."""
    warmup = min(case.count(quick), max(10, 2 * case.concurrency))
    runs: dict[str, list[tuple[dict[str, Any], float | None]]] = {k: [] for k in milters}
    for i in range(repeat):
        for kind, milter in milters.items():
            runs[kind].append(
                measure_once(
                    case, milter, message, quick, max_seconds, driver_cpus, 0 if i else warmup
                )
            )
    return {kind: summarize(case, r, message, dns) for kind, r in runs.items()}


def run_memory_case(
    case: Case,
    milter: Milter,
    w: workload.Workload,
    message: Path,
    quick: bool,
    driver_cpus: str | None,
) -> dict[str, Any]:
    """The big message: the milter's peak RSS while it handles it, over its idle RSS."""
    target = f"127.0.0.1:{milter.port}"
    # Idle = after one small message, so lazy imports and first-use set-up are in.
    run_driver(target, w.msg_4k, concurrency=1, messages=1, client=case.client)
    time.sleep(0.5)
    rss = {"idle_kb": milter.memory_kb()[0]}
    with RssSampler(milter.pid) as sampler:
        report = run_driver(
            target,
            message,
            concurrency=case.concurrency,
            messages=case.count(quick),
            client=case.client,
            cpus=driver_cpus,
        )
    rss["peak_kb"] = max(sampler.peak_kb, milter.memory_kb()[0])
    rss["hwm_kb"] = milter.memory_kb()[1]
    notes, warnings = check_report(case.expect_header, report, message, w.dns)
    return {"report": report, "ok": not notes, "notes": notes, "warnings": warnings, "rss": rss}


def machine_info() -> dict[str, str]:
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    opendkim = "not installed"
    if opendkim_path():
        v = subprocess.run([opendkim_path() or "opendkim", "-V"], capture_output=True, text=True)
        lines = [x.strip() for x in (v.stdout + v.stderr).splitlines()]
        opendkim = "; ".join(lines[:4]).replace("opendkim: ", "")
    try:
        from importlib.metadata import version

        dkimd_v = version("dkimd")
        crypto_v = version("cryptography")
    except Exception:
        dkimd_v = crypto_v = "unknown"
    git = subprocess.run(
        ["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": model,
        "nproc": str(os.cpu_count() or 0),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "dkimd": f"{dkimd_v} (git {git or '?'})",
        "cryptography": crypto_v,
        "opendkim": opendkim,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="dkimd vs OpenDKIM milter benchmark")
    p.add_argument("--quick", action="store_true", help="tiny message counts: a smoke run")
    p.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--workdir", type=Path, default=BENCH / "out" / "work")
    p.add_argument("--max-seconds", type=float, help="cap per measured run (default 8, quick 5)")
    p.add_argument("--repeat", type=int, help="measured runs per case, best kept (3; quick 1)")
    p.add_argument("--big-mb", type=int, default=50, help="size of the big message body")
    p.add_argument("--milters", default="dkimd,opendkim", help="comma list: dkimd,opendkim")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    max_seconds = args.max_seconds or (5.0 if args.quick else 8.0)
    repeat = args.repeat or (1 if args.quick else 3)
    wanted = set(args.milters.split(","))
    started = time.time()
    load_start = os.getloadavg()[0]

    # The orchestrator and the driver share CPU 1; the milters get CPU 0 to themselves.
    pinned = (os.cpu_count() or 1) >= 2 and pin_self({1})
    driver_cpus = "1" if pinned else None

    port = free_port()
    w = workload.prepare(args.workdir, port, args.big_mb)
    logs = args.workdir / "logs"
    logs.mkdir(exist_ok=True)
    signed, signed_by = make_signed_message(w, port, logs)
    messages = {"4k": w.msg_4k, "1m": w.msg_1m, "big": w.msg_big, "signed-4k": signed}
    confs = {"rsa": w.conf_rsa, "ed25519": w.conf_ed25519, "rsa-workers2": w.conf_rsa_workers2}

    unavailable: dict[str, str] = {}
    if opendkim_path() is None:
        unavailable["opendkim"] = "opendkim is not installed (apt-get install opendkim)"
    why = dkimd_available()
    if why:
        unavailable["dkimd"] = why

    runs: list[dict[str, Any]] = []
    for conf in dict.fromkeys(c.conf for c in CASES):
        group = [c for c in CASES if c.conf == conf]
        kinds = [k for k in ("opendkim", "dkimd") if k in wanted]
        kinds = [k for k in kinds if any(k in c.milters for c in group)]
        # Both milters run side by side (each on its own port, both pinned to the same
        # CPU, idle while the other is measured), so each case alternates between them.
        milters: dict[str, Milter] = {}
        failed: dict[str, str] = {}
        for kind in kinds:
            if kind in unavailable:
                failed[kind] = unavailable[kind]
                continue
            cpus = group[0].milter_cpus if pinned else None
            log = logs / f"{kind}-{conf}.log"
            print(f"== {kind} with {confs[conf].name} (CPUs {cpus or 'any'})", flush=True)
            try:
                milters[kind] = Milter.start(kind, confs[conf], free_port(), cpus, log)
            except MilterStartError as e:
                failed[kind] = f"not runnable: {e}"
                print(f"   {failed[kind]}", flush=True)
                if conf == "rsa":
                    unavailable[kind] = failed[kind]
        if "dkimd" in milters and any(c.baseline for c in group):
            # The Workers cases compare dkimd with itself: a one-worker dkimd on CPU 0 runs
            # beside them and takes turns with them, as the two milters do elsewhere.
            print(f"== {BASELINE} with {confs['rsa'].name} (CPUs 0)", flush=True)
            log = logs / f"{BASELINE}.log"
            try:
                cpus = "0" if pinned else None
                milters[BASELINE] = Milter.start("dkimd", confs["rsa"], free_port(), cpus, log)
            except MilterStartError as e:
                failed[BASELINE] = f"not runnable: {e}"
        try:
            for case in group:
                here = {
                    k: m
                    for k, m in milters.items()
                    if k in case.milters or (k == BASELINE and case.baseline)
                }
                for kind, reason in failed.items():
                    if kind in case.milters:
                        entry = {**_case_dict(case), "conf": conf, "milter": kind}
                        runs.append({**entry, "error": reason})
                msg = messages[case.message]
                done: dict[str, dict[str, Any]] = {}
                try:
                    if case.measure_rss:
                        for kind, milter in here.items():
                            done[kind] = run_memory_case(
                                case, milter, w, msg, args.quick, driver_cpus
                            )
                    elif here:
                        done = run_interleaved(
                            case, here, msg, w.dns, args.quick, max_seconds, driver_cpus, repeat
                        )
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    done = {kind: {"error": f"run failed: {e}"} for kind in here}
                for kind, res in done.items():
                    runs.append({**_case_dict(case), "conf": conf, "milter": kind, **res})
                    print("   " + results.one_line(runs[-1]), flush=True)
        finally:
            for milter in milters.values():
                milter.stop()

    meta = {
        "command": "python bench/run.py" + (" " + shlex.join(argv or sys.argv[1:])).rstrip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "duration_s": round(time.time() - started),
        "quick": args.quick,
        "pinned": pinned,
        "signed_by": signed_by,
        "unsafe_keys": w.unsafe_keys,
        "external_client": EXTERNAL_CLIENT,
        "big_mb": args.big_mb,
        "max_seconds": max_seconds,
        "repeat": repeat,
        "loadavg": f"{load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        **machine_info(),
    }
    data = {"meta": meta, "runs": runs}
    (args.workdir / "results.json").write_text(json.dumps(data, indent=2))
    results.write_section(args.out, results.render(data))
    print(f"wrote {args.out} and {args.workdir / 'results.json'} in {meta['duration_s']} s")
    return 0 if all(r.get("ok") for r in runs if "error" not in r) else 1


def _case_dict(case: Case) -> dict[str, Any]:
    return {
        "group": case.group,
        "title": case.title,
        "concurrency": case.concurrency,
        "message": case.message,
        "messages_asked": case.messages,
        "client": case.client,
        "milter_cpus": case.milter_cpus,
    }


if __name__ == "__main__":
    sys.exit(main())
