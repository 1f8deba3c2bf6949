"""SoftStart and TemporaryDirectory: what each means for the data sets and files dkimd has."""

from __future__ import annotations

import pytest

from dkimd.config import analyze_config_text, parse_config_text, softstart
from dkimd.config.problems import Severity


def test_a_missing_file_data_set_stops_the_start_even_with_soft_start() -> None:
    # observed: opendkim -n with SoftStart yes and PeerList file:/nonexistent exits 78
    report = analyze_config_text("Mode v\nSoftStart yes\nPeerList file:/nonexistent\n")
    assert [p.option for p in report.errors] == ["PeerList"]
    assert parse_config_text("SoftStart yes\n").soft_start


def test_the_rule_for_kinds_that_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    assert softstart.failure_severity("file", True) is Severity.ERROR
    monkeypatch.setattr(softstart, "RECONNECTING_KINDS", frozenset({"file"}))
    assert softstart.failure_severity("file", True) is Severity.WARNING
    assert softstart.failure_severity("file", False) is Severity.ERROR
    # the data-set loader asks the same rule
    report = analyze_config_text("Mode v\nSoftStart yes\nPeerList file:/nonexistent\n")
    assert report.ok and [w.option for w in report.warnings] == ["PeerList"]


def test_temporary_directory_is_taken_unchecked_as_opendkim() -> None:
    # opendkim 2.11 starts with a TemporaryDirectory that does not exist (observed);
    # dkimd writes no temporary files, so it only keeps the value.
    config = parse_config_text("TemporaryDirectory /nonexistent/tmp\n")
    assert config.temporary_directory == "/nonexistent/tmp" and not config.warnings
    assert parse_config_text("").temporary_directory == "/tmp"
