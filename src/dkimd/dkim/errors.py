"""The one exception tree of the DKIM engine.

Every parser in `dkimd.dkim` either returns a value or raises a subclass of `DkimError`; nothing
else escapes on hostile input. The verifier turns these into result values (RFC 6376 section 6.1:
a signature or key record that cannot be parsed is a PERMFAIL), so only callers that parse by
hand (the signer's set-up, the key tools) ever see them.

Messages carry a short human reason and never key material.
"""

from __future__ import annotations


class DkimError(Exception):
    """Root of every error raised by `dkimd.dkim`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ParseError(DkimError):
    """Input from the outside (a header, a DNS record) does not follow the grammar."""


class TagListError(ParseError):
    """A tag-list (RFC 6376 section 3.2) is malformed or repeats a tag."""


class SignatureError(ParseError):
    """A DKIM-Signature field is invalid (RFC 6376 section 6.1.1); verifiers report permerror."""


class KeyRecordError(ParseError):
    """A DNS key record is unusable (RFC 6376 section 3.6.1); verifiers report permerror."""


class MessageError(ParseError):
    """A message header block cannot be split into fields."""


class KeyLoadError(DkimError):
    """A private key could not be loaded. The reason never contains key bytes."""


class SigningError(DkimError):
    """A signing request is inconsistent (wrong algorithm for the key, i= outside d=, ...)."""
