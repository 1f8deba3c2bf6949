"""SMTPURI's value: `smtp://HOST[:PORT]`, where failure reports go over SMTP
(dkimd.report_smtp sends them). Pure, so the configuration loader can check it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["SmtpTarget", "parse_smtp_uri"]


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int = 25

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port}"


def parse_smtp_uri(text: str) -> SmtpTarget:
    """`smtp://HOST[:PORT]`; raises ValueError with the reason."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f'"{text}" is not an smtp:// URI ({exc})') from None
    if parts.scheme.lower() != "smtp" or not parts.hostname:
        raise ValueError(f'"{text}" is not an smtp://HOST[:PORT] URI')
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f'"{text}": only smtp://HOST[:PORT] is supported')
    return SmtpTarget(parts.hostname, port or 25)
