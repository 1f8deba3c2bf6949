"""What the key tools take from a loaded configuration: DNS source, key owner, key list."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator, Sequence

from dkimd.config import Config, KeyTable, KeyTableEntry, analyze_config
from dkimd.dns.base import TxtLookup
from dkimd.dns.resolver import DnsResolver
from dkimd.dns.testdata import TestDnsFile
from dkimd.key_trust import validates_keys
from dkimd.keytools.testkey import KeyPolicy, KeySpec

DEFAULT_CONFIG = "/etc/opendkim.conf"


def default_config_path() -> str | None:
    """/etc/opendkim.conf when it is readable, as the OpenDKIM tools default to."""
    return DEFAULT_CONFIG if os.access(DEFAULT_CONFIG, os.R_OK) else None


def load_tool_config(path: str, err: Callable[[str], None]) -> Config | None:
    """The configuration at `path` for a key tool; None once `err` has been told why (the
    tool then exits 78, EX_CONFIG). `dkimd check` is named for the whole list of problems."""
    try:
        report = analyze_config(path)
    except OSError as exc:
        err(f"{path}: {exc.strerror or exc}")
        return None
    if report.config is None:
        for problem in report.errors:
            err(str(problem))
        err(f"{path}: configuration error (dkimd check -x {path} explains every problem)")
        return None
    return report.config


def txt_lookup(
    config: Config | None,
    *,
    dns_file: str | None = None,
    nameservers: Sequence[str] = (),
    port: int = 53,
) -> TxtLookup:
    """Where key records come from: --dns-file, else TestDNSData, else Nameservers, else
    the system resolver (the order OpenDKIM uses: TestDNSData wins over real DNS)."""
    if dns_file is not None:
        return TestDnsFile(dns_file)
    if config is not None and config.test_dns_data is not None and not nameservers:
        records: dict[str, list[str]] = {}
        for entry in config.test_dns_data:
            records.setdefault(entry.key, []).append(entry.value or "")
        return TestDnsFile.from_records(records)
    timeout = float(config.dns_timeout or 5) if config is not None else 5.0
    if config is not None and not nameservers and validates_keys(config):
        from dkimd.dns.validating import validating_resolver  # only when asked for

        return validating_resolver(config)(list(config.nameservers) or None, timeout)
    servers = list(nameservers) or (list(config.nameservers) if config is not None else [])
    return DnsResolver(servers or None, timeout, port=port)


def filter_uid(config: Config | None) -> int | None:
    """The uid the filter runs as (UserID), to judge key file safety for it; None: us."""
    if config is None or config.user_id is None:
        return None
    user = config.user_id.user
    try:
        return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def policy_for(config: Config | None) -> KeyPolicy:
    if config is None:
        return KeyPolicy()
    return KeyPolicy(
        minimum_key_bits=config.minimum_key_bits,
        require_safe_keys=config.require_safe_keys,
        signature_algorithm=config.signature_algorithm,
        key_owner_uid=filter_uid(config),
    )


def spec_for_entry(entry: KeyTableEntry) -> KeySpec:
    path = entry.key_path
    if path is not None and "%" in path and entry.domain != "%":
        path = path.replace("%", entry.domain)
    return KeySpec(entry.name, entry.domain, entry.selector, path, entry.key_data)


def keytable_specs(config: Config) -> Iterator[KeySpec]:
    """The keys of a file KeyTable (a remote one: `every_keytable_entry`)."""
    if config.key_table is not None:
        for entry in config.key_table:
            yield spec_for_entry(entry)


async def every_keytable_entry(
    table: KeyTable, where: str, err: Callable[[str], None]
) -> list[KeyTableEntry] | None:
    """Every usable entry of `table`; a KeyTable kept in a database (dsn:, ldap:, ...) is
    walked (the daemon never does). None once `err` has been told that the table cannot be
    read, naming `where` (the KeyTable option's FILE:LINE, or the data set given); rows
    that cannot be used are told as warnings and skipped, as a file KeyTable's lines are."""
    from dkimd.stores.base import StoreError
    from dkimd.stores.walk import keytable_entries

    try:
        entries, notes = await keytable_entries(table)
    except StoreError as exc:
        err(f"{where}: KeyTable: cannot read the table: {exc}")
        return None
    for note in notes:
        err(f"{where}: warning: {note}")
    return entries


def keytable_place(config: Config) -> str:
    """Where the KeyTable option is set, as FILE:LINE, for messages about the table."""
    setting = config.raw.get("KeyTable") if config.raw is not None else None
    return setting.location if setting is not None else "KeyTable"
