"""Check signing keys against the DNS records that publish them (opendkim-testkey's job).

For each key: is the private key usable (readable, parseable, safe on disk, long enough)?
Is there a record at SELECTOR._domainkey.DOMAIN, does it parse, is it not revoked, does it
allow e-mail and our hash, and does its p= match the private key? Every finding is a value;
the CLI decides wording and exit codes.

The checks opendkim-testkey makes (libopendkim dkim_test_key()) are all here, with the same
exit-status classes: a record that cannot be fetched or used is EX_UNAVAILABLE (69), a key
that does not match its record is EX_DATAERR (65), a key file that cannot be examined is
EX_OSERR (71). dkimd adds key size, revocation, t=y, s=, h= and key-type checks, all
things that make verifiers fail a signature opendkim-testkey would have called fine.
"""

from __future__ import annotations

import enum
import functools
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from dkimd.dkim.errors import KeyLoadError, KeyRecordError
from dkimd.dkim.keys import KeyRecord, PrivateKey, load_private_key, parse_key_record
from dkimd.dns.base import DnssecStatus, TxtLookup, TxtStatus
from dkimd.keytools.keyfile import check_key_file

EX_OK = 0
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_CONFIG = 78


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    message: str
    exit_code: int = EX_DATAERR  # for errors: the opendkim-testkey exit status class


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key to test: a KeyTable entry, or -d/-s[/-k] from the command line."""

    name: str  # the KeyTable key name, or SELECTOR._domainkey.DOMAIN
    domain: str
    selector: str
    key_path: str | None = None
    key_data: bytes | None = None  # a key written inline in the KeyTable

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What counts as a pass: the config's MinimumKeyBits, RequireSafeKeys, algorithm."""

    minimum_key_bits: int = 1024
    require_safe_keys: bool = True
    signature_algorithm: str = "rsa-sha256"
    key_owner_uid: int | None = None  # judge file safety for this user (the daemon's)


