"""`dkimd -t FILES`: opendkim's test mode: run message files through the filter and exit.

As `opendkim -x CONF -t FILES`: FILES is a comma-separated list of message files, `-` for
standard input; each message goes through the same filter the daemon runs (the milter
session, fed the commands an MTA would send for a client at 127.0.0.1, the DNS lookups
made for real), and what the filter would do is printed on standard error, one line per
header change and one for the final reply. The exit status is 0 whatever the verdicts
(opendkim's too); 65 (EX_DATAERR) when StrictTestMode finds a line not ended by CRLF, 66
(EX_NOINPUT) for a file that cannot be read. Without a `Mode` in the configuration, test
mode only verifies (opendkim(8): "the default is sv except in test mode").

StrictTestMode (read only here, as in opendkim): every header and body line must end in
CRLF, else `FILE: line N: not CRLF-terminated` and exit 65. Without it, bare LF line ends
are taken as CRLF, as an MTA would send them.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dkimd import milter
from dkimd.config import Config, ConfigError, Mode
from dkimd.daemon import EX_CONFIG, DaemonOptions, StartupError, build_runtime, read_config
from dkimd.log import setup_logging
from dkimd.milter import actions as act
from dkimd.milter.codec import encode_packet
from dkimd.milter.connection import Connection, NeedData
from dkimd.milter.constants import POSTFIX_ACTIONS, POSTFIX_V6_PROTOCOL, Command, ProtocolFlag
from dkimd.milter.handler import ConnectionInfo, Prefetch, Request
from dkimd.negotiation import filter_options_for
from dkimd.session import Runtime, RuntimeHolder, SessionStats, handler_factory

__all__ = ["EX_DATAERR", "EX_NOINPUT", "main", "run_test_files", "test_mode_config"]

EX_DATAERR = 65
EX_NOINPUT = 66
_CHUNK = 65535
_JOB_ID = "(test mode)"


class _NotCRLF(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(f"line {line}: not CRLF-terminated")


def test_mode_config(config: Config) -> Config:
    """Test mode verifies only, unless the configuration sets Mode."""
    if config.raw is not None and config.raw.get("Mode") is None:
        return replace(config, mode=Mode.VERIFY)
    return config


def _lines(data: bytes, strict: bool) -> list[bytes]:
    """The message's lines without their ends; StrictTestMode wants CRLF on each."""
    lines = data.split(b"\n")
    last = lines.pop()  # after the final LF: empty, or a line without an end
    if strict:
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\r"):
                raise _NotCRLF(number)
        if last:
            raise _NotCRLF(len(lines) + 1)
    out = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if last:
        out.append(last)
    return out


