"""The table of every opendkim.conf option dkimd knows, and whether dkimd implements it.

Sources: opendkim.conf(5) of OpenDKIM 2.11 (the option names, types and defaults), the
`dkimf_config[]` table in opendkim/opendkim-config.h, and the Debian opendkim 2.11 binary
itself (probed with `opendkim -x FILE -e NAME`, which rejects unknown names). Three names the
2.11 binary accepts are missing from the man page: `ATPSDomains`, `ATPSHashAlgorithm` and the
deprecated `X-Header` (an alias of `SoftwareHeader`); they are listed here too. Names the man
page documents but the Debian build leaves out (`IdentityHeader`, `POPDBFile`, `SMTPURI`,
...) are still OpenDKIM options, so they get the "not implemented" warning, not an error.

Option types follow OpenDKIM's reader (config.c): a `bool` takes only the first character of
the value (t/T/y/Y/1 or f/F/n/N/0), an `int` is C `strtol(value, 0)` (so `UMask 022` is octal
18), everything else is a string; `dataset` is a string naming an OpenDKIM data set
(`file:`, `refile:`, `csl:`, ...), which `dkimd.config.datasets` opens.

dkimd extensions (no OpenDKIM equivalent; OpenDKIM would reject them as unknown):

* `Workers` (int, default 1): number of worker processes serving the milter socket.
* `LuaInstructionLimit` (int, default 50000000) and `LuaTimeLimit` (int, seconds, default 2):
  what one call of a policy script may use before it is stopped and its message tempfailed
  (dkimd.lua; OpenDKIM puts no bound on a script).
* `AllowSHA1` (bool, default no): accept rsa-sha1 signatures when verifying and allow
  `SignatureAlgorithm rsa-sha1` when signing. RFC 8301 section 3.1 forbids both; this is the
  legacy switch for sites that still need it.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "OPTIONS",
    "OptionSpec",
    "OptionType",
    "all_option_names",
    "find_option",
    "suggest_option",
]


class OptionType(enum.Enum):
    BOOL = "bool"
    INT = "int"
    STRING = "string"
    DATASET = "dataset"
    INCLUDE = "include"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option: its canonical spelling, type, OpenDKIM's default and dkimd's support."""

    name: str
    type: OptionType
    default: bool | int | str | None
    implemented: bool
    extension: bool = False  # a dkimd-only option
    alias_of: str | None = None  # a deprecated spelling of another option

    @property
    def key(self) -> str:
        return self.name.lower()


_B, _I, _S, _D = OptionType.BOOL, OptionType.INT, OptionType.STRING, OptionType.DATASET


def _spec(
    name: str,
    type_: OptionType,
    default: bool | int | str | None = None,
    implemented: bool = False,
    **kw: object,
) -> OptionSpec:
    if default is None and type_ is _B:
        default = False  # opendkim.conf(5): "Boolean values default to false"
    return OptionSpec(name, type_, default, implemented, **kw)  # type: ignore[arg-type]


