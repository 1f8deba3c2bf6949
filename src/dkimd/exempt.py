"""ExemptDomains: mail whose author domain is listed is accepted untouched.

OpenDKIM (opendkim.c mlfi_eoh) looks the author's domain up, lower-cased, right after it
has found the author address and before anything else is decided: a hit ends the message
with ACCEPT at end-of-headers, nothing signed, verified or added, and under LogWhy the
line "domain '<domain>' exempted, accepting". Like PeerList, but chosen by the author
(From, or SenderHeaders / SenderMacro) instead of the SMTP client.

Pure: no I/O.
"""

from __future__ import annotations

from dkimd.config import Config

__all__ = ["exempt_domain"]


def exempt_domain(config: Config, sender: str | None) -> str | None:
    """The author domain of `sender` when ExemptDomains lists it, else None."""
    table = config.exempt_domains
    if table is None or sender is None:
        return None
    domain = sender.rpartition("@")[2].lower()
    if domain and domain in table:
        return domain
    return None
