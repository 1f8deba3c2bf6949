"""IdentityHeader and IdentityHeaderRemove: the signature's i= from a header field.

As opendkim.conf(5) documents them and OpenDKIM's source does them (opendkim.c, built with
_FFR_IDENTITY_HEADER; Debian's 2.11 binary is not, and refuses both names as unrecognized
parameters):

* **IdentityHeader NAME**: when a message is signed, the first NAME field's address becomes
  the agent or user identifier (i=) of every signature that has none from the tables
  (KeyTable's signer). With no such field, or none that holds an address, i= is
  `@<author domain>` and "cannot find identity header NAME" is logged.
* **IdentityHeaderRemove**: the NAME fields are left out of the signature, and at end of
  message the (first) NAME field is deleted, so the identity does not travel on.

One addition: an identity outside the signing domain would make the signature invalid
(RFC 6376 section 3.5: i= must be d= or a subdomain of it), so such a signature keeps no
explicit i= and the mismatch is logged.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from dkimd import milter
from dkimd.config import Config
from dkimd.dkim import HeaderField, SigningRequest, name_key
from dkimd.policy import parse_address

__all__ = ["Identity", "identity_for", "removal", "signed_fields", "with_identity"]


@dataclass(frozen=True, slots=True)
class Identity:
    """The i= value for this message's signatures, and whether the field supplied it."""

    value: str
    found: bool


def identity_for(config: Config, headers: Sequence[HeaderField], sender: str) -> Identity | None:
    """The identity IdentityHeader gives a message from `sender`, or None when unset."""
    name = config.identity_header
    if name is None:
        return None
    key = name_key(name)
    for h in headers:
        if h.key == key:
            address = parse_address(h.value)
            if address is not None:
                return Identity(address, True)
            break
    return Identity("@" + sender.rpartition("@")[2], False)


def with_identity(
    requests: Sequence[SigningRequest], identity: str
) -> tuple[list[SigningRequest], list[str]]:
    """`requests` with i= set where the tables set none, and the domains refused it."""
    out: list[SigningRequest] = []
    refused: list[str] = []
    idomain = identity.rpartition("@")[2].lower().rstrip(".")
    for r in requests:
        sdid = r.domain.lower().rstrip(".")
        if r.identity is not None:
            out.append(r)
        elif idomain == sdid or idomain.endswith("." + sdid):
            out.append(replace(r, identity=identity))
        else:
            refused.append(r.domain)
            out.append(r)
    return out, refused


def signed_fields(config: Config, headers: Sequence[HeaderField]) -> Sequence[HeaderField]:
    """The fields the signatures cover: without the identity field when it is removed."""
    name = config.identity_header
    if name is None or not config.identity_header_remove:
        return headers
    key = name_key(name)
    return [h for h in headers if h.key != key]


def removal(config: Config, headers: Sequence[HeaderField]) -> list[milter.Action]:
    """The deletion of the identity field at end of message (IdentityHeaderRemove)."""
    name = config.identity_header
    if name is None or not config.identity_header_remove:
        return []
    key = name_key(name)
    if not any(h.key == key for h in headers):
        return []
    return [milter.ChangeHeader(1, name.encode("utf-8", "surrogateescape"), b"")]
