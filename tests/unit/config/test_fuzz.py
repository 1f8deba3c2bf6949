"""Generated input for the parsers: they report problems, they never crash."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dkimd.config import ConfigError, analyze_config_text, parse_config_text
from dkimd.config.datasets import (
    Dataset,
    DatasetKind,
    DatasetSpecError,
    open_dataset,
    parse_dataset_lines,
    parse_dataset_spec,
)
from dkimd.config.hosts import HostList, check_host_entries
from dkimd.config.keytable import KeyTable, SigningTable
from dkimd.config.options import all_option_names
from dkimd.config.reader import read_config_text

NAMES = [*all_option_names(), "Include", "Bogus", "Sigingtable"]
VALUES = st.one_of(
    st.sampled_from(
        [
            "yes",
            "no",
            "022",
            "0x1f",
            "sv",
            "relaxed/simple",
            "inet:1@[::1]",
            "csl:127.0.0.1,::1",
            "refile:/nonexistent",
            "a:b:c",
            "%",
            "*",
            "-1",
        ]
    ),
    st.text(alphabet=string.printable + "é\x00", max_size=30),
)
LINES = st.one_of(
    st.builds(
        lambda n, sep, v: f"{n}{sep}{v}",
        st.sampled_from(NAMES),
        st.sampled_from([" ", "\t", "  "]),
        VALUES,
    ),
    st.text(max_size=40),
)
CONFIG_TEXT = st.lists(LINES, max_size=12).map("\n".join)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=300))
def test_reader_never_crashes_on_any_text(text: str) -> None:
    raw = read_config_text(text)
    for setting in raw:
        assert setting.file == "<config>" and setting.line >= 1


@FUZZ
@given(CONFIG_TEXT)
def test_config_only_raises_config_error(text: str) -> None:
    report = analyze_config_text(text, base_dir="/nonexistent")
    assert (report.config is None) == bool(report.errors)
    try:
        parse_config_text(text, base_dir="/nonexistent")
    except ConfigError as e:
        assert e.errors


@FUZZ
@given(st.text(max_size=60))
def test_dataset_spec_parses_or_reports(text: str) -> None:
    try:
        spec = parse_dataset_spec(text)
    except DatasetSpecError as e:
        assert e.message
        return
    assert spec.text == text


@FUZZ
@given(st.sampled_from(list(DatasetKind)), st.text(max_size=300), st.booleans())
def test_dataset_lines_and_lookups(kind: DatasetKind, text: str, icase: bool) -> None:
    entries, problems = parse_dataset_lines(kind, text, "f", icase)
    for entry in entries:
        assert entry.key
        if kind is not DatasetKind.CSL:  # a csl item may contain blanks, as in OpenDKIM
            assert not any(c in entry.key for c in " \t\n")
    for problem in problems:
        assert problem.file == "f" and problem.line is not None


@FUZZ
@given(st.text(alphabet="0123456789abcdef.:/![]*-x ,", max_size=80), st.text(max_size=20))
def test_host_lists_never_crash(csl: str, probe: str) -> None:
    ds, _ = open_dataset(f"csl:{csl}")
    assert ds is not None
    hosts, _ = check_host_entries(ds, "PeerList")
    hosts.matches(probe, probe)
    hosts.matches("192.0.2.1", "a.example.com")
    HostList.default_internal().matches(probe, None)


@FUZZ
@given(st.text(max_size=200), st.text(max_size=20), st.text(max_size=20))
def test_tables_never_crash(text: str, user: str, domain: str) -> None:
    entries, _ = parse_dataset_lines(DatasetKind.FILE, text, "kt", False)
    ds = Dataset("file:kt", DatasetKind.FILE, entries, case_insensitive=False)
    keys, _ = KeyTable.build(ds)
    for entry in keys:
        entry.resolve(domain)
    table = SigningTable(Dataset("file:st", DatasetKind.FILE, entries, ascii_only=True))
    table.lookup(user, domain, multiple=True)
    table.check_against(keys)
