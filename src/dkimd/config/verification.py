"""The verification options of opendkim.conf, read into `Config` (called by `config.load`).

ClockDrift, Minimum, MustBeSigned, TrustSignaturesFrom, WeakSyntaxChecks, FixCRLF,
LogResults, and the two accepted without effect (AllowSHA1Only, SelectCanonicalizationHeader;
why is in `dkimd.config.options`). What each means to OpenDKIM 2.11, observed, is in
docs/opendkim-behaviour.md section 5.4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dkimd.dkim.minimum import parse_minimum

if TYPE_CHECKING:
    from dkimd.config.load import _Builder

__all__ = ["read_verification_options"]

#: libopendkim's default tolerance (DEFCLOCKDRIFT), which `ClockDrift 0` leaves in place.
DEFAULT_CLOCK_DRIFT = 300


def read_verification_options(builder: _Builder) -> None:
    """Convert and check the verification options into `builder.values`."""
    setting = builder.get("ClockDrift")
    if setting is not None:
        drift = setting.parsed
        assert isinstance(drift, int)
        if drift < 0:
            # OpenDKIM hands the library the value as an unsigned 64-bit number, and its
            # sums wrap around: the tolerance is negative (observed with -1 and -100).
            builder.warn(
                setting,
                f"ClockDrift: {setting.value} is negative: a signature made less than "
                f"{-drift} seconds ago counts as made in the future, as in OpenDKIM",
            )
        # dkimf_config_setlib hands the library only a value other than 0 (observed: 0
        # tolerates 300 seconds, as no setting does).
        builder.values["clock_drift"] = drift or DEFAULT_CLOCK_DRIFT

    setting = builder.get("Minimum")
    if setting is not None:
        try:
            builder.values["minimum"] = parse_minimum(setting.value)
        except ValueError as exc:
            builder.error(setting, str(exc), "use N (bytes), N% (percent) or N+ (bytes added)")

    found = builder.header_names("MustBeSigned")
    if found is not None:
        builder.values["must_be_signed"] = tuple(dict.fromkeys(h.lower() for h in found[1]))
    found_ds = builder.dataset("TrustSignaturesFrom")
    if found_ds is not None:
        builder.values["trust_signatures_from"] = found_ds[1]

    builder.flag("WeakSyntaxChecks", "weak_syntax_checks")
    builder.flag("FixCRLF", "fix_crlf")
    builder.flag("LogResults", "log_results")
    builder.flag("AllowSHA1Only", "allow_sha1_only")
    setting = builder.get("SelectCanonicalizationHeader")
    if setting is not None:
        builder.values["select_canonicalization_header"] = setting.value
