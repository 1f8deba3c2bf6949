"""Events: what the MTA told us, one per milter command (SMFIC_*).

Events are frozen, slotted dataclasses that validate in their constructor and raise
``LocalProtocolError`` when built with bad values; ``Connection`` converts that into
``RemoteProtocolError`` when the bad values came off the wire.

Text fields (host names, addresses, ESMTP arguments, macro values) are ``str`` decoded
as UTF-8 with ``surrogateescape``, so 8-bit input survives a round trip. Message content
(header fields, body) stays ``bytes``.

Header values follow the project convention (docs/ARCHITECTURE.md): ``value`` is
everything after the colon, leading whitespace included. When the MTA did not agree to
SMFIP_HDR_LEADSPC it strips that whitespace; ``Connection`` then puts back one space
(what nearly every header has, and what Postfix itself assumes when it re-inserts a
header: milter8.c ``MILTER8_HDR_SPACE``).

Which events the MTA expects a reply to: every one except ``Abort``, ``Quit``,
``QuitNewConnection`` and ``ConnectionClosed``, and except the stages whose SMFIP_NR_*
flag was negotiated. ``Connection`` keeps track; see ``Connection.send``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .constants import Action, Command, Family, ProtocolFlag
from .errors import LocalProtocolError

__all__ = [
    "Abort",
    "BodyChunk",
    "Connect",
    "ConnectionClosed",
    "Data",
    "EndOfHeaders",
    "EndOfMessage",
    "Event",
    "Header",
    "Helo",
    "Macros",
    "MailFrom",
    "OptionNegotiation",
    "Quit",
    "QuitNewConnection",
    "RcptTo",
    "Unknown",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all milter events."""

    #: The SMFIC_* command this event came from (0 for ``ConnectionClosed``).
    command: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class OptionNegotiation(Event):
    """SMFIC_OPTNEG: the MTA's offer. ``Connection`` computes the answer itself."""

    command: ClassVar[int] = Command.OPTNEG
    version: int
    actions: Action
    protocol: ProtocolFlag

    def __post_init__(self) -> None:
        if not 0 <= self.version <= 0xFFFFFFFF:
            raise LocalProtocolError(f"bad protocol version {self.version}")


@dataclass(frozen=True, slots=True)
class Macros(Event):
    """SMFIC_MACRO: macro values for the command ``stage`` that follows.

    ``stage`` is the command byte the macros belong to (``Command.CONNECT``, ...). What
    ``codec.decode`` makes of a macro packet; ``Connection`` gives no such event, it keeps
    the values for ``Connection.macros`` / ``Connection.macro(name)``.
    """

    command: ClassVar[int] = Command.MACRO
    stage: int
    macros: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connect(Event):
    """SMFIC_CONNECT: the SMTP client.

    ``hostname`` is the client's name, or ``[address]`` when it has none (Postfix turns
    its "unknown" into the Sendmail form). ``port`` and ``address`` are 0 and "" for
    ``Family.UNKNOWN``.
    """

    command: ClassVar[int] = Command.CONNECT
    hostname: str
    family: Family
    port: int = 0
    address: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise LocalProtocolError(f"bad port {self.port}")


@dataclass(frozen=True, slots=True)
class Helo(Event):
    """SMFIC_HELO: the HELO/EHLO argument.

    Postfix may send this in the middle of a transaction (a client that says EHLO after
    MAIL FROM): smtpd.c ``helo_cmd`` reports HELO, then resets the transaction, which
    sends an ``Abort``. ``Connection`` treats such a Helo as the end of the transaction.
    """

    command: ClassVar[int] = Command.HELO
    name: str


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """SMFIC_MAIL: the envelope sender (usually in angle brackets) and ESMTP args."""

    command: ClassVar[int] = Command.MAIL
    address: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """SMFIC_RCPT: one envelope recipient and its ESMTP args."""

    command: ClassVar[int] = Command.RCPT
    address: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Data(Event):
    """SMFIC_DATA: the DATA command (protocol version 4 and later only)."""

    command: ClassVar[int] = Command.DATA


@dataclass(frozen=True, slots=True)
class Header(Event):
    """SMFIC_HEADER: one header field; ``name + b":" + value`` is the field as sent."""

    command: ClassVar[int] = Command.HEADER
    name: bytes
    value: bytes

    def __post_init__(self) -> None:
        if not self.name:
            raise LocalProtocolError("empty header name")


@dataclass(frozen=True, slots=True)
class EndOfHeaders(Event):
    """SMFIC_EOH: no more headers; body chunks (if any) follow."""

    command: ClassVar[int] = Command.EOH


@dataclass(frozen=True, slots=True)
class BodyChunk(Event):
    """SMFIC_BODY: a piece of the body, CRLF line ends, at most 65535 bytes from Postfix.

    Chunk boundaries are arbitrary: they can split lines and CRLF pairs.
    """

    command: ClassVar[int] = Command.BODY
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage(Event):
    """SMFIC_BODYEOB: end of the message; reply with modifications, then a final action.

    ``data`` is a last body chunk. Postfix never sends one, Sendmail may; libmilter
    (engine.c ``st_bodyend``) passes it to the body callback first, and so must callers.
    """

    command: ClassVar[int] = Command.BODYEOB
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Abort(Event):
    """SMFIC_ABORT: forget the current message (if any). The connection stays open."""

    command: ClassVar[int] = Command.ABORT


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """SMFIC_QUIT: the MTA is done with this milter connection."""

    command: ClassVar[int] = Command.QUIT


@dataclass(frozen=True, slots=True)
class QuitNewConnection(Event):
    """SMFIC_QUIT_NC: this SMTP session is over, a new one (``Connect``) follows."""

    command: ClassVar[int] = Command.QUIT_NC


@dataclass(frozen=True, slots=True)
class Unknown(Event):
    """SMFIC_UNKNOWN: an SMTP command the MTA did not recognise (v3+), as received."""

    command: ClassVar[int] = Command.UNKNOWN
    line: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The MTA closed the socket (``receive_data(b"")``) on a packet boundary."""
