"""bench/run.py's section of bench/RESULTS.md: rendering, and replacing only that section.

The section sits between BEGIN/END markers; everything outside them (e.g. the body
canonicalization section, which bench/bench_canon.py's owner writes) is kept byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN bench/run.py: generated, do not edit by hand -->"
END = "<!-- END bench/run.py -->"

Run = dict[str, Any]


def write_section(path: Path, section: str) -> None:
    """Put `section` between the markers in `path`, appending it if the markers are absent."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def _rate(run: Run | None) -> str:
    if run is None:
        return "-"
    if "error" in run:
        return "n/a"
    return f"{run['report']['msgs_per_s']:.1f}"


def _lat(run: Run | None) -> str:
    if run is None or "error" in run:
        return "-"
    r = run["report"]
    return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"


def _ratio(a: Run | None, b: Run | None) -> str:
    if not a or not b or "error" in a or "error" in b:
        return "-"
    den = b["report"]["msgs_per_s"]
    return f"{a['report']['msgs_per_s'] / den:.2f}x" if den else "-"


def _cpu(run: Run | None) -> str:
    if run is None or "error" in run or run.get("cpu_ms") is None:
        return "-"
    return f"{run['cpu_ms']:.2f}"


def _cpu_ratio(a: Run | None, b: Run | None) -> str:
    """How many times more messages per CPU-second `a` handles than `b`."""
    if not a or not b or a.get("cpu_ms") is None or b.get("cpu_ms") is None:
        return "-"
    return f"{b['cpu_ms'] / a['cpu_ms']:.2f}x" if a["cpu_ms"] else "-"


def _check(*runs: Run | None) -> str:
    marks = []
    for run in runs:
        if run is None or "error" in run:
            continue
        name = "dkimd" if run["milter"] == "dkimd" else "OpenDKIM"
        if not run["ok"]:
            marks.append(f"{name}: " + "; ".join(run["notes"]))
    return "<br>".join(marks) or "ok"


def one_line(run: Run) -> str:
    """Progress line for the terminal."""
    head = f"{run['group']} c={run['concurrency']} {run['milter']}:"
    if "error" in run:
        return f"{head} {run['error']}"
    r = run["report"]
    status = "ok" if run["ok"] else "CHECK FAILED: " + "; ".join(run["notes"])
    if run.get("warnings"):
        status += ", warning: " + "; ".join(run["warnings"])
    return (
        f"{head} {r['msgs_per_s']:.1f} msgs/s, p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, {r['messages']} msgs [{status}]"
    )


def _find(runs: list[Run], group: str, milter: str, concurrency: int) -> Run | None:
    for r in runs:
        if r["group"] == group and r["milter"] == milter and r["concurrency"] == concurrency:
            return r
    return None


def _groups(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r["group"] for r in runs))


