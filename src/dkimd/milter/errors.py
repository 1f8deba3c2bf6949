"""Milter protocol errors: one root, split by whose fault it is (the h11 model).

``LocalProtocolError``: we misused the protocol (replying twice, a modification outside
end-of-message, an action that was not negotiated). A bug in the caller.

``RemoteProtocolError``: the MTA sent something we cannot accept (bad framing, a payload
that does not parse, a command out of order). The connection is unusable afterwards; the
server closes it and the MTA applies its ``milter_default_action``.

Every leaf class has a docstring that serves as its default message.
"""

from __future__ import annotations

__all__ = [
    "LocalProtocolError",
    "MalformedPacket",
    "PacketTooLarge",
    "ProtocolError",
    "RemoteProtocolError",
    "UnexpectedCommand",
]


class ProtocolError(Exception):
    """Milter protocol error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else (self.__doc__ or "").strip())


class LocalProtocolError(ProtocolError):
    """Milter protocol misuse by the filter."""


class RemoteProtocolError(ProtocolError):
    """Milter protocol violation by the MTA."""


class MalformedPacket(RemoteProtocolError):
    """Malformed milter packet."""


class PacketTooLarge(RemoteProtocolError):
    """Milter packet larger than the configured maximum."""


class UnexpectedCommand(RemoteProtocolError):
    """Milter command not valid in the current state."""
