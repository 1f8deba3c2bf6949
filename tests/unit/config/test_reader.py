"""opendkim.conf syntax, as OpenDKIM's config.c reads it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dkimd.config.options import OPTIONS, OptionType, find_option, suggest_option
from dkimd.config.problems import Severity
from dkimd.config.reader import parse_bool, parse_int, read_config_file, read_config_text

Writer = Callable[[str, str], str]  # the `write` fixture (conftest.py)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", True),
        ("Yes", True),
        ("true", True),
        ("T", True),
        ("1", True),
        ("yoyo", True),  # only the first character counts
        ("no", False),
        ("No", False),
        ("false", False),
        ("F", False),
        ("0", False),
        ("nope", False),
        ("maybe", None),
        ("on", None),
        ("off", None),
        ("2", None),
    ],
)
def test_booleans_look_at_the_first_character(text: str, expected: bool | None) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("022", 18),
        ("0x10", 16),
        ("0X1f", 31),
        ("-1", -1),
        ("+5", 5),
        ("08", None),
        ("0x", None),
        ("12a", None),
        ("", None),
        ("1.5", None),
    ],
)
def test_integers_follow_strtol_base_0(text: str, expected: int | None) -> None:
    assert parse_int(text) == expected


def test_name_value_and_locations() -> None:
    raw = read_config_text(
        "# comment\n\n  Mode\t sv  \nsocket inet:8891@localhost\nSYSLOG yes\n", source="x.conf"
    )
    assert raw.problems == ()
    mode, socket, syslog = raw.settings
    assert (mode.name, mode.value, mode.location) == ("Mode", "sv", "x.conf:3")
    assert (socket.name, socket.written_name, socket.value) == (
        "Socket",
        "socket",
        "inet:8891@localhost",
    )
    assert syslog.parsed is True and syslog.line == 5


def test_hash_starts_a_comment_even_inside_a_value() -> None:
    raw = read_config_text("KeyFile /etc/keys/a#b.private\nPidFile /run/x.pid # trailing\n")
    assert raw.get("KeyFile") is not None and raw.get("KeyFile").value == "/etc/keys/a"  # type: ignore[union-attr]
    assert raw.get("PidFile").value == "/run/x.pid"  # type: ignore[union-attr]


def test_carriage_return_ends_the_line() -> None:
    raw = read_config_text("Mode sv\r\nSyslog yes\r\n")
    assert raw.get("Mode").value == "sv"  # type: ignore[union-attr]
    assert raw.problems == ()


def test_value_keeps_inner_blanks() -> None:
    raw = read_config_text("AuthservID  mail  host \n")
    assert raw.get("AuthservID").value == "mail  host"  # type: ignore[union-attr]


def test_last_setting_wins() -> None:
    raw = read_config_text("Mode v\nMode sv\n")
    assert raw.get("mode").value == "sv"  # type: ignore[union-attr]
    assert [s.value for s in raw.get_all("Mode")] == ["v", "sv"]


def test_unknown_option_is_an_error_with_did_you_mean() -> None:
    raw = read_config_text("Mode sv\nSigingtable refile:/x\n", source="/etc/opendkim.conf")
    (problem,) = raw.problems
    assert problem.severity is Severity.ERROR
    assert str(problem) == (
        '/etc/opendkim.conf:2: unknown option "Sigingtable" (did you mean "SigningTable"?)'
    )


def test_unknown_option_without_a_close_name_has_no_hint() -> None:
    (problem,) = read_config_text("Zzzzzzzz 1\n").problems
    assert problem.hint is None


def test_missing_value_is_an_error() -> None:
    (problem,) = read_config_text("Socket\n").problems
    assert problem.is_error and problem.line == 1 and "value missing" in problem.message


def test_bad_boolean_and_integer_are_errors_and_dropped() -> None:
    raw = read_config_text("Syslog maybe\nUMask 089\nMinimumKeyBits 99999999999\n")
    assert [p.line for p in raw.problems] == [1, 2, 3]
    assert raw.settings == ()


def test_unimplemented_opendkim_option_warns_once() -> None:
    raw = read_config_text("Diagnostics yes\nVBR-Type x\nDiagnostics no\nLDAPTimeout 4\n")
    messages = [str(p) for p in raw.problems]
    assert len(messages) == 2  # LDAPTimeout is implemented (dkimd.stores.settings)
    assert all(p.severity is Severity.WARNING for p in raw.problems)
    assert '"Diagnostics" is an OpenDKIM option dkimd does not implement' in messages[0]


def test_deprecated_alias_is_mapped_with_a_warning() -> None:
    raw = read_config_text("X-Header yes\n")
    assert raw.get("SoftwareHeader").parsed is True  # type: ignore[union-attr]
    assert raw.problems[0].hint == 'use "SoftwareHeader"'


def test_include_reads_in_place(write: Writer) -> None:
    inner = write("inner.conf", "Mode v\nSyslog yes\n")
    outer = write("outer.conf", f"Mode s\nInclude {inner}\nSyslogSuccess yes\n")
    raw = read_config_file(outer)
    assert raw.problems == ()
    assert raw.files == (outer, inner)
    assert raw.get("Mode").value == "v"  # type: ignore[union-attr]
    assert raw.get("Mode").location == f"{inner}:1"  # type: ignore[union-attr]
    assert [s.name for s in raw] == ["Mode", "Mode", "Syslog", "SyslogSuccess"]


def test_include_relative_to_base_dir(write: Writer, tmp_path: object) -> None:
    write("sub/inner.conf", "Mode v\n")
    outer = write("outer.conf", "Include sub/inner.conf\n")
    raw = read_config_file(outer, base_dir=str(tmp_path))
    assert raw.get("Mode") is not None


def test_include_loop_is_an_error(write: Writer, tmp_path: object) -> None:
    a = write("a.conf", "Mode sv\nInclude b.conf\n")
    write("b.conf", "Include a.conf\n")
    raw = read_config_file(a, base_dir=str(tmp_path))
    (problem,) = raw.problems
    assert problem.is_error and "Include loop" in problem.message
    assert problem.file is not None and problem.file.endswith("b.conf") and problem.line == 1


def test_include_nesting_limit(write: Writer, tmp_path: object) -> None:
    for level in range(7):
        write(f"l{level}.conf", f"Include l{level + 1}.conf\n")
    write("l7.conf", "Mode v\n")
    raw = read_config_file(f"{tmp_path}/l0.conf", base_dir=str(tmp_path))
    assert any("nesting too deep" in p.message for p in raw.problems)


def test_missing_include_is_an_error(write: Writer) -> None:
    outer = write("outer.conf", "Include /nonexistent/x.conf\n")
    (problem,) = read_config_file(outer).problems
    assert problem.is_error and problem.line == 1 and "cannot read Include" in problem.message


def test_missing_config_file() -> None:
    (problem,) = read_config_file("/nonexistent/opendkim.conf").problems
    assert problem.is_error and problem.line is None


def test_option_table_covers_the_brief() -> None:
    required = """Canonicalization ExternalIgnoreList InternalHosts KeyTable LogWhy MinimumKeyBits
    Mode PidFile SigningTable Socket Syslog SyslogSuccess UMask UserID Domain Selector KeyFile
    SubDomains SignHeaders OmitHeaders OversignHeaders SenderHeaders AuthservID
    AlwaysAddARHeader MultipleSignatures On-Default On-BadSignature On-DNSError
    On-InternalError On-KeyNotFound On-NoSignature On-Security On-SignatureError
    RequireSafeKeys Nameservers DNSTimeout SignatureAlgorithm SignatureTTL
    MaximumSignaturesToVerify RemoveOldSignatures SoftwareHeader Background AutoRestart
    AutoRestartCount AutoRestartRate TestDNSData PeerList MacroList SyslogFacility Include
    Workers AllowSHA1 TestPublicKeys BodyLengthDB MaximumSignedBytes RequestReports
    ATPSDomains ATPSHashAlgorithm SyslogName""".split()  # noqa: SIM905
    for name in required:
        spec = find_option(name)
        assert spec is not None and spec.implemented, name
    assert find_option("umask").type is OptionType.INT  # type: ignore[union-attr]
    assert find_option("InternalHosts").default == "csl:127.0.0.1,::1"  # type: ignore[union-attr]
    # what dkimd does not implement is OpenDKIM's (warned about), never its own
    assert all(not s.extension for s in OPTIONS.values() if not s.implemented)
    # The table knows every option OpenDKIM 2.11 accepts, implemented or not (138, the
    # deprecated X-Header alias included), besides dkimd's own.
    assert sum(1 for s in OPTIONS.values() if not s.extension) >= 138
    assert suggest_option("keytabel") == "KeyTable"
