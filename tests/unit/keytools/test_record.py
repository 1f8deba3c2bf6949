"""DNS record text: opendkim-genkey's and opendkim-genzone's layouts, byte for byte.

The expected strings were produced by the real tools (Debian 12, OpenDKIM 2.11.0) and are
checked against them again, for freshly made keys, in tests/interop/test_genkey_opendkim.py.
"""

from __future__ import annotations

import pytest

from dkimd.keytools.record import (
    KeyRecordOptions,
    RecordError,
    SoaOptions,
    ZoneKey,
    ZoneOptions,
    genkey_txt,
    genzone_record,
    genzone_text,
    record_value,
    zone_txt_strings,
)

# A 1024-bit key's p= (216 characters: one piece) and a 2048-bit one's (392: two pieces).
P1024 = (
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCxbd+ieQoMzz0bPGuIQuoaYz97GuMb+od10uk4pJcUnwysLtXN/"
    "wxVOnOFzcKe7G6aXwMqxsIbZqvhWq8tmv2F9GNy5XvW3nK0UO3bIcZWHEu+SShWs3rxE99Ij2KMbKjB2oAuIpRlx42F"
    "UWxK1rvnDpbheYzfErNazvLk4dNT8wIDAQAB"
)
P2048 = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA/Lcq7P6AR0MmxEMyqjP8wpW2B/JIUTClYdpTv6/tV0DxyKjm"
    "xTFJSNPeXevMn4tsz87N6Aj/RxOtotI/6mFcPOCB8LgcLtfoedcOkZ6HjuxoFgQJ57D8g5NkLADeYYiccWrj9g1xY7Rt"
    "PT/6QllVAcnHIyyNxPRdHNjb0tSdUUns4evtzwbLmpwD6VBmfukS/9CcRzfGNtiur1HauQS7mEbH683mYV3U8Bmx6PDa"
    "7kp8a6ko6U7iNeCe/fsifyFctVk+SfRVXFPVb1QhcIOEFD7vWG4reJbCBIHtXm+44c/M6cdQMNvTRriB7zYW/K+tFAmm"
    "aDu53++Fr3uIMQXToQIDAQAB"
)


def test_genkey_default_layout_matches_opendkim_genkey() -> None:
    # `opendkim-genkey -s mail -d example.com`, the seed recipe's command.
    expected = (
        'mail._domainkey\tIN\tTXT\t( "v=DKIM1; h=sha256; k=rsa; "\n'
        f'\t  "p={P2048[:250]}"\n'
        f'\t  "{P2048[250:]}" )  ; ----- DKIM key mail for example.com\n'
    )
    assert genkey_txt("mail", "example.com", P2048, KeyRecordOptions()) == expected


def test_genkey_all_flags_layout_matches_opendkim_genkey() -> None:
    # `opendkim-genkey -b 1024 -a -t -S -r -n "hello world" -d example.com`
    expected = (
        'default._domainkey.example.com.\tIN\tTXT\t( "v=DKIM1; n=\\"hello world\\"; '
        'h=sha256; k=rsa; t=y:s; s=email; "\n'
        f'\t  "p={P1024}" )  ; ----- DKIM key default for example.com\n'
    )
    options = KeyRecordOptions(
        note="hello world", restrict_email=True, subdomains=False, testing=True
    )
    assert genkey_txt("default", "example.com", P1024, options, append_domain=True) == expected


@pytest.mark.parametrize(
    ("options", "head"),
    [
        (KeyRecordOptions(testing=True), "v=DKIM1; h=sha256; k=rsa; t=y; "),
        (KeyRecordOptions(subdomains=False), "v=DKIM1; h=sha256; k=rsa; t=s; "),
        (KeyRecordOptions(restrict_email=True), "v=DKIM1; h=sha256; k=rsa; s=email; "),
        (
            KeyRecordOptions(testing=True, restrict_email=True),
            "v=DKIM1; h=sha256; k=rsa; t=y; s=email; ",
        ),
        (KeyRecordOptions(hash_algorithms=None), "v=DKIM1; k=rsa; "),
        (KeyRecordOptions(hash_algorithms="sha1:sha256"), "v=DKIM1; h=sha1:sha256; k=rsa; "),
        (KeyRecordOptions(key_type="ed25519"), "v=DKIM1; h=sha256; k=ed25519; "),
    ],
)
def test_genkey_tag_order(options: KeyRecordOptions, head: str) -> None:
    text = genkey_txt("s", "example.com", P1024, options)
    assert text.startswith(f's._domainkey\tIN\tTXT\t( "{head}"\n')
    assert record_value(P1024, options) == head + "p=" + P1024


def test_empty_domain_drops_comment_like_opendkim_genkey() -> None:
    assert genkey_txt("s", "", "AAAA", KeyRecordOptions()).endswith('"p=AAAA" ) \n')


def test_key_of_exactly_250_characters_ends_with_empty_piece() -> None:
    # opendkim-genkey's loop emits a piece break after every full 250-character piece.
    text = genkey_txt("s", "d.example", "A" * 500, KeyRecordOptions())
    assert zone_txt_strings(text) == ["v=DKIM1; h=sha256; k=rsa; ", "p=" + "A" * 250, "A" * 250, ""]


