"""The differential matrix: option settings x awkward messages x modes.

* `SETTINGS` maps each opendkim.conf option to its main settings (each a dict of options added
  to the base configuration; `{dir}` in a value is the configuration's own directory, where
  `files_for` writes its files), or to the reason it is left out (it does not change what the milter
  answers: process, logging or socket options). Settings of options dkimd does not implement
  yet are kept here and join the matrix the day the option's "not implemented" mark goes.
* `MESSAGES` are built once per run by `build_messages` (signed ones by the real OpenDKIM).
* `MODES`: `s` (Mode s, the client is internal), `v` (Mode v, the client is outside),
  `sv:in` and `sv:out` (Mode sv, from inside and from outside).

A case id is ``setting/mode/message``, e.g. ``On-BadSignature=reject/v/tampered-body``; the
setting id is ``baseline`` or the options joined by ``+``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dkimd.config.options import OPTIONS
from support.differential.client import Envelope
from support.opendkim import DkimKey, genkey, opendkim_sign

__all__ = [
    "EXTERNAL",
    "INTERNAL",
    "MESSAGE_IDS",
    "MODES",
    "OTHER_SUITES",
    "SETTINGS",
    "Config",
    "Keys",
    "build_messages",
    "case_ids",
    "config_options",
    "configs",
    "make_keys",
    "missing_settings",
    "sample",
    "write_files",
]

# Postfix's daemon_name macro too, so that MacroList has something to look at.
_MACROS = (("j", "mx.test.example"), ("i", "TESTQUEUEID"), ("{daemon_name}", "ORIGINATING"))
INTERNAL = Envelope(client_addr="127.0.0.1", client_host="localhost", macros=_MACROS)
EXTERNAL = Envelope(client_addr="192.0.2.77", client_host="mx.outside.example", macros=_MACROS)

#: mode id -> (opendkim.conf Mode, the envelope of the messages)
MODES: dict[str, tuple[str, Envelope]] = {
    "s": ("s", INTERNAL),
    "v": ("v", EXTERNAL),
    "sv:in": ("sv", INTERNAL),
    "sv:out": ("sv", EXTERNAL),
}

_NO_MESSAGE_EFFECT = "changes nothing the milter answers (process, socket or logging)"
_REFUSED_BY_2_11 = (
    "Debian's OpenDKIM 2.11 refuses the name (unrecognized parameter), so there is nothing "
    "to compare; dkimd does what opendkim.conf(5) documents (tests/unit/test_{})"
)
_DNSSEC = (
    "needs a DNSSEC-signed zone, not TestDNSData: compared with the real OpenDKIM on one in "
    "tests/interop/test_dnssec.py"
)

SETTINGS: dict[str, list[dict[str, str]] | str] = {
    "AlwaysAddARHeader": [{"AlwaysAddARHeader": "yes"}],
    "ATPSDomains": [{"ATPSDomains": "example.com"}],
    "ATPSHashAlgorithm": [{"ATPSDomains": "example.com", "ATPSHashAlgorithm": "sha1"}],
    "AuthservID": [{"AuthservID": "auth.example"}],
    "AuthservIDWithJobID": [{"AuthservIDWithJobID": "yes"}],
    "AutoRestart": _NO_MESSAGE_EFFECT,
    "AutoRestartCount": _NO_MESSAGE_EFFECT,
    "AutoRestartRate": _NO_MESSAGE_EFFECT,
    "Background": _NO_MESSAGE_EFFECT,
    "BodyLengthDB": [{"BodyLengthDB": "csl:rcpt@example.net"}],
    "Canonicalization": [
        {"Canonicalization": "simple/simple"},
        {"Canonicalization": "relaxed/simple"},
    ],
    "DNSTimeout": "the harness's DNS is TestDNSData, which never times out",
    "Domain": [{"Domain": "example.com", "Selector": "mail", "KeyFile": "{key}"}],
    "DontSignMailTo": [{"DontSignMailTo": "csl:rcpt@example.net"}],
    "ExternalIgnoreList": [{"ExternalIgnoreList": "csl:192.0.2.0/24"}],
    "Include": "only reads another file of options",
    "InternalHosts": [{"InternalHosts": "csl:192.0.2.0/24"}],
    "KeepAuthResults": [{"KeepAuthResults": "yes"}],
    "KeyFile": "exercised with Domain (the setting Domain+Selector+KeyFile)",
    "KeyTable": "the base configuration signs through KeyTable and SigningTable",
    "LogWhy": _NO_MESSAGE_EFFECT,
    "MacroList": [{"MacroList": "daemon_name=ORIGINATING"}],
    "MaximumSignaturesToVerify": [{"MaximumSignaturesToVerify": "1"}],
    "MaximumSignedBytes": [{"MaximumSignedBytes": "10"}],
    "MinimumKeyBits": [{"MinimumKeyBits": "2048"}],
    "Mode": "the mode axis of the matrix",
    "MultipleSignatures": [{"MultipleSignatures": "yes"}],
    "Nameservers": "the harness's DNS is TestDNSData",
    "NoHeaderB": [{"NoHeaderB": "yes", "AlwaysAddARHeader": "yes"}],
    "OmitHeaders": [{"OmitHeaders": "Subject"}],
    "On-BadSignature": [{"On-BadSignature": "reject"}, {"On-BadSignature": "tempfail"}],
    "On-Default": [{"On-Default": "reject"}],
    "On-DNSError": [{"On-DNSError": "accept"}],
    "On-InternalError": [{"On-InternalError": "accept"}],
    "On-KeyNotFound": [{"On-KeyNotFound": "reject"}],
    "On-NoSignature": [{"On-NoSignature": "reject"}],
    "On-Security": [{"On-Security": "reject"}],
    "On-SignatureError": [{"On-SignatureError": "accept"}],
    "OversignHeaders": [{"OversignHeaders": "From"}, {"OversignHeaders": "Subject"}],
    "PeerList": [{"PeerList": "csl:192.0.2.77"}],
    "PidFile": _NO_MESSAGE_EFFECT,
    "RemoveARAll": [{"RemoveARAll": "yes"}],
    "RemoveARFrom": [{"RemoveARFrom": "csl:other.example"}],
    "RemoveOldSignatures": [{"RemoveOldSignatures": "yes"}],
    "RequestReports": [{"RequestReports": "yes"}],
    "RequireSafeKeys": "the harness keys live under /tmp, which RequireSafeKeys refuses",
    "Selector": "exercised with Domain (the setting Domain+Selector+KeyFile)",
    "SenderHeaders": [{"SenderHeaders": "Sender"}],
    "SignatureAlgorithm": [{"SignatureAlgorithm": "rsa-sha1"}],
    "SignatureTTL": [{"SignatureTTL": "3600"}],
    "SignHeaders": [{"SignHeaders": "From,Subject"}],
    "SigningTable": "the base configuration signs through KeyTable and SigningTable",
    "Socket": _NO_MESSAGE_EFFECT,
    "SoftwareHeader": [{"SoftwareHeader": "yes"}],
    "SubDomains": [
        {"Domain": "sub.example.com", "Selector": "mail", "KeyFile": "{key}", "SubDomains": "yes"}
    ],
    "Syslog": _NO_MESSAGE_EFFECT,
    "SyslogFacility": _NO_MESSAGE_EFFECT,
    "SyslogName": _NO_MESSAGE_EFFECT,
    "SyslogSuccess": _NO_MESSAGE_EFFECT,
    "TestDNSData": "every configuration of the matrix reads its keys from TestDNSData",
    "TestPublicKeys": [{"TestPublicKeys": "{dir}/pubkeys"}],
    "UMask": _NO_MESSAGE_EFFECT,
    "UserID": "the harness runs both daemons as the test user",
    "X-Header": "an alias of SoftwareHeader",
    "IgnoreMalformedMail": [{"IgnoreMalformedMail": "yes"}],
    "StrictHeaders": [{"StrictHeaders": "yes"}],
    "ReplaceHeaders": [{"ReplaceRules": "{dir}/replace", "ReplaceHeaders": "From"}],
    "ReplaceRules": [{"ReplaceRules": "{dir}/replace"}],
    "SendReports": "failure reports leave through MTACommand, not the milter (tests/unit)",
    "ReportAddress": "failure reports leave through MTACommand, not the milter (tests/unit)",
    "ReportBccAddress": "failure reports leave through MTACommand, not the milter (tests/unit)",
    "MTACommand": "failure reports leave through MTACommand, not the milter (tests/unit)",
    # Being implemented elsewhere in issue 14: they join the matrix (or stay out, for the
    # reason given) as soon as their "not implemented" mark goes. The options that stay
    # warnings for good (VBR-*, Statistics*, LDAP*, ...) need no entry until then.
    "AllowSHA1Only": [{"AllowSHA1Only": "yes"}],
    "CaptureUnknownErrors": [{"CaptureUnknownErrors": "yes", "On-BadSignature": "quarantine"}],
    "ClockDrift": [{"ClockDrift": "0"}],
    "ExemptDomains": [{"ExemptDomains": "csl:example.com"}],
    "FixCRLF": [{"FixCRLF": "yes"}],
    "IdentityHeader": _REFUSED_BY_2_11.format("identity_header.py"),
    "LogResults": _NO_MESSAGE_EFFECT,
    "MaximumHeaders": [{"MaximumHeaders": "200"}],
    "Minimum": [{"Minimum": "50%"}],
    "MustBeSigned": [{"MustBeSigned": "Subject"}],
    "Quarantine": [{"Quarantine": "yes", "On-BadSignature": "quarantine"}],
    "RedirectFailuresTo": [{"RedirectFailuresTo": "postmaster@example.net"}],
    "RequiredHeaders": [{"RequiredHeaders": "yes"}],
    "ResignAll": _REFUSED_BY_2_11.format("resign.py"),
    "ResignMailTo": _REFUSED_BY_2_11.format("resign.py"),
    "SelectCanonicalizationHeader": [{"SelectCanonicalizationHeader": "X-Canon"}],
    "SenderMacro": [{"SenderMacro": "{daemon_name}"}],
    "StrictTestMode": [{"StrictTestMode": "yes"}],
    "WeakSyntaxChecks": [{"WeakSyntaxChecks": "yes"}],
    "IdentityHeaderRemove": _REFUSED_BY_2_11.format("identity_header.py"),
    "SMTPURI": _REFUSED_BY_2_11.format("reports.py; the reports leave over SMTP, not the milter"),
    "StatisticsPolicyScript": (
        "Debian's OpenDKIM 2.11 refuses the name (unrecognized parameter); the Lua hooks "
        "(issue 15) are tested with their scripts in tests/unit/lua/"
    ),
    "TrustSignaturesFrom": [{"TrustSignaturesFrom": "csl:example.org"}],
    "TrustAnchorFile": _DNSSEC,
    "BogusKey": _DNSSEC,
    "UnprotectedKey": _DNSSEC,
    "MTA": [{"MTA": "csl:ORIGINATING"}],
    "BaseDirectory": "only changes where relative paths are read",
    "ChangeRootDirectory": "a process option (chroot); the harness's paths are outside any root",
    "TemporaryDirectory": _NO_MESSAGE_EFFECT,
    "SoftStart": "only for LDAP and SQL data sets",
    **dict.fromkeys(
        (
            "LDAPAuthMechanism",
            "LDAPAuthName",
            "LDAPAuthRealm",
            "LDAPAuthUser",
            "LDAPBindPassword",
            "LDAPBindUser",
            "LDAPDisableCache",
            "LDAPKeepaliveIdle",
            "LDAPKeepaliveInterval",
            "LDAPKeepaliveProbes",
            "LDAPTimeout",
            "LDAPUseTLS",
        ),
        "only for ldap: data sets: tests/interop/test_ldap_opendkim.py compares OpenDKIM on "
        "them, tests/unit/kvstores/test_ldap_options.py tests each against slapd",
    ),
    "DNSConnect": "the harness's DNS is TestDNSData",
    "QueryCache": "the harness's DNS is TestDNSData",
    "ResolverConfiguration": "the harness's DNS is TestDNSData",
    "ResolverTracing": _NO_MESSAGE_EFFECT,
    "MilterDebug": _NO_MESSAGE_EFFECT,
    "SetupPolicyScript": "Lua hooks (issue 15), tested with their scripts",
    "ScreenPolicyScript": "Lua hooks (issue 15), tested with their scripts",
    "FinalPolicyScript": "Lua hooks (issue 15), tested with their scripts",
}


def files_for(keys: Keys) -> dict[str, str]:
    """Files every configuration directory gets (named by `{dir}/NAME` in SETTINGS)."""
    return {
        "pubkeys": "".join(f"{name} {value}\n" for name, value in keys.records.items()),
        "replace": "Alice\tAlicia\n",
    }


def missing_settings() -> list[str]:
    """Implemented OpenDKIM options with neither settings nor a reason here."""
    known = {name.lower() for name in SETTINGS}
    return sorted(
        spec.name
        for spec in OPTIONS.values()
        if spec.implemented and not spec.extension and spec.key not in known
    )


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix: the base, a setting, a mode."""

    setting_id: str
    mode_id: str
    options: Mapping[str, str]

    @property
    def id(self) -> str:
        return f"{self.setting_id}/{self.mode_id}"

    def case_id(self, message_id: str) -> str:
        return f"{self.id}/{message_id}"


