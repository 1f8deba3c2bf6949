"""`dkimd check`: a genkey SELECTOR.txt named as TestDNSData is reported, with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from dkimd.cli import check, genkey


def _conf(tmp_path: Path, dns_file: Path) -> Path:
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nSocket local:{tmp_path}/milter.sock\nTestDNSData file:{dns_file}\n")
    return conf


def test_zone_file_as_test_dns_data_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert genkey.main(["-D", str(tmp_path), "-s", "mail", "-d", "example.com"]) == 0
    txt = tmp_path / "mail.txt"
    code = check.main(["-x", str(_conf(tmp_path, txt)), "--no-postfix", "--strict", "-q"])
    out = capsys.readouterr().out
    assert code == 1
    assert f'{txt}:1: warning: TestDNSData: "mail._domainkey ..." is a zone-file record' in out
    assert 'read as a record named "mail._domainkey" with the text "IN TXT ( "v=DKIM1;' in out
    assert "fix: write one line per key: mail._domainkey.example.com v=DKIM1;" in out
    assert out.count("warning:") == 1  # the record's continuation line is not reported again


def test_name_record_lines_are_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "dns.data"
    data.write_text("mail._domainkey.example.com v=DKIM1; k=rsa; p=MIIBIjANBgkqh\n")
    code = check.main(["-x", str(_conf(tmp_path, data)), "--no-postfix", "--strict", "-q"])
    assert "TestDNSData" not in capsys.readouterr().out
    assert code == 0
