"""The options that tune remote data sets, read through a configuration loader's `get`.

* DataSetCacheTTL, DataSetNegativeCacheTTL and DataSetTimeout (dkimd extensions,
  config/options.py): the cache layer's settings, for every remote data set.
* The `LDAP*` options of opendkim.conf(5): how `ldap:` data sets bind, use TLS, time out
  and keep connections alive (`dkimd.stores.ldap.LdapSettings`). They are checked here, at
  their own file:line, only when a configuration has an `ldap:` data set (OpenDKIM ignores
  them otherwise, and so does dkimd). Two of them act in front of the store:
  LDAPDisableCache ("suppresses creation of a local cache in front of LDAP queries") turns
  both caches off for `ldap:` sets, and LDAPTimeout, when DataSetTimeout is not set, is also
  how long one `ldap:` lookup may take (OpenDKIM abandons an LDAP operation after it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dkimd.config.problems import Problem, Severity
from dkimd.stores.cache import CacheSettings
from dkimd.stores.ldap import SASL_MECHANISMS, LdapSettings  # ldap3 itself: only when used

__all__ = ["LDAP_OPTIONS", "cache_settings", "ldap_settings", "store_settings"]

Getter = Callable[[str], Any]  # a loader's get(name) -> Setting | None (values parsed)

#: The opendkim.conf options `ldap_settings` reads (SoftStart is read by the loader).
LDAP_OPTIONS = (
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
)

_LDAP_SCHEMES = frozenset({"ldap", "ldaps", "ldapi"})


def cache_settings(get: Getter) -> CacheSettings:
    """The settings from a loader's `get(name) -> Setting | None` (values already parsed)."""
    default = CacheSettings()

    def number(name: str, fallback: float) -> float:
        setting = get(name)
        if setting is None or not isinstance(setting.parsed, int):
            return fallback
        return float(max(0, setting.parsed))

    timeout = number("DataSetTimeout", default.timeout)
    return CacheSettings(
        ttl=number("DataSetCacheTTL", default.ttl),
        negative_ttl=number("DataSetNegativeCacheTTL", default.negative_ttl),
        timeout=timeout if timeout > 0 else default.timeout,
    )


def ldap_settings(get: Getter) -> tuple[LdapSettings | None, list[Problem]]:
    """(`LdapSettings` or None, problems): the LDAP* options, each bad value an error at
    its own line. None when one is bad (the data set is then not opened)."""
    problems: list[Problem] = []
    values: dict[str, object] = {}

    def bad(setting: Any, message: str, hint: str) -> None:
        problems.append(
            Problem(
                setting.file,
                setting.line,
                Severity.ERROR,
                f"{setting.name}: {message}",
                hint,
                setting.name,
            )
        )

    for name in LDAP_OPTIONS:
        setting = get(name)
        if setting is None:
            continue
        value = setting.parsed
        if name == "LDAPTimeout" and isinstance(value, int) and value < 1:
            bad(setting, f"{value} is out of range (at least 1)", "seconds; the default is 5")
            continue
        if name.startswith("LDAPKeepalive") and isinstance(value, int) and value < 1:
            bad(setting, f"{value} is out of range (at least 1)", "leave it unset for the default")
            continue
        if name == "LDAPAuthMechanism":
            mechanism = str(value).strip()
            if mechanism.lower() not in ("", "none", "simple") and (
                mechanism.upper() not in SASL_MECHANISMS
            ):
                bad(
                    setting,
                    f'"{mechanism}" is not supported',
                    "use simple (the default), EXTERNAL, PLAIN or DIGEST-MD5",
                )
                continue
        values[name] = value
    if problems:
        return None, problems
    return LdapSettings.from_options(values), problems


def store_settings(
    text: str, get: Getter | None
) -> tuple[CacheSettings, LdapSettings | None, list[Problem]]:
    """(cache settings, LdapSettings or None, problems) for the remote data set `text`."""
    from dkimd.stores import scheme_of

    if get is None:
        return CacheSettings(), None, []
    cache = cache_settings(get)
    if scheme_of(text) not in _LDAP_SCHEMES:
        return cache, None, []
    ldap, problems = ldap_settings(get)
    if ldap is None:
        return cache, None, problems
    if ldap.disable_cache:
        cache = dataclasses.replace(cache, ttl=0.0, negative_ttl=0.0)
    if get("DataSetTimeout") is None and get("LDAPTimeout") is not None:
        cache = dataclasses.replace(cache, timeout=float(ldap.timeout))
    return cache, ldap, problems
