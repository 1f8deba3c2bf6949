"""The same LDAP KeyTable and SigningTable, read by the real OpenDKIM 2.11 and by dkimd's store.

OpenDKIM signs through `ldap:` tables on a private slapd; for every listed sender domain the
d= and s= of its signature must be what dkimd.stores.ldap answers for the same keys, and the
signature must verify with the key file the store's KeyTable row names.

A sender with no SigningTable entry cannot be compared on the result: Debian's OpenDKIM
2.11.0 runs its six searches for it (user@domain, domain, user@.parent, .parent, user@*, *;
slapd's log shows each answered, 0 entries) and then never replies to the MTA's end of
message (docs/datasets.md, "Differences from OpenDKIM"). What can be compared is the filter: for
`star*.test` both must send `*` as data (RFC 4515 `\2a`), never as a wildcard that would
match `starfish.test`. Debian's OpenDKIM has no memcached support (USE_LIBMEMCACHED is not
among its `opendkim -V` options), so `memcache:` cannot be compared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dkim
import pytest

from dkimd.stores.ldap import LdapSettings, from_spec
from support.kvservers import READER_DN, SUFFIX, Slapd
from support.opendkim import DkimKey, OpenDKIM, genkey, milter_transaction

pytestmark = pytest.mark.interop

KEYS_URL = f"/ou=keys,{SUFFIX}?dkimDomain,dkimSelector,dkimKey?one?(cn=$d)"
SIGNING_URL = f"/ou=signing,{SUFFIX}?dkimKey?one?(dkimIdentity=$d)"
#: sender domain -> the key name its SigningTable entry gives
SENDERS = {"example.com": "com-key", "example.org": "org-key", "starfish.test": "com-key"}
#: a wildcard would match starfish.test; escaped, it matches nothing
HOSTILE = "star*.test"


def _ldif(com: DkimKey, org: DkimKey) -> str:
    out = [
        f"dn: ou=keys,{SUFFIX}\nobjectClass: organizationalUnit\nou: keys\n",
        f"dn: ou=signing,{SUFFIX}\nobjectClass: organizationalUnit\nou: signing\n",
    ]
    for name, key in (("com-key", com), ("org-key", org)):
        out.append(
            f"dn: cn={name},ou=keys,{SUFFIX}\nobjectClass: dkimEntry\ncn: {name}\n"
            f"dkimDomain: {key.domain}\ndkimSelector: {key.selector}\n"
            f"dkimKey: {key.private_key}\n"
        )
    for domain, key_name in SENDERS.items():
        if key_name is not None:
            out.append(
                f"dn: cn={domain},ou=signing,{SUFFIX}\nobjectClass: dkimEntry\ncn: {domain}\n"
                f"dkimIdentity: {domain}\ndkimKey: {key_name}\n"
            )
    return "\n".join(out)


def _message(domain: str) -> bytes:
    return (
        f"From: Alice <alice@{domain}>\r\nTo: bob@example.net\r\nSubject: ldap tables\r\n"
        "Date: Sat, 05 Dec 2026 03:00:00 +0000\r\nMessage-ID: <ldap@example.net>\r\n"
        "\r\nSigned through LDAP.\r\n"
    ).encode()


def _tags(signature: str) -> dict[str, str]:
    tags = {}
    for part in "".join(signature.split()).split(";"):
        name, _, value = part.partition("=")
        if name:
            tags[name] = value
    return tags


def test_opendkim_and_the_store_agree_on_ldap_tables(tmp_path: Path) -> None:
    com = genkey(tmp_path / "k-com", "example.com", "sel-com")
    org = genkey(tmp_path / "k-org", "example.org", "sel-org")
    by_path = {str(com.private_key): com, str(org.private_key): org}
    with Slapd(tmp_path / "ldap", _ldif(com, org), loglevel="stats") as sd:
        options = {
            "KeyTable": sd.url + KEYS_URL,
            "SigningTable": sd.url + SIGNING_URL,
            "LDAPBindUser": READER_DN,
            "LDAPBindPassword": Slapd.reader_password,
        }
        settings = LdapSettings.from_options(options)

        async def store_answers() -> dict[str, list[tuple[str, ...]]]:
            keys = from_spec(options["KeyTable"], settings)
            signing = from_spec(options["SigningTable"], settings)
            await keys.open()
            await signing.open()
            answers: dict[str, list[tuple[str, ...]]] = {}
            try:
                for domain in [*SENDERS, HOSTILE]:
                    answers[domain] = []
                    for (key_name,) in await signing.get(domain):
                        answers[domain] += await keys.get(key_name)
            finally:
                await keys.close()
                await signing.close()
            return answers

        answers = asyncio.run(store_answers())
        ours = sd.searched_filters()
        assert answers[HOSTILE] == []
        # slapd logs a filter as it reads it, the escape in capitals (\2A); RFC 4515 hex is
        # case-blind, and OpenDKIM writes capitals too.
        assert "(dkimidentity=star\\2a.test)" in [f.lower() for f in ours]

        with OpenDKIM(tmp_path / "od", mode="s", options=options) as od:
            for domain in SENDERS:
                message = _message(domain)
                result = milter_transaction(od.socket_spec, message)
                signatures = result.headers("DKIM-Signature")
                assert len(signatures) == 1, (domain, result.output, od.log_text())
                tags = _tags(signatures[0])
                ((d, s, keyfile),) = answers[domain]
                assert (tags["d"], tags["s"]) == (d, s), domain
                key = by_path[keyfile]
                signed = b"DKIM-Signature: " + signatures[0].replace("\n", "\r\n").encode()
                signed += b"\r\n" + message

                def dnsfunc(name: bytes | str, timeout: int = 5, key: DkimKey = key) -> bytes:
                    return key.txt.encode()

                assert dkim.verify(signed, dnsfunc=dnsfunc), domain

            # Last, as OpenDKIM stops answering after it (see the module's docstring).
            with pytest.raises(RuntimeError, match="timeout"):
                milter_transaction(od.socket_spec, _message(HOSTILE))
        theirs = sd.searched_filters()[len(ours) :]
        assert "(dkimidentity=star\\2a.test)" in [f.lower() for f in theirs]
        assert not any("star*" in f for f in theirs)
