"""The milter protocol (Sendmail 8 mail filter API, versions 2 to 6), sans I/O.

Nothing here reads or writes a socket or imports asyncio: ``Connection`` turns bytes
from the MTA into events and actions into bytes (the h11 model). ``dkimd.server`` is the
asyncio edge that pumps bytes between a socket and a ``Connection``.

Modules: ``constants`` (SMFIC/SMFIR/SMFIF/SMFIP values), ``errors``, ``events``,
``actions``, ``codec`` (framing, payload parsing, encoding), ``state`` (the one state
table), ``options`` (negotiation), ``connection``.

Sources: sendmail libmilter ``mfdef.h``/``engine.c``, Postfix ``src/milter/milter8.c``
and ``smtpd.c``; see comments at each use.
"""

from .actions import (
    Accept,
    Action,
    AddHeader,
    AddRecipient,
    AddRecipientWithArgs,
    ChangeHeader,
    ChangeSender,
    Continue,
    DeleteRecipient,
    Discard,
    FinalAction,
    InsertHeader,
    Modification,
    Progress,
    Quarantine,
    Reject,
    ReplaceBody,
    ReplyCode,
    Skip,
    TempFail,
)
from .connection import NEED_DATA, Connection, NeedData
from .constants import (
    DEFAULT_MAX_PACKET,
    Command,
    Family,
    MacroStage,
    ProtocolFlag,
)
from .constants import Action as ActionFlag
from .errors import (
    LocalProtocolError,
    MalformedPacket,
    PacketTooLarge,
    ProtocolError,
    RemoteProtocolError,
    UnexpectedCommand,
)
from .events import (
    Abort,
    BodyChunk,
    Connect,
    ConnectionClosed,
    Data,
    EndOfHeaders,
    EndOfMessage,
    Event,
    Header,
    Helo,
    Macros,
    MailFrom,
    OptionNegotiation,
    Quit,
    QuitNewConnection,
    RcptTo,
    Unknown,
)
from .options import FilterOptions, Negotiated
from .state import State

__all__ = [
    "DEFAULT_MAX_PACKET",
    "NEED_DATA",
    "Abort",
    "Accept",
    "Action",
    "ActionFlag",
    "AddHeader",
    "AddRecipient",
    "AddRecipientWithArgs",
    "BodyChunk",
    "ChangeHeader",
    "ChangeSender",
    "Command",
    "Connect",
    "Connection",
    "ConnectionClosed",
    "Continue",
    "Data",
    "DeleteRecipient",
    "Discard",
    "EndOfHeaders",
    "EndOfMessage",
    "Event",
    "Family",
    "FilterOptions",
    "FinalAction",
    "Header",
    "Helo",
    "InsertHeader",
    "LocalProtocolError",
    "MacroStage",
    "Macros",
    "MailFrom",
    "MalformedPacket",
    "Modification",
    "NeedData",
    "Negotiated",
    "OptionNegotiation",
    "PacketTooLarge",
    "Progress",
    "ProtocolError",
    "ProtocolFlag",
    "Quarantine",
    "Quit",
    "QuitNewConnection",
    "RcptTo",
    "Reject",
    "RemoteProtocolError",
    "ReplaceBody",
    "ReplyCode",
    "Skip",
    "State",
    "TempFail",
    "UnexpectedCommand",
    "Unknown",
]
