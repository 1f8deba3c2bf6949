"""Option negotiation (SMFIC_OPTNEG): what the filter wants, and what was agreed.

The MTA opens every milter connection with its protocol version, the SMFIF_* actions it
allows and the SMFIP_* protocol flags it understands. Postfix 3.x (milter8.c
``milter8_connect``) always offers actions 0x1FF; the protocol mask is 0x7F with
``milter_protocol = 2`` and 0x1FFFFF with ``milter_protocol = 6`` (the default).

The filter answers with the version it speaks (never above the MTA's: Postfix
disconnects on "protocol version conflict"), a subset of the offered actions (Postfix
disconnects on "request mask conflict"), and the protocol flags it wants. ``negotiate``
below computes exactly that: the intersection of what is offered and what
``FilterOptions`` asks for. In version 6 the reply may carry SETSYMLIST macro lists,
which replace the MTA's ``milter_*_macros`` settings for this filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from .constants import (
    MAX_VERSION,
    MIN_VERSION,
    NEVER_REPLIED,
    NO_REPLY_FLAG,
    Action,
    MacroStage,
    ProtocolFlag,
)
from .errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from .connection import Agreement

__all__ = ["FilterOptions", "Negotiated", "negotiate"]


def _no_macros() -> Mapping[MacroStage, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FilterOptions:
    """What this filter asks for in option negotiation.

    ``actions``: SMFIF_* modifications we may request (default: add and change headers,
    quarantine). ``protocol``: SMFIP_* flags we want, e.g. ``NOHELO`` (don't send HELO),
    ``NR_HDR`` (we won't reply per header), ``SKIP``, ``HDR_LEADSPC``; only those the MTA
    offers are kept. ``required_actions``: fail negotiation if the MTA withholds any of
    these. ``macros``: stage -> macro names to request with SETSYMLIST (v6 only).
    ``max_version``: highest protocol version to agree to (2..6).
    """

    actions: Action = Action.ADDHDRS | Action.CHGHDRS | Action.QUARANTINE
    protocol: ProtocolFlag = ProtocolFlag.SKIP | ProtocolFlag.HDR_LEADSPC
    required_actions: Action = Action.NONE
    macros: Mapping[MacroStage, tuple[str, ...]] = field(default_factory=_no_macros)
    max_version: int = MAX_VERSION
    #: What ``Connection`` worked out for each MTA offer (version, actions, protocol),
    #: kept here because every connection from one MTA makes the same offer.
    agreements: dict[tuple[int, int, int], Agreement] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not MIN_VERSION <= self.max_version <= MAX_VERSION:
            raise LocalProtocolError(f"max_version must be {MIN_VERSION}..{MAX_VERSION}")
        if self.required_actions & ~self.actions:
            raise LocalProtocolError("required_actions must be a subset of actions")
        for names in self.macros.values():
            for name in names:
                if not name or any(c in name for c in " \0,"):
                    raise LocalProtocolError(f"bad macro name {name!r}")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of option negotiation for one milter connection."""

    version: int
    actions: Action
    protocol: ProtocolFlag
    mta_version: int
    mta_actions: Action
    mta_protocol: ProtocolFlag
    #: Macro lists sent with SETSYMLIST (empty when not negotiated).
    macros: tuple[tuple[MacroStage, tuple[str, ...]], ...] = ()

    @property
    def leading_space(self) -> bool:
        """Whether header values keep their leading whitespace on the wire."""
        return bool(self.protocol & ProtocolFlag.HDR_LEADSPC)

    def expects_reply(self, command: int) -> bool:
        """Whether the MTA waits for a reply to ``command``."""
        if command in NEVER_REPLIED:
            return False
        flag = NO_REPLY_FLAG.get(command)
        return flag is None or not (self.protocol & flag)


def negotiate(
    options: FilterOptions, mta_version: int, mta_actions: Action, mta_protocol: ProtocolFlag
) -> Negotiated:
    """Answer an MTA's offer; RemoteProtocolError if we cannot work with it."""
    if mta_version < MIN_VERSION:
        raise RemoteProtocolError(f"MTA milter protocol version {mta_version} is too old")
    version = min(mta_version, options.max_version)
    actions = options.actions & mta_actions
    missing = options.required_actions & ~actions
    if missing:
        raise RemoteProtocolError(f"MTA does not allow required actions {missing!r}")
    protocol = options.protocol & mta_protocol
    macros: tuple[tuple[MacroStage, tuple[str, ...]], ...] = ()
    # SETSYMLIST is a version 6 feature; only claim it when we actually send lists.
    if version >= 6 and options.macros and (mta_actions & Action.SETSYMLIST):
        actions |= Action.SETSYMLIST
        macros = tuple(sorted((MacroStage(s), tuple(n)) for s, n in options.macros.items()))
    else:
        actions &= ~Action.SETSYMLIST
    return Negotiated(
        version=version,
        actions=Action(actions),
        protocol=ProtocolFlag(protocol),
        mta_version=mta_version,
        mta_actions=mta_actions,
        mta_protocol=mta_protocol,
        macros=macros,
    )
