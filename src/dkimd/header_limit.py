"""MaximumHeaders: how much header data a message may bring before the filter stops it.

OpenDKIM (opendkim.c mlfi_header; observed with the Debian 2.11 binary) keeps a copy of
every header field, so it bounds them: before storing a field it checks

    stored so far + len(name) + len(value as received) + 2 > MaximumHeaders

and, when that holds, logs "too much header data" and answers *that header* with the
On-Security action as a bare code (dkimf_miltercode: tempfail by default, reject,
discard, accept; quarantine accepts, as smfi_quarantine is refused before end of
message). What counts as stored is `len(name) + 1 + len(value) + 1` of the kept copy:
without SMFIP_HDR_LEADSPC the copy loses the value's leading whitespace, so a value
counts with its leading space in the check and without it in the running total. The
default is 65536 bytes; 0 means no limit.

The reply can only go out at the header when the MTA expects replies to headers, which
dkimd asks for only when MaximumHeaders is set in the configuration (`replies_at_header`):
every header reply is a round trip. Under the default limit the same verdict ends the
message at the next stage that is answered (end of headers or of message), and no more
header data is kept meanwhile.

Pure: no I/O.
"""

from __future__ import annotations

import sys

from dkimd import milter
from dkimd.config import Condition, Config
from dkimd.replies import miltercode

__all__ = ["HeaderBudget", "replies_at_header", "verdict"]

LOG_TEXT = "too much header data"


class HeaderBudget:
    """The header bytes one message has used, against MaximumHeaders.

    The caller adds each field's size as received to `raw` (cheap, inline) and asks
    `take` only once `raw` passes `limit`, or for every field without SMFIP_HDR_LEADSPC:
    what OpenDKIM counts never exceeds the raw sizes, and differs from them only by the
    leading whitespace a kept copy loses without LEADSPC (`stripped`).
    """

    __slots__ = ("leading_space", "limit", "raw", "stripped")

    def __init__(self, limit: int, *, leading_space: bool) -> None:
        self.limit = limit if limit > 0 else sys.maxsize
        #: SMFIP_HDR_LEADSPC on this connection: values are kept with their leading space.
        self.leading_space = leading_space
        self.raw = 0
        self.stripped = 0

    def add(self, name: bytes, value: bytes) -> bool:
        """Count one field (MilterSession._on_header does the same inline, as a call per
        field costs): False once the message passed the limit."""
        self.raw += len(name) + len(value) + 2
        return (self.raw <= self.limit and self.leading_space) or self.take(name, value)

    def take(self, name: bytes, value: bytes) -> bool:
        """OpenDKIM's exact check for the field just added to `raw`; False when it would
        pass the limit (the field is not kept)."""
        if self.raw - self.stripped > self.limit:
            return False
        if not self.leading_space:
            self.stripped += len(value) - len(value.lstrip(b" \t\r\n\v\f"))
        return True


def verdict(config: Config) -> milter.FinalAction:
    """The reply once the limit is passed: the On-Security action, with no text."""
    return miltercode(config.action_for(Condition.SECURITY))


def replies_at_header(config: Config) -> bool:
    """Whether to ask the MTA for replies to header fields: MaximumHeaders set to a limit
    in the configuration (the default limit is enforced all the same, one stage later)."""
    raw = config.raw
    return raw is not None and raw.get("MaximumHeaders") is not None and config.maximum_headers > 0
