"""Log lines about verification: the ones OpenDKIM 2.11 writes (LogResults, ignored
signatures), byte for byte after the job id, and dkimd's own line for `Minimum`.

Observed with Debian's opendkim (Syslog yes, read from /dev/log):

    Q1: signature=MredZMOx domain=example.com selector=mail result="no signature error"
    Q1: signature=l4rET077 domain=example.com selector=mail result="unprotected header field"
    Q1: ignoring 1 signature                       (MaximumSignaturesToVerify N)
    Q1: ignoring signature from example.org        (MaximumSignaturesToVerify 0)

The job id prefix is the session logger's (`QueueIdAdapter`). Pure formatting plus calls
on the logger the session hands in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dkimd.config import Config
from dkimd.dkim import SignatureResult, Verifier, VerifyError, b_prefixes, sigerror_text

__all__ = ["log_ignored", "log_outcome", "results_line"]

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def results_line(results: Sequence[SignatureResult]) -> str:
    """LogResults' line (opendkim.c mlfi_eom): each verified signature whose d=, s= and b=
    could be read, in header order, "; "-separated; "" when there is none."""
    items = []
    for result, prefix in zip(results, b_prefixes(results), strict=True):
        if result.error in (VerifyError.SIGNATURE_IGNORED, VerifyError.NO_SIGNATURE):
            continue
        if not (result.domain and result.selector and prefix):
            continue
        items.append(
            f"signature={prefix} domain={result.domain} selector={result.selector}"
            f' result="{sigerror_text(result)}"'
        )
    return "; ".join(items)


def log_ignored(log: Logger, max_signatures: int, domains: Sequence[str]) -> None:
    """OpenDKIM's dkimf_prescreen lines for signatures it does not verify."""
    if max_signatures == 0:
        for domain in domains:
            log.info("ignoring signature from %s", domain)
    else:
        count = len(domains)
        log.info("ignoring %d signature%s", count, "" if count == 1 else "s")


def log_outcome(
    log: Logger, config: Config, verifier: Verifier, results: Sequence[SignatureResult]
) -> None:
    """After verification: LogResults' line, and whether the passing signature covers the
    body as `Minimum` asks (OpenDKIM's PARTIAL, which changes neither the A-R nor the reply)."""
    if config.log_results:
        line = results_line(results)
        if line:
            log.info("%s", line)
    if config.minimum is not None:
        partial = verifier.below_minimum(config.minimum)
        if partial is not None:
            result, signed, body = partial
            log.info(
                "signature d=%s covers %d of %d body bytes, less than Minimum %s",
                result.domain,
                signed,
                body,
                config.minimum,
            )
