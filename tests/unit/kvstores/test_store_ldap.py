"""ldap:/ldaps:/ldapi: data sets (dkimd.stores.ldap) against a real slapd on loopback."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkimd.stores.base import MissingExtra, StoreError, StoreSpecError
from dkimd.stores.ldap import (
    DEFAULT_LDAPI_PATH,
    LdapSettings,
    escape_dn_value,
    escape_filter_value,
    expand,
    from_spec,
    parse_urls,
)
from support.kvservers import READER_DN, SUFFIX, Slapd, ThrowawayCa
from support.tools import free_port

LDIF = f"""\
dn: ou=keys,{SUFFIX}
objectClass: organizationalUnit
ou: keys

dn: cn=example.com,ou=keys,{SUFFIX}
objectClass: dkimEntry
cn: example.com
dkimDomain: example.com
dkimSelector: sel-a
dkimKey: /keys/example.com.pem

dn: cn=example.org-1,ou=keys,{SUFFIX}
objectClass: dkimEntry
cn: example.org-1
dkimDomain: example.org
dkimSelector: sel-1
dkimKey: /keys/org-1.pem

dn: cn=example.org-2,ou=keys,{SUFFIX}
objectClass: dkimEntry
cn: example.org-2
dkimDomain: example.org
dkimSelector: sel-2

dn: dc=net,{SUFFIX}
objectClass: dcObject
objectClass: organization
dc: net
o: net

