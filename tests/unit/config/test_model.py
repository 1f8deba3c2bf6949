"""The typed Config: the reference configuration, defaults, every option type, validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dkimd.config import (
    DEFAULT_ACTIONS,
    Action,
    Canonicalization,
    Condition,
    Config,
    ConfigError,
    HeaderList,
    KeySource,
    Mode,
    RestartRate,
    SocketSpec,
    UserGroup,
    analyze_config_text,
    load_config,
    parse_config_text,
)
from dkimd.config.load import daemon_refusals
from dkimd.config.problems import Severity

SOCKET = "Socket inet:8891@localhost\n"

Writer = Callable[[str, str], str]  # the `write` fixture (conftest.py)


def test_reference_config(reference_dir: Path) -> None:
    config = load_config(reference_dir / "opendkim.conf")
    assert config.source == str(reference_dir / "opendkim.conf")
    assert config.canonicalization == Canonicalization("relaxed", "relaxed")
    assert config.mode == Mode.SIGN | Mode.VERIFY and config.signs and config.verifies
    assert config.log_why and config.syslog and config.syslog_success
    assert config.minimum_key_bits == 1024
    assert config.pid_file == f"{reference_dir}/run/opendkim.pid"
    assert config.socket == SocketSpec("inet", port=8891, host="localhost")
    assert config.umask == 0o22
    assert config.user_id == UserGroup("opendkim", "opendkim")
    assert config.key_source is KeySource.TABLES
    assert config.key_table is not None and config.signing_table is not None
    assert config.internal_hosts.matches("192.0.2.9", None)
    assert config.external_ignore_list.matches("127.0.0.1", None)
    assert not config.peer_list.matches("127.0.0.1", None)
    # the only warning: "*.example.com" in TrustedHosts (twice: two options use the file)
    assert [w.line for w in config.warnings] == [7, 7]
    assert config.on_actions == DEFAULT_ACTIONS


@pytest.mark.parametrize(
    "address",
    ["user@example.com", "user@sub.example.com", "x@a.b.example.net", "USER@Example.NET"],
)
def test_reference_signing_lookups(reference_dir: Path, address: str) -> None:
    config = load_config(reference_dir / "opendkim.conf")
    assert config.signing_table is not None and config.key_table is not None
    hit = config.signing_table.first(address)
    assert hit is not None and hit.key_name == "mail._domainkey.example.com"
    key = config.key_table.get(hit.key_name)
    assert key is not None
    assert (key.domain, key.selector) == ("example.com", "mail")
    assert key.key_path == f"{reference_dir}/keys/mail.private"


def test_reference_subdomain_match_is_the_second_line(reference_dir: Path) -> None:
    config = load_config(reference_dir / "opendkim.conf")
    hit = config.signing_table.first("user@sub.example.com")  # type: ignore[union-attr]
    assert hit is not None and (hit.matched, hit.line) == ("*@*.example.com", 3)
    assert config.signing_table.first("user@example.org") is None  # type: ignore[union-attr]


def test_defaults_of_an_empty_file() -> None:
    report = analyze_config_text("")
    assert report.ok and report.config is not None
    config = report.config
    assert config == Config(source="<config>", warnings=config.warnings)
    # no Socket is not a problem of the file: -p may give one (`dkimd check` says so)
    assert config.warnings == ()
    assert config.canonicalization == Canonicalization("simple", "simple")
    assert config.mode == Mode.SIGN | Mode.VERIFY
    assert config.internal_hosts.matches("127.0.0.1", None)
    assert config.internal_hosts.matches("::1", None)
    assert config.action_for(Condition.DNS_ERROR) is Action.TEMPFAIL
    assert config.action_for(Condition.SIGNATURE_ERROR) is Action.REJECT
    assert config.action_for(Condition.BAD_SIGNATURE) is Action.ACCEPT
    assert config.require_safe_keys and config.background
    assert (config.dns_timeout, config.maximum_signatures_to_verify, config.workers) == (5, 3, 1)
    assert config.key_source is KeySource.NONE
    assert config.effective_omit_headers()[0] == "return-path"


def test_scalar_option_types() -> None:
    config = parse_config_text(
        SOCKET + "Mode v\nCanonicalization relaxed\nSignatureTTL 3600\nDNSTimeout 0\n"
        "MaximumSignaturesToVerify 5\nMultipleSignatures y\nRemoveOldSignatures 1\n"
        "RequireSafeKeys no\nAuthservID HOSTNAME\nAlwaysAddARHeader true\n"
        "SoftwareHeader yes\nNameservers 192.0.2.53, 2001:db8::53\nBackground no\n"
        "AutoRestart yes\nAutoRestartCount 10\nAutoRestartRate 10/1h\nWorkers 4\n"
        "SyslogFacility LOCAL3\nSignatureAlgorithm ed25519-sha256\nUMask 0007\n"
        "UserID opendkim\n"
    )
    assert config.mode == Mode.VERIFY and not config.signs
    assert config.canonicalization == Canonicalization("relaxed", "simple")
    assert config.signature_ttl == 3600 and config.dns_timeout == 0
    assert config.maximum_signatures_to_verify == 5
    assert config.multiple_signatures and config.remove_old_signatures
    assert not config.require_safe_keys
    assert config.authserv_id == "HOSTNAME"
    assert config.always_add_ar_header and config.software_header
    assert config.nameservers == ("192.0.2.53", "2001:db8::53")
    assert not config.background and config.auto_restart and config.auto_restart_count == 10
    assert config.auto_restart_rate == RestartRate(10, 3600)
    assert config.workers == 4 and config.syslog_facility == "local3"
    assert config.signature_algorithm == "ed25519-sha256"
    assert config.umask == 0o7 and config.user_id == UserGroup("opendkim", None)


def test_signature_ttl_zero_means_none() -> None:
    assert parse_config_text(SOCKET + "SignatureTTL 0\n").signature_ttl is None


def test_on_default_applies_first_whatever_the_order() -> None:
    config = parse_config_text(
        SOCKET + "On-BadSignature r\nOn-Default tempfail\nOn-NoSignature a\n"
    )
    assert config.action_for(Condition.BAD_SIGNATURE) is Action.REJECT
    assert config.action_for(Condition.NO_SIGNATURE) is Action.ACCEPT
    assert config.action_for(Condition.KEY_NOT_FOUND) is Action.TEMPFAIL
    assert config.action_for(Condition.SIGNATURE_ERROR) is Action.TEMPFAIL
    q = parse_config_text(SOCKET + "On-Security Quarantine\n")
    assert q.action_for(Condition.SECURITY) is Action.QUARANTINE


def test_unknown_on_action_is_a_warning_and_accepts() -> None:
    """OpenDKIM 2.11 starts with "On-BadSignature bounce" and accepts such messages."""
    report = analyze_config_text(f"{SOCKET}On-BadSignature bounce\nOn-Default Explode\n")
    assert report.config is not None and not report.errors
    unknown = sorted((w.line, w.message) for w in report.warnings if "unknown action" in w.message)
    assert [line for line, _ in unknown] == [2, 3]
    assert 'unknown action "bounce"' in unknown[0][1]
    for condition in Condition:
        assert report.config.action_for(condition) is Action.ACCEPT


def test_header_lists() -> None:
    config = parse_config_text(
        SOCKET + "OmitHeaders *,+X-Foo,-Bcc\nSignHeaders From,To,Subject\n"
        "OversignHeaders From\nSenderHeaders Sender,From\n"
    )
    assert config.omit_headers == HeaderList(True, ("x-foo",), ("bcc",))
    omit = config.effective_omit_headers()
    assert "x-foo" in omit and "bcc" not in omit and "received" in omit
    assert config.sign_headers == HeaderList(False, ("from", "to", "subject"), ())
    assert config.sign_headers.apply(["date"]) == ("from", "to", "subject")
    assert config.oversign_headers == ("from",)
    assert config.sender_headers == ("sender", "from")


def test_macro_list() -> None:
    config = parse_config_text(SOCKET + "MacroList daemon_name=MSA|ORIG,auth_authen\n")
    msa, auth = config.macro_list
    assert msa.name == "daemon_name" and msa.values == ("MSA", "ORIG")
    assert msa.satisfied_by("MSA") and not msa.satisfied_by("msa")
    assert auth.satisfied_by("anything") and not auth.satisfied_by(None)


def test_test_dns_data(write: Writer) -> None:
    path = write("dns", "mail._domainkey.example.com v=DKIM1; p=abc\n")
    config = parse_config_text(SOCKET + f"TestDNSData file:{path}\n")
    assert config.test_dns_data is not None
    assert config.test_dns_data.lookup("MAIL._domainkey.example.com") == "v=DKIM1; p=abc"


def test_single_key_mode(write: Writer) -> None:
    key = write("k.private", "x")
    config = parse_config_text(
        SOCKET + f"Domain example.com,example.net\nSelector mail\nKeyFile {key}\nSubDomains yes\n"
    )
    assert config.key_source is KeySource.SINGLE_KEY
    assert config.single_key is not None
    assert config.single_key.selector == "mail" and config.single_key.key_file == key
    assert config.single_key.subdomains and "example.net" in config.single_key.domains


def test_single_key_incomplete_or_unreadable(write: Writer) -> None:
    # OpenDKIM's words and choices (dkimf_config_load, checked with opendkim -n)
    with pytest.raises(ConfigError, match="Domain requires KeyFile and Selector"):
        parse_config_text(SOCKET + "Domain example.com\n")
    with pytest.raises(ConfigError, match="KeyFile and Selector must both be defined"):
        parse_config_text(SOCKET + "Domain example.com\nSelector s\n")
    with pytest.raises(ConfigError, match='KeyFile: cannot read "/nonexistent/k"'):
        parse_config_text(SOCKET + "Domain example.com\nSelector s\nKeyFile /nonexistent/k\n")
    with pytest.raises(ConfigError, match='KeyFile: cannot read "/nonexistent/k"'):
        parse_config_text(SOCKET + "Mode v\nKeyFile /nonexistent/k\nSelector s\nDomain d\n")
    # What it starts with, signing nothing: Mode v, or KeyFile + Selector without Domain.
    key = write("k.private", "not checked here\n")
    for text in ("Mode v\nDomain example.com\nSelector s\n", f"KeyFile {key}\nSelector s\n"):
        config = parse_config_text(SOCKET + text)
        assert config.key_source is KeySource.NONE
        assert any("no mail is signed" in w.message for w in config.warnings)


def test_keytable_without_signing_table_is_refused_by_the_daemon_only(write: Writer) -> None:
    """opendkim refuses it when signing; opendkim-testkey/genzone read it (so do ours)."""
    kt = write("kt", "k example.com:s:/k\n")
    config = parse_config_text(SOCKET + f"KeyTable file:{kt}\n")
    [refusal] = daemon_refusals(config)
    assert refusal.message == "KeyTable requires either SigningTable or SetupPolicyScript"
    assert refusal.option == "KeyTable" and refusal.line == 2
    assert daemon_refusals(parse_config_text(SOCKET + f"Mode v\nKeyTable file:{kt}\n")) == []
    script = write("setup.lua", 'odkim.sign(ctx, "k")\n')
    with_script = SOCKET + f"KeyTable file:{kt}\nSetupPolicyScript {script}\n"
    assert daemon_refusals(parse_config_text(with_script)) == []


def test_keytable_overrides_single_key_with_warnings(write: Writer) -> None:
    kt = write("kt", "k example.com:s:/nonexistent\n")
    st = write("st", "*@example.com k\n")
    report = analyze_config_text(
        SOCKET + f"KeyTable {kt}\nSigningTable refile:{st}\nDomain example.com\n"
    )
    assert report.ok and report.config is not None
    assert report.config.key_source is KeySource.TABLES
    messages = [p.message for p in report.warnings]
    assert any("Domain is ignored" in m for m in messages)
    assert any("does not exist" in m for m in messages)


def test_signing_table_needs_keytable_and_known_keys(write: Writer) -> None:
    st = write("st", "*@example.com k\n")
    with pytest.raises(ConfigError, match="SigningTable needs a KeyTable"):
        parse_config_text(SOCKET + f"SigningTable refile:{st}\n", source="o.conf")
    # A key the KeyTable lacks does not stop OpenDKIM: the messages it matches tempfail.
    kt = write("kt", "other example.com:s:/k\n")
    config = parse_config_text(SOCKET + f"KeyTable file:{kt}\nSigningTable refile:{st}\n")
    [problem] = [w for w in config.warnings if w.fails_messages]
    assert (problem.file, problem.line) == (st, 1) and '"k"' in problem.message


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("Mode sx", 'unknown mode "x"'),
        ("Canonicalization relaxed/nofws", 'unknown method "nofws"'),
        ("Canonicalization loose", 'unknown method "loose"'),
        ("SignatureAlgorithm rsa-md5", "unknown algorithm"),
        ("SignatureAlgorithm rsa-sha1", "RFC 8301"),
        ("Socket tcp:8891", 'unknown socket type "tcp"'),
        ("Socket inet:99999@localhost", "out of range"),
        ("Socket inet:8891@[::1]", "not an IPv4 address"),
        ("Socket local:", "no socket path"),
        ("Nameservers 192.0.2.1,dns.example.com", '"dns.example.com" is not an IP address'),
        ("MinimumKeyBits -1", "out of range"),
        ("Workers 0", "out of range"),
        ("UMask 01000", "out of range"),
        ("UserID :group", "not user[:group]"),
        ("AutoRestartRate 10/1w", "not n/t[u]"),
        ("SyslogFacility mial", "unknown facility"),
        ("TestDNSData dsn:pgsql://h/d/table=t?keycol=k?datacol=v", "cannot be used for"),
        ("PeerList refile:/nonexistent", "cannot read data set file"),
        ("MacroList refile:/dev/null", "must be a file: or csl:"),
    ],
)
def test_invalid_values_are_errors_at_their_line(line: str, fragment: str) -> None:
    report = analyze_config_text(f"{SOCKET}# a comment\n{line}\n", source="/etc/opendkim.conf")
    assert report.config is None
    (error,) = report.errors
    assert (error.file, error.line) == ("/etc/opendkim.conf", 3), error
    assert fragment in error.message, error.message
    assert str(error).startswith("/etc/opendkim.conf:3: ")


def test_rsa_sha1_allowed_with_the_legacy_switch() -> None:
    config = parse_config_text(SOCKET + "AllowSHA1 yes\nSignatureAlgorithm RSA-SHA1\n")
    assert config.signature_algorithm == "rsa-sha1" and config.allow_sha1


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("Sigingtable x\nMode q\nSyslog perhaps\nDiagnostics yes\n")
    assert [p.line for p in info.value.errors] == [1, 3, 2]
    assert any(p.severity is Severity.WARNING for p in info.value.problems)
    assert str(info.value).splitlines()[0] == (
        '<config>:1: unknown option "Sigingtable" (did you mean "SigningTable"?)'
    )


def test_unimplemented_option_lets_the_daemon_run() -> None:
    config = parse_config_text(SOCKET + "VBR-Type x\nDomainKeysCompat yes\n")
    assert [w.option for w in config.warnings] == ["VBR-Type", "DomainKeysCompat"]


def test_include_and_problem_locations(write: Writer) -> None:
    inner = write("inner.conf", "Mode z\n")
    outer = write("outer.conf", f"{SOCKET}Include {inner}\n")
    with pytest.raises(ConfigError) as info:
        load_config(outer)
    assert str(info.value).startswith(f"{inner}:1: Mode:")


def test_verification_options_are_read() -> None:
    config = parse_config_text(
        SOCKET + "ClockDrift 0\nMinimum 50%\nMustBeSigned Subject,reply-to,SUBJECT\n"
        "TrustSignaturesFrom csl:example.net\nFixCRLF yes\nLogResults yes\n"
        "WeakSyntaxChecks yes\nAllowSHA1Only yes\nSelectCanonicalizationHeader X-Canon\n"
    )
    assert config.clock_drift == 300  # 0 leaves libopendkim's default
    assert str(config.minimum) == "50%"
    assert config.must_be_signed == ("subject", "reply-to")
    assert config.trust_signatures_from is not None
    assert "Example.NET" in config.trust_signatures_from
    assert config.fix_crlf and config.log_results and config.weak_syntax_checks
    assert config.allow_sha1_only and config.select_canonicalization_header == "X-Canon"
    assert not config.allow_sha1  # rsa-sha1 stays refused: that is AllowSHA1's call
    assert config.warnings == ()
    default = parse_config_text(SOCKET)
    assert (default.clock_drift, default.minimum, default.must_be_signed) == (300, None, ())


def test_negative_clock_drift_is_kept_with_a_warning() -> None:
    config = parse_config_text(SOCKET + "ClockDrift -100\n")
    assert config.clock_drift == -100
    assert [w.option for w in config.warnings] == ["ClockDrift"]


@pytest.mark.parametrize("value", ["101%", "-3", "ten", "10 bytes"])
def test_illegal_minimum_is_an_error_with_its_line(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(SOCKET + f"Mode v\nMinimum {value}\n")
    [problem] = info.value.errors
    assert problem.message == 'illegal value for "Minimum"'
    assert problem.line == SOCKET.count("\n") + 2
