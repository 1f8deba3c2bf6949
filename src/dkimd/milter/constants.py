"""Milter protocol constants: command codes, reply codes, action and protocol flags.

Values come from sendmail's ``libmilter/mfdef.h`` and are the same ones Postfix
re-declares in ``src/milter/milter8.c`` ("Use our own protocol definitions, so that
Postfix can be built even when libmilter is not installed").

Wire format (mfdef.h, milter8.c ``milter8_write_cmd``): every packet is a 4-byte
big-endian length that counts the command byte plus the payload, then the one command
byte, then the payload. Integers in payloads are 32-bit (``HLONG``) or 16-bit (``NSHORT``)
big-endian; strings are NUL-terminated.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "DEFAULT_MAX_PACKET",
    "MAX_BODY_CHUNK",
    "MAX_VERSION",
    "MIN_VERSION",
    "Action",
    "Command",
    "Family",
    "MacroStage",
    "ProtocolFlag",
    "Reply",
]

#: Oldest protocol version we talk (Postfix ``milter_protocol = 2``).
MIN_VERSION: Final = 2
#: Newest protocol version we talk (``SMFI_PROT_VERSION`` in mfdef.h, Postfix's default).
MAX_VERSION: Final = 6

#: Postfix sends body chunks of at most ``MILTER_CHUNK_SIZE`` = 65535 bytes (milter8.c);
#: libmilter splits ``smfi_replacebody`` data the same way, so we do too.
MAX_BODY_CHUNK: Final = 65535

#: Default cap on one incoming packet (length field, i.e. command byte + payload).
#: Body chunks are <= 64 KiB; the biggest other packet is a header, bounded by Postfix's
#: ``header_size_limit`` (default 102400). 1 MiB leaves room and still bounds memory.
DEFAULT_MAX_PACKET: Final = 1024 * 1024


class Command(enum.IntEnum):
    """SMFIC_*: commands from the MTA to the filter (mfdef.h)."""

    ABORT = ord("A")  # SMFIC_ABORT: abort current message, keep the connection
    BODY = ord("B")  # SMFIC_BODY: body chunk
    CONNECT = ord("C")  # SMFIC_CONNECT: SMTP connection information
    MACRO = ord("D")  # SMFIC_MACRO: define macros for the next command
    BODYEOB = ord("E")  # SMFIC_BODYEOB: end of body (may carry a last chunk)
    HELO = ord("H")  # SMFIC_HELO: HELO/EHLO argument
    QUIT_NC = ord("K")  # SMFIC_QUIT_NC: quit this SMTP session, a new one follows (v6)
    HEADER = ord("L")  # SMFIC_HEADER: one header field
    MAIL = ord("M")  # SMFIC_MAIL: MAIL FROM + ESMTP args
    EOH = ord("N")  # SMFIC_EOH: end of headers
    OPTNEG = ord("O")  # SMFIC_OPTNEG: option negotiation
    QUIT = ord("Q")  # SMFIC_QUIT: close the milter connection
    RCPT = ord("R")  # SMFIC_RCPT: RCPT TO + ESMTP args
    DATA = ord("T")  # SMFIC_DATA: DATA command (v4+)
    UNKNOWN = ord("U")  # SMFIC_UNKNOWN: an SMTP command the MTA did not recognise (v3+)


class Reply(enum.IntEnum):
    """SMFIR_*: replies and modification requests from the filter to the MTA (mfdef.h)."""

    ADDRCPT = ord("+")  # add recipient
    DELRCPT = ord("-")  # remove recipient
    ADDRCPT_PAR = ord("2")  # add recipient with ESMTP args (v6)
    SHUTDOWN = ord("4")  # 421: shutdown
    ACCEPT = ord("a")
    REPLBODY = ord("b")  # replace body (one chunk)
    CONTINUE = ord("c")
    DISCARD = ord("d")
    CHGFROM = ord("e")  # change envelope sender (v6)
    CONN_FAIL = ord("f")
    ADDHEADER = ord("h")
    INSHEADER = ord("i")  # insert header at index
    SETSYMLIST = ord("l")  # only inside the OPTNEG reply, never sent alone
    CHGHEADER = ord("m")  # change (or, with an empty value, delete) header
    OPTNEG = ord("O")  # option negotiation reply
    PROGRESS = ord("p")  # still working, reset the MTA's timeout
    QUARANTINE = ord("q")
    REJECT = ord("r")
    SKIP = ord("s")  # skip further events of this type (v6, needs SMFIP_SKIP)
    TEMPFAIL = ord("t")
    REPLYCODE = ord("y")  # explicit "ddd d.d.d text" SMTP reply


class Action(enum.IntFlag):
    """SMFIF_*: modifications the filter may request at end of message (mfdef.h)."""

    NONE = 0
    ADDHDRS = 0x01
    CHGBODY = 0x02
    ADDRCPT = 0x04
    DELRCPT = 0x08
    CHGHDRS = 0x10
    QUARANTINE = 0x20
    CHGFROM = 0x40  # v6
    ADDRCPT_PAR = 0x80  # v6
    SETSYMLIST = 0x100  # v6: filter sends the macro names it wants per stage


class ProtocolFlag(enum.IntFlag):
    """SMFIP_*: events the MTA should not send, replies it should not expect, extensions.

    The NO* flags ask the MTA not to send an event; the NR_* flags tell it the filter
    will not reply to an event (mfdef.h; Postfix milter8.c ``SMFIP_NOREPLY_MASK``).
    """

    NONE = 0
    NOCONNECT = 0x01
    NOHELO = 0x02
    NOMAIL = 0x04
    NORCPT = 0x08
    NOBODY = 0x10
    NOHDRS = 0x20
    NOEOH = 0x40
    NR_HDR = 0x80  # a.k.a. SMFIP_NOHREPL (Sendmail 8.13, Postfix "no_header_reply")
    NOUNKNOWN = 0x100
    NODATA = 0x200
    SKIP = 0x400  # MTA understands SMFIR_SKIP
    RCPT_REJ = 0x800  # filter wants rejected recipients too
    NR_CONN = 0x1000
    NR_HELO = 0x2000
    NR_MAIL = 0x4000
    NR_RCPT = 0x8000
    NR_DATA = 0x10000
    NR_UNKN = 0x20000
    NR_EOH = 0x40000
    NR_BODY = 0x80000
    HDR_LEADSPC = 0x100000  # header values keep their leading space, both directions


#: All the no-reply flags (Postfix milter8.c ``SMFIP_NOREPLY_MASK``).
NOREPLY_MASK: Final = (
    ProtocolFlag.NR_CONN
    | ProtocolFlag.NR_HELO
    | ProtocolFlag.NR_MAIL
    | ProtocolFlag.NR_RCPT
    | ProtocolFlag.NR_DATA
    | ProtocolFlag.NR_UNKN
    | ProtocolFlag.NR_HDR
    | ProtocolFlag.NR_EOH
    | ProtocolFlag.NR_BODY
)

#: What Postfix 3.x offers in SMFIC_OPTNEG (milter8.c ``milter8_connect``): the action
#: mask is the same for every version; the protocol mask depends on ``milter_protocol``.
POSTFIX_ACTIONS: Final = Action(0x1FF)
#: ``MILTER8_V2_PROTO_MASK``: only the seven NO* flags of protocol version 2.
POSTFIX_V2_PROTOCOL: Final = ProtocolFlag(0x7F)
#: ``MILTER8_V6_PROTO_MASK``: V4 mask + SKIP + RCPT_REJ + all NR_* + HDR_LEADSPC.
POSTFIX_V6_PROTOCOL: Final = ProtocolFlag(0x1FFFFF)

#: Which NR_* flag silences the reply to which command.
NO_REPLY_FLAG: Final[dict[int, ProtocolFlag]] = {
    Command.CONNECT: ProtocolFlag.NR_CONN,
    Command.HELO: ProtocolFlag.NR_HELO,
    Command.MAIL: ProtocolFlag.NR_MAIL,
    Command.RCPT: ProtocolFlag.NR_RCPT,
    Command.DATA: ProtocolFlag.NR_DATA,
    Command.UNKNOWN: ProtocolFlag.NR_UNKN,
    Command.HEADER: ProtocolFlag.NR_HDR,
    Command.EOH: ProtocolFlag.NR_EOH,
    Command.BODY: ProtocolFlag.NR_BODY,
}

#: Commands the MTA never waits a reply for (libmilter engine.c: macros, abort and the
#: quits are "no reply" commands).
NEVER_REPLIED: Final = frozenset({Command.MACRO, Command.ABORT, Command.QUIT, Command.QUIT_NC})


class Family(enum.Enum):
    """SMFIA_*: address family byte in SMFIC_CONNECT."""

    UNKNOWN = "U"
    UNIX = "L"
    INET = "4"
    INET6 = "6"


class MacroStage(enum.IntEnum):
    """SMFIM_*: stage numbers used in the SETSYMLIST part of the OPTNEG reply."""

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6
