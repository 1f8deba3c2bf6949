"""Was the milter right? Checks on a driver report, shared by bench/run.py and the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ACCEPTED = {"continue", "accept"}
# dkimpy re-reads the whole message; past this size the check is skipped, not the run.
MAX_VERIFY_BYTES = 8 * 1024 * 1024


def sample_message(report: dict[str, Any], message: Path, header: str) -> bytes | None:
    """The message as delivered: the first added header of `header`'s name on top."""
    for edit in report.get("sample_edits", []):
        if edit["name"].lower() == header.lower() and edit["action"] in ("insheader", "addheader"):
            value = str(edit["value"]).replace("\r\n", "\n").replace("\n", "\r\n")
            leadspc = int(report.get("protocol_mask", "0x0"), 16) & (1 << 20)
            sep = ":" if leadspc else ": "  # without HDR_LEADSPC Postfix supplies the space
            field = f"{edit['name']}{sep}{value}\r\n".encode("latin-1")
            return field + message.read_bytes()
    return None


def dns_lookup(dns_file: Path) -> Callable[..., bytes]:
    """A dkimpy `dnsfunc` answering from a TestDNSData file."""
    records = {}
    for line in dns_file.read_text().splitlines():
        name, _, value = line.partition(" ")
        records[name.lower()] = value.strip().encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip(".").lower(), b"")

    return dnsfunc


def check_report(
    expect_header: str, report: dict[str, Any], message: Path, dns_file: Path
) -> tuple[list[str], list[str]]:
    """Did the milter do its job on every message? (failures, warnings)"""
    notes: list[str] = []
    warnings: list[str] = []
    done = report["messages"]
    finals = report["final_replies"]
    if report["failed"] or report["errors"]:
        notes.append(f"{report['failed']} failed: {report['errors']}")
    bad = {k: v for k, v in finals.items() if k not in ACCEPTED}
    if bad:
        notes.append(f"final replies {bad}")
    added = sum(
        n
        for k, n in report["header_edits"].items()
        if k.split(" ", 1)[-1].lower() == expect_header.lower()
    )
    if added != done:
        notes.append(f"{expect_header} added to {added} of {done} messages")
    for edit in report.get("sample_edits", []):
        if "\r" in str(edit["value"]):
            # Postfix keeps header lines LF-only in its queue file and OpenDKIM folds with a
            # bare LF; a CR inside the value may reach the wire. Worth a look, not a failure.
            warnings.append(f"{edit['name']} value is folded with CRLF; OpenDKIM uses bare LF")
            break
    delivered = sample_message(report, message, expect_header)
    if delivered is not None and expect_header == "Authentication-Results":
        if b"dkim=pass" not in delivered.split(b"\r\n\r\n", 1)[0]:
            notes.append("Authentication-Results without dkim=pass")
    elif delivered is not None and message.stat().st_size < MAX_VERIFY_BYTES:
        import dkim  # dkimpy: an independent verifier for what the milter signed

        if not dkim.verify(delivered, dnsfunc=dns_lookup(dns_file)):
            notes.append("dkimpy does not verify the inserted DKIM-Signature")
    return notes, warnings
