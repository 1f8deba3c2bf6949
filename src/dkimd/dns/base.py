"""The one interface the DKIM verifier and the key tools use to fetch TXT records.

Failures are values, not exceptions: the verifier maps them straight onto DKIM results
(RFC 6376 section 6.1.2: a key that cannot be fetched for a temporary reason is a
temperror, a name that does not exist or a record that cannot be used is a permerror).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class TxtStatus(enum.Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"  # the name does not exist, or has no TXT record (NODATA)
    SERVFAIL = "servfail"  # the server failed to answer
    TIMEOUT = "timeout"  # no answer within the configured time
    ERROR = "error"  # anything else: malformed answer, CNAME loop, refused

    @property
    def is_temporary(self) -> bool:
        return self in (TxtStatus.SERVFAIL, TxtStatus.TIMEOUT)


class DnssecStatus(enum.Enum):
    """What DNSSEC says about an answer, as libunbound tells OpenDKIM (RFC 4035 section 4.3).

    The value is the word OpenDKIM writes after the key size in an A-R item (its
    dkimf_ar_all_sigs): an insecure answer is "unprotected".
    """

    SECURE = "secure"  # validated from a trust anchor down to the record
    INSECURE = "unprotected"  # provably unsigned (or no trust anchor covers the name)
    BOGUS = "bogus"  # should be signed but does not validate: forged, expired, broken


@dataclass(frozen=True, slots=True)
class TxtResult:
    """The TXT records at one name.

    `records` holds one bytes value per TXT record, its character-strings already
    concatenated (RFC 6376 section 3.6.2.2). Empty unless status is OK. `dnssec` is set
    by a validating lookup (dkimd.dns.validating); None when the source does not know.
    """

    name: str
    status: TxtStatus
    records: tuple[bytes, ...] = ()
    detail: str = ""
    dnssec: DnssecStatus | None = None

    @property
    def ok(self) -> bool:
        return self.status is TxtStatus.OK


class TxtLookup(Protocol):
    async def lookup_txt(self, name: str) -> TxtResult:
        """Fetch the TXT records at `name` (a fully qualified name, no trailing dot needed)."""
        ...


@runtime_checkable
class CachingTxtLookup(TxtLookup, Protocol):
    """A lookup that can also answer from memory without awaiting anything.

    The milter asks `cached` first at end-of-headers: a hit needs no task and no trip
    through the event loop, which is most messages on a busy server.
    """

    def cached(self, name: str) -> TxtResult | None:
        """The answer if it is already known (and still valid), else None."""
        ...
