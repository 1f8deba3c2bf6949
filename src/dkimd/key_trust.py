"""BogusKey and UnprotectedKey: what the DNSSEC status of a key record does to its
signature, as OpenDKIM 2.11 (built with USE_UNBOUND) does it in dkimf_ar_all_sigs.

Per signature, from the status of the key answer it was checked with:

| status   | A-R word after the key size | fail                       | neutral             |
|----------|-----------------------------|----------------------------|---------------------|
| secure   | `secure`                    |                            |                     |
| insecure | `unprotected`               | result `policy`, status BAD | result `neutral`    |
| bogus    | `bogus`                     | status BAD (see below)     | result `neutral`    |

`none` changes nothing but the word. "status BAD" makes the message's outcome a bad
signature (On-BadSignature, as OpenDKIM's mlfi_eom maps DKIMF_STATUS_BAD), even when a
signature passed; `neutral` (DKIMF_STATUS_VERIFYERR) leaves the outcome to the
verification itself. OpenDKIM sets the status once per signature in header order, so the
last signature with a key action decides; so here.

Differences on purpose:

* `BogusKey fail` on a signature that verified writes `dkim=fail` (opendkim.conf(5): "return
  a fail result"); OpenDKIM 2.11's code keeps `pass` in the A-R item while acting as for a
  bad signature, which tells downstream filters the opposite of what it did.
* OpenDKIM 2.11's libunbound callback never completes a bogus answer (it returns before
  marking the query done), so there the lookup times out and the message meets
  On-DNSError; dkimd reports the bogus key as the options describe.

Without validation (no TrustAnchorFile, no TrustResolverAD) every answer from DNS is
insecure, as libunbound without a trust anchor reports it to OpenDKIM; key records from
TestDNSData or TestPublicKeys have no status (no word, no action).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dkimd.config import Config, KeyAction
from dkimd.dkim import DkimResult, SignatureResult
from dkimd.dns.base import DnssecStatus, TxtResult

__all__ = ["KeyTrust", "TrustOutcome", "key_records_from_files", "validates_keys"]


def key_records_from_files(config: Config) -> bool:
    """Whether key records come from TestDNSData or TestPublicKeys (no DNSSEC state)."""
    return config.test_dns_data is not None or config.test_public_keys is not None


def validates_keys(config: Config) -> bool:
    """Whether key records get a DNSSEC status of their own (OpenDKIM applies no resolver
    option when TestDNSData is set, dkimf_config_setlib)."""
    return config.test_dns_data is None and (
        config.trust_anchor_file is not None or config.trust_resolver_ad
    )


@dataclass(frozen=True, slots=True)
class TrustOutcome:
    """What the key records' DNSSEC status makes of one message's signatures."""

    #: the word after the key size, per signature (None: no word)
    words: tuple[str | None, ...]
    #: a replacement A-R result word, per signature (None: unchanged)
    result_words: tuple[DkimResult | None, ...]
    #: the message is judged as a bad signature (On-BadSignature)
    bad: bool
    #: per signature: its key record did not validate (for the log)
    bogus: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class KeyTrust:
    bogus_key: KeyAction
    unprotected_key: KeyAction
    #: the status of an answer whose source says none: insecure for plain DNS
    unknown_is: DnssecStatus | None

    @classmethod
    def for_config(cls, config: Config, *, validating: bool, test_data: bool) -> KeyTrust | None:
        """None when the status of key records can change nothing per message: no
        validation and UnprotectedKey none (every DNS answer is then unprotected, a word
        the runtime writes as it always did)."""
        if not validating and (test_data or config.unprotected_key is KeyAction.NONE):
            return None
        return cls(
            config.bogus_key,
            config.unprotected_key,
            None if validating or test_data else DnssecStatus.INSECURE,
        )

    def status_of(self, answer: TxtResult | None) -> DnssecStatus | None:
        if answer is None or answer.status.is_temporary:
            return None
        return answer.dnssec if answer.dnssec is not None else self.unknown_is

    def judge(
        self, results: Sequence[SignatureResult], answers: Sequence[TxtResult | None]
    ) -> TrustOutcome:
        words: list[str | None] = []
        overrides: list[DkimResult | None] = []
        bogus: list[bool] = []
        decision: bool | None = None  # True: BAD, False: VERIFYERR, None: untouched
        for result, answer in zip(results, answers, strict=True):
            status = self.status_of(answer) if result.result is not DkimResult.NONE else None
            word = None if status is None else status.value
            override: DkimResult | None = None
            if status is DnssecStatus.INSECURE:
                if self.unprotected_key is KeyAction.FAIL:
                    override, decision = DkimResult.POLICY, True
                elif self.unprotected_key is KeyAction.NEUTRAL:
                    override, decision = DkimResult.NEUTRAL, False
            elif status is DnssecStatus.BOGUS:
                if self.bogus_key is KeyAction.FAIL:
                    decision = True
                    if result.passed:
                        override = DkimResult.FAIL
                elif self.bogus_key is KeyAction.NEUTRAL:
                    override, decision = DkimResult.NEUTRAL, False
            words.append(word)
            overrides.append(override)
            bogus.append(status is DnssecStatus.BOGUS)
        return TrustOutcome(tuple(words), tuple(overrides), decision is True, tuple(bogus))