def _setting_id(setting: Mapping[str, str]) -> str:
    return "+".join(f"{k}={v}" for k, v in setting.items()) or "baseline"


def configs() -> Iterator[Config]:
    """Every configuration of the full matrix, in a stable order: the baseline, then each
    implemented option's settings (an option shared by two settings is run once), x MODES."""
    settings: dict[str, Mapping[str, str]] = {"baseline": {}}
    for name, entry in SETTINGS.items():
        spec = OPTIONS.get(name.lower())
        if spec is None or not spec.implemented or isinstance(entry, str):
            continue
        for setting in entry:
            if all(OPTIONS[k.lower()].implemented for k in setting):
                settings.setdefault(_setting_id(setting), setting)
    for setting_id, setting in settings.items():
        for mode_id in MODES:
            yield Config(setting_id, mode_id, setting)


def sample(all_configs: list[Config], share: int) -> list[Config]:
    """A deterministic subset: the baseline in every mode, and about one configuration in
    `share` of the others, chosen by a hash of its id (the same on every machine)."""
    return [
        c
        for c in all_configs
        if c.setting_id == "baseline"
        or int(hashlib.sha256(c.id.encode()).hexdigest(), 16) % share == 0
    ]


# ---- keys and messages -------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    mail: DkimKey  # the signing key of both filters, published
    second: DkimKey  # a second published key
    gone: DkimKey  # a key whose record is not published
    records: dict[str, str]


