"""Small message helpers shared by the Postfix e2e tests (OpenDKIM's and dkimd's).

from support.mail import message, by_subject, header_values, crlf, dnsfunc_for
"""

from __future__ import annotations

import email
from collections.abc import Callable

from support.opendkim import DkimKey

__all__ = ["by_subject", "crlf", "dnsfunc_for", "header_values", "message"]


def message(subject: str, body: bytes = b"Hello,\r\n\r\nthis is a test.\r\n") -> bytes:
    """A plain message from alice@example.com to bob@example.net, CRLF line ends."""
    return (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <" + subject.replace(" ", ".").encode() + b"@example.com>\r\n"
        b"\r\n" + body
    )


def dnsfunc_for(key: DkimKey) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` that knows only `key`'s record."""

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        n = (name.decode() if isinstance(name, bytes) else name).rstrip(".")
        return key.txt.encode() if n == key.dns_name else None

    return dnsfunc


def by_subject(messages: list[bytes]) -> dict[str, bytes]:
    """Delivered messages keyed by their Subject."""
    return {str(email.message_from_bytes(raw)["Subject"]): raw for raw in messages}


def crlf(raw: bytes) -> bytes:
    """Maildir files have LF line ends; DKIM verifies the CRLF form."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def header_values(raw: bytes, name: str) -> list[str]:
    """Every value of field `name`, unfolded to single spaces."""
    return [" ".join(str(v).split()) for v in email.message_from_bytes(raw).get_all(name, [])]