def _compare_table(runs: list[Run], group: str) -> list[str]:
    out = [
        "| concurrency | dkimd msgs/s | OpenDKIM msgs/s | dkimd / OpenDKIM "
        "| dkimd CPU ms/msg | OpenDKIM CPU ms/msg | per-core ratio "
        "| dkimd p50 / p99 ms | OpenDKIM p50 / p99 ms | messages | checks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in dict.fromkeys(r["concurrency"] for r in runs if r["group"] == group):
        d = _find(runs, group, "dkimd", c)
        o = _find(runs, group, "opendkim", c)
        counts = " / ".join(str(r["report"]["messages"]) for r in (d, o) if r and "error" not in r)
        out.append(
            f"| {c} | {_rate(d)} | {_rate(o)} | {_ratio(d, o)} "
            f"| {_cpu(d)} | {_cpu(o)} | {_cpu_ratio(d, o)} | {_lat(d)} | {_lat(o)} "
            f"| {counts or '-'} | {_check(d, o)} |"
        )
    return out


def _memory_table(runs: list[Run], group: str, big_mb: int) -> list[str]:
    out = [
        "| milter | messages | s per message | idle RSS MB | peak RSS MB | growth MB "
        "| VmHWM MB | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for milter, name in (("dkimd", "dkimd"), ("opendkim", "OpenDKIM")):
        r = next((x for x in runs if x["group"] == group and x["milter"] == milter), None)
        if r is None:
            continue
        if "error" in r:
            out.append(f"| {name} | n/a | | | | | | {r['error']} |")
            continue
        rep, rss = r["report"], r["rss"]
        per = rep["elapsed_s"] / rep["messages"] if rep["messages"] else 0.0
        mb = 1024.0
        out.append(
            f"| {name} | {rep['messages']} | {per:.2f} | {rss['idle_kb'] / mb:.1f} "
            f"| {rss['peak_kb'] / mb:.1f} | {(rss['peak_kb'] - rss['idle_kb']) / mb:+.1f} "
            f"| {rss['hwm_kb'] / mb:.1f} | {_check(r)} |"
        )
    out.append("")
    out.append(
        f"Idle RSS is read after one 4 KB message; peak RSS is the largest VmRSS seen while "
        f"polling /proc/PID/status every 5 ms during the {big_mb} MB message(s)."
    )
    return out


def _driver_cpu(run: Run | None) -> str:
    if run is None or "error" in run or run["report"].get("driver_cpu_ms") is None:
        return "-"
    return f"{run['report']['driver_cpu_ms']:.2f}"


def _two_cpu_bound(run: Run | None) -> str:
    """Messages/s two CPUs could carry at most, milter and driver each at the CPU cost per
    message measured in `run` (the one-worker run, where neither shares a CPU)."""
    if run is None or "error" in run or run.get("cpu_ms") is None:
        return "-"
    driver = run["report"].get("driver_cpu_ms")
    if driver is None:
        return "-"
    return f"{2000 / (run['cpu_ms'] + driver):.0f}"


def _workers_table(runs: list[Run]) -> list[str]:
    out = [
        "| message, concurrency | dkimd | milter CPUs | msgs/s | vs 1 worker | p50 / p99 ms "
        "| dkimd CPU ms/msg | driver CPU ms/msg | two-CPU bound msgs/s | checks |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for two in (r for r in runs if r["group"] == "workers" and r["milter"] == "dkimd"):
        base_group = "sign-1m" if two.get("message") == "1m" else "sign-4k"
        # The one-worker run that alternated with this one; older results: the sign case.
        one = _find(runs, "workers", "dkimd-1worker", two["concurrency"]) or _find(
            runs, base_group, "dkimd", two["concurrency"]
        )
        what = f"{'1 MB' if base_group == 'sign-1m' else '4 KB'}, c{two['concurrency']}"
        out.append(
            f"| {what} | 1 worker | 0 | {_rate(one)} | 1.00x | {_lat(one)} | {_cpu(one)} "
            f"| {_driver_cpu(one)} | {_two_cpu_bound(one)} | {_check(one)} |"
        )
        detail = two["error"] if "error" in two else _check(two)
        out.append(
            f"| {what} | `Workers 2` | 0,1 | {_rate(two)} | {_ratio(two, one)} | {_lat(two)} "
            f"| {_cpu(two)} | {_driver_cpu(two)} | | {detail} |"
        )
    out.append("")
    out.append(
        "OpenDKIM has no such option (it rejects `Workers`: unrecognized parameter), so this "
        "compares dkimd with itself: the 1-worker rows are a one-worker dkimd (CPU 0) running "
        "beside the two-worker one, their measured runs alternating. This machine has two CPUs "
        "and the load driver needs one of them too: with two workers on CPUs 0-1 the milter "
        "shares CPU 1 with the driver. "
        "The two-CPU bound is what two CPUs could carry at the measured CPU cost per message "
        "of milter plus driver (2000 / (dkimd + driver ms)); the closer Workers 2 comes to it, "
        "the less the workers lose to each other. dkimd CPU ms/msg with Workers 2 is the sum "
        "over both worker processes: the same as one worker's means the second worker adds no "
        "per-message overhead, so on a machine with a CPU to spare for the MTA each worker "
        "carries a full core's load. The 1 MB rows show it where the driver's share is small."
    )
    return out


def render(data: dict[str, Any]) -> str:
    """The whole generated section, as Markdown."""
    meta, runs = data["meta"], data["runs"]
    lines = [
        "## Milter throughput: dkimd vs OpenDKIM",
        "",
        f"Command: `{meta['command']}` ({meta['date']}, took {meta['duration_s']} s"
        + (", **quick smoke run: counts too small to compare**" if meta["quick"] else "")
        + ").",
        f"Machine: {meta['cpu']}, nproc {meta['nproc']}, Linux {meta['kernel']}.",
        f"Versions: Python {meta['python']}, dkimd {meta['dkimd']}, cryptography "
        f"{meta['cryptography']}; {meta['opendkim']}.",
        "",
        "How: both milters run the same generated opendkim.conf (bench/workload.py: KeyTable and "
        "SigningTable `refile:`, `InternalHosts 127.0.0.1`, relaxed/relaxed, `TestDNSData "
        "file:`), started side by side as `opendkim -f -x CONF -p SOCKET` and `python -m "
        "dkimd -x CONF -f -p SOCKET`, "
        + (
            "both pinned to CPU 0 (`taskset -c 0`); the load driver (bench/driver.py) and this "
            "runner are pinned to CPU 1."
            if meta["pinned"]
            else "unpinned (fewer than 2 CPUs)."
        )
        + " The measured runs of a case alternate between the two milters (OpenDKIM, dkimd, "
        "OpenDKIM, dkimd...), the idle one waiting, so a slow spell of a shared machine "
        "weighs on both.",
        "The driver speaks milter protocol 6 as Postfix 3.7 does (macros, header and body "
        "framing, 65535-byte body chunks, no-reply flags honoured, writes buffered as Postfix's "
        "VSTREAM does), one milter connection per message unless a table says otherwise, "
        "TCP_NODELAY on its side. Throughput is completed messages / wall time after "
        f"a warm-up (runs stop early after {meta['max_seconds']:.0f} s), the best of "
        f"{meta.get('repeat', 1)} run(s) per case (other work on a shared machine only slows a "
        "run; results.json keeps every run's rate); latency (of that run) runs from the "
        "TCP connect to the final end-of-message reply. Every run is checked: final replies "
        "continue/accept, the header added to every message, the inserted DKIM-Signature "
        "verified by dkimpy against the test DNS records, dkim=pass in Authentication-Results.",
        "",
        "CPU ms/msg is the milter process's user + system time (all threads, from "
        "/proc/PID/stat) over the messages it handled in a run, the lowest of the runs: the "
        "per-core cost of a message, which other load on a shared machine hardly changes. "
        "The per-core ratio is OpenDKIM's CPU ms/msg over dkimd's: how many more messages "
        "dkimd handles per CPU-second. msgs/s on a busy machine also measures the neighbours.",
        "",
    ]
    unavailable = {r["milter"]: r["error"] for r in runs if "error" in r}
    for milter, why in unavailable.items():
        lines.append(f"**{milter}: {why}**")
        lines.append("")
    titles = {r["group"]: r["title"] for r in runs}
    for group in _groups(runs):
        if group == "nagle":
            continue  # a diagnostic, reported in the notes
        lines.append(f"### {titles[group]}")
        lines.append("")
        if group == "sign-big":
            lines += _memory_table(runs, group, meta["big_mb"])
        elif group == "workers":
            lines += _workers_table(runs)
        else:
            lines += _compare_table(runs, group)
        if group == "verify-4k":
            lines += ["", f"The verified message was {meta['signed_by']}."]
        if group == "ed25519":
            lines += [
                "",
                "OpenDKIM 2.11 signs ed25519-sha256 (`opendkim -V` lists it) with the key as "
                "PKCS#8 PEM in the KeyTable and `SignatureAlgorithm ed25519-sha256`.",
            ]
        lines.append("")
    lines += _notes(runs, meta)
    return "\n".join(lines)


def _notes(runs: list[Run], meta: dict[str, Any]) -> list[str]:
    out = ["### Notes", ""]
    o1 = _find(runs, "sign-4k", "opendkim", 1)
    o64 = _find(runs, "sign-4k", "opendkim", 64)
    if o1 and "error" not in o1:
        busy = ""
        if o64 and "error" not in o64 and o64["report"]["msgs_per_s"]:
            busy = (
                f" (at concurrency 64 it completes {o64['report']['msgs_per_s']:.0f} msgs/s on "
                f"its one CPU, so a message costs it at most "
                f"{1000 / o64['report']['msgs_per_s']:.1f} ms of CPU)"
            )
        quick = next((r for r in runs if r["group"] == "nagle" and "error" not in r), None)
        proof = ""
        if quick:
            q = quick["report"]
            proof = (
                f" Confirmed: with TCP_QUICKACK on the driver's socket (it then ACKs at once, "
                f"which Postfix does not), OpenDKIM's p50 at concurrency 1 drops to "
                f"{q['p50_ms']:.1f} ms and its rate rises to {q['msgs_per_s']:.0f} msgs/s."
            )
        out.append(
            f"- OpenDKIM's p50 latency at concurrency 1 is {o1['report']['p50_ms']:.1f} ms"
            f"{busy}. That is Nagle against delayed ACK: libmilter sends the end-of-message "
            "header insert and the final accept as separate small writes on a socket without "
            "TCP_NODELAY, so the second waits for the MTA's delayed ACK of the first (about "
            "40 ms on Linux). Postfix behaves as the driver here, so production sees the same "
            "wait. At low concurrency OpenDKIM's throughput is bounded by it, not by CPU. The "
            "driver writes each batch of commands in one go, as Postfix does, and so adds no "
            "such delay of its own." + proof
        )
    if meta.get("loadavg"):
        out.append(
            f"- 1-minute load average: {meta['loadavg']}. Anything above ~2 on this 2-CPU "
            "machine means other work competed with the benchmark and the numbers are noisy."
        )
    if meta.get("unsafe_keys"):
        out.append(
            "- The work directory is below a world-writable directory, so the config says "
            "`RequireSafeKeys no` (OpenDKIM refuses such keys otherwise)."
        )
    warned: dict[str, set[str]] = {}
    for r in runs:
        for w in r.get("warnings", []):
            warned.setdefault("dkimd" if r["milter"] == "dkimd" else "OpenDKIM", set()).add(w)
    for name, ws in warned.items():
        out.append(f"- {name} warnings (not counted as failures): " + "; ".join(sorted(ws)) + ".")
    out.append(
        "- Raw numbers, including every run's final replies, header edits and the first "
        "message's edits: bench/out/work/results.json (not committed)."
    )
    return out
