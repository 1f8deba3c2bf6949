"""Play the MTA against a MilterSession that negotiates as the server does.

`Mta` offers everything (miltertest and Postfix both do), lets the session pick its options
with `filter_options_for`, and records every reply the MTA would see, per stage.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo
from dkimd.negotiation import filter_options_for
from dkimd.session import MilterSession, Runtime, RuntimeHolder
from support.handler import settle
from support.milterwire import pkt


class Mta:
    """Plays the MTA; `replies` maps each stage to what the filter answered there."""

    def __init__(
        self,
        config_text: str,
        client: str = "198.51.100.7",
        *,
        records: dict[str, str] | None = None,
        mail_macros: dict[str, str] | None = None,
        recipients: Sequence[str] = (),
    ) -> None:
        self.client = client
        self.mail_macros = mail_macros or {}
        self.recipients = recipients
        config = parse_config_text(config_text + "AuthservID unknown.example\n")
        self.conn = milter.Connection(filter_options_for(config))
        holder = RuntimeHolder(Runtime.build(config, TestDnsFile.from_records(records or {})))
        self.session = MilterSession(ConnectionInfo(self.conn, "test"), holder)
        self.replies: list[tuple[str, list[milter.Action]]] = []

    async def _feed(self, stage: str, data: bytes) -> None:
        self.conn.receive_data(data)
        while (event := self.conn.next_event()) is not milter.NEED_DATA:
            if isinstance(event, milter.OptionNegotiation):
                self.conn.send(milter.Continue())
                continue
            waited = self.conn.reply_expected
            result = await settle(self.session, self.session.handle(event))
            actions = (
                []
                if result is None
                else ([result] if isinstance(result, milter.Action) else list(result))
            )
            self.conn.send_many(actions)  # checks each reply is allowed here
            if waited:
                self.replies.append((stage, actions or [milter.Continue()]))

    async def _message(self, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
        offer = struct.pack(">III", 6, 0x1FF, 0x1FFFFF)
        client = b"client.example\x004" + struct.pack(">H", 2525) + self.client.encode() + b"\x00"
        await self._feed("connect", pkt(b"O", offer) + pkt(b"C", client))
        macros = b"".join(
            k.encode() + b"\0" + v.encode() + b"\0" for k, v in self.mail_macros.items()
        )
        await self._feed("mail", pkt(b"D", b"M" + macros) + pkt(b"M", b"<user@example.com>\x00"))
        negotiated = self.conn.negotiated
        if negotiated is not None and not negotiated.protocol & milter.ProtocolFlag.NORCPT:
            for rcpt in self.recipients:  # as Postfix: no RCPT for a filter that declines it
                await self._feed("rcpt", pkt(b"R", rcpt.encode() + b"\x00"))
        for name, value in headers:
            await self._feed("header", pkt(b"L", name + b"\x00" + value + b"\x00"))
            if self.final() is not None:  # the message ended there (MaximumHeaders)
                return
        await self._feed("eoh", pkt(b"N"))
        if self.final() is None:
            await self._feed("body", pkt(b"B", body))
            await self._feed("eom", pkt(b"E"))

    def run(self, headers: Sequence[tuple[bytes, bytes]], body: bytes = b"hi\r\n") -> None:
        asyncio.run(self._message(headers, body))

    def at(self, stage: str) -> list[milter.Action]:
        return [a for s, actions in self.replies if s == stage for a in actions]

    def final(self) -> milter.Action | None:
        for _, actions in self.replies:
            if not isinstance(actions[-1], (milter.Continue, milter.Skip)):
                return actions[-1]
        return None