dn: dc=example,dc=net,{SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: example.net
description: found by $D
"""

KEYS = f"/ou=keys,{SUFFIX}?dkimSelector,dkimKey?one?(dkimDomain=$d)"
READER = LdapSettings(bind_user=READER_DN, bind_password=Slapd.reader_password, timeout=3)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCa:
    return ThrowawayCa(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def sd(tmp_path: Path, ca: ThrowawayCa) -> Iterator[Slapd]:
    with Slapd(tmp_path / "ldap", LDIF, ca=ca) as server:
        yield server


def lookups(spec: str, settings: LdapSettings, *keys: str) -> list[object]:
    async def run() -> list[object]:
        store = from_spec(spec, settings)
        await store.open()
        try:
            return [await store.get(k) for k in keys]
        finally:
            await store.close()

    return asyncio.run(run())


# -- the URLs, substitution and escaping -------------------------------------------------------


def test_parse_several_urls_the_first_says_what_to_ask() -> None:
    urls = parse_urls(
        "ldap://ldap1.example/ou=dkim,dc=example,dc=com?dkimSelector,dkimKey?sub?(dkimDomain=$d)"
        "  ldaps://[2001:db8::1]:1636/ignored ldapi:///"
    )
    first = urls[0]
    assert (first.scheme, first.host, first.port) == ("ldap", "ldap1.example", 389)
    assert first.dn == "ou=dkim,dc=example,dc=com"
    assert first.attributes == ("dkimSelector", "dkimKey")
    assert (first.scope, first.filter) == ("sub", "(dkimDomain=$d)")
    assert (urls[1].host, urls[1].port) == ("2001:db8::1", 1636)
    assert (urls[2].scheme, urls[2].host) == ("ldapi", DEFAULT_LDAPI_PATH)


def test_parse_defaults_and_percent_decoding() -> None:
    (url,) = parse_urls("ldaps://h/cn=a%20b,dc=x?cn")
    assert (url.port, url.dn, url.scope, url.filter) == (
        636,
        "cn=a b,dc=x",
        "base",
        "(objectClass=*)",
    )
    (url,) = parse_urls("ldapi://%2Frun%2Fslapd%2Fldapi/dc=x??sub?(cn=%24d)")
    assert (url.host, url.attributes, url.filter) == ("/run/slapd/ldapi", (), "(cn=$d)")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "http://h/dc=x",
        "ldap:/h/dc=x",
        "ldap://h/dc=x?a?everything",
        "ldap://h/dc=x?a?sub?(cn=$x)",  # only $d and $D are defined
        "ldap://h/cn=$,dc=x",
        "ldap://h/dc=x?a?sub?(cn=*)?!bindname=cn=x",  # a critical extension we lack
        "ldap://h:70000/dc=x",
        "ldap:///dc=x",
        "ldap://h/dc=x?a?sub?f?e?extra",
    ],
)
def test_unusable_urls_are_configuration_errors(value: str) -> None:
    with pytest.raises(StoreSpecError):
        parse_urls(value)


@pytest.mark.parametrize(
    "value",
    [
        "ldap://cn=admin:S3cret-Pw@h/dc=x",  # a login where RFC 4516 has none
        "ldap://cn=admin:S3cret-Pw@h:389/dc=x",
        "ldap:cn=admin:S3cret-Pw@h/dc=x",  # and not a URL at all
    ],
)
def test_a_password_in_the_url_is_refused_without_repeating_it(value: str) -> None:
    with pytest.raises(StoreSpecError) as err:
        parse_urls(value)
    assert "S3cret" not in err.value.message


def test_an_unsupported_sasl_mechanism_is_a_configuration_error() -> None:
    with pytest.raises(StoreSpecError, match="GSSAPI"):
        from_spec("ldap://h/dc=x", LdapSettings(auth_mechanism="GSSAPI"))


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ldap3", None)
    with pytest.raises(MissingExtra) as err:
        from_spec("ldap://h/dc=x")
    assert err.value.extra == "ldap"


def test_expand_d_and_capital_d_with_escaping() -> None:
    assert expand("(dkimDomain=$d)", "example.com", escape_filter_value) == (
        "(dkimDomain=example.com)"
    )
    assert expand("ou=x,$D", "mail.example.com", escape_dn_value) == (
        "ou=x,dc=mail,dc=example,dc=com"
    )
    # RFC 4515: * ( ) \ NUL are data inside a filter
    assert escape_filter_value("*)(|(a=*\\\0") == "\\2a\\29\\28|\\28a=\\2a\\5c\\00"
    # RFC 4514: , + " \ < > ; = and a leading # or space, a trailing space
    assert escape_dn_value("a,b+c") == "a\\2cb\\2bc"
    assert escape_dn_value("#x ") == "\\23x\\20"


def test_settings_from_opendkim_options_and_password_not_in_repr() -> None:
    settings = LdapSettings.from_options(
        {
            "LDAPBindUser": "cn=u",
            "LDAPBindPassword": "hunter2",
            "LDAPAuthMechanism": "DIGEST-MD5",
            "LDAPAuthName": "name",
            "LDAPAuthRealm": "realm",
            "LDAPAuthUser": "authz",
            "LDAPUseTLS": True,
            "LDAPTimeout": 0,  # not a usable timeout: the default
            "LDAPKeepaliveIdle": 30,
            "LDAPKeepaliveProbes": 3,
            "LDAPKeepaliveInterval": 10,
            "LDAPDisableCache": True,
            "SoftStart": True,
        }
    )
    assert settings == LdapSettings(
        bind_user="cn=u",
        bind_password="hunter2",
        auth_mechanism="DIGEST-MD5",
        auth_name="name",
        auth_realm="realm",
        auth_user="authz",
        use_tls=True,
        timeout=5,
        keepalive_idle=30,
        keepalive_probes=3,
        keepalive_interval=10,
        disable_cache=True,
        soft_start=True,
    )
    assert "hunter2" not in repr(settings)
    assert LdapSettings.from_options({}) == LdapSettings()


# -- against slapd -----------------------------------------------------------------------------


def test_found_not_found_and_several_rows(sd: Slapd) -> None:
    com, org, net = lookups(sd.url + KEYS, READER, "example.com", "example.org", "example.net")
    assert com == [("sel-a", "/keys/example.com.pem")]
    # two entries, two rows (in the server's order); a missing attribute reads as ""
    assert isinstance(org, list)
    assert sorted(org) == [("sel-1", "/keys/org-1.pem"), ("sel-2", "")]
    assert net == []


def test_capital_d_builds_the_base_dn(sd: Slapd) -> None:
    spec = sd.url + f"/$D,{SUFFIX}?description?base"
    assert lookups(spec, READER, "example.net", "nowhere.net", "a,b.net") == [
        [("found by $D",)],
        [],  # no such object: not found, as OpenDKIM
        [],  # "a,b" stays one escaped RDN value: no such object either
    ]


def test_hostile_keys_are_data(sd: Slapd) -> None:
    hostile = ["*", "*)(|(dkimDomain=*", "example.com)(dkimDomain=*", "\\2a", "ex\0ample.com"]
    assert lookups(sd.url + KEYS, READER, *hostile, "example.com") == [
        [],
        [],
        [],
        [],
        [],
        [("sel-a", "/keys/example.com.pem")],
    ]


def test_wrong_password_fails_at_open_without_the_password(sd: Slapd) -> None:
    wrong = LdapSettings(bind_user=READER_DN, bind_password="Not-The-Pw-42", timeout=3)

    async def run() -> str:
        store = from_spec(sd.url + KEYS, wrong)
        try:
            with pytest.raises(StoreError) as err:
                await store.open()
            return str(err.value)
        finally:
            await store.close()

    message = asyncio.run(run())
    assert "invalidCredentials" in message
    assert "Not-The-Pw-42" not in message and Slapd.reader_password not in message


def test_a_refused_search_is_an_error_not_a_miss(sd: Slapd) -> None:
    # Anonymous may only authenticate in the test directory: its search is refused
    # (insufficientAccessRights), which must not read as "no such key".
    async def run() -> str:
        store = from_spec(sd.url + KEYS, LdapSettings(timeout=3))
        await store.open()
        try:
            with pytest.raises(StoreError) as err:
                await store.get("example.com")
            return str(err.value)
        finally:
            await store.close()

    assert "insufficientAccessRights" in asyncio.run(run())


def test_sasl_external_over_ldapi(sd: Slapd) -> None:
    external = LdapSettings(auth_mechanism="EXTERNAL", timeout=3)
    assert lookups(sd.ldapi_url + KEYS, external, "example.com") == [
        [("sel-a", "/keys/example.com.pem")]
    ]


def test_ldaps_and_starttls_with_the_test_ca(sd: Slapd, ca: ThrowawayCa) -> None:
    trusted = LdapSettings(
        bind_user=READER_DN,
        bind_password=Slapd.reader_password,
        timeout=3,
        tls_ca_file=str(ca.ca_cert),
    )
    starttls = LdapSettings(
        bind_user=READER_DN,
        bind_password=Slapd.reader_password,
        timeout=3,
        tls_ca_file=str(ca.ca_cert),
        use_tls=True,
    )
    expected = [[("sel-a", "/keys/example.com.pem")]]
    assert lookups(sd.ldaps_url + KEYS, trusted, "example.com") == expected
    assert lookups(sd.url + KEYS, starttls, "example.com") == expected


def test_tls_required_and_the_ca_unknown(
    sd: Slapd, ca: ThrowawayCa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No CA configured: libldap's places are empty here, so the system's store, which does
    # not know the throw-away CA.
    monkeypatch.delenv("LDAPTLS_CACERT", raising=False)
    monkeypatch.setenv("LDAPCONF", str(tmp_path / "no-ldap.conf"))

    async def refused(spec: str, settings: LdapSettings) -> str:
        store = from_spec(spec, settings)
        try:
            with pytest.raises(StoreError) as err:
                await store.open()
            return str(err.value)
        finally:
            await store.close()

    for spec, use_tls in ((sd.ldaps_url + KEYS, False), (sd.url + KEYS, True)):
        settings = LdapSettings(
            bind_user=READER_DN,
            bind_password=Slapd.reader_password,
            timeout=3,
            use_tls=use_tls,
        )
        message = asyncio.run(refused(spec, settings))
        assert "certificate" in message.lower() or "ssl" in message.lower(), message
        assert Slapd.reader_password not in message

    # and libldap's own setting, LDAPTLS_CACERT, is honoured when dkimd's is not given
    monkeypatch.setenv("LDAPTLS_CACERT", str(ca.ca_cert))
    plain = LdapSettings(bind_user=READER_DN, bind_password=Slapd.reader_password, timeout=3)
    assert lookups(sd.ldaps_url + KEYS, plain, "example.com") == [
        [("sel-a", "/keys/example.com.pem")]
    ]


def test_failover_to_the_next_url(sd: Slapd) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    spec = dead + KEYS + " " + sd.url + "/"
    assert lookups(spec, READER, "example.com") == [[("sel-a", "/keys/example.com.pem")]]


def test_stopped_server_then_restarted_same_store(sd: Slapd) -> None:
    async def run() -> None:
        store = from_spec(sd.url + KEYS, READER)
        await store.open()
        assert await store.get("example.com") == [("sel-a", "/keys/example.com.pem")]
        sd.stop()
        with pytest.raises(StoreError) as err:
            await store.get("example.com")
        assert Slapd.reader_password not in str(err.value)
        sd.start()
        assert await store.get("example.com") == [("sel-a", "/keys/example.com.pem")]
        await store.close()

    asyncio.run(run())


def test_hung_server_times_out(sd: Slapd) -> None:
    quick = LdapSettings(bind_user=READER_DN, bind_password=Slapd.reader_password, timeout=1)

    async def run() -> float:
        store = from_spec(sd.url + KEYS, quick)
        await store.open()
        sd.pause()
        try:
            start = time.monotonic()
            with pytest.raises(StoreError):
                await store.get("example.com")
            return time.monotonic() - start
        finally:
            sd.resume()
            await store.close()

    assert asyncio.run(run()) < 4.5  # LDAPTimeout 1 s per step, bounded


def test_keepalive_options_reach_the_socket(sd: Slapd) -> None:
    settings = LdapSettings(
        bind_user=READER_DN,
        bind_password=Slapd.reader_password,
        keepalive_idle=42,
        keepalive_probes=4,
        keepalive_interval=7,
    )

    async def run() -> tuple[int, ...]:
        store = from_spec(sd.url + KEYS, settings)
        await store.open()
        try:
            (conn,) = store._connections
            sock = conn.socket
            return (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            )
        finally:
            await store.close()

    assert asyncio.run(run()) == (1, 42, 4, 7)


def test_walk_reads_the_key_attribute(sd: Slapd) -> None:
    async def run() -> list[tuple[str, tuple[str, ...]]]:
        store = from_spec(sd.url + KEYS, READER)
        try:
            return sorted([item async for item in store.walk()])
        finally:
            await store.close()

    assert asyncio.run(run()) == [
        ("example.com", ("sel-a", "/keys/example.com.pem")),
        ("example.org", ("sel-1", "/keys/org-1.pem")),
        ("example.org", ("sel-2", "")),
    ]


def test_walk_refused_when_the_key_is_not_in_one_filter_assertion(sd: Slapd) -> None:
    async def run() -> None:
        store = from_spec(sd.url + f"/$D,{SUFFIX}?description?base", READER)
        with pytest.raises(StoreError, match="cannot walk"):
            async for _ in store.walk():
                pass
        await store.close()

    asyncio.run(run())


def test_concurrent_lookups_share_a_bounded_pool(sd: Slapd) -> None:
    keys = ["example.com", "example.org", "example.net"] * 20

    async def run() -> tuple[list[list[tuple[str, ...]]], int]:
        store = from_spec(sd.url + KEYS, READER)
        try:
            answers = await asyncio.gather(*(store.get(k) for k in keys))
            return [sorted(a) for a in answers], len(store._connections)
        finally:
            await store.close()

    answers, connections = asyncio.run(run())
    expected = {
        "example.com": [("sel-a", "/keys/example.com.pem")],
        "example.org": [("sel-1", "/keys/org-1.pem"), ("sel-2", "")],
        "example.net": [],
    }
    assert answers == [expected[k] for k in keys]
    assert 1 <= connections <= LdapSettings().max_connections


def test_a_hung_server_never_blocks_the_event_loop(sd: Slapd) -> None:
    quick = LdapSettings(bind_user=READER_DN, bind_password=Slapd.reader_password, timeout=1)

    async def run() -> tuple[list[object], int, float, list[tuple[str, ...]]]:
        store = from_spec(sd.url + KEYS, quick)
        await store.open()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        sd.pause()
        start = time.monotonic()
        try:
            results = await asyncio.gather(
                *(store.get("example.com") for _ in range(10)), return_exceptions=True
            )
        finally:
            elapsed = time.monotonic() - start
            sd.resume()
            task.cancel()
        after = await store.get("example.com")
        await store.close()
        return results, ticks, elapsed, after

    results, ticks, elapsed, after = asyncio.run(run())
    assert all(isinstance(r, StoreError) for r in results)
    # the loop ran its 10 ms ticker all along (at least half the ticks it could)
    assert ticks >= elapsed / 0.01 / 2
    assert after == [("sel-a", "/keys/example.com.pem")]


def test_any_key_is_answered_or_refused_cleanly(sd: Slapd) -> None:
    import random

    rnd = random.Random(16)
    alphabet = 'ab.*()\\\0\x01\n\r ,+"<>;=#$%é€\U0001f600\udcff'
    keys = ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 12))) for _ in range(300)]

    async def run() -> list[list[tuple[str, ...]]]:
        store = from_spec(sd.url + KEYS, READER)
        dn_store = from_spec(sd.url + f"/$D,{SUFFIX}?description?base", READER)
        try:
            answers = [await store.get(k) for k in keys]
            answers += [await dn_store.get(k) for k in keys]
            return answers
        finally:
            await store.close()
            await dn_store.close()

    # none of these keys is in the directory, and none breaks a lookup
    assert asyncio.run(run()) == [[]] * 600


# ldap3 2.9.1 raises on the name before it keeps the TLS-wrapped socket, so the garbage
# collector, not the store, closes that socket (a ResourceWarning, no lasting leak).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    other = ThrowawayCa(tmp_path / "ca", names=("ldap.other.example",))
    with Slapd(tmp_path / "ldap", LDIF, ca=other) as server:
        settings = LdapSettings(
            bind_user=READER_DN,
            bind_password=Slapd.reader_password,
            timeout=3,
            tls_ca_file=str(other.ca_cert),
        )

        async def run() -> str:
            store = from_spec(server.ldaps_url + KEYS, settings)
            try:
                with pytest.raises(StoreError) as err:
                    await store.open()
                return str(err.value)
            finally:
                await store.close()

        assert "doesn't match" in asyncio.run(run())


def test_server_down_at_open_then_up_serves_without_a_new_store(sd: Slapd) -> None:
    # What SoftStart relies on: a failed open() leaves a store that works once the server does.
    sd.stop()

    async def run() -> list[tuple[str, ...]]:
        store = from_spec(sd.url + KEYS, READER)
        with pytest.raises(StoreError):
            await store.open()
        sd.start()
        try:
            return await store.get("example.com")
        finally:
            await store.close()

    assert asyncio.run(run()) == [("sel-a", "/keys/example.com.pem")]


@pytest.mark.parametrize("mechanism", ["PLAIN", "DIGEST-MD5"])
def test_sasl_with_a_password(sd: Slapd, mechanism: str) -> None:
    # LDAPAuthMechanism + LDAPAuthName + LDAPBindPassword; slapd checks the password against
    # cn=reader's userPassword (sasl-auxprops slapd).
    good = LdapSettings(
        auth_mechanism=mechanism,
        auth_name="reader",
        bind_password=Slapd.reader_password,
        timeout=3,
    )
    assert lookups(sd.url + KEYS, good, "example.com") == [[("sel-a", "/keys/example.com.pem")]]
    bad = LdapSettings(
        auth_mechanism=mechanism, auth_name="reader", bind_password="Not-The-Pw-42", timeout=3
    )

    async def refused() -> str:
        store = from_spec(sd.url + KEYS, bad)
        try:
            with pytest.raises(StoreError) as err:
                await store.open()
            return str(err.value)
        finally:
            await store.close()

    message = asyncio.run(refused())
    assert "Not-The-Pw-42" not in message and "bind failed" in message
