"""Reading opendkim.conf into the typed `Config` (dkimd.config.values): `load_config()`.

Loading runs in three stages, each reporting `Problem`s instead of stopping at the first:

1. `reader.read_config_file` -> `RawConfig` (names, raw values, file:line, includes);
2. data sets are opened (`datasets.open_dataset`), host lists, KeyTable and SigningTable
   built and cross-checked;
3. every implemented option is converted and validated into one frozen `Config`.

`analyze_config()` returns all of it (`ConfigReport`) for `dkimd check`; `load_config()`
raises `ConfigError` when any error was found and otherwise returns the `Config`, whose
`warnings` keep the rest.

Semantics carried over from OpenDKIM (opendkim.c dkimf_config_load) worth knowing:

* `Canonicalization relaxed` means relaxed header, *simple* body.
* On-* actions: `On-Default` sets every condition first, then the specific On-* options
  override it, whatever their order in the file. Values: accept, discard, quarantine,
  reject, tempfail, or their first letters.
* With a KeyTable, Domain/KeyFile/Selector are ignored; a SigningTable needs a KeyTable.
  Without a KeyTable, Domain + Selector + KeyFile is "single-key mode" (`KeySource.SINGLE_KEY`).
* `KeyFile` is read when the configuration loads (OpenDKIM fails to start if it can't be),
  KeyTable key files only when a message is signed (so a missing one is a warning here).
* `AuthservID HOSTNAME` means this host's name; we keep the literal and let the caller
  resolve it (`Config.authserv_id`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dkimd.config.arc import read_arc_options
from dkimd.config.basedir import enter_base_directory
from dkimd.config.datasets import Dataset, DatasetKind, open_dataset
from dkimd.config.hosts import check_host_entries
from dkimd.config.keytable import KeyTable, SigningTable
from dkimd.config.problems import ConfigError, Problem, Severity, errors_in, warnings_in
from dkimd.config.reader import RawConfig, Setting, read_config_file, read_config_text
from dkimd.config.signing_walk import walk_signing_table
from dkimd.config.values import (
    DEFAULT_ACTIONS,
    Action,
    Canonicalization,
    Condition,
    Config,
    HeaderList,
    KeyAction,
    KeySource,
    MacroRequirement,
    Mode,
    RestartRate,
    SingleKey,
    UserGroup,
)
from dkimd.config.verification import read_verification_options
from dkimd.dkim.atps import ATPS_HASHES
from dkimd.dns.options import ResolverOptions
from dkimd.dns.resolver import split_nameserver
from dkimd.log import FACILITIES
from dkimd.metrics.options import read_metrics_options
from dkimd.replace_rules import ReplaceRules, ReplaceRulesError, rules_for
from dkimd.smtp_uri import parse_smtp_uri
from dkimd.sockets import parse_socket_spec

__all__ = [
    "ConfigReport",
    "analyze_config",
    "analyze_config_text",
    "build_config",
    "daemon_refusals",
    "load_config",
    "parse_config_text",
]

_ACTION_WORDS = {
    "a": Action.ACCEPT,
    "accept": Action.ACCEPT,
    "d": Action.DISCARD,
    "discard": Action.DISCARD,
    "q": Action.QUARANTINE,
    "quarantine": Action.QUARANTINE,
    "r": Action.REJECT,
    "reject": Action.REJECT,
    "t": Action.TEMPFAIL,
    "tempfail": Action.TEMPFAIL,
}

SIGNATURE_ALGORITHMS = ("rsa-sha256", "ed25519-sha256", "rsa-sha1")
CANONICALIZATIONS = ("simple", "relaxed")


@dataclass(frozen=True)
class ConfigReport:
    """Everything `analyze_config` learned: the Config (None if there were errors), every
    problem in the order found, and the parsed-but-unvalidated settings."""

    config: Config | None
    problems: tuple[Problem, ...]
    raw: RawConfig

    @property
    def errors(self) -> tuple[Problem, ...]:
        return errors_in(self.problems)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return warnings_in(self.problems)

    @property
    def ok(self) -> bool:
        return not self.errors


_RATE = re.compile(r"([0-9]+)/([0-9]+)([sSmMhHdD]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class _Builder:
    """Stage 2 and 3: turn a RawConfig into a Config, collecting problems."""

    def __init__(self, raw: RawConfig) -> None:
        self.raw = raw
        self.problems: list[Problem] = list(raw.problems)
        # Config keyword arguments, each checked where it is set; Any because a dict can't
        # say that "mode" holds a Mode and "socket" a SocketSpec.
        self.values: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------
    def error(self, setting: Setting | None, message: str, hint: str | None = None) -> None:
        self.problems.append(
            Problem(
                setting.file if setting else self.raw.files[0] if self.raw.files else None,
                setting.line if setting else None,
                Severity.ERROR,
                message,
                hint,
                setting.name if setting else None,
            )
        )

    def warn(self, setting: Setting | None, message: str, hint: str | None = None) -> None:
        self.problems.append(
            Problem(
                setting.file if setting else self.raw.files[0] if self.raw.files else None,
                setting.line if setting else None,
                Severity.WARNING,
                message,
                hint,
                setting.name if setting else None,
            )
        )

    def get(self, name: str) -> Setting | None:
        return self.raw.get(name)

    def flag(self, name: str, attr: str) -> None:
        setting = self.get(name)
        if setting is not None:
            self.values[attr] = bool(setting.parsed)

    def number(
        self,
        name: str,
        attr: str,
        minimum: int = 0,
        maximum: int | None = None,
        convert: Callable[[int], object] | None = None,
    ) -> None:
        setting = self.get(name)
        if setting is None:
            return
        value = setting.parsed
        assert isinstance(value, int)
        if value < minimum or (maximum is not None and value > maximum):
            limit = f"at least {minimum}" if maximum is None else f"{minimum}..{maximum}"
            self.error(setting, f"{setting.name}: {setting.value} is out of range ({limit})")
            return
        self.values[attr] = convert(value) if convert else value

    def dataset(
        self, name: str, *, case_insensitive: bool = True, ascii_only: bool = False
    ) -> tuple[Setting, Dataset] | None:
        setting = self.get(name)
        if setting is None:
            return None
        soft_start = self.get("SoftStart")
        ds, problems = open_dataset(
            setting.value,
            case_insensitive=case_insensitive,
            ascii_only=ascii_only,
            origin=(setting.file, setting.line),
            option=setting.name,
            soft_start=bool(soft_start and soft_start.parsed),
            remote=self.get,  # dkimd.stores.settings reads DataSet* and LDAP* through it
        )
        # A bad LDAP* option is reported by each ldap: set that reads it: once is enough.
        self.problems.extend(p for p in problems if p not in self.problems)
        return None if ds is None else (setting, ds)

    # -- stages ----------------------------------------------------------------------------
    def build(self) -> Config | None:
        self.base_directory()
        self.operation()
        self.keys()
        self.signature_tags()
        self.headers()
        self.hosts()
        self.results()
        read_verification_options(self)
        read_arc_options(self)
        self.recipients()
        self.session_options()
        self.dns()
        self.dnssec()
        self.daemon()
        read_metrics_options(self)
        self.logging()
        self.policy_scripts()
        if errors_in(self.problems):
            return None
        return Config(
            source=self.raw.files[0] if self.raw.files else None,
            warnings=warnings_in(self.problems),
            raw=self.raw,
            **self.values,
        )

    def base_directory(self) -> None:
        # First, as in opendkim: every relative path below is relative to it.
        setting = self.get("BaseDirectory")
        if setting is not None:
            failure = enter_base_directory(setting.value)
            if failure is not None:
                self.error(setting, failure)
            else:
                self.values["base_directory"] = setting.value

    def operation(self) -> None:
        setting = self.get("Mode")
        if setting is not None:
            mode = Mode.NONE
            for ch in setting.value:
                if ch in "sS":
                    mode |= Mode.SIGN
                elif ch in "vV":
                    mode |= Mode.VERIFY
                else:
                    self.error(
                        setting,
                        f'Mode: unknown mode "{ch}" in "{setting.value}"',
                        "use s (sign), v (verify) or sv",
                    )
                    break
            else:
                self.values["mode"] = mode

        setting = self.get("Canonicalization")
        if setting is not None:
            head, slash, body = setting.value.lower().partition("/")
            body = body if slash else "simple"  # OpenDKIM: no slash -> header only
            bad = [c for c in (head, body) if c not in CANONICALIZATIONS]
            if bad:
                self.error(
                    setting,
                    f'Canonicalization: unknown method "{bad[0]}"',
                    "use simple or relaxed, or header/body like relaxed/relaxed",
                )
            else:
                self.values["canonicalization"] = Canonicalization(head, body)  # type: ignore[arg-type]

        self.flag("AllowSHA1", "allow_sha1")
        setting = self.get("SignatureAlgorithm")
        if setting is not None:
            alg = setting.value.lower()
            if alg not in SIGNATURE_ALGORITHMS:
                self.error(
                    setting,
                    f'SignatureAlgorithm: unknown algorithm "{setting.value}"',
                    "use " + ", ".join(SIGNATURE_ALGORITHMS[:2]),
                )
            elif alg == "rsa-sha1" and not self.values.get("allow_sha1", False):
                self.error(
                    setting,
                    "SignatureAlgorithm: rsa-sha1 signatures are forbidden by "
                    "RFC 8301 and rejected by most verifiers",
                    "use rsa-sha256, or set AllowSHA1 yes to insist",
                )
            else:
                self.values["signature_algorithm"] = alg

        self.number("SignatureTTL", "signature_ttl", convert=lambda v: v or None)
        self.number("MinimumKeyBits", "minimum_key_bits")
        self.number("MaximumSignaturesToVerify", "maximum_signatures_to_verify")
        self.flag("MultipleSignatures", "multiple_signatures")
        self.flag("RemoveOldSignatures", "remove_old_signatures")
        self.flag("RequireSafeKeys", "require_safe_keys")
        self.flag("CheckSigningTable", "check_signing_table")
        self.flag("SkipUnpublishedKeys", "skip_unpublished_keys")

    def keys(self) -> None:
        key_table = signing_table = None
        found = self.dataset("KeyTable", case_insensitive=False)
        if found is not None:
            _, ds = found
            key_table, problems = KeyTable.build(ds)
            self.problems.extend(problems)
            self.values["key_table"] = key_table
        found_st = self.dataset("SigningTable", ascii_only=True)
        if found_st is not None:
            st_setting, ds = found_st
            signing_table = SigningTable(ds)
            self.values["signing_table"] = signing_table
            if self.get("KeyTable") is None:
                self.error(st_setting, "SigningTable needs a KeyTable")
            elif key_table is not None:
                self.problems.extend(signing_table.check_against(key_table))

        single = {n: self.get(n) for n in ("Domain", "Selector", "KeyFile")}
        signs = Mode.SIGN in self.values.get("mode", Mode.SIGN | Mode.VERIFY)
        if self.get("KeyTable") is not None:
            for setting in single.values():
                if setting is not None:
                    self.warn(setting, f"{setting.name} is ignored because a KeyTable is set")
            if (
                self.get("SigningTable") is None
                and self.get("SetupPolicyScript") is None
                and not daemon_refusals_of(self.raw, signs)
            ):
                self.warn(
                    self.get("KeyTable"),
                    "KeyTable without a SigningTable: no message will be signed",
                    "add a SigningTable",
                )
            self.values["key_source"] = KeySource.TABLES
            return

        given = {n: s for n, s in single.items() if s is not None}
        if not given:
            return
        key_setting = given.get("KeyFile")
        # OpenDKIM opens KeyFile whatever the Mode, and refuses to start without it.
        if key_setting is not None and (
            not os.path.isfile(key_setting.value) or not os.access(key_setting.value, os.R_OK)
        ):
            self.error(key_setting, f'KeyFile: cannot read "{key_setting.value}"')
        selector = given.get("Selector")
        first = next(iter(given.values()))
        if signs and (key_setting is None) != (selector is None):
            self.error(
                first,
                "KeyFile and Selector must both be defined or both be undefined",
                "or use KeyTable and SigningTable",
            )
            return
        if signs and key_setting is None:
            self.error(first, "Domain requires KeyFile and Selector")
            return
        if len(given) < 3:
            missing = " and ".join(n for n in single if n not in given)
            # OpenDKIM starts so (Mode v, or KeyFile and Selector without Domain) and
            # signs nothing.
            self.warn(
                first,
                f"single-key signing needs Domain, Selector and KeyFile; {missing} missing: "
                "no mail is signed",
            )
            return
        assert key_setting is not None and selector is not None
        domains = self.dataset("Domain")
        if domains is None:
            return
        subdomains = self.get("SubDomains")
        self.values["single_key"] = SingleKey(
            domains[1],
            selector.value,
            key_setting.value,
            bool(subdomains.parsed) if subdomains else False,
        )
        self.values["key_source"] = KeySource.SINGLE_KEY

    def signature_tags(self) -> None:
        """Options that add tags to our signatures: l=, r=y, atps=/atpsh=."""
        found = self.dataset("BodyLengthDB")
        if found is not None:
            self.values["body_length_db"] = found[1]
        self.flag("RequestReports", "request_reports")
        self.number("MaximumSignedBytes", "maximum_signed_bytes")
        found = self.dataset("ATPSDomains")
        if found is not None:
            self.values["atps_domains"] = found[1]
        setting = self.get("ATPSHashAlgorithm")
        if setting is not None:
            name = setting.value.lower()
            if name not in ATPS_HASHES:
                # dkimf_config_load's words
                self.error(
                    setting, f'unknown ATPS hash "{setting.value}"', "use sha256, sha1 or none"
                )
            else:
                self.values["atps_hash"] = name

    def header_names(self, name: str) -> tuple[Setting, list[str]] | None:
        found = self.dataset(name)
        if found is None:
            return None
        setting, ds = found
        return setting, [entry.key for entry in ds if entry.key]

    def headers(self) -> None:
        for option, attr in (("SignHeaders", "sign_headers"), ("OmitHeaders", "omit_headers")):
            found = self.header_names(option)
            if found is not None:
                self.values[attr] = HeaderList.from_names(found[1])
        found = self.header_names("OversignHeaders")
        if found is not None:
            self.values["oversign_headers"] = tuple(h.lower() for h in found[1])
        found = self.header_names("SenderHeaders")
        if found is not None:
            self.values["sender_headers"] = tuple(h.lower() for h in found[1])
        self.replace_rules()

    def replace_rules(self) -> None:
        setting = self.get("ReplaceRules")
        limit = self.dataset("ReplaceHeaders")
        if setting is None:
            return
        try:
            rules = ReplaceRules.load(setting.value)
        except ReplaceRulesError as exc:
            self.error(setting, f"failed to load ReplaceRules from {setting.value}: {exc}")
            return
        self.values["replace_rules"] = rules_for(rules, None if limit is None else limit[1])

    def hosts(self) -> None:
        for option, attr in (
            ("InternalHosts", "internal_hosts"),
            ("ExternalIgnoreList", "external_ignore_list"),
            ("PeerList", "peer_list"),
        ):
            found = self.dataset(option)
            if found is None:
                continue
            hosts, problems = check_host_entries(found[1], option)
            self.problems.extend(problems)
            self.values[attr] = hosts

        found = self.dataset("MacroList", case_insensitive=False)
        if found is not None:
            setting, ds = found
            if ds.kind is DatasetKind.REFILE:
                self.error(setting, "MacroList must be a file: or csl: data set")
            else:
                self.values["macro_list"] = tuple(
                    MacroRequirement(e.key, tuple(v for v in (e.value or "").split("|") if v))
                    for e in ds.entries
                )

    def results(self) -> None:
        actions = dict(DEFAULT_ACTIONS)
        default = self.get("On-Default")
        if default is not None:
            actions = dict.fromkeys(actions, self.action(default))
        for condition in Condition:
            setting = self.get(condition.option)
            if setting is not None:
                actions[condition] = self.action(setting)
        self.values["on_actions"] = MappingProxyType(actions)

        setting = self.get("AuthservID")
        if setting is not None:
            self.values["authserv_id"] = setting.value
        self.flag("AlwaysAddARHeader", "always_add_ar_header")
        self.flag("AuthservIDWithJobID", "authserv_id_with_job_id")
        self.flag("NoHeaderB", "no_header_b")
        self.flag("KeepAuthResults", "keep_auth_results")
        self.flag("RemoveARAll", "remove_ar_all")
        found = self.dataset("RemoveARFrom")
        if found is not None:
            self.values["remove_ar_from"] = found[1]
        self.flag("SoftwareHeader", "software_header")
        self.flag("StrictHeaders", "strict_headers")
        self.flag("IgnoreMalformedMail", "ignore_malformed_mail")
        self.flag("SendReports", "send_reports")
        for option, attr in (
            ("ReportAddress", "report_address"),
            ("ReportBccAddress", "report_bcc_address"),
            ("MTACommand", "mta_command"),
        ):
            setting = self.get(option)
            if setting is not None:
                self.values[attr] = setting.value
        setting = self.get("SMTPURI")
        if setting is not None:
            try:
                parse_smtp_uri(setting.value)
            except ValueError as exc:
                self.error(setting, f"SMTPURI: {exc}", "e.g. smtp://localhost or smtp://[::1]:25")
            else:
                self.values["smtp_uri"] = setting.value

    def recipients(self) -> None:
        found = self.dataset("DontSignMailTo")
        if found is not None:
            self.values["dont_sign_mail_to"] = found[1]

    def session_options(self) -> None:
        """Options read per message by the session's own modules (dkimd.exempt, ...)."""
        for option, attr in (
            ("ExemptDomains", "exempt_domains"),
            ("MTA", "mta_names"),
            ("ResignMailTo", "resign_mail_to"),
        ):
            found = self.dataset(option)
            if found is not None:
                self.values[attr] = found[1]
        for option, attr in (
            ("SenderMacro", "sender_macro"),
            ("RedirectFailuresTo", "redirect_failures_to"),
            ("IdentityHeader", "identity_header"),
        ):
            setting = self.get(option)
            if setting is not None:
                self.values[attr] = setting.value
        self.flag("RequiredHeaders", "required_headers")
        self.number("MaximumHeaders", "maximum_headers")
        self.flag("Quarantine", "quarantine")
        self.flag("CaptureUnknownErrors", "capture_unknown_errors")
        self.flag("IdentityHeaderRemove", "identity_header_remove")
        self.flag("ResignAll", "resign_all")

    def action(self, setting: Setting) -> Action:
        action = _ACTION_WORDS.get(setting.value.lower())
        if action is None:
            # OpenDKIM 2.11 takes any value here (dkimf_parsehandler's -1 reads as success)
            # and then falls through to accept: serve such a configuration the same way.
            self.warn(
                setting,
                f'{setting.name}: unknown action "{setting.value}"; the message is accepted',
                "use accept, discard, quarantine, reject or tempfail",
            )
            return Action.ACCEPT
        return action

    def dns(self) -> None:
        setting = self.get("Nameservers")
        if setting is not None:
            servers = [s.strip() for s in setting.value.split(",") if s.strip()]
            bad = []
            for server in servers:
                try:
                    split_nameserver(server)
                except ValueError:
                    bad.append(server)
            if bad or not servers:
                self.error(
                    setting,
                    f'Nameservers: "{bad[0] if bad else setting.value}" is not an IP address',
                    "give a comma-separated list of IP addresses (ADDR:PORT or [ADDR]:PORT "
                    "for a resolver not on port 53)",
                )
            else:
                self.values["nameservers"] = tuple(servers)
        self.number("DNSTimeout", "dns_timeout")
        found = self.dataset("TestDNSData")
        if found is not None:
            self.values["test_dns_data"] = found[1]
        setting = self.get("TestPublicKeys")
        if setting is not None:
            # OpenDKIM opens the file per key lookup, so a missing one does not stop it
            # from starting; every signature then meets a key retrieval failure.
            if not os.access(setting.value, os.R_OK):
                self.warn(
                    setting,
                    f'TestPublicKeys: cannot read "{setting.value}"; '
                    "every key lookup will fail temporarily",
                )
            # Relative to the directory the filter starts in (OpenDKIM reads it once, in
            # main); absolute from here on, so no later chdir moves it.
            self.values["test_public_keys"] = os.path.abspath(setting.value)
        self.resolver()

    def resolver(self) -> None:
        flags = {n: self.get(n) for n in ("DNSConnect", "ResolverTracing", "QueryCache")}
        setting = self.get("ResolverConfiguration")
        self.values["resolver"] = ResolverOptions(
            tcp=bool(flags["DNSConnect"] and flags["DNSConnect"].parsed),
            tracing=bool(flags["ResolverTracing"] and flags["ResolverTracing"].parsed),
            query_cache=None if flags["QueryCache"] is None else bool(flags["QueryCache"].parsed),
            # read when the resolver is built (start, reload): relative to BaseDirectory
            configuration=None if setting is None else os.path.abspath(setting.value),
        )

    def dnssec(self) -> None:
        for option, attr in (("BogusKey", "bogus_key"), ("UnprotectedKey", "unprotected_key")):
            setting = self.get(option)
            if setting is None:
                continue
            try:
                self.values[attr] = KeyAction(setting.value.strip().lower())
            except ValueError:
                # OpenDKIM refuses to start: "unknown key action '...'" (observed).
                self.error(
                    setting,
                    f"{setting.name}: unknown key action '{setting.value}'",
                    "use fail, neutral or none",
                )
        self.flag("TrustResolverAD", "trust_resolver_ad")
        trust_ad = self.get("TrustResolverAD")
        if trust_ad is not None and trust_ad.parsed:
            if self.get("Nameservers") is None:
                self.warn(
                    trust_ad,
                    "TrustResolverAD: no Nameservers; the AD bit of the resolver in "
                    "/etc/resolv.conf decides whether key records are secure",
                    "name a validating resolver you trust, on loopback, in Nameservers",
                )
            if self.get("TrustAnchorFile") is not None:
                self.warn(
                    trust_ad,
                    "TrustResolverAD: the resolver validates, so TrustAnchorFile is not used",
                )
        setting = self.get("TrustAnchorFile")
        if setting is None or self.raw.get("TestDNSData") is not None:
            # With TestDNSData OpenDKIM applies no resolver option (dkimf_config_setlib).
            return
        # dnspython's zone-file reader is loaded only for a configuration that needs it.
        from dkimd.dns.trust_anchors import load_trust_anchors

        try:
            load_trust_anchors(setting.value)
        except OSError as exc:
            self.error(setting, f"TrustAnchorFile: {setting.value}: {exc.strerror or exc}")
            return
        except ValueError as exc:
            self.error(
                setting,
                f"TrustAnchorFile: {setting.value}: {exc}",
                "give DS or DNSKEY records in zone-file format, as unbound's "
                "trust-anchor-file (Debian: /usr/share/dns/root.key)",
            )
            return
        self.values["trust_anchor_file"] = os.path.abspath(setting.value)

    def daemon(self) -> None:
        # No Socket is no problem of the file: -p may give one (OpenDKIM: -p wins, and
        # only a start with neither is refused).
        setting = self.get("Socket")
        if setting is not None:
            try:
                spec = self.values["socket"] = parse_socket_spec(setting.value)
            except ValueError as e:
                self.error(setting, f"Socket: {e}")
            else:
                # OpenDKIM takes "Socket 8891" as a path too; rarely what was meant.
                if spec.family == "local" and not os.path.isabs(spec.path):
                    self.warn(
                        setting,
                        f'Socket: "{spec.path}" is a UNIX socket path relative to the'
                        " directory dkimd starts in",
                        "write local:/absolute/path, or inet:PORT@HOST for TCP",
                    )

        setting = self.get("PidFile")
        if setting is not None:
            self.values["pid_file"] = setting.value
        self.number("UMask", "umask", 0, 0o777)

        setting = self.get("UserID")
        if setting is not None:
            user, colon, group = setting.value.partition(":")
            if not user or (colon and not group):
                self.error(setting, f'UserID: "{setting.value}" is not user[:group]')
            else:
                self.values["user_id"] = UserGroup(user, group or None)

        self.flag("Background", "background")
        self.flag("AutoRestart", "auto_restart")
        self.number("AutoRestartCount", "auto_restart_count")
        setting = self.get("AutoRestartRate")
        if setting is not None:
            match = _RATE.fullmatch(setting.value)
            if match is None or int(match[1]) == 0 or int(match[2]) == 0:
                self.error(
                    setting,
                    f'AutoRestartRate: "{setting.value}" is not n/t[u]',
                    "e.g. 10/1h: at most 10 restarts an hour",
                )
            else:
                seconds = int(match[2]) * _UNIT_SECONDS[match[3].lower()]
                self.values["auto_restart_rate"] = RestartRate(int(match[1]), seconds)
        self.number("Workers", "workers", minimum=1, maximum=1024)
        setting = self.get("LogFormat")
        if setting is not None:
            if setting.value.lower() in ("text", "json"):
                self.values["log_format"] = setting.value.lower()
            else:
                self.error(setting, f'LogFormat: "{setting.value}" is not text or json')
        self.number("MilterDebug", "milter_debug", minimum=-(2**31))  # <= 0: no trace
        self.flag("SoftStart", "soft_start")
        self.flag("StrictTestMode", "strict_test_mode")
        setting = self.get("TemporaryDirectory")
        if setting is not None:
            self.values["temporary_directory"] = setting.value
        setting = self.get("ChangeRootDirectory")
        if setting is not None:
            self.values["change_root_directory"] = setting.value

    def logging(self) -> None:
        self.flag("Syslog", "syslog")
        self.flag("SyslogSuccess", "syslog_success")
        self.flag("LogWhy", "log_why")
        setting = self.get("SyslogName")
        if setting is not None:
            if not setting.value or any(c.isspace() or c in "[]:" for c in setting.value):
                # it ends up as "NAME[pid]:" at the start of every line
                self.error(setting, f'SyslogName: "{setting.value}" cannot be a syslog tag')
            else:
                self.values["syslog_name"] = setting.value
        setting = self.get("SyslogFacility")
        if setting is not None:
            facility = setting.value.lower()
            if facility not in FACILITIES:
                self.error(
                    setting,
                    f'SyslogFacility: unknown facility "{setting.value}"',
                    "e.g. mail, daemon, local0 ... local7",
                )
            else:
                self.values["syslog_facility"] = facility

    def policy_scripts(self) -> None:
        names = ("SetupPolicyScript", "ScreenPolicyScript", "StatisticsPolicyScript")
        if all(self.get(name) is None for name in (*names, "FinalPolicyScript")):
            return
        # Imported only when needed (dkimd.lua also reads Config, which this module builds).
        from dkimd.lua.config import policy_scripts_from

        scripts, problems = policy_scripts_from(self.raw)
        self.problems.extend(problems)
        if scripts is not None:
            self.values["policy_scripts"] = scripts