# Implemented options first, then the OpenDKIM options dkimd accepts but ignores (with a
# warning), in man page order. Defaults are OpenDKIM's; None means "undefined".
_TABLE: tuple[OptionSpec, ...] = (
    # -- implemented ---------------------------------------------------------------------
    _spec("AlwaysAddARHeader", _B, implemented=True),
    _spec("ATPSDomains", _D, implemented=True),
    _spec("ATPSHashAlgorithm", _S, "sha256", implemented=True),
    _spec("AuthservID", _S, implemented=True),
    _spec("AuthservIDWithJobID", _B, implemented=True),
    _spec("AutoRestart", _B, implemented=True),
    _spec("AutoRestartCount", _I, 0, implemented=True),
    _spec("AutoRestartRate", _S, implemented=True),
    _spec("Background", _B, True, implemented=True),
    _spec("BodyLengthDB", _D, implemented=True),
    _spec("Canonicalization", _S, "simple/simple", implemented=True),
    _spec("DNSTimeout", _I, 5, implemented=True),
    _spec("Domain", _D, implemented=True),
    _spec("DontSignMailTo", _D, implemented=True),
    _spec("ExternalIgnoreList", _D, implemented=True),
    _spec("Include", OptionType.INCLUDE, implemented=True),
    _spec("InternalHosts", _D, "csl:127.0.0.1,::1", implemented=True),
    _spec("KeepAuthResults", _B, implemented=True),
    _spec("KeyFile", _S, implemented=True),
    _spec("KeyTable", _D, implemented=True),
    _spec("LogWhy", _B, implemented=True),
    _spec("MacroList", _D, implemented=True),
    _spec("MaximumSignaturesToVerify", _I, 3, implemented=True),
    _spec("MaximumSignedBytes", _I, implemented=True),
    _spec("MinimumKeyBits", _I, 1024, implemented=True),
    _spec("Mode", _S, "sv", implemented=True),
    _spec("MultipleSignatures", _B, implemented=True),
    _spec("Nameservers", _S, implemented=True),
    _spec("NoHeaderB", _B, implemented=True),
    _spec("OmitHeaders", _D, implemented=True),
    _spec("On-BadSignature", _S, "accept", implemented=True),
    _spec("On-Default", _S, implemented=True),
    _spec("On-DNSError", _S, "tempfail", implemented=True),
    _spec("On-InternalError", _S, "tempfail", implemented=True),
    _spec("On-KeyNotFound", _S, "accept", implemented=True),
    _spec("On-NoSignature", _S, "accept", implemented=True),
    _spec("On-Security", _S, "tempfail", implemented=True),
    _spec("On-SignatureError", _S, "reject", implemented=True),
    _spec("OversignHeaders", _D, implemented=True),
    _spec("PeerList", _D, implemented=True),
    _spec("PidFile", _S, implemented=True),
    _spec("RemoveARAll", _B, implemented=True),
    _spec("RemoveARFrom", _D, implemented=True),
    _spec("RemoveOldSignatures", _B, implemented=True),
    _spec("RequestReports", _B, implemented=True),
    _spec("RequireSafeKeys", _B, True, implemented=True),
    _spec("Selector", _S, implemented=True),
    _spec("SenderHeaders", _D, implemented=True),
    _spec("SignatureAlgorithm", _S, "rsa-sha256", implemented=True),
    _spec("SignatureTTL", _I, 0, implemented=True),
    _spec("SignHeaders", _D, implemented=True),
    _spec("SigningTable", _D, implemented=True),
    _spec("Socket", _S, implemented=True),
    _spec("SoftwareHeader", _B, implemented=True),
    _spec("SubDomains", _B, implemented=True),
    _spec("Syslog", _B, implemented=True),
    _spec("SyslogFacility", _S, "mail", implemented=True),
    _spec("SyslogName", _S, "opendkim", implemented=True),
    _spec("SyslogSuccess", _B, implemented=True),
    _spec("TestDNSData", _D, implemented=True),
    _spec("TestPublicKeys", _S, implemented=True),
    _spec("UMask", _I, implemented=True),
    _spec("UserID", _S, implemented=True),
    _spec("X-Header", _B, implemented=True, alias_of="SoftwareHeader"),
    # -- dkimd extensions -------------------------------------------------------------------
    _spec("Workers", _I, 1, implemented=True, extension=True),
    _spec("AllowSHA1", _B, False, implemented=True, extension=True),
    _spec("LuaInstructionLimit", _I, 50_000_000, implemented=True, extension=True),
    _spec("LuaTimeLimit", _I, 2, implemented=True, extension=True),
    # -- OpenDKIM 2.11 options dkimd does not implement (accepted with a warning) -----------
    _spec("AllowSHA1Only", _B),
    _spec("BaseDirectory", _S),
    _spec("BogusKey", _S, "fail"),
    _spec("CaptureUnknownErrors", _B),
    _spec("ChangeRootDirectory", _S),
    _spec("ClockDrift", _I, 300),
    _spec("Diagnostics", _B),
    _spec("DiagnosticDirectory", _S),
    _spec("DisableCryptoInit", _B),
    _spec("DNSConnect", _B),
    _spec("DomainKeysCompat", _B),
    _spec("EnableCoredumps", _B),
    _spec("ExemptDomains", _D),
    _spec("FinalPolicyScript", _S, implemented=True),
    _spec("FixCRLF", _B),
    _spec("IdentityHeader", _S),
    _spec("IdentityHeaderRemove", _B),
    _spec("IgnoreMalformedMail", _B, implemented=True),
    _spec("KeepTemporaryFiles", _B),
    _spec("LDAPAuthMechanism", _S, ""),
    _spec("LDAPAuthName", _S),
    _spec("LDAPAuthRealm", _S),
    _spec("LDAPAuthUser", _S),
    _spec("LDAPBindPassword", _S),
    _spec("LDAPBindUser", _S),
    _spec("LDAPDisableCache", _B),
    _spec("LDAPKeepaliveIdle", _I),
    _spec("LDAPKeepaliveInterval", _I),
    _spec("LDAPKeepaliveProbes", _I),
    _spec("LDAPTimeout", _I, 5),
    _spec("LDAPUseTLS", _B),
    _spec("LogResults", _B),
    _spec("MaximumHeaders", _I, 65536),
    _spec("MilterDebug", _I, 0),
    _spec("Minimum", _S),
    _spec("MTA", _D),
    _spec("MTACommand", _S, "/usr/sbin/sendmail", implemented=True),
    _spec("MustBeSigned", _D),
    _spec("POPDBFile", _D),
    _spec("Quarantine", _B),
    _spec("QueryCache", _B),
    _spec("RedirectFailuresTo", _S),
    _spec("ReplaceHeaders", _D, implemented=True),
    _spec("ReplaceRules", _S, implemented=True),
    _spec("ReportAddress", _S, implemented=True),
    _spec("ReportBccAddress", _S, implemented=True),
    _spec("RequiredHeaders", _B),
    _spec("ResignAll", _B),
    _spec("ResignMailTo", _D),
    _spec("ResolverConfiguration", _S),
    _spec("ResolverTracing", _B),
    _spec("ScreenPolicyScript", _S, implemented=True),
    _spec("SelectCanonicalizationHeader", _S, "X-Canonicalization"),
    _spec("SenderMacro", _S),
    _spec("SendReports", _B, implemented=True),
    _spec("SetupPolicyScript", _S, implemented=True),
    _spec("SMTPURI", _S),
    _spec("SoftStart", _B),
    _spec("Statistics", _S),
    _spec("StatisticsName", _S),
    _spec("StatisticsPolicyScript", _S, implemented=True),
    _spec("StatisticsPrefix", _S),
    _spec("StrictHeaders", _B, implemented=True),
    _spec("StrictTestMode", _B),
    _spec("TemporaryDirectory", _S, "/tmp"),
    _spec("TrustAnchorFile", _S),
    _spec("TrustSignaturesFrom", _D),
    _spec("UnprotectedKey", _S, "none"),
    _spec("VBR-Certifiers", _S),
    _spec("VBR-PurgeFields", _S),
    _spec("VBR-TrustedCertifiers", _S),
    _spec("VBR-TrustedCertifiersOnly", _B),
    _spec("VBR-Type", _S),
    _spec("WeakSyntaxChecks", _B),
)

OPTIONS: Mapping[str, OptionSpec] = MappingProxyType({spec.key: spec for spec in _TABLE})
"""Every known option, keyed by its lower-cased name (opendkim.conf names are case-blind)."""

assert len(OPTIONS) == len(_TABLE), "duplicate option in the table"


def find_option(name: str) -> OptionSpec | None:
    """The option called `name` (any case), or None if OpenDKIM and dkimd don't know it."""
    return OPTIONS.get(name.lower())


def all_option_names() -> Iterator[str]:
    return (spec.name for spec in _TABLE)


def suggest_option(name: str) -> str | None:
    """The known option name closest to a misspelt `name`, for a "did you mean" hint."""
    by_lower = {spec.key: spec.name for spec in _TABLE}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None
