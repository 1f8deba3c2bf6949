"""MilterDebug (dkimd.milter_trace): the protocol trace per level, from the bytes an MTA
sends, and the plain Connection when it is 0."""

from __future__ import annotations

import logging
import struct

import pytest

from dkimd import milter
from dkimd.config import parse_config_text
from dkimd.milter import Connection, FilterOptions
from dkimd.milter_trace import TracingConnection, connection_factory
from support.milterwire import pkt, z

BODY = "x" * 300
CONVERSATION = b"".join(
    [
        pkt("O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)),
        pkt("C", z("client.example") + b"4" + struct.pack(">H", 4000) + z("192.0.2.1")),
        pkt("M", z("<a@example.org>")),
        pkt("R", z("<b@example.net>")),
        pkt("L", z("From", " a@example.org")),
        pkt("N"),
        pkt("B", BODY.encode()),
        pkt("E"),
        pkt("Q"),
    ]
)


def _converse(level: int, caplog: pytest.LogCaptureFixture) -> list[str]:
    conn = connection_factory(level)(FilterOptions(), milter.DEFAULT_MAX_PACKET)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dkimd.milter.trace"):
        conn.receive_data(CONVERSATION)
        while True:
            event = conn.next_event()
            if event is milter.NEED_DATA or isinstance(event, milter.Quit):
                break
            if isinstance(event, milter.EndOfMessage):
                conn.send_many([milter.AddHeader(b"X-Test", b" yes"), milter.Accept()])
            else:
                conn.send(milter.Continue())
    return [r.getMessage() for r in caplog.records]


def test_level_0_is_the_plain_connection(caplog: pytest.LogCaptureFixture) -> None:
    conn = connection_factory(0)(FilterOptions(), milter.DEFAULT_MAX_PACKET)
    assert type(conn) is Connection
    assert _converse(0, caplog) == []


def test_level_1_says_the_negotiation(caplog: pytest.LogCaptureFixture) -> None:
    lines = _converse(1, caplog)
    assert lines[0].startswith("milter #1: MTA: OptionNegotiation(version=6")
    assert lines[1].startswith("milter #1: agreed: ")
    assert len(lines) == 2


def test_level_2_names_every_command_and_reply(caplog: pytest.LogCaptureFixture) -> None:
    lines = _converse(2, caplog)
    assert "milter #1: MTA: Header" in lines and "milter #1: MTA: EndOfMessage" in lines
    assert any(line.startswith("milter #1: filter: AddHeader, Accept (") for line in lines)
    assert not any("a@example.org" in line for line in lines)


def test_level_3_shows_contents_cut_and_4_whole(caplog: pytest.LogCaptureFixture) -> None:
    cut = _converse(3, caplog)
    assert any("a@example.org" in line for line in cut)
    [body] = [line for line in cut if "MTA: Body" in line]
    assert BODY not in body and "characters)" in body
    whole = _converse(4, caplog)
    assert any(BODY in line for line in whole)


def test_the_option(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_config_text("").milter_debug == 0
    assert parse_config_text("MilterDebug 6\n").milter_debug == 6
    conn = connection_factory(6)(FilterOptions(), 1024)
    assert isinstance(conn, TracingConnection) and conn.trace_level == 6