@dataclass
class KeyResult:
    spec: KeySpec
    findings: list[Finding] = field(default_factory=list)
    record: KeyRecord | None = None
    private_key: PrivateKey | None = None
    # what DNSSEC says of the published record, when the lookup validates (TrustAnchorFile)
    dnssec: DnssecStatus | None = None

    def error(self, message: str, exit_code: int = EX_DATAERR) -> None:
        self.findings.append(Finding(Severity.ERROR, message, exit_code))

    def warn(self, message: str) -> None:
        self.findings.append(Finding(Severity.WARNING, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def passed(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        return self.errors[0].exit_code if self.errors else EX_OK


@functools.lru_cache(maxsize=64)
def _parsed_key(data: bytes) -> PrivateKey:
    """`load_private_key`, once per distinct key in a run: loading an RSA key checks it
    (~40 ms for 2048 bits), and a fleet's KeyTable often names one key file for thousands
    of domains. Keyed by the key's bytes, so a file that changes is loaded again."""
    return load_private_key(data)


def _load_private(spec: KeySpec, policy: KeyPolicy, result: KeyResult) -> None:
    if spec.key_path is None and spec.key_data is None:
        return  # record-only check (opendkim-testkey without -k)
    if spec.key_path is not None:
        path = spec.key_path
        try:
            st = os.stat(path)
        except OSError as exc:
            result.error(f"{path}: stat(): {exc.strerror}", EX_OSERR)
            return
        if not os.path.isfile(path):
            result.error(f"{path}: stat(): not a regular file", EX_OSERR)
            return
        if stat.S_IMODE(st.st_mode) & 0o066:
            # opendkim-testkey's own warning: looks at the file's mode bits alone.
            result.warn(
                f"{path}: unsafe permissions (mode {stat.S_IMODE(st.st_mode):04o}: "
                "group or other may read or write it; chmod 600)"
            )
        # The filter's view (RequireSafeKeys): the whole path, as dkimf_securefile() does.
        safety = check_key_file(path, policy.key_owner_uid)
        if not safety.safe:
            reason = "; ".join(safety.problems)
            text = f"{path}: unsafe permissions: {reason}"
            if policy.require_safe_keys:
                result.error(
                    f"{text} (RequireSafeKeys is on, so the filter will refuse this key; "
                    "chmod 600 / chown it to the filter's user, or fix the directory)"
                )
            else:
                result.warn(text)
        try:
            with open(path, "rb") as fh:
                data = fh.read(min(st.st_size, 1 << 20) or (1 << 20))
        except OSError as exc:
            result.error(f"{path}: open(): {exc.strerror}", EX_OSERR)
            return
    else:
        assert spec.key_data is not None
        data = spec.key_data
    try:
        key = _parsed_key(data)
    except KeyLoadError as exc:
        # KeyLoadError never quotes key bytes, so its text is safe to show.
        result.error(f"private key: {exc}")
        return
    result.private_key = key
    if key.key_type == "rsa" and key.bits < policy.minimum_key_bits:
        result.error(
            f"private key is {key.bits} bits, shorter than MinimumKeyBits "
            f"({policy.minimum_key_bits}); verifiers reject it (RFC 8301 requires 1024)"
        )
    wanted = policy.signature_algorithm.split("-", 1)[0]
    if key.key_type != wanted:
        result.warn(
            f"private key is {key.key_type} but SignatureAlgorithm is {policy.signature_algorithm}"
        )


def _check_record(
    spec: KeySpec, policy: KeyPolicy, result: KeyResult, records: Sequence[bytes]
) -> None:
    if len(records) > 1:
        # RFC 6376 3.6.2.2: several TXT records at the key name give undefined results.
        result.warn(f"{len(records)} TXT records at {spec.dns_name}; verifiers may use any of them")
    try:
        record = parse_key_record(records[0])
    except KeyRecordError as exc:
        result.error(f"syntax error in key data: {exc}", EX_UNAVAILABLE)
        return
    result.record = record
    if record.revoked:
        # Same words as opendkim-testkey (libopendkim's DKIM_SIGERROR_KEYREVOKED).
        result.error("Revoked key", EX_UNAVAILABLE)
        return
    if record.testing:
        result.warn("the record has t=y: verifiers treat this domain as testing DKIM")
    if not record.allows_email():
        result.error(f"the record's s= ({':'.join(record.service_types)}) does not allow e-mail")
    hash_name = policy.signature_algorithm.rsplit("-", 1)[-1]
    if not record.allows_hash(hash_name):
        assert record.hash_algorithms is not None
        result.error(
            f"the record's h= ({':'.join(record.hash_algorithms)}) does not allow {hash_name}"
        )
    if record.key_type == "rsa" and record.key_bits < policy.minimum_key_bits:
        result.error(
            f"the published key is {record.key_bits} bits, shorter than MinimumKeyBits "
            f"({policy.minimum_key_bits})"
        )
    key = result.private_key
    if key is not None and not key.matches(record):
        if key.key_type != record.key_type:
            result.error(
                f"keys do not match (private key is {key.key_type}, record has k={record.key_type})"
            )
        else:
            result.error("keys do not match")


async def check_key(spec: KeySpec, lookup: TxtLookup, policy: KeyPolicy) -> KeyResult:
    """Run every check on one key. Never raises for a problem with the key or record."""
    result = KeyResult(spec)
    if spec.domain == "%":
        result.warn(
            'the KeyTable domain is "%" (the sender\'s domain): nothing to look up; '
            "test it with -d DOMAIN -s SELECTOR -k KEYFILE"
        )
        _load_private(spec, policy, result)
        return result
    _load_private(spec, policy, result)
    answer = await lookup.lookup_txt(spec.dns_name)
    if answer.status is TxtStatus.NXDOMAIN:
        result.error(f"'{spec.dns_name}' record not found", EX_UNAVAILABLE)
    elif not answer.ok:
        detail = f": {answer.detail}" if answer.detail else ""
        result.error(
            f"DNS query for {spec.dns_name} failed ({answer.status.value}{detail})", EX_UNAVAILABLE
        )
    elif not answer.records:
        result.error(f"'{spec.dns_name}' record not found", EX_UNAVAILABLE)
    else:
        result.dnssec = answer.dnssec
        if answer.dnssec is DnssecStatus.BOGUS:
            # A record that does not validate fails the key, as it fails every message
            # signed with it (BogusKey); opendkim-testkey's query times out there.
            result.error("record is bogus (DNSSEC failed)", EX_UNAVAILABLE)
        _check_record(spec, policy, result, answer.records)
    return result