@pytest.mark.parametrize("length", [1, 44, 216, 249, 250, 251, 392, 736, 1000])
def test_pieces_fit_in_dns_strings_and_join_to_record(length: int) -> None:
    p = ("ABCD" * 300)[:length]
    text = genkey_txt("sel", "example.org", p, KeyRecordOptions(note="x"))
    pieces = zone_txt_strings(text)
    assert all(len(piece.encode()) < 255 for piece in pieces)
    assert "".join(pieces) == record_value(p, KeyRecordOptions(note="x"))


@pytest.mark.parametrize("note", ['a"b', "a;b", "a\\b", "tab\there", "caf\u00e9"])
def test_notes_that_would_corrupt_the_record_are_refused(note: str) -> None:
    with pytest.raises(RecordError):
        KeyRecordOptions(note=note)


@pytest.mark.parametrize("hashes", ["", "sha256;", "sha256 sha1", "SHA256", ":sha256"])
def test_malformed_hash_lists_are_refused(hashes: str) -> None:
    with pytest.raises(RecordError):
        KeyRecordOptions(hash_algorithms=hashes)


def test_unknown_hash_algorithm_is_reported() -> None:
    assert KeyRecordOptions(hash_algorithms="sha256:md5").unknown_hash_algorithms == ["md5"]


def test_genzone_record_layout_matches_opendkim_genzone() -> None:
    # `opendkim-genzone file:KeyTable` (Debian 2.11.0) for the 2048-bit key above.
    key = ZoneKey("k1", "example.com", "mail", "rsa", P2048)
    text = "v=DKIM1\\;k=rsa\\;p=" + P2048
    lines = [text[:75]] + [text[i : i + 66] for i in range(75, len(text), 66)]
    expected = 'mail\tIN\tTXT\t( "' + '"\n\t"'.join(lines) + '" )\n'
    assert genzone_record(key, ZoneOptions()) == expected
    assert expected.splitlines()[0].endswith(
        'p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA/Lcq7P6AR0Mmx"'
    )
    assert expected.splitlines()[-1] == '\t"DAQAB" )'


def test_genzone_owner_and_ttl_forms() -> None:
    key = ZoneKey("k1", "example.com", "mail", "rsa", "AAAA")
    assert genzone_record(key, ZoneOptions(domainkey_suffix=True)).startswith(
        "mail._domainkey\tIN\tTXT\t"
    )
    assert genzone_record(key, ZoneOptions(fqdn=True, ttl=300)).startswith(
        "mail._domainkey.example.com.\t300\tIN\tTXT\t"
    )
    assert '"v=DKIM1\\;k=rsa\\;s=email\\;p=AAAA" )' in genzone_record(
        key, ZoneOptions(restrict_email=True)
    )
    assert zone_txt_strings(genzone_record(key, ZoneOptions())) == ["v=DKIM1;k=rsa;p=AAAA"]


def test_genzone_header_soa_and_ns() -> None:
    key = ZoneKey("k1", "example.com", "mail", "ed25519", "AAAA")
    text = genzone_text(
        [key],
        ZoneOptions(),
        program="dkimd genzone",
        generated_at="Thu Nov 26 15:35:22 2026",
        only_domain="example.com",
        soa=SoaOptions("ns1.example.com", "hostmaster@example.com", "2026112615", 1, 2, 3, 4),
        nameservers=["ns1.example.com", "ns2.example.com"],
    )
    assert text == (
        "; DKIM public key zone data\n"
        "; for example.com\n"
        "; auto-generated by dkimd genzone at Thu Nov 26 15:35:22 2026\n\n"
        "@\tIN\tSOA\tns1.example.com\thostmaster.example.com\t (\n"
        "\t2026112615   ; Serial (yyyymmddhh)\n"
        "\t1            ; Refresh\n"
        "\t2            ; Retry\n"
        "\t3            ; Expire\n"
        "\t4          ) ; Default\n\n"
        "\tIN\tNS\tns1.example.com\n"
        "\tIN\tNS\tns2.example.com\n\n"
        'mail\tIN\tTXT\t( "v=DKIM1\\;k=ed25519\\;p=AAAA" )\n'
    )


def test_genzone_nsupdate_pieces_are_255() -> None:
    key = ZoneKey("k1", "example.com", "mail", "rsa", P2048)
    text = genzone_text(
        [key],
        ZoneOptions(nsupdate=True, fqdn=True),
        program="x",
        generated_at="now",
        nsupdate_server="ns1",
    )
    lines = text.splitlines()
    assert lines[0] == "server ns1"
    assert lines[1] == "zone example.com"
    assert lines[2].startswith('update add mail._domainkey.example.com. 86400 TXT "v=DKIM1\\;')
    assert lines[3:] == ["send", "answer"]
    pieces = lines[2].split(" TXT ", 1)[1]
    assert [len(p) for p in pieces.strip('"').split('" "')] == [255, 155]


def test_zone_txt_strings_handles_escapes_and_comments() -> None:
    text = 'x IN TXT ( "a\\"b" ; comment "not"\n "c\\059d" ) ; "after"'
    assert zone_txt_strings(text) == ['a"b', "c;d"]
    with pytest.raises(RecordError):
        zone_txt_strings('x IN TXT "open')