def daemon_refusals_of(raw: RawConfig, signs: bool) -> list[Problem]:
    """What the filter refuses to start with although the key tools take it.

    opendkim's dkimf_config_load refuses a KeyTable with neither a SigningTable nor a
    SetupPolicyScript when it signs (in Mode v it does not mind); opendkim-testkey and
    opendkim-genzone read the same file happily, and so do `dkimd testkey` and `genzone`.
    """
    key_table = raw.get("KeyTable")
    if (
        signs
        and key_table is not None
        and raw.get("SigningTable") is None
        and raw.get("SetupPolicyScript") is None
    ):
        return [
            Problem(
                key_table.file,
                key_table.line,
                Severity.ERROR,
                "KeyTable requires either SigningTable or SetupPolicyScript",
                "add a SigningTable",
                "KeyTable",
            )
        ]
    return []


def daemon_refusals(config: Config, check_signing_table: bool | None = None) -> list[Problem]:
    """`daemon_refusals_of` for a loaded Config (the daemon and `dkimd check` ask), and the
    SigningTable walk when CheckSigningTable (or `check_signing_table`, from -G/-g) says so."""
    refusals = daemon_refusals_of(config.raw, config.signs) if config.raw is not None else []
    walk = config.check_signing_table if check_signing_table is None else check_signing_table
    if walk and config.signing_table is not None and config.key_table is not None:
        refusals.extend(walk_signing_table(config.signing_table, config.key_table))
    return refusals


