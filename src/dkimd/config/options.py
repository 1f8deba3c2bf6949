"""The table of every opendkim.conf option dkimd knows, and whether dkimd implements it.

Sources: opendkim.conf(5) of OpenDKIM 2.11 (the option names, types and defaults), the
`dkimf_config[]` table in opendkim/opendkim-config.h, and the Debian opendkim 2.11 binary
itself (probed with `opendkim -x FILE -e NAME`, which rejects unknown names). Three names the
2.11 binary accepts are missing from the man page: `ATPSDomains`, `ATPSHashAlgorithm` and the
deprecated `X-Header` (an alias of `SoftwareHeader`); they are listed here too. Names the man
page documents but the Debian build leaves out (`IdentityHeader`, `POPDBFile`, ...) are
still OpenDKIM options, so they get the "not implemented" warning, not an error; `SMTPURI`,
also left out of Debian's build, dkimd implements as the man page says.

Option types follow OpenDKIM's reader (config.c): a `bool` takes only the first character of
the value (t/T/y/Y/1 or f/F/n/N/0), an `int` is C `strtol(value, 0)` (so `UMask 022` is octal
18), everything else is a string; `dataset` is a string naming an OpenDKIM data set
(`file:`, `refile:`, `csl:`, ...), which `dkimd.config.datasets` opens.

Two OpenDKIM options are accepted on purpose without effect, because they have none on the
OpenDKIM they replace:

* `AllowSHA1Only`: OpenDKIM reads it only at start-up, to let a build whose crypto library
  lacks SHA-256 verify anyway (opendkim.conf(5): "changes the absence of SHA256 support from
  an error to a warning"). dkimd always has SHA-256; whether rsa-sha1 signatures count is
  dkimd's own `AllowSHA1` (RFC 8301), which this option does not change.
* `SelectCanonicalizationHeader`: opendkim.conf(5) says the named header field (default
  X-Canonicalization) overrides Canonicalization for the message. Debian's OpenDKIM 2.11
  signs with Canonicalization whatever the field says, with the default name or a configured
  one (observed: `X-Canonicalization: relaxed/relaxed` under `simple/simple`, and
  `X-Canon: simple` under `SelectCanonicalizationHeader X-Canon`, both left c= unchanged),
  so a message's own header field never chooses how dkimd signs it either.

dkimd extensions (no OpenDKIM equivalent; OpenDKIM would reject them as unknown):

* `Workers` (int, default 1): number of worker processes serving the milter socket.
* `LuaInstructionLimit` (int, default 50000000) and `LuaTimeLimit` (int, seconds, default 2):
  what one call of a policy script may use before it is stopped and its message tempfailed
  (dkimd.lua; OpenDKIM puts no bound on a script).
* `AllowSHA1` (bool, default no): accept rsa-sha1 signatures when verifying and allow
  `SignatureAlgorithm rsa-sha1` when signing. RFC 8301 section 3.1 forbids both; this is the
  legacy switch for sites that still need it.
* `CheckSigningTable` (bool, default no), from OpenDKIM's development branch (Debian's 2.11
  rejects the name): yes refuses to start when a SigningTable entry names a key the KeyTable
  lacks or a KeyTable line it names is malformed (the start-up walk of that branch). The
  default is Debian 2.11's behaviour: start, and tempfail the messages such an entry
  matches. `dkimd -G` / `-g` set it yes / no from the command line, as there.
* `TrustResolverAD` (bool, default no): take the DNSSEC status of key records from the AD
  bit of the resolver named by `Nameservers` (a validating resolver the admin trusts,
  ideally on loopback) instead of validating them from `TrustAnchorFile`
  (dkimd.dns.validating).
* `MetricsSocket` (socket, off by default) and `MetricsDomains` (list of domains):
  Prometheus metrics on HTTP (dkimd.metrics.options).
* `DataSetCacheTTL` (int, seconds, default 300), `DataSetNegativeCacheTTL` (default 60) and
  `DataSetTimeout` (default 5): how long rows of a data set behind a server (`dsn:`,
  `ldap:`, ...) are remembered when found and when absent (0: not at all), and how long
  one lookup may take before the message gets the On-InternalError action
  (dkimd.stores.cache, docs/datasets.md).
* `LogFormat` (string, default text): `json` writes the lines dkimd logs to stderr (in the
  foreground: `-f`, `Background no`, the journal under systemd) as one JSON object per line
  (dkimd.log_json); syslog lines stay text.
* `SkipUnpublishedKeys` (bool, default no): the daemon looks up the record of every key
  the SigningTable names (at start, on reload, then every ten minutes) and logs once a key
  whose record is missing or does not match the private key. With no (OpenDKIM's
  behaviour) it still signs with that key; with yes it skips it in favour of the sender's
  next SigningTable match, and signs nothing when no published key is left
  (dkimd.key_guard).
* `ArcMode`, `ArcKey`, `ArcSignHeaders`, `ArcSealHosts`, `ArcSealMailTo`, `ArcMaximumSets`:
  ARC (RFC 8617) verification and sealing, read by `dkimd.config.arc`; docs/arc.md. With them,
  OpenARC's `SealHeaderChecks`, `PermitAuthenticationOverrides`, `FinalReceiver`, `AuthResIP`.
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
    # ARC (RFC 8617), dkimd extensions after OpenARC's names (dkimd.config.arc)
    _spec("ArcKey", _S, implemented=True, extension=True),
    _spec("ArcMaximumSets", _I, 50, implemented=True, extension=True),
    _spec("ArcMode", _S, implemented=True, extension=True),
    _spec("ArcSealHosts", _D, implemented=True, extension=True),
    _spec("ArcSealMailTo", _D, implemented=True, extension=True),
    _spec("ArcSignHeaders", _D, implemented=True, extension=True),
    _spec("AuthResIP", _B, True, implemented=True, extension=True),  # OpenARC's (config.arc)
    _spec("FinalReceiver", _B, implemented=True, extension=True),  # OpenARC's
    _spec("PermitAuthenticationOverrides", _B, implemented=True, extension=True),  # OpenARC's
    _spec("SealHeaderChecks", _S, implemented=True, extension=True),  # OpenARC's
    _spec("ATPSDomains", _D, implemented=True),
    _spec("ATPSHashAlgorithm", _S, "sha256", implemented=True),
    _spec("AuthservID", _S, implemented=True),
    _spec("AuthservIDWithJobID", _B, implemented=True),
    _spec("AutoRestart", _B, implemented=True),
    _spec("AutoRestartCount", _I, 0, implemented=True),
    _spec("AutoRestartRate", _S, implemented=True),
    _spec("Background", _B, True, implemented=True),
    _spec("BodyLengthDB", _D, implemented=True),
    _spec("BogusKey", _S, "fail", implemented=True),
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
    _spec("TrustAnchorFile", _S, implemented=True),
    _spec("UnprotectedKey", _S, "none", implemented=True),
    _spec("UMask", _I, implemented=True),
    _spec("UserID", _S, implemented=True),
    _spec("X-Header", _B, implemented=True, alias_of="SoftwareHeader"),
    # verification options (dkimd.config.verification); two are accepted on purpose with
    # no effect, see below
    _spec("AllowSHA1Only", _B, implemented=True),
    _spec("ClockDrift", _I, 300, implemented=True),
    _spec("FixCRLF", _B, implemented=True),
    _spec("LogResults", _B, implemented=True),
    _spec("Minimum", _S, implemented=True),
    _spec("MustBeSigned", _D, implemented=True),
    _spec("SelectCanonicalizationHeader", _S, "X-Canonicalization", implemented=True),
    _spec("TrustSignaturesFrom", _D, implemented=True),
    _spec("WeakSyntaxChecks", _B, implemented=True),
    # -- dkimd extensions -------------------------------------------------------------------
    _spec("Workers", _I, 1, implemented=True, extension=True),
    _spec("AllowSHA1", _B, False, implemented=True, extension=True),
    _spec("CheckSigningTable", _B, False, implemented=True, extension=True),
    _spec("TrustResolverAD", _B, False, implemented=True, extension=True),
    _spec("SkipUnpublishedKeys", _B, False, implemented=True, extension=True),
    # Remote data sets' cache and timeout (dkimd.stores.settings).
    _spec("DataSetCacheTTL", _I, 300, implemented=True, extension=True),
    _spec("DataSetNegativeCacheTTL", _I, 60, implemented=True, extension=True),
    _spec("DataSetTimeout", _I, 5, implemented=True, extension=True),
    _spec("LuaInstructionLimit", _I, 50_000_000, implemented=True, extension=True),
    _spec("LuaTimeLimit", _I, 2, implemented=True, extension=True),
    _spec("MetricsSocket", _S, implemented=True, extension=True),
    _spec("MetricsDomains", _S, implemented=True, extension=True),
    _spec("LogFormat", _S, "text", implemented=True, extension=True),
    # -- OpenDKIM 2.11 options dkimd does not implement (accepted with a warning) -----------
    _spec("BaseDirectory", _S, implemented=True),
    _spec("CaptureUnknownErrors", _B, implemented=True),
    _spec("ChangeRootDirectory", _S, implemented=True),
    _spec("Diagnostics", _B),
    _spec("DiagnosticDirectory", _S),
    _spec("DisableCryptoInit", _B),
    _spec("DNSConnect", _B, implemented=True),
    _spec("DomainKeysCompat", _B),
    _spec("EnableCoredumps", _B),
    _spec("ExemptDomains", _D, implemented=True),
    _spec("FinalPolicyScript", _S, implemented=True),
    _spec("IdentityHeader", _S, implemented=True),
    _spec("IdentityHeaderRemove", _B, implemented=True),
    _spec("IgnoreMalformedMail", _B, implemented=True),
    _spec("KeepTemporaryFiles", _B),
    _spec("LDAPAuthMechanism", _S, "", implemented=True),
    _spec("LDAPAuthName", _S, implemented=True),
    _spec("LDAPAuthRealm", _S, implemented=True),
    _spec("LDAPAuthUser", _S, implemented=True),
    _spec("LDAPBindPassword", _S, implemented=True),
    _spec("LDAPBindUser", _S, implemented=True),
    _spec("LDAPDisableCache", _B, implemented=True),
    _spec("LDAPKeepaliveIdle", _I, implemented=True),
    _spec("LDAPKeepaliveInterval", _I, implemented=True),
    _spec("LDAPKeepaliveProbes", _I, implemented=True),
    _spec("LDAPTimeout", _I, 5, implemented=True),
    _spec("LDAPUseTLS", _B, implemented=True),
    _spec("MaximumHeaders", _I, 65536, implemented=True),
    _spec("MilterDebug", _I, 0, implemented=True),
    _spec("MTA", _D, implemented=True),
    _spec("MTACommand", _S, "/usr/sbin/sendmail", implemented=True),
    _spec("POPDBFile", _D),
    _spec("Quarantine", _B, implemented=True),
    _spec("QueryCache", _B, implemented=True),
    _spec("RedirectFailuresTo", _S, implemented=True),
    _spec("ReplaceHeaders", _D, implemented=True),
    _spec("ReplaceRules", _S, implemented=True),
    _spec("ReportAddress", _S, implemented=True),
    _spec("ReportBccAddress", _S, implemented=True),
    _spec("RequiredHeaders", _B, implemented=True),
    _spec("ResignAll", _B, implemented=True),
    _spec("ResignMailTo", _D, implemented=True),
    _spec("ResolverConfiguration", _S, implemented=True),
    _spec("ResolverTracing", _B, implemented=True),
    _spec("ScreenPolicyScript", _S, implemented=True),
    _spec("SenderMacro", _S, implemented=True),
    _spec("SendReports", _B, implemented=True),
    _spec("SetupPolicyScript", _S, implemented=True),
    _spec("SMTPURI", _S, implemented=True),
    _spec("SoftStart", _B, implemented=True),
    _spec("Statistics", _S),
    _spec("StatisticsName", _S),
    _spec("StatisticsPolicyScript", _S, implemented=True),
    _spec("StatisticsPrefix", _S),
    _spec("StrictHeaders", _B, implemented=True),
    _spec("StrictTestMode", _B, implemented=True),
    _spec("TemporaryDirectory", _S, "/tmp", implemented=True),
    _spec("VBR-Certifiers", _S),
    _spec("VBR-PurgeFields", _S),
    _spec("VBR-TrustedCertifiers", _S),
    _spec("VBR-TrustedCertifiersOnly", _B),
    _spec("VBR-Type", _S),
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
