"""ResignMailTo and ResignAll: verify mail to listed recipients and sign it again.

As opendkim.conf(5) documents them and OpenDKIM's source does them (opendkim.c mlfi_eoh and
mlfi_eom, built with _FFR_RESIGN; Debian's 2.11 binary is not, and refuses both names as
unrecognized parameters):

* **ResignMailTo** (data set): each recipient is looked up as the full address, then its
  host, then each of the host's parent domains with a leading dot (`.example.com`,
  `.com`); recipients are tried newest first (OpenDKIM's list is built by prepending at
  RCPT) and the first hit wins. The hit's value names the KeyTable key to sign with; with
  no KeyTable, or an empty value, the single key (Domain/Selector/KeyFile, for the author's
  domain) is used. A hit makes the message originating whatever InternalHosts says, and
  takes the place of the signing-table lookup. A key that cannot be had tempfails the
  message at end of headers, as a broken SigningTable entry does.
* The message is then verified as usual (Authentication-Results, On-* actions) and, at end
  of message, signed too: only when a signature verified, unless **ResignAll** is set. The
  new signature covers the Authentication-Results field just added. A message with no
  DKIM-Signature is simply signed.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dkimd.config import Config

__all__ = ["ResignHit", "recipient_keys", "resign_hit", "should_sign"]


@dataclass(frozen=True, slots=True)
class ResignHit:
    """The recipient that matched, the key it names ("" for the default key)."""

    recipient: str
    key_name: str


def recipient_keys(address: str) -> list[str]:
    """Full address, host, then each parent domain with a leading dot (mlfi_eoh); what
    dkimd.stores.prefetch fetches for a ResignMailTo behind a server."""
    out = [address]
    at = address.find("@")
    if at < 0:
        return out
    host = address[at + 1 :]
    out.append(host)
    dot = address.find(".", at)
    while dot >= 0:
        out.append(address[dot:])
        dot = address.find(".", dot + 1)
    return out


def resign_hit(config: Config, recipients: Sequence[str]) -> ResignHit | None:
    """The first ResignMailTo match among `recipients` (newest first), or None."""
    table = config.resign_mail_to
    if table is None:
        return None
    for recipient in reversed(recipients):
        for key in recipient_keys(recipient):
            value = table.lookup(key)
            if value is not None:
                return ResignHit(recipient, value if config.key_table is not None else "")
    return None


def should_sign(config: Config, verified: bool) -> bool:
    """Whether a re-signed message gets its signature: it verified, or ResignAll."""
    return verified or config.resign_all
