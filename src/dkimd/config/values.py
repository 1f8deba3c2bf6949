"""The typed configuration: `Config` and the enums and value types its fields hold.

`Config()` with no arguments is the configuration of an empty opendkim.conf: every
default is OpenDKIM 2.11's (opendkim.conf(5) and dkimf_config_new()). `dkimd.config.load`
builds a `Config` from the settings of a file; this module only describes the result.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from dkimd.config.datasets import Dataset
from dkimd.config.hosts import HostList
from dkimd.config.keytable import KeyTable, SigningTable
from dkimd.config.problems import Problem
from dkimd.config.reader import RawConfig
from dkimd.dkim.minimum import BodyMinimum
from dkimd.dns.options import ResolverOptions
from dkimd.replace_rules import ReplaceRules
from dkimd.sockets import SocketSpec

if TYPE_CHECKING:
    from dkimd.config.arc import ArcSettings
    from dkimd.lua.hooks import PolicyScripts

__all__ = [
    "DEFAULT_ACTIONS",
    "DEFAULT_OMIT_HEADERS",
    "Action",
    "Canonicalization",
    "Condition",
    "Config",
    "HeaderList",
    "KeyAction",
    "KeySource",
    "MacroRequirement",
    "Mode",
    "RestartRate",
    "SingleKey",
    "SocketSpec",
    "UserGroup",
]


class Mode(enum.Flag):
    """Operating modes (`Mode sv`)."""

    NONE = 0
    SIGN = enum.auto()
    VERIFY = enum.auto()


class Action(enum.Enum):
    """What to tell the MTA (dkimf_values in opendkim.c)."""

    ACCEPT = "accept"
    DISCARD = "discard"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


class KeyAction(enum.Enum):
    """BogusKey / UnprotectedKey: what a key record's DNSSEC status does to its signature
    (dkimf_keyactions in opendkim.c)."""

    FAIL = "fail"
    NEUTRAL = "neutral"
    NONE = "none"


class Condition(enum.Enum):
    """The On-* conditions; the value is the option name after "On-"."""

    BAD_SIGNATURE = "BadSignature"
    DNS_ERROR = "DNSError"
    INTERNAL_ERROR = "InternalError"
    KEY_NOT_FOUND = "KeyNotFound"
    NO_SIGNATURE = "NoSignature"
    SECURITY = "Security"
    SIGNATURE_ERROR = "SignatureError"

    @property
    def option(self) -> str:
        return f"On-{self.value}"


DEFAULT_ACTIONS: Mapping[Condition, Action] = MappingProxyType(
    {
        Condition.BAD_SIGNATURE: Action.ACCEPT,
        Condition.DNS_ERROR: Action.TEMPFAIL,
        Condition.INTERNAL_ERROR: Action.TEMPFAIL,
        Condition.KEY_NOT_FOUND: Action.ACCEPT,
        Condition.NO_SIGNATURE: Action.ACCEPT,
        Condition.SECURITY: Action.TEMPFAIL,
        Condition.SIGNATURE_ERROR: Action.REJECT,
    }
)
"""OpenDKIM 2.11's On-* defaults, from opendkim.conf(5)."""

# opendkim.conf(5), OmitHeaders: RFC 6376 section 5.4 "SHOULD NOT sign" fields.
DEFAULT_OMIT_HEADERS: tuple[str, ...] = (
    "return-path",
    "received",
    "comments",
    "keywords",
    "bcc",
    "resent-bcc",
    "dkim-signature",
)


@dataclass(frozen=True, slots=True)
class Canonicalization:
    header: Literal["simple", "relaxed"] = "simple"
    body: Literal["simple", "relaxed"] = "simple"

    def __str__(self) -> str:
        return f"{self.header}/{self.body}"


@dataclass(frozen=True, slots=True)
class UserGroup:
    """`UserID user[:group]`."""

    user: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class RestartRate:
    """`AutoRestartRate n/t[u]`: at most `count` restarts within `seconds`."""

    count: int
    seconds: int


@dataclass(frozen=True, slots=True)
class HeaderList:
    """A header field list option (SignHeaders, OmitHeaders, ...), names lower-cased.

    OpenDKIM: a list replaces the default, unless one entry is `*`, which makes the list a
    change to the default: `*,+foo` adds foo, `*,-bcc` removes bcc. `apply(default)` gives
    the effective list.
    """

    extends_default: bool = True
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def apply(self, default: Sequence[str]) -> tuple[str, ...]:
        base = [h.lower() for h in default] if self.extends_default else []
        out = [h for h in base if h not in self.remove]
        out += [h for h in self.add if h not in out]
        return tuple(out)

    @classmethod
    def from_names(cls, names: Sequence[str]) -> HeaderList:
        star = "*" in names
        add: list[str] = []
        remove: list[str] = []
        for name in names:
            if name == "*":
                continue
            if star and name.startswith("-"):
                remove.append(name[1:].lower())
            elif star and name.startswith("+"):
                add.append(name[1:].lower())
            else:
                add.append(name.lower())
        return cls(star, tuple(add), tuple(remove))


