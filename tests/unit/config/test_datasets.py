"""OpenDKIM data sets: spec parsing, file:/refile:/csl: contents and lookups."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dkimd.config.datasets import (
    Dataset,
    DatasetKind,
    DatasetSpecError,
    glob_to_regex,
    open_dataset,
    parse_dataset_lines,
    parse_dataset_spec,
)
from dkimd.config.problems import Severity

Writer = Callable[[str, str], str]  # the `write` fixture (conftest.py)


@pytest.mark.parametrize(
    ("text", "kind", "argument"),
    [
        ("file:/etc/x", DatasetKind.FILE, "/etc/x"),
        ("FILE:/etc/x", DatasetKind.FILE, "/etc/x"),
        ("refile:/etc/x", DatasetKind.REFILE, "/etc/x"),
        ("csl:a,b", DatasetKind.CSL, "a,b"),
        ("csl:::1", DatasetKind.CSL, "::1"),
        ("/etc/opendkim/TrustedHosts", DatasetKind.FILE, "/etc/opendkim/TrustedHosts"),
        ("127.0.0.1,localhost", DatasetKind.CSL, "127.0.0.1,localhost"),
        ("127.0.0.1,::1", DatasetKind.CSL, "127.0.0.1,::1"),  # colon after the comma
        ("example.com", DatasetKind.CSL, "example.com"),
    ],
)
def test_spec(text: str, kind: DatasetKind, argument: str) -> None:
    spec = parse_dataset_spec(text)
    assert (spec.kind, spec.argument) == (kind, argument)


@pytest.mark.parametrize("type_name", ["db", "mdb", "erlang", "repute", "socket"])
def test_unsupported_types_are_named(type_name: str) -> None:
    with pytest.raises(DatasetSpecError) as info:
        parse_dataset_spec(f"{type_name}:/somewhere")
    assert f'"{type_name}:"' in info.value.message and "not supported" in info.value.message


def test_bare_db_file_and_unknown_type() -> None:
    with pytest.raises(DatasetSpecError, match="Berkeley DB"):
        parse_dataset_spec("/etc/opendkim/keys.db")
    with pytest.raises(DatasetSpecError, match="unknown data set type"):
        parse_dataset_spec("bogus:/x")
    with pytest.raises(DatasetSpecError, match="unknown data set type"):
        parse_dataset_spec("::1")  # OpenDKIM reads "" as the type too


def test_unknown_type_does_not_echo_a_url_with_a_password() -> None:
    # "dsn:" forgotten: the value is a server URL with its password.
    with pytest.raises(DatasetSpecError) as info:
        parse_dataset_spec("pgsql://dkim:S3cret-Pw@db.example/dkim/table=k?keycol=d?datacol=v")
    assert info.value.message == 'unknown data set type "pgsql:"'
    assert "S3cret" not in str(info.value)


def test_glob_to_regex_matches_mkregexp() -> None:
    assert glob_to_regex("*@*.example.com") == r"^.*@.*\.example\.com$"
    assert glob_to_regex("a+b") == r"^a\+b$"
    assert glob_to_regex("(a|b)@x") == r"^(a|b)@x$"


def test_file_contents(write: Writer) -> None:
    path = write(
        "ds",
        "# comment\n\nalpha\n  beta   two words  \ngamma one # trailing comment\nALPHA shadowed\n",
    )
    ds, problems = open_dataset(f"file:{path}")
    assert ds is not None and ds.kind is DatasetKind.FILE and ds.path == path
    assert ds.keys() == ["alpha", "beta", "gamma"]
    assert ds.lookup("alpha") == ""  # present, no value
    assert ds.lookup("beta") == "two words"
    assert ds.lookup("GAMMA") == "one"  # case-blind by default
    assert ds.lookup("delta") is None
    assert "beta" in ds and "delta" not in ds
    assert [(e.key, e.line) for e in ds] == [("alpha", 3), ("beta", 4), ("gamma", 5)]
    (dup,) = problems
    assert dup.severity is Severity.WARNING and dup.line == 6 and "line 3" in dup.message


def test_case_sensitive_file(write: Writer) -> None:
    path = write("kt", "Key a:b:/k\n")
    ds, _ = open_dataset(path, case_insensitive=False)
    assert ds is not None and ds.lookup("Key") == "a:b:/k" and ds.lookup("key") is None


def test_refile_first_match_in_file_order(write: Writer) -> None:
    path = write("st", "*@example.com   first\n*@*     second\n*       third\nbob@* fourth\n")
    ds, problems = open_dataset(f"refile:{path}")
    assert ds is not None and problems == []
    assert ds.lookup("bob@example.com") == "first"
    assert ds.lookup_all("bob@example.com") == ["first", "second", "third", "fourth"]
    assert ds.lookup_all("bob@other.org") == ["second", "third", "fourth"]
    assert ds.lookup("nobody") == "third"
    assert ds.match("x@EXAMPLE.com") is not None and ds.match("x@EXAMPLE.com").line == 1  # type: ignore[union-attr]


def test_refile_dot_is_literal_and_regex_chars_pass_through(write: Writer) -> None:
    path = write("re", "a.b\n(x|y)@example.com yes\n")
    ds, _ = open_dataset(f"refile:{path}")
    assert ds is not None
    assert "a.b" in ds and "axb" not in ds
    assert ds.lookup("y@example.com") == "yes"


def test_refile_leading_blank_line_is_ignored_with_warning(write: Writer) -> None:
    path = write("re", "  *@example.com key\n*@example.net key\n")
    ds, problems = open_dataset(f"refile:{path}")
    assert ds is not None and ds.keys() == ["*@example.net"]
    (warning,) = problems
    assert warning.severity is Severity.WARNING and warning.line == 1


def test_refile_bad_pattern_is_an_error(write: Writer) -> None:
    path = write("re", "(unclosed\nok\n")
    ds, problems = open_dataset(f"refile:{path}", option="PeerList", origin=("c.conf", 3))
    assert ds is not None and ds.keys() == ["ok"]
    (error,) = problems
    assert error.is_error and (error.file, error.line) == (path, 1)
    assert error.option == "PeerList"


def test_csl() -> None:
    ds, problems = open_dataset("csl:a, b=1 ,,c=x=y", origin=("c.conf", 7))
    assert ds is not None and problems == []
    assert ds.keys() == ["a", "b", "c"]
    assert ds.lookup("b") == "1" and ds.lookup("c") == "x=y" and ds.lookup("a") == ""
    assert all(e.location == "c.conf:7" for e in ds)
    bare, _ = open_dataset("127.0.0.1,::1")
    assert bare is not None and bare.keys() == ["127.0.0.1", "::1"]


def test_missing_file_is_an_error_at_the_option_line() -> None:
    ds, (problem,) = open_dataset(
        "refile:/nonexistent/TrustedHosts", origin=("/etc/opendkim.conf", 3), option="PeerList"
    )
    assert ds is None
    assert str(problem).startswith("/etc/opendkim.conf:3: PeerList: cannot read data set file")


def test_unsupported_type_problem_location() -> None:
    ds, (problem,) = open_dataset("mdb:/x/y", origin=("o.conf", 2), option="KeyTable")
    assert ds is None and problem.line == 2 and '"mdb:"' in problem.message


def test_ascii_only() -> None:
    ds = Dataset.from_csl("*")
    ascii_only = Dataset(ds.spec, ds.kind, ds.entries, ascii_only=True)
    assert "é@example.com" not in ascii_only
    assert ascii_only.lookup_all("é") == []


def test_parse_dataset_lines_test_dns_data_format() -> None:
    entries, problems = parse_dataset_lines(
        DatasetKind.FILE,
        'mail._domainkey.example.com v=DKIM1; k=rsa; p=MIGf "quoted"\n',
        "dns.txt",
    )
    assert problems == []
    assert entries[0].value == 'v=DKIM1; k=rsa; p=MIGf "quoted"'