def make_keys(directory: Path) -> Keys:
    mail = genkey(directory / "mail", "example.com", "mail", bits=1024)
    second = genkey(directory / "second", "example.com", "second", bits=1024)
    gone = genkey(directory / "gone", "example.com", "gone", bits=1024)
    records = {
        **mail.records,
        **second.records,
        "mail._domainkey.sub.example.com": mail.txt,
        "revoked._domainkey.example.com": "v=DKIM1; k=rsa; p=",
    }
    return Keys(mail, second, gone, records)


_HEAD = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: differential\r\n"
    b"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <matrix@example.com>\r\n"
)
_BODY = b"Hello Bob,\r\n\r\nthis went through both filters.\r\n"
PLAIN = _HEAD + b"\r\n" + _BODY


def _broken_signature() -> bytes:
    return (
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=mail;\r\n"
        b"\th=From:Subject; bh=3VWGQGY+cSNYd1MGM+X6hRXU0stl8JCaQtl4mbX/j2I=; b=AiGrvHu2mODR\r\n"
    ).replace(b"v=1;", b"v=1")


MESSAGE_IDS = (
    "unsigned",
    "no-from",
    "two-from",
    "from-no-domain",
    "8bit-header",
    "empty-body",
    "huge-header",
    "large-body",
    "existing-ar",
    "signed",
    "signed-simple",
    "tampered-body",
    "tampered-header",
    "two-signatures",
    "l-signed-extended",
    "rsa-sha1",
    "key-not-found",
    "signed-with-revoked-key",
    "broken-signature",
    "subdomain-from",
    "sender-field",
)