@dataclass(frozen=True, slots=True)
class MacroRequirement:
    """A MacroList entry: the macro must be set, and to one of `values` if any are given."""

    name: str
    values: tuple[str, ...] = ()

    def satisfied_by(self, value: str | None) -> bool:
        if value is None:
            return False
        return not self.values or value in self.values  # case-sensitive, as in OpenDKIM


@dataclass(frozen=True, slots=True)
class SingleKey:
    """Single-key signing: sign mail from `domains` with one key (Domain/Selector/KeyFile)."""

    domains: Dataset
    selector: str
    key_file: str
    subdomains: bool = False


class KeySource(enum.Enum):
    NONE = "none"  # nothing to sign with: messages are only verified
    SINGLE_KEY = "single-key"  # Domain + Selector + KeyFile
    TABLES = "tables"  # KeyTable (+ SigningTable)


def _empty_hosts() -> HostList:
    return HostList.empty()


@dataclass(frozen=True)
class Config:
    """Every implemented option, typed, with OpenDKIM's defaults. See the module docstring."""

    # where it came from
    source: str | None = None
    # operation
    mode: Mode = Mode.SIGN | Mode.VERIFY
    canonicalization: Canonicalization = field(default_factory=Canonicalization)
    signature_algorithm: str = "rsa-sha256"
    signature_ttl: int | None = None  # seconds; None: no x= tag
    minimum_key_bits: int = 1024
    maximum_signatures_to_verify: int = 3
    multiple_signatures: bool = False
    remove_old_signatures: bool = False
    require_safe_keys: bool = True
    allow_sha1: bool = False  # dkimd extension
    check_signing_table: bool = False  # OpenDKIM develop's start-up walk (signing_walk.py)
    skip_unpublished_keys: bool = False  # dkimd extension (key_guard.py)
    # which keys
    key_source: KeySource = KeySource.NONE
    single_key: SingleKey | None = None
    key_table: KeyTable | None = None
    signing_table: SigningTable | None = None
    # header fields
    sign_headers: HeaderList | None = None  # None: the DKIM engine's default list
    omit_headers: HeaderList | None = None  # None: DEFAULT_OMIT_HEADERS
    oversign_headers: tuple[str, ...] = ()
    sender_headers: tuple[str, ...] = ("from",)
    # tags of the signatures we make
    body_length_db: Dataset | None = None  # recipients whose mail is signed with l=
    maximum_signed_bytes: int | None = None  # sign at most this much body, always with l=
    request_reports: bool = False  # r=y (RFC 6651)
    atps_domains: Dataset | None = None  # From domains that get atps= (RFC 6541)
    atps_hash: str = "sha256"  # ATPSHashAlgorithm: sha256, sha1 or none
    # ReplaceRules (limited to ReplaceHeaders): our copy of each field is rewritten
    replace_rules: ReplaceRules | None = None
    # hosts and macros
    internal_hosts: HostList = field(default_factory=HostList.default_internal)
    external_ignore_list: HostList = field(default_factory=_empty_hosts)
    peer_list: HostList = field(default_factory=_empty_hosts)
    macro_list: tuple[MacroRequirement, ...] = ()
    # recipients
    dont_sign_mail_to: Dataset | None = None  # recipients whose mail is never signed
    # session options (dkimd.exempt, dkimd.mta, dkimd.sender_macro, dkimd.required_headers,
    # dkimd.header_limit, dkimd.redirect, dkimd.capture)
    exempt_domains: Dataset | None = None  # From domains whose mail is accepted untouched
    mta_names: Dataset | None = None  # {daemon_name} values whose mail is originating
    sender_macro: str | None = None  # the author address from this macro, not From
    required_headers: bool = False  # RFC 5322 3.6 field counts, else 550 5.0.0 at EOH
    maximum_headers: int = 65536  # header bytes before On-Security; 0: no limit
    redirect_failures_to: str | None = None  # BAD verifications go here instead
    quarantine: bool = False  # Quarantine: accepted, as OpenDKIM 2.11 does (dkimd.capture)
    capture_unknown_errors: bool = False  # internal errors: quarantine and accept
    identity_header: str | None = None  # i= from this field's address (dkimd.identity_header)
    identity_header_remove: bool = False  # and the field deleted after signing
    resign_mail_to: Dataset | None = None  # recipients whose mail is verified and re-signed
    resign_all: bool = False  # re-sign even when verification failed
    # results
    on_actions: Mapping[Condition, Action] = field(default_factory=lambda: DEFAULT_ACTIONS)
    authserv_id: str | None = None  # None: the MTA's name; "HOSTNAME": gethostname()
    always_add_ar_header: bool = False
    authserv_id_with_job_id: bool = False  # authserv-id "<id>/<job id>"
    no_header_b: bool = False  # leave header.b= out of A-R items
    # Incoming A-R removal (KeepAuthResults no): ours, or those of RemoveARFrom's hosts;
    # only those with a dkim result unless RemoveARAll.
    keep_auth_results: bool = False
    remove_ar_all: bool = False
    remove_ar_from: Dataset | None = None
    strict_headers: bool = False  # RFC 5322 3.6 field counts, else the bad-format path
    # verification (read by dkimd.config.verification)
    clock_drift: int = 300  # seconds of tolerance for t= in the future and x= passed
    minimum: BodyMinimum | None = None  # how much of the body a signature must cover
    must_be_signed: tuple[str, ...] = ()  # header names (lower-case) h= must list if present
    trust_signatures_from: Dataset | None = None  # third-party d= always verified
    weak_syntax_checks: bool = False  # Mode v: verify despite an unparseable From
    fix_crlf: bool = False  # bare CR or LF in the body count as CRLF
    log_results: bool = False  # one log line with every signature's result
    allow_sha1_only: bool = False  # accepted; means nothing to dkimd (config.options)
    select_canonicalization_header: str = "X-Canonicalization"  # accepted; no effect
    arc: ArcSettings | None = None  # ARC (dkimd.config.arc); None: ArcMode unset
    ignore_malformed_mail: bool = False  # bad-format path: accept with no A-R field
    # RFC 6651 failure reports (dkimd.reports)
    send_reports: bool = False
    report_address: str | None = None  # None: the effective user at this host
    report_bcc_address: str | None = None
    mta_command: str = "/usr/sbin/sendmail"
    software_header: bool = False
    # DNS
    nameservers: tuple[str, ...] = ()
    dns_timeout: int = 5  # seconds; 0: wait forever
    test_dns_data: Dataset | None = None
    # TestPublicKeys: key records from this file instead of DNS (dkimd.dns.testkeys)
    test_public_keys: str | None = None
    # DNSConnect, ResolverTracing, QueryCache, ResolverConfiguration (dkimd.dns.options)
    resolver: ResolverOptions = field(default_factory=ResolverOptions)
    # process (dkimd.config.basedir, dkimd.chroot, dkimd.milter_trace)
    base_directory: str | None = None  # entered while loading (os.chdir)
    change_root_directory: str | None = None  # chroot after loading, before dropping root
    temporary_directory: str = "/tmp"  # dkimd writes no temporary files
    soft_start: bool = False  # data sets that can: a failed open at start is not fatal
    milter_debug: int = 0  # protocol trace level
    strict_test_mode: bool = False
    smtp_uri: str | None = None  # failure reports over SMTP instead of MTACommand
    # DNSSEC (dkimd.dns.validating, dkimd.key_trust)
    trust_anchor_file: str | None = None
    trust_resolver_ad: bool = False  # dkimd extension: believe the resolver's AD bit
    bogus_key: KeyAction = KeyAction.FAIL
    unprotected_key: KeyAction = KeyAction.NONE
    # daemon
    socket: SocketSpec | None = None
    pid_file: str | None = None
    umask: int | None = None
    user_id: UserGroup | None = None
    background: bool = True
    auto_restart: bool = False
    auto_restart_count: int = 0  # 0: no limit
    auto_restart_rate: RestartRate | None = None
    workers: int = 1  # dkimd extension
    metrics_socket: SocketSpec | None = None  # dkimd extension (dkimd.metrics)
    metrics_domains: tuple[str, ...] = ()  # verifying domains with a label of their own
    # logging
    syslog: bool = False
    syslog_facility: str = "mail"
    syslog_name: str = "dkimd"  # the ident of our log lines; OpenDKIM's default is its name
    syslog_success: bool = False
    log_why: bool = False
    log_format: str = "text"  # dkimd extension: "json" for stderr lines (dkimd.log_json)
    # what loading found
    warnings: tuple[Problem, ...] = ()
    raw: RawConfig | None = field(default=None, repr=False, compare=False)
    # SetupPolicyScript & co., compiled (dkimd.lua); None when none is named.
    policy_scripts: PolicyScripts | None = field(default=None, repr=False, compare=False)

    def action_for(self, condition: Condition) -> Action:
        return self.on_actions[condition]

    @property
    def signs(self) -> bool:
        return Mode.SIGN in self.mode

    @property
    def verifies(self) -> bool:
        return Mode.VERIFY in self.mode

    def effective_omit_headers(self) -> tuple[str, ...]:
        if self.omit_headers is None:
            return DEFAULT_OMIT_HEADERS
        return self.omit_headers.apply(DEFAULT_OMIT_HEADERS)
