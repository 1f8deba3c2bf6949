"""dkimd.server + dkimd.milter against OpenDKIM's ``miltertest`` playing the MTA.

miltertest (apt: miltertest) runs tests/interop/miltertest/codec.lua, which negotiates
like Postfix does (version 6 with protocol mask 0x1FFFFF, or version 2 with 0x7F),
sends macros, two messages with random bodies of ~100 KB (several body chunks), an
unknown SMTP command, and checks the header modifications our trivial handler makes.
Without miltertest the test is skipped, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dkimd import milter
from dkimd.milter.handler import ConnectionInfo, HandlerResult
from dkimd.server import MilterServer
from dkimd.sockets import bind_socket
from support.tools import require

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).parent / "miltertest" / "codec.lua"


class AddHeaders:
    """Insert X-Dkimd-Test at the top (like a DKIM-Signature) and add a counter."""

    def __init__(self, info: ConnectionInfo) -> None:
        self.conn = info.connection
        self.messages = 0
        self.body_bytes = 0

    def handle(self, event: milter.Event) -> HandlerResult:
        if isinstance(event, milter.BodyChunk):
            self.body_bytes += len(event.data)
        elif isinstance(event, milter.EndOfMessage):
            self.messages += 1
            queue_id = self.conn.macro("i") or "none"
            return [
                milter.InsertHeader(0, b"X-Dkimd-Test", b" queue=" + queue_id.encode()),
                milter.AddHeader(b"X-Dkimd-Count", b" %d" % self.messages),
                milter.Continue(),
            ]
        return None

    def provide(self, answer: object) -> HandlerResult:
        raise AssertionError("this handler never asks for outside work")

    def close(self) -> None:
        pass


PF = milter.ProtocolFlag
NO_REPLIES = (
    PF.SKIP | PF.HDR_LEADSPC | PF.NR_CONN | PF.NR_HELO | PF.NR_MAIL | PF.NR_RCPT
    | PF.NR_DATA | PF.NR_UNKN | PF.NR_HDR | PF.NR_EOH | PF.NR_BODY
)  # fmt: skip


@pytest.mark.parametrize(
    ("version", "steps", "leadspc", "protocol"),
    [
        (6, 0x1FFFFF, 1, None),
        (6, 0x1FFFFF, 1, NO_REPLIES),
        (2, 0x7F, 0, None),
    ],
    ids=["postfix-v6", "postfix-v6-no-replies", "postfix-v2"],
)
def test_miltertest_drives_dkimd(
    version: int, steps: int, leadspc: int, protocol: milter.ProtocolFlag | None
) -> None:
    miltertest = require("miltertest")
    handlers: list[AddHeaders] = []

    def factory(info: ConnectionInfo) -> AddHeaders:
        handlers.append(AddHeaders(info))
        return handlers[-1]

    async def main() -> tuple[int, bytes, bytes]:
        options = (
            milter.FilterOptions() if protocol is None else milter.FilterOptions(protocol=protocol)
        )
        server = MilterServer(factory, options)
        sock = bind_socket("inet:0@127.0.0.1")
        port = sock.getsockname()[1]
        serving = asyncio.create_task(server.serve(sock))
        proc = await asyncio.create_subprocess_exec(
            miltertest,
            "-s", str(SCRIPT),
            "-D", f"port={port}",
            "-D", f"version={version}",
            "-D", f"steps={steps}",
            "-D", f"leadspc={leadspc}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        await server.stop(5)
        await serving
        assert proc.returncode is not None
        return proc.returncode, out, err

    rc, out, err = asyncio.run(main())
    assert rc == 0, (out + err).decode(errors="replace")
    assert b"dkimd-miltertest-ok" in out
    (handler,) = handlers
    assert handler.messages == 2
    assert handler.body_bytes >= 200000
    negotiated = handler.conn.negotiated
    assert negotiated is not None
    assert negotiated.version == version
    if protocol is not None:
        assert negotiated.protocol == protocol  # miltertest then reads no reply per event
