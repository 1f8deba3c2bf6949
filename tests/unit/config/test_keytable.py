"""KeyTable and SigningTable parsing and OpenDKIM's lookup order."""

from __future__ import annotations

import base64
from collections.abc import Callable

from dkimd.config.datasets import Dataset, open_dataset
from dkimd.config.keytable import (
    KeyTable,
    KeyTableEntry,
    SigningTable,
    parse_keytable_value,
    split_address,
)

Writer = Callable[[str, str], str]  # the `write` fixture (conftest.py)


def keytable(write: Writer, text: str) -> tuple[KeyTable, list[str]]:
    path = write("KeyTable", text)
    ds, problems = open_dataset(f"file:{path}", case_insensitive=False)
    assert ds is not None and problems == []
    table, problems = KeyTable.build(ds)
    return table, [str(p) for p in problems]


def signing(write: Writer, text: str, kind: str = "file") -> SigningTable:
    path = write("SigningTable", text)
    ds, problems = open_dataset(f"{kind}:{path}", ascii_only=True)
    assert ds is not None and problems == []
    return SigningTable(ds)


def test_keytable_entries(write: Writer, tmp_path: object) -> None:
    key = write("k.private", "x")
    table, problems = keytable(
        write,
        f"mail  example.com:mail:{key}\n"
        "pct   %:sel:/keys/%.private\n"
        "rel   example.org:s1:./keys/a.pem\n",
    )
    entry = table.get("mail")
    assert entry == KeyTableEntry("mail", "example.com", "mail", key, None, entry.file, 1)  # type: ignore[union-attr]
    assert table.get("MAIL") is None  # KeyTable lookups are case-sensitive
    pct = table.get("pct")
    assert pct is not None and pct.needs_sender_domain
    resolved = pct.resolve("example.net")
    assert (resolved.domain, resolved.key_path) == ("example.net", "/keys/example.net.private")
    assert problems and all("does not exist" in p for p in problems)  # warnings only
    assert len(table) == 3


def test_keytable_inline_keys() -> None:
    der = base64.b64encode(b"\x30\x82\x01\x00").decode()
    entry = parse_keytable_value("k", f"example.com:s:{der}")
    assert isinstance(entry, KeyTableEntry) and entry.key_data == b"\x30\x82\x01\x00"
    assert entry.key_path is None
    pem = parse_keytable_value("k", "example.com:s:-----BEGIN PRIVATE KEY-----MIIB")
    assert isinstance(pem, KeyTableEntry) and pem.key_data is not None


def test_keytable_bad_entries(write: Writer) -> None:
    table, problems = keytable(write, "a example.com:sel\nb\nc ::/x\nd e.com:s:not base64!\n")
    assert len(table) == 0
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3", "4"]


def test_keytable_refile_matches_names(write: Writer) -> None:
    path = write("kt", "*._domainkey.example.com example.com:mail:/k\n")
    ds, _ = open_dataset(f"refile:{path}", case_insensitive=False)
    assert ds is not None
    table, _ = KeyTable.build(ds)
    entry = table.get("mail._domainkey.example.com")
    assert entry is not None and entry.name == "mail._domainkey.example.com"


def test_split_address() -> None:
    assert split_address("user@sub.example.com") == ("user", "sub.example.com")
    assert split_address("a@b@c") == ("a@b", "c")
    assert split_address("example.com") == ("", "example.com")


def test_file_signing_table_lookup_order(write: Writer) -> None:
    table = signing(
        write,
        "*              k-star\n"
        "user@*         k-user-any\n"
        ".com           k-dot-com\n"
        "user@.com      k-user-dot-com\n"
        ".example.com   k-dot-example\n"
        "user@.example.com k-user-dot-example\n"
        "sub.example.com k-domain\n"
        "user@sub.example.com k-full\n",
    )
    assert table.candidate_keys("user", "sub.example.com") == [
        "user@sub.example.com",
        "sub.example.com",
        "user@.example.com",
        ".example.com",
        "user@.com",
        ".com",
        "user@*",
        "*",
    ]
    all_hits = table.lookup("user", "sub.example.com", multiple=True)
    assert [h.key_name for h in all_hits] == [
        "k-full",
        "k-domain",
        "k-user-dot-example",
        "k-dot-example",
        "k-user-dot-com",
        "k-dot-com",
        "k-user-any",
        "k-star",
    ]
    assert [h.key_name for h in table.lookup("user", "sub.example.com")] == ["k-full"]
    assert table.first("other@x.example.com").key_name == "k-dot-example"  # type: ignore[union-attr]
    assert table.first("other@example.org").key_name == "k-star"  # type: ignore[union-attr]


def test_percent_and_signer(write: Writer) -> None:
    table = signing(write, "example.com %\nexample.org k:%\nexample.net k:list@%\n")
    assert table.first("a@example.com").key_name == "example.com"  # type: ignore[union-attr]
    org = table.first("a@example.org")
    assert org is not None and (org.key_name, org.signer) == ("k", "example.org")
    net = table.first("a@example.net")
    assert net is not None and net.signer == "list@example.net"
    assert table.first("a@example.com").signer is None  # type: ignore[union-attr]


def test_refile_signing_table_multiple(write: Writer) -> None:
    table = signing(write, "*@example.com a\n*@*.example.com b\n*@* c\n", kind="refile")
    assert [h.key_name for h in table.lookup_address("u@example.com", multiple=True)] == [
        "a",
        "c",
    ]
    hit = table.first("u@sub.example.com")
    assert hit is not None and (hit.key_name, hit.matched, hit.line) == ("b", "*@*.example.com", 2)


def test_non_ascii_sender_never_matches(write: Writer) -> None:
    table = signing(write, "*@* k\n", kind="refile")
    assert table.first("é@example.com") is None


def test_check_against_keytable(write: Writer) -> None:
    keys = KeyTable(Dataset.from_csl("known=example.com:s:/k", case_insensitive=False), {})
    keys, _ = KeyTable.build(keys.dataset)
    table = signing(write, "a@x known\nb@x unknown\nc@x %\nd@x\n")
    problems = table.check_against(keys)
    # OpenDKIM starts with such a table and tempfails what these entries match
    assert [(p.line, p.is_error, p.fails_messages) for p in problems] == [
        (2, False, True),
        (4, False, True),
    ]
    assert '"unknown", which is not in the KeyTable' in problems[0].message


def test_keytable_fourth_field_only_when_shaped_like_an_algorithm() -> None:
    entry = parse_keytable_value("k", "example.com:s:/keys/k.private:ed25519-sha256")
    assert isinstance(entry, KeyTableEntry)
    assert (entry.key_path, entry.algorithm) == ("/keys/k.private", "ed25519-sha256")
    # 2.11 gives the key part everything after the second colon: a path may hold colons.
    path = parse_keytable_value("k", "example.com:s:/keys/a:b.private")
    assert isinstance(path, KeyTableEntry)
    assert (path.key_path, path.algorithm) == ("/keys/a:b.private", None)
    bare = parse_keytable_value("k", "example.com:s:/keys/k.private")
    assert isinstance(bare, KeyTableEntry) and bare.algorithm is None
    assert isinstance(parse_keytable_value("k", "example.com:s:rsa-sha256"), str)  # no key
