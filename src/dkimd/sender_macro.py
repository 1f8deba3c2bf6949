"""SenderMacro: the author address from a milter macro instead of the header fields.

OpenDKIM (opendkim.c mlfi_eoh, built with _FFR_SENDER_MACRO as Debian's is) looks the
configured macro up by the name as given. When the MTA sent it, its value stands for the
From field in everything that follows: the signing-table lookup, ExemptDomains, the
signing domain. When it did not, the header fields (SenderHeaders, then From) are used as
usual. A value that is not an address is, in a configuration that signs, the bad-format
path ("can't parse macro <name> header value '<value>'"); a verify-only configuration
goes on with no author domain.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dkimd.config import Config
from dkimd.policy import parse_address

__all__ = ["MacroAuthor", "macro_author"]


@dataclass(frozen=True, slots=True)
class MacroAuthor:
    """The SenderMacro value the MTA sent, and the address in it (None if there is none)."""

    value: str
    address: str | None

    def bad_format_reason(self, config: Config) -> str | None:
        """Why the message takes the bad-format path, if it does (OpenDKIM's log words)."""
        if self.address is not None or not config.signs:
            return None
        return f"can't parse macro {config.sender_macro} header value '{self.value}'"


def macro_author(config: Config, macro: Callable[[str], str | None]) -> MacroAuthor | None:
    """The author as SenderMacro gives it, or None when the option is unset or the MTA did
    not send the macro (or sent it empty): the header fields decide then."""
    name = config.sender_macro
    if name is None:
        return None
    value = macro(name)
    if not value:
        return None
    return MacroAuthor(value, parse_address(value.encode("utf-8", "surrogateescape")))
