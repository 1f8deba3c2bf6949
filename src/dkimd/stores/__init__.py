"""Data sets kept outside the configuration's files: SQL (`dsn:`), LDAP, memcached, Redis.

Each back end is a module implementing `dkimd.stores.base.RemoteStore` and exposing
`from_spec(text) -> RemoteStore`; `open_store` picks it by the URL's scheme and imports it
only then, so a configuration without remote data sets never loads a driver. The cache,
coalescing and outage handling in front of every back end are `dkimd.stores.cache`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dkimd.stores.base import RemoteStore, StoreSpecError

if TYPE_CHECKING:
    from dkimd.stores.ldap import LdapSettings

__all__ = ["SCHEMES", "open_store", "scheme_of"]

#: URL scheme -> the module implementing it (each has `from_spec(text) -> RemoteStore`).
SCHEMES: dict[str, str] = {
    "dsn": "dkimd.stores.dsn",  # SQL: sqlite3, pgsql, mysql (branch `stores`)
    # -- written on branch `kvstores` against the same interface --
    "ldap": "dkimd.stores.ldap",
    "ldaps": "dkimd.stores.ldap",
    "ldapi": "dkimd.stores.ldap",
    "memcache": "dkimd.stores.memcache",
    "redis": "dkimd.stores.redis",
    "rediss": "dkimd.stores.redis",
}


def scheme_of(text: str) -> str:
    """The lower-cased scheme of a data set value (`dsn`, `ldap`, ...), or ""."""
    colon = text.find(":")
    return text[:colon].lower() if colon > 0 else ""


def open_store(text: str, *, ldap: LdapSettings | None = None) -> RemoteStore:
    """The (not yet opened) store a data set value names; raises StoreSpecError.

    `ldap` is the configuration's `LdapSettings` (the LDAP* options), for `ldap:` sets;
    None: anonymous bind and the defaults. A missing driver raises `MissingExtra`, which
    names the `dkimd[...]` extra to install.
    """
    scheme = scheme_of(text)
    module_name = SCHEMES.get(scheme)
    if module_name is None:
        raise StoreSpecError(f'"{scheme}:" is not a remote data set type')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise StoreSpecError(
                f'data set type "{scheme}:" is not available in this build of dkimd'
            ) from None
        raise
    store: RemoteStore = (
        module.from_spec(text, ldap) if ldap is not None else module.from_spec(text)
    )
    return store
