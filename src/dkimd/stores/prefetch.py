"""The keys a message will look up in remote data sets, asked in one round at end-of-headers.

At end-of-headers the session decides, in order: the plan (InternalHosts, MacroList, MTA,
SigningTable, KeyTable, ATPSDomains, BodyLengthDB, ExternalIgnoreList), ExemptDomains,
ResignMailTo, the setup script, LogWhy lines, DontSignMailTo, ArcSealHosts/ArcSealMailTo.
A remote lookup that misses raises RowsMissing and the whole event runs again once the
rows are in (dkimd.stores.lookups). That is safe only before the first thing that cannot
be done twice (a log line, a policy script), and it costs a round each time. So the
session calls `prefetch_message` first thing: every key that the envelope and the client
already determine is asked in one round, and everything after finds its rows pinned for
the rest of the message. What depends on the From address (SigningTable, KeyTable,
ExemptDomains, ATPSDomains) is asked by the plan itself, before any of that.

The keys are OpenDKIM's, per option (opendkim.c mlfi_eoh unless said otherwise):

* InternalHosts, ArcSealHosts: the client's host-list keys (dkimd.stores.hostlist);
* MTA: the `{daemon_name}` macro's value;
* DontSignMailTo: each recipient, whole (no domain fallback);
* BodyLengthDB: per recipient `user@domain`, `*@domain`, then `user@.parent`, `*@.parent`
  for each parent, `user@*`, `*` (dkimf_checkbldb);
* ResignMailTo: per recipient the address, its domain, then each `.parent`;
* ArcSealMailTo (a dkimd extension): each recipient and its domain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dkimd.config.datasets import Dataset
from dkimd.stores.base import StoreError
from dkimd.stores.cache import StoreCache
from dkimd.stores.dataset import RemoteDataset, RowsMissing
from dkimd.stores.hostlist import host_list_keys

__all__ = ["prefetch_message", "remote_datasets_of"]

Macros = Callable[[str], "str | None"]


def remote_datasets_of(config: Any) -> list[RemoteDataset]:
    """Every remote data set a configuration holds, each once: on its fields, on what they
    wrap (`.dataset`: KeyTable, SigningTable, host lists) and one level into grouped
    settings (ARC's)."""
    found: dict[int, RemoteDataset] = {}

    def visit(value: object, depth: int) -> None:
        for candidate in (value, getattr(value, "dataset", None)):
            if isinstance(candidate, RemoteDataset):
                found.setdefault(id(candidate), candidate)
        if depth == 0 and dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name, None), 1)

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        for f in dataclasses.fields(config):
            visit(getattr(config, f.name, None), 0)
    return list(found.values())


def _remote(table: object) -> RemoteDataset | None:
    dataset = getattr(table, "dataset", table)
    return dataset if isinstance(dataset, RemoteDataset) else None


def _missing(dataset: Dataset, keys: Iterable[str]) -> list[tuple[StoreCache, str]]:
    try:
        dataset.prefetch(list(keys))
    except RowsMissing as need:
        return list(need.wanted)
    except StoreError:
        # That store failed for this message. Only a lookup the message really makes
        # raises it (On-InternalError): a DontSignMailTo table that is down must not
        # tempfail mail that is only verified.
        return []
    return []


def message_keys(
    config: Any,
    address: str | None,
    hostname: str | None,
    recipients: Sequence[str],
    macro: Macros,
) -> list[tuple[RemoteDataset, list[str]]]:
    """(data set, keys) for every remote data set the envelope and client determine."""
    from dkimd.body_length import lookup_keys
    from dkimd.policy import parse_address
    from dkimd.resign import recipient_keys

    wanted: list[tuple[RemoteDataset, list[str]]] = []
    client_keys: list[str] | None = None
    arc = getattr(config, "arc", None)
    for hosts in (config.internal_hosts, getattr(arc, "seal_hosts", None)):
        remote = _remote(hosts)
        if remote is not None:
            if client_keys is None:
                client_keys = host_list_keys(address, hostname)
            wanted.append((remote, client_keys))
    remote = _remote(config.mta_names)
    if remote is not None:
        name = macro("{daemon_name}")
        if name is not None:
            wanted.append((remote, [name]))
    remote = _remote(config.dont_sign_mail_to)
    if remote is not None:
        wanted.append((remote, list(recipients)))
    remote = _remote(config.body_length_db)
    if remote is not None:
        keys: list[str] = []
        for recipient in recipients:
            # dkimf_checkbldb parses each recipient; one that does not parse is skipped
            parsed = parse_address(recipient.encode("utf-8", "surrogateescape"))
            if parsed is not None:
                user, _, domain = parsed.rpartition("@")
                keys += lookup_keys(user, domain)
        wanted.append((remote, keys))
    remote = _remote(config.resign_mail_to)
    if remote is not None:
        wanted.append((remote, [k for r in recipients for k in recipient_keys(r)]))
    remote = _remote(getattr(arc, "seal_mail_to", None))
    if remote is not None:
        wanted.append((remote, [k for r in recipients for k in (r, r.rpartition("@")[2])]))
    remote = _remote(config.key_table)
    if remote is not None and arc is not None and arc.seals and arc.key_name:
        # ArcKey's entry is read at end-of-message, where no rows can be fetched any more.
        wanted.append((remote, [arc.key_name]))
    return wanted


def prefetch_message(
    config: Any,
    address: str | None,
    hostname: str | None,
    recipients: Sequence[str],
    macro: Macros,
) -> None:
    """Raise one RowsMissing for every key of this message not in memory yet."""
    missing: list[tuple[StoreCache, str]] = []
    for dataset, keys in message_keys(config, address, hostname, recipients, macro):
        missing += _missing(dataset, keys)
    if missing:
        raise RowsMissing(missing)
