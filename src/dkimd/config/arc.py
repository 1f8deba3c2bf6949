"""The ARC options (RFC 8617; dkimd.arc_filter), read into `Config.arc` by `config.load`.

dkimd extensions, named after OpenARC's options with an `Arc` prefix where OpenARC has one
(its `Mode`, `SignHeaders`, `KeyFile` would clash with OpenDKIM's in the same file):

* `ArcMode` (OpenARC `Mode`): `v` verifies ARC chains and adds an `arc=` result to
  Authentication-Results, `s` seals, `sv` both. Unset: no ARC at all.
* `ArcKey`: the KeyTable entry (by name) that seals; unset, the signing domain's key: the
  key the SigningTable chose for a message dkimd also signs, else the single key of
  Domain/Selector/KeyFile. Sealing needs one of them.
* `ArcSignHeaders` (OpenARC `SignHeaders`): the fields the ARC-Message-Signature signs.
* `ArcSealHosts`: clients (host lists, as InternalHosts) whose mail is sealed;
  `ArcSealMailTo`: recipients whose mail is sealed (a forwarder seals what it relays). With
  neither, every message dkimd handles is sealed.
* `ArcMaximumSets`: a chain of more ARC sets fails (1..50, default 50, RFC 8617's limit).

OpenARC's own names where they do not clash with an opendkim.conf option, with OpenARC's
meaning (openarc.conf(5)); they apply only with ArcMode:

* `SealHeaderChecks FILE`: "name:regexp" lines (POSIX basic regular expressions); a message
  none of them matches gets no ARC work at all (dkimd.arc.header_checks).
* `PermitAuthenticationOverrides` (default no): when sealing, the arc= result of our own
  authserv-id's Authentication-Results field replaces the computed chain state.
* `FinalReceiver` (default no): the arc= result carries the non-standard `arc.chain`
  property, the sealing domains newest first.
* `AuthResIP` (default yes): the arc= results carry smtp.remote-ip.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dkimd.arc import DEFAULT_AMS_HEADERS, MAX_INSTANCES
from dkimd.arc.header_checks import HeaderCheck, parse_header_checks
from dkimd.arc.sealer import NEVER_SIGNED
from dkimd.config.datasets import Dataset, DatasetKind
from dkimd.config.hosts import HostList, check_host_entries
from dkimd.dkim.headers import name_key

if TYPE_CHECKING:
    from dkimd.config.load import _Builder

__all__ = ["ArcMode", "ArcSettings", "arc_summary", "read_arc_options"]


class ArcMode(enum.Flag):
    NONE = 0
    SEAL = enum.auto()
    VERIFY = enum.auto()


@dataclass(frozen=True)
class ArcSettings:
    mode: ArcMode
    key_name: str = ""  # ArcKey: a KeyTable entry; "" the Domain/Selector/KeyFile key
    sign_headers: tuple[str, ...] = DEFAULT_AMS_HEADERS
    seal_hosts: HostList | None = None
    seal_mail_to: Dataset | None = None
    maximum_sets: int = MAX_INSTANCES
    # OpenARC's options (openarc.conf(5)), read only with ArcMode:
    header_checks: tuple[HeaderCheck, ...] | None = None  # SealHeaderChecks
    header_checks_file: str = ""
    permit_overrides: bool = False  # PermitAuthenticationOverrides
    final_receiver: bool = False  # FinalReceiver
    auth_res_ip: bool = True  # AuthResIP

    @property
    def verifies(self) -> bool:
        return bool(self.mode & ArcMode.VERIFY)

    @property
    def seals(self) -> bool:
        return bool(self.mode & ArcMode.SEAL)


_MODES = {"v": ArcMode.VERIFY, "s": ArcMode.SEAL}
_ARC_OPTIONS = ("ArcKey", "ArcSignHeaders", "ArcSealHosts", "ArcSealMailTo", "ArcMaximumSets")
_OPENARC_OPTIONS = (
    "SealHeaderChecks",
    "PermitAuthenticationOverrides",
    "FinalReceiver",
    "AuthResIP",
)
_SEAL_CHECKS_LIMIT = 1 << 20  # bytes of a SealHeaderChecks file: a list of checks, not a log


def read_arc_options(builder: _Builder) -> None:
    """Convert and check the ARC options into `builder.values["arc"]`."""
    setting = builder.get("ArcMode")
    others = [n for n in (*_ARC_OPTIONS, *_OPENARC_OPTIONS) if builder.get(n) is not None]
    if setting is None:
        if others:
            builder.warn(
                builder.get(others[0]),
                f"{others[0]} has no effect without ArcMode",
                "set ArcMode v, s or sv, or remove it (docs/arc.md)",
            )
        return
    mode = ArcMode.NONE
    for letter in setting.value.strip().lower():
        flag = _MODES.get(letter)
        if flag is None:
            builder.error(setting, f"ArcMode: unknown mode {letter!r}", "use v, s or sv")
            return
        mode |= flag
    values: dict[str, object] = {"mode": mode}
    key = builder.get("ArcKey")
    if key is not None:
        values["key_name"] = key.value.strip()
    if mode & ArcMode.SEAL:
        raw = builder.raw
        single = raw.get("Selector") is not None and raw.get("KeyFile") is not None
        if key is None and not single and raw.get("SigningTable") is None:
            builder.error(
                setting,
                "ArcMode s seals, but there is no key to seal with",
                "set ArcKey to a KeyTable entry, or Selector and KeyFile",
            )
        elif key is not None and builder.get("KeyTable") is None:
            builder.error(key, "ArcKey names a KeyTable entry, but there is no KeyTable")
        elif key is not None:
            table = builder.values.get("key_table")
            name = key.value.strip()
            # A table behind a server is asked per message (the entry may come later);
            # a lookup here, outside any message, has no rows to answer with.
            remote = table is not None and table.dataset.kind is DatasetKind.REMOTE
            if table is not None and not remote and table.get(name) is None:
                broken = table.broken(name)
                why = f": {broken}" if broken else ""
                builder.error(key, f"ArcKey: no usable KeyTable entry {name!r}{why}")
    found = builder.header_names("ArcSignHeaders")
    if found is not None:
        names = tuple(dict.fromkeys(h.lower() for h in found[1]))
        # RFC 8617 4.1.2: A-R fields (deleted downstream) and the ARC fields themselves.
        banned = [NEVER_SIGNED[name_key(n)] for n in names if name_key(n) in NEVER_SIGNED]
        if banned:
            builder.error(
                found[0],
                f"ArcSignHeaders: the ARC-Message-Signature must not sign {banned[0]}",
                "RFC 8617 4.1.2 keeps ARC and Authentication-Results fields out of h=",
            )
        elif "from" not in names:
            builder.error(found[0], "ArcSignHeaders must list From")
        else:
            values["sign_headers"] = names
    hosts = builder.dataset("ArcSealHosts")
    if hosts is not None:
        checked, problems = check_host_entries(hosts[1], "ArcSealHosts")
        builder.problems.extend(problems)
        values["seal_hosts"] = checked
    mail_to = builder.dataset("ArcSealMailTo")
    if mail_to is not None:
        values["seal_mail_to"] = mail_to[1]
    limit = builder.get("ArcMaximumSets")
    if limit is not None:
        number = limit.parsed
        assert isinstance(number, int)
        if not 1 <= number <= MAX_INSTANCES:
            builder.error(
                limit, f"ArcMaximumSets: {limit.value} is out of range (1..{MAX_INSTANCES})"
            )
        else:
            values["maximum_sets"] = number
    _openarc_options(builder, values)
    builder.values["arc"] = ArcSettings(**values)  # type: ignore[arg-type]


def _openarc_options(builder: _Builder, values: dict[str, object]) -> None:
    for option, attr in (
        ("PermitAuthenticationOverrides", "permit_overrides"),
        ("FinalReceiver", "final_receiver"),
        ("AuthResIP", "auth_res_ip"),
    ):
        setting = builder.get(option)
        if setting is not None:
            values[attr] = bool(setting.parsed)
    setting = builder.get("SealHeaderChecks")
    if setting is None:
        return
    path = setting.value.strip()
    try:
        with open(path, "rb") as f:
            data = f.read(_SEAL_CHECKS_LIMIT + 1)
    except OSError as exc:
        builder.error(setting, f"SealHeaderChecks: cannot read {path}: {exc.strerror}")
        return
    if len(data) > _SEAL_CHECKS_LIMIT:
        builder.error(setting, f"SealHeaderChecks: {path} is larger than 1 MiB")
        return
    checks, problems = parse_header_checks(data.decode("utf-8", "replace").splitlines())
    for problem in problems:
        builder.error(setting, f"SealHeaderChecks: {path} {problem}")
    if not checks and not problems:
        builder.error(
            setting,
            f"SealHeaderChecks: {path} has no checks",
            "with no check, no message would get ARC work; remove the option instead",
        )
    values["header_checks"] = tuple(checks)
    values["header_checks_file"] = path


def arc_summary(settings: ArcSettings) -> str:
    """One sentence for `dkimd check`'s summary of what the ARC options make dkimd do."""
    parts = []
    if settings.verifies:
        parts.append("ARC chains of verified mail are checked (arc= in Authentication-Results)")
    if settings.seals:
        key = f"KeyTable entry {settings.key_name}" if settings.key_name else "the signing key"
        whom = []
        if settings.seal_hosts is not None:
            whom.append(f"from ArcSealHosts ({settings.seal_hosts.dataset.describe()})")
        if settings.seal_mail_to is not None:
            whom.append(f"to ArcSealMailTo ({settings.seal_mail_to.describe()})")
        which = " or ".join(whom) if whom else "of every kind"
        parts.append(f"mail {which} is ARC-sealed with {key}")
    if settings.header_checks is not None:
        parts.append(
            f"only messages that a SealHeaderChecks line of {settings.header_checks_file} "
            "matches get ARC work"
        )
    if settings.permit_overrides:
        parts.append("our own Authentication-Results arc= result overrides the chain state")
    if settings.final_receiver:
        parts.append("arc= results name the chain's domains (arc.chain)")
    text = "; ".join(parts)
    if settings.maximum_sets < MAX_INSTANCES:
        text += f"; chains of more than {settings.maximum_sets} sets fail"
    return text[:1].upper() + text[1:] + "."