def build_config(raw: RawConfig) -> ConfigReport:
    """Validate a RawConfig into a Config (None on errors), with every problem found."""
    if not raw.files:
        # The file itself could not be read: that is the only problem worth reporting, not
        # the options (a missing Socket...) an empty reading lacks.
        return ConfigReport(None, raw.problems, raw)
    builder = _Builder(raw)
    config = builder.build()
    return ConfigReport(config, tuple(builder.problems), raw)


def analyze_config(path: str | os.PathLike[str], *, base_dir: str | None = None) -> ConfigReport:
    """Read and validate opendkim.conf at `path`; never raises for configuration problems."""
    return build_config(read_config_file(path, base_dir=base_dir))


def analyze_config_text(
    text: str, *, source: str = "<config>", base_dir: str | None = None
) -> ConfigReport:
    return build_config(read_config_text(text, source=source, base_dir=base_dir))


def _config_or_raise(report: ConfigReport) -> Config:
    if report.config is None:
        raise ConfigError(report.problems)
    return report.config


def load_config(path: str | os.PathLike[str], *, base_dir: str | None = None) -> Config:
    """Load opendkim.conf at `path`; raises ConfigError listing every error found."""
    return _config_or_raise(analyze_config(path, base_dir=base_dir))


def parse_config_text(
    text: str, *, source: str = "<config>", base_dir: str | None = None
) -> Config:
    """Like load_config, from text (data set paths in it must still exist)."""
    return _config_or_raise(analyze_config_text(text, source=source, base_dir=base_dir))
