"""`dkimd check` and ChangeRootDirectory / ResolverConfiguration (keytools.lint_process)."""

from __future__ import annotations

from pathlib import Path

from dkimd.config import Severity, analyze_config_text
from dkimd.keytools.generate import generate_rsa
from dkimd.keytools.lint import lint


def _lint(text: str) -> list[tuple[Severity, str]]:
    result = lint(analyze_config_text(text, source="c.conf"), postconf=None)
    return [(p.severity, p.message) for p in result.problems]


def test_keys_are_looked_for_inside_the_new_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "keys").mkdir(parents=True)
    (tmp_path / "KeyTable").write_text(
        "in example.com:in:/keys/in.private\nout example.com:out:/keys/out.private\n"
    )
    (tmp_path / "SigningTable").write_text("*@example.com in\n*@example.com out\n")
    (root / "keys" / "in.private").write_bytes(generate_rsa(1024).private_pem)
    problems = _lint(
        f"ChangeRootDirectory {root}\nKeyTable file:{tmp_path / 'KeyTable'}\n"
        f"SigningTable refile:{tmp_path / 'SigningTable'}\nSocket local:/run/milter.sock\n"
        "PidFile /run/dkimd.pid\n"
    )
    errors = [m for s, m in problems if s is Severity.ERROR and m.startswith("key ")]
    assert errors == [
        f'key "out": {root}/keys/out.private does not exist: the key is read inside '
        "ChangeRootDirectory"
    ]
    # the socket and pid file directories are looked for inside it too
    assert any(f"directory {root}/run does not exist" in m for _, m in problems)
    assert not any(m.startswith("Socket: directory /run ") for _, m in problems)


def test_a_missing_root_and_dev_log(tmp_path: Path) -> None:
    problems = _lint(f"Mode v\nChangeRootDirectory {tmp_path / 'none'}\n")
    assert (
        Severity.ERROR,
        f"ChangeRootDirectory: {tmp_path}/none is not a directory: the daemon would exit 71",
    ) in problems
    problems = _lint(f"Mode v\nSyslog yes\nChangeRootDirectory {tmp_path}\n")
    assert any(s is Severity.WARNING and "dev/log" in m for s, m in problems)


def test_resolver_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "unbound.conf"
    conf.write_text("server:\n  verbosity: 1\n")
    problems = _lint(f"Mode v\nResolverConfiguration {conf}\n")
    assert (Severity.WARNING, "ResolverConfiguration: not applied by dkimd: verbosity") in problems
    conf.write_text("nonsense\n")
    problems = _lint(f"Mode v\nResolverConfiguration {conf}\n")
    assert any(s is Severity.ERROR and "syntax error" in m and "exit 70" in m for s, m in problems)