#: Setting ids of the differential tests outside the matrix (tests/interop), which use the
#: same case ids and the same docs/differences.md.
OTHER_SUITES = ("authres", "atps", "eoh", "options")


def case_ids() -> Iterator[str]:
    """Every case id of the full matrix."""
    for config in configs():
        for message_id in MESSAGE_IDS:
            yield config.case_id(message_id)


def build_messages(keys: Keys) -> dict[str, bytes]:
    """The awkward messages, id -> bytes (CRLF). Signatures are the real OpenDKIM's."""

    def sign(message: bytes, key: DkimKey, canon: str = "relaxed/relaxed", **options: str) -> bytes:
        return opendkim_sign(
            message, key.private_key, key.domain, key.selector, canon, options=options or None
        )

    signed = sign(PLAIN, keys.mail)
    huge_to = b"To: " + b",\r\n ".join(b"user%d@example.net" % i for i in range(600)) + b"\r\n"
    messages = {
        "unsigned": PLAIN,
        "no-from": PLAIN.replace(b"From: Alice <alice@example.com>\r\n", b""),
        "two-from": b"From: Mallory <mallory@example.org>\r\n" + PLAIN,
        "from-no-domain": PLAIN.replace(b"<alice@example.com>", b"<alice>"),
        "8bit-header": PLAIN.replace(b"Subject: differential", "Subject: Grüße, ça va".encode()),
        "empty-body": _HEAD + b"\r\n",
        "huge-header": PLAIN.replace(b"To: Bob <bob@example.net>\r\n", huge_to),
        # Three body chunks of 64 KB: replies to each, SMFIR_SKIP.
        "large-body": _HEAD + b"\r\n" + b"a line of a large body, repeated many times\r\n" * 4000,
        "existing-ar": (
            b"Authentication-Results: mx.test.example; dkim=pass header.d=example.com\r\n"
            b"Authentication-Results: other.example; dkim=fail header.d=example.com\r\n" + signed
        ),
        "signed": signed,
        "signed-simple": sign(PLAIN, keys.mail, "simple/simple"),
        "tampered-body": signed.replace(b"both filters", b"one filter"),
        "tampered-header": signed.replace(b"Subject: differential", b"Subject: changed"),
        "two-signatures": sign(signed, keys.second, "simple/simple"),
        "l-signed-extended": sign(PLAIN, keys.mail, BodyLengthDB="csl:rcpt@example.net")
        + b"Appended.\r\n",
        "rsa-sha1": sign(PLAIN, keys.mail, SignatureAlgorithm="rsa-sha1"),
        "key-not-found": sign(PLAIN, keys.gone),
        "signed-with-revoked-key": opendkim_sign(
            PLAIN, keys.gone.private_key, "example.com", "revoked", "relaxed/relaxed"
        ),
        "broken-signature": _broken_signature() + PLAIN,
        "subdomain-from": PLAIN.replace(b"alice@example.com", b"alice@sub.example.com"),
        "sender-field": b"Sender: Bob <bob@example.org>\r\n" + PLAIN,
    }
    assert tuple(messages) == MESSAGE_IDS
    return messages


def write_files(directory: Path, keys: Keys) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files_for(keys).items():
        (directory / name).write_text(text)


def config_options(config: Config, directory: Path, keys: Keys) -> dict[str, str]:
    """The setting's options with `{dir}` and `{key}` filled in."""
    return {
        k: v.replace("{dir}", os.fspath(directory)).replace(
            "{key}", os.fspath(keys.mail.private_key)
        )
        for k, v in config.options.items()
    }