def _split(lines: list[bytes]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(header fields as (name, value as the MTA passes it), body with CRLF ends)."""
    fields: list[list[bytes]] = []
    body_start = len(lines)
    for i, line in enumerate(lines):
        if not line:
            body_start = i + 1
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    headers = []
    for parts in fields:
        name, _, value = b"\r\n".join(parts).partition(b":")
        # Postfix sends the value without the one space after the colon
        headers.append((name, value[1:] if value.startswith(b" ") else value))
    body = b"".join(line + b"\r\n" for line in lines[body_start:])
    return headers, body


def _sender(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.strip().lower() == b"from":
            text = value.decode("utf-8", "replace")
            start, end = text.rfind("<"), text.rfind(">")
            address = text[start + 1 : end] if 0 <= start < end else text.strip()
            return f"<{address}>"
    return "<>"


def _z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


def _packets(headers: list[tuple[bytes, bytes]], body: bytes) -> list[tuple[int, bytes]]:
    """The commands Postfix sends for this message from a local client."""
    out: list[tuple[int, bytes]] = [
        (Command.MACRO, b"C" + _z("j", "localhost")),
        (Command.CONNECT, _z("localhost") + b"4" + struct.pack(">H", 0) + _z("127.0.0.1")),
        (Command.HELO, _z("localhost")),
        (Command.MACRO, b"M" + _z("i", _JOB_ID)),
        (Command.MAIL, _z(_sender(headers))),
        (Command.RCPT, _z("<test@localhost>")),
        (Command.DATA, b""),
    ]
    out += [(Command.HEADER, _z(name, value)) for name, value in headers]
    out.append((Command.EOH, b""))
    out += [(Command.BODY, body[i : i + _CHUNK]) for i in range(0, len(body), _CHUNK)]
    out += [(Command.BODYEOB, b""), (Command.QUIT, b"")]
    return out


_SKIPPED: dict[int, ProtocolFlag] = {
    Command.CONNECT: ProtocolFlag.NOCONNECT,
    Command.HELO: ProtocolFlag.NOHELO,
    Command.MAIL: ProtocolFlag.NOMAIL,
    Command.RCPT: ProtocolFlag.NORCPT,
    Command.HEADER: ProtocolFlag.NOHDRS,
    Command.EOH: ProtocolFlag.NOEOH,
    Command.BODY: ProtocolFlag.NOBODY,
    Command.DATA: ProtocolFlag.NODATA,
}


async def _settle(handler: Any, step: Any) -> list[act.Action]:
    """Perform the requests a step asks for until it becomes actions."""
    while True:
        if isinstance(step, Prefetch):
            return []  # the answer is asked for again when it is needed
        if isinstance(step, Request):
            answer = step.answer_now()
            if answer is None:
                try:
                    answer = await asyncio.wait_for(step.perform(), step.timeout)
                except Exception as exc:
                    answer = step.failed(exc)
            step = handler.provide(answer)
            continue
        if step is None:
            return []
        return list(step) if isinstance(step, list) else [step]


async def _run_message(
    runtime: Runtime, headers: list[tuple[bytes, bytes]], body: bytes
) -> list[act.Action]:
    """Every action the filter takes for this message, in order."""
    conn = Connection(filter_options_for(runtime.config))
    handler = handler_factory(RuntimeHolder(runtime), SessionStats())(
        ConnectionInfo(conn, "127.0.0.1")
    )
    conn.receive_data(
        encode_packet(Command.OPTNEG, struct.pack(">III", 6, POSTFIX_ACTIONS, POSTFIX_V6_PROTOCOL))
    )
    conn.next_event()
    conn.send(act.Continue())
    negotiated = conn.negotiated
    assert negotiated is not None
    taken: list[act.Action] = []
    skip_body = False
    try:
        for command, payload in _packets(headers, body):
            flag = _SKIPPED.get(command)
            if (flag is not None and negotiated.protocol & flag) or (
                skip_body and command == Command.BODY
            ):
                continue
            conn.receive_data(encode_packet(command, payload))
            event = conn.next_event()
            if event is NeedData.NEED_DATA:  # a macro packet: no event
                continue
            if isinstance(event, milter.Quit):
                break
            actions = await _settle(handler, handler.handle(event))
            finals = [a for a in actions if isinstance(a, act.FinalAction)]
            if not finals and conn.reply_expected:
                actions.append(act.Continue())
            if actions:
                conn.send_many(actions)
            at_end = isinstance(event, milter.EndOfMessage)
            taken += [
                a
                for a in actions
                if not isinstance(a, act.Progress | act.Skip)
                and (at_end or not isinstance(a, act.Continue))
            ]
            if any(isinstance(a, act.Skip) for a in finals):
                skip_body = True  # no more body chunks; end of message still comes
            elif any(not isinstance(a, act.Continue) for a in finals):
                break  # the MTA stops sending this message
    finally:
        handler.close()
    return taken


def _describe(action: act.Action) -> str:
    if isinstance(action, act.InsertHeader | act.AddHeader):
        value = action.value.decode("utf-8", "replace").replace("\r\n", "\n")
        return f"header added: {action.name.decode('ascii', 'replace')}:{value}"
    if isinstance(action, act.ChangeHeader):
        return f"header changed: {action.name.decode('ascii', 'replace')} #{action.index}"
    if isinstance(action, act.ReplyCode):
        return f"reply {action.code} {action.enhanced} {action.text}".rstrip()
    return type(action).__name__.lower()


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    with open(name, "rb") as f:
        return f.read()


def run_test_files(runtime: Runtime, files: Sequence[str], *, strict: bool) -> int:
    """Test mode over `files`; prints on stderr; returns the exit status."""
    for name in files:
        try:
            data = _read(name)
        except OSError as exc:
            sys.stderr.write(f"dkimd: {name}: {exc.strerror or exc}\n")
            return EX_NOINPUT
        try:
            headers, body = _split(_lines(data, strict))
        except _NotCRLF as exc:
            sys.stderr.write(f"dkimd: {name}: {exc}\n")
            return EX_DATAERR
        actions = asyncio.run(_run_message(runtime, headers, body))
        for action in actions:
            sys.stderr.write(f"dkimd: {name}: {_describe(action)}\n")
    return 0


def main(options: DaemonOptions, files: str) -> int:
    """`dkimd -x CONF -t FILES`."""
    setup_logging(syslog=False, stderr=True, verbose=options.verbose)
    try:
        config = test_mode_config(read_config(options))
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"dkimd: {problem}\n")
        return EX_CONFIG
    try:
        runtime = build_runtime(config, None)
    except StartupError as exc:
        sys.stderr.write(f"dkimd: {exc}\n")
        return exc.exit_code
    return run_test_files(runtime, files.split(","), strict=config.strict_test_mode)
