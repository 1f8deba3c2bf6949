"""`ldap:`, `ldaps:` and `ldapi:` data sets: RFC 4516 URLs, as opendkim(8) documents them.

    ldap://host[:port]/dn?attrs?scope?filter      e.g.
    ldap://ldap.example/ou=dkim,dc=example,dc=com?dkimSelector,dkimKey?sub?(dkimDomain=$d)

opendkim(8): the value is "a space-separated set of one or more LDAP URLs"; the first gives
the base DN template, attributes, scope and filter; all of them are servers to try, in order.
In the DN and the filter, `$d` is replaced by the key looked up and `$D` by the key broken at
"." into `dc=` components ("example.com" -> "dc=example,dc=com"). The attributes, in the
URL's order, are the fields of a row; each entry found is a row (OpenDKIM reads the first
entry only), holding the first value of each attribute ("" when it has none).

A substituted key is data: in a filter it is escaped as RFC 4515 says (`*`, `(`, `)`, `\\`
and NUL become `\\2a`...; OpenDKIM escapes the same set), in a DN as RFC 4514 says (OpenDKIM
escapes only the filter set there, so a key with "," could change its base; no domain name
has one). A `$` followed by anything but `d` or `D` is refused when the URL is read
(OpenDKIM silently drops the pair).

How the `LDAP*` options of opendkim.conf(5) act is in `LdapSettings`; a configuration's
values reach it through `dkimd.stores.settings.ldap_settings`. The client is ldap3,
blocking, so lookups run in a bounded pool of threads, each with its own connection, opened
on first use and opened again after a failure (one retry per lookup, as OpenDKIM's
reconnect). A name error from the server (no such object, bad DN syntax) is "not found", as
in OpenDKIM; any other failure is a StoreError.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from dkimd.stores.base import MissingExtra, Row, StoreError, StoreSpecError

__all__ = ["SASL_MECHANISMS", "LdapSettings", "LdapStore", "LdapUrl", "from_spec", "parse_urls"]

_T = TypeVar("_T")

DEFAULT_TIMEOUT = 5
#: Debian's slapd listens here for `ldapi:///` (libldap's compiled-in default on Debian).
DEFAULT_LDAPI_PATH = "/var/run/slapd/ldapi"
_SCOPES = ("base", "one", "sub")
#: SASL mechanisms ldap3 implements without extra packages.
SASL_MECHANISMS = ("EXTERNAL", "DIGEST-MD5", "PLAIN")
#: Entries fetched per page while walking.
_PAGE = 500


@dataclass(frozen=True, slots=True)
class LdapSettings:
    """The `LDAP*` options of opendkim.conf(5), for every `ldap:` data set of a configuration.

    Each field is one option (`from_options` maps them by name). `soft_start` and
    `disable_cache` are read by the data set layer in front of the store: SoftStart decides
    whether a failed `open()` stops the start, LDAPDisableCache turns off the lookup cache.
    """

    bind_user: str | None = None  # LDAPBindUser: DN of a simple bind (SASL: not used)
    bind_password: str | None = field(default=None, repr=False)  # LDAPBindPassword
    auth_mechanism: str = ""  # LDAPAuthMechanism: "", "none", "simple" or a SASL name
    auth_name: str | None = None  # LDAPAuthName: SASL authentication identity
    auth_realm: str | None = None  # LDAPAuthRealm: SASL realm (DIGEST-MD5)
    auth_user: str | None = None  # LDAPAuthUser: SASL authorization identity
    use_tls: bool = False  # LDAPUseTLS: StartTLS on ldap:// (ldaps:// is TLS already)
    timeout: int = DEFAULT_TIMEOUT  # LDAPTimeout: seconds per connect, bind and search
    keepalive_idle: int | None = None  # LDAPKeepaliveIdle: TCP_KEEPIDLE
    keepalive_probes: int | None = None  # LDAPKeepaliveProbes: TCP_KEEPCNT
    keepalive_interval: int | None = None  # LDAPKeepaliveInterval: TCP_KEEPINTVL
    disable_cache: bool = False  # LDAPDisableCache (data set layer)
    soft_start: bool = False  # SoftStart (data set layer)
    #: dkimd only: the CA certificates to trust for TLS. Unset: $LDAPTLS_CACERT, then
    #: TLS_CACERT of ldap.conf ($LDAPCONF or /etc/ldap/ldap.conf), as libldap (and so
    #: OpenDKIM) finds them, then the system's store.
    tls_ca_file: str | None = None
    #: dkimd only: threads (so connections) per data set.
    max_connections: int = 4

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> LdapSettings:
        """Settings from opendkim.conf values by option name (absent or None: default)."""

        def text(name: str) -> str | None:
            value = options.get(name)
            return None if value is None or value == "" else str(value)

        def number(name: str) -> int | None:
            value = options.get(name)
            return None if value is None else int(str(value))

        def flag(name: str) -> bool:
            return bool(options.get(name) or False)

        timeout = number("LDAPTimeout")
        return cls(
            bind_user=text("LDAPBindUser"),
            bind_password=text("LDAPBindPassword"),
            auth_mechanism=text("LDAPAuthMechanism") or "",
            auth_name=text("LDAPAuthName"),
            auth_realm=text("LDAPAuthRealm"),
            auth_user=text("LDAPAuthUser"),
            use_tls=flag("LDAPUseTLS"),
            timeout=timeout if timeout is not None and timeout > 0 else DEFAULT_TIMEOUT,
            keepalive_idle=number("LDAPKeepaliveIdle"),
            keepalive_probes=number("LDAPKeepaliveProbes"),
            keepalive_interval=number("LDAPKeepaliveInterval"),
            disable_cache=flag("LDAPDisableCache"),
            # OpenDKIM 2.11 has no LDAPSoftStart (it rejects the name); SoftStart covers LDAP.
            soft_start=flag("SoftStart"),
        )


@dataclass(frozen=True, slots=True)
class LdapUrl:
    """One RFC 4516 URL: where the server is, and (first URL only) what to ask it."""

    scheme: str  # ldap, ldaps or ldapi
    host: str  # host name or address; for ldapi the socket's path
    port: int | None
    dn: str
    attributes: tuple[str, ...]
    scope: str
    filter: str

    def server_text(self) -> str:
        if self.scheme == "ldapi":
            return f"ldapi://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_urls(text: str) -> tuple[LdapUrl, ...]:
    """The URLs of an `ldap:` data set value, in order; StoreSpecError if one is unusable."""
    urls = tuple(_parse_url(item) for item in text.split())
    if not urls:
        raise StoreSpecError("ldap: data set: no URL")
    _check_template(urls[0].dn, "base DN")
    _check_template(urls[0].filter, "filter")
    return urls


def _parse_url(item: str) -> LdapUrl:
    scheme, sep, rest = item.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("ldap", "ldaps", "ldapi"):
        raise StoreSpecError(
            f'ldap: data set: "{_shown(item)}" is not an LDAP URL',
            "write ldap://host/base?attributes?scope?filter (RFC 4516)",
        )
    hostport, _, rest = rest.partition("/")
    if "@" in hostport:
        raise StoreSpecError(
            f'ldap: data set: "{_shown(item)}": an LDAP URL holds no user or password',
            "bind with LDAPBindUser and LDAPBindPassword",
        )
    parts = rest.split("?")
    if len(parts) > 5:
        raise StoreSpecError(f'ldap: data set: too many "?" parts in "{_shown(item)}"')
    parts += [""] * (5 - len(parts))
    dn, attrs, scope, filt, exts = (unquote(p) for p in parts)
    for ext in filter(None, exts.split(",")):
        if ext.startswith("!"):
            raise StoreSpecError(f'ldap: data set: critical extension "{ext}" not supported')
    scope = scope.lower() or "base"
    if scope not in _SCOPES:
        raise StoreSpecError(f'ldap: data set: scope "{scope}" must be base, one or sub')
    attributes = tuple(a.strip() for a in attrs.split(",") if a.strip())
    host, port = _host_port(scheme, hostport, item)
    return LdapUrl(scheme, host, port, dn, attributes, scope, filt or "(objectClass=*)")


def _shown(item: str) -> str:
    """`item` for an error message: its start, or only its scheme when a "user:password@"
    stands before the base DN (written by mistake: RFC 4516 has no place for one)."""
    scheme, sep, rest = item.partition("://")
    if "@" in (rest if sep else item).partition("/")[0]:
        return f"{scheme}://..." if sep else "..."
    return item[:60]


def _host_port(scheme: str, hostport: str, item: str) -> tuple[str, int | None]:
    if scheme == "ldapi":
        return (unquote(hostport) or DEFAULT_LDAPI_PATH), None
    default = 636 if scheme == "ldaps" else 389
    hostport = unquote(hostport)
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise StoreSpecError(f'ldap: data set: no host in "{_shown(item)}"')
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StoreSpecError(f'ldap: data set: bad port in "{_shown(item)}"')
    return host, int(port_text)


def _check_template(template: str, what: str) -> None:
    at = template.find("$")
    while at != -1:
        if template[at + 1 : at + 2] not in ("d", "D"):
            raise StoreSpecError(
                f'ldap: data set: "$" in the {what} must be followed by d or D',
                "$d is the key, $D the key as dc= components",
            )
        at = template.find("$", at + 2)


_FILTER_SPECIALS = frozenset("*()\\\0")
_DN_SPECIALS = frozenset(',+"\\<>;=\0')


def escape_filter_value(value: str) -> str:
    """RFC 4515 section 3: a value inside a filter, its special characters as \\XX."""
    return "".join(_hex(c) if c in _FILTER_SPECIALS else c for c in value)


def escape_dn_value(value: str) -> str:
    """RFC 4514 section 2.4: an attribute value inside a DN, specials as \\XX."""
    out = [_hex(c) if c in _DN_SPECIALS else c for c in value]
    if out and value[0] in "# ":
        out[0] = _hex(value[0])
    if len(out) > 1 and value[-1] == " ":
        out[-1] = _hex(" ")
    return "".join(out)


def _hex(char: str) -> str:
    return "".join(f"\\{b:02x}" for b in char.encode("utf-8"))


def expand(template: str, key: str, escape: Callable[[str], str]) -> str:
    """`template` with `$d` -> the escaped key and `$D` -> its dc= components."""
    out: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "$" and i + 1 < len(template) and template[i + 1] in "dD":
            if template[i + 1] == "d":
                out.append(escape(key))
            else:
                out.append(",".join("dc=" + escape(label) for label in key.split(".")))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


class _Failed(Exception):
    """A connection-level failure inside a worker thread: reconnect, or report."""


class _NameError(Exception):
    """The server says the base DN does not exist or is malformed: not found."""


class LdapStore:
    """One `ldap:` data set: lookups in a bounded thread pool, a connection per thread."""

    def __init__(self, urls: tuple[LdapUrl, ...], settings: LdapSettings) -> None:
        self.urls = urls
        self.query = urls[0]
        self.settings = settings
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[Any] = set()
        self._tls: Any = None

    def describe(self) -> str:
        q = self.query
        where = " ".join(u.server_text() for u in self.urls)
        return f"{where}/{q.dn}?{','.join(q.attributes)}?{q.scope}?{q.filter}"

    # -- running blocking work off the event loop -------------------------------------------

    async def _run(self, work: Callable[[], _T], bounded: bool = True) -> _T:
        """`work` in the pool; a lookup (`bounded`) gives up after `_budget()` seconds, a walk
        only when one of its requests does (each is bounded by LDAPTimeout in the thread)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=max(1, self.settings.max_connections),
                thread_name_prefix="dkimd-ldap",
            )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._budget() if bounded else None):
                return await loop.run_in_executor(self._executor, work)
        except TimeoutError:
            raise StoreError(
                f"{self.describe()}: no answer within {self.settings.timeout} s"
            ) from None
        except StoreError:
            raise
        except Exception as exc:
            # Whatever else ldap3 raises (a reply it cannot decode, ...) is this lookup's
            # failure, told as every other: the caller handles StoreError alone.
            raise StoreError(f"{self.describe()}: {type(exc).__name__}: {exc}") from None

    def _budget(self) -> float:
        # connect + StartTLS/bind + search, each bounded by LDAPTimeout inside the thread;
        # the outer bound only stops a lookup waiting on a thread stuck past all three.
        return float(self.settings.timeout) * 3 + 1

    # -- connections (worker threads only) ----------------------------------------------------

    def _tls_config(self) -> Any:
        if self._tls is None:
            from ldap3 import Tls

            self._tls = Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=self.settings.tls_ca_file or _libldap_cacert(),
            )
        return self._tls

    def _connect(self) -> Any:
        """A bound connection to the first server that takes one; _Failed otherwise."""
        errors: list[str] = []
        for url in self.urls:
            try:
                return self._connect_to(url)
            except _Failed as exc:
                errors.append(f"{url.server_text()}: {exc}")
        raise _Failed("; ".join(errors))

    def _connect_to(self, url: LdapUrl) -> Any:
        import ldap3
        from ldap3.core.exceptions import LDAPException

        s = self.settings
        use_ssl = url.scheme == "ldaps"
        tls = self._tls_config() if use_ssl or (s.use_tls and url.scheme == "ldap") else None
        if url.scheme == "ldapi":
            server = ldap3.Server("ldapi://" + url.host, connect_timeout=s.timeout)
        else:
            server = ldap3.Server(
                url.host, port=url.port, use_ssl=use_ssl, tls=tls, connect_timeout=s.timeout
            )
        conn = ldap3.Connection(
            server,
            receive_timeout=s.timeout,
            read_only=True,
            auto_referrals=False,
            raise_exceptions=False,
            **self._auth(),
        )
        try:
            conn.open(read_server_info=False)
            if url.scheme != "ldapi":
                self._keepalive(conn.socket)
            if s.use_tls and url.scheme == "ldap" and not conn.start_tls(read_server_info=False):
                raise _Failed(f"StartTLS failed: {_result_text(conn)}")
            if not conn.bind(read_server_info=False):
                raise _Failed(f"bind failed: {_result_text(conn)}")
        except LDAPException as exc:
            _discard(conn)
            raise _Failed(_ldap3_reason(exc)) from None
        except _Failed:
            _discard(conn)
            raise
        with self._lock:
            self._connections.add(conn)
        return conn

    def _auth(self) -> dict[str, Any]:
        import ldap3

        s = self.settings
        mech = s.auth_mechanism.strip()
        if mech.lower() in ("", "none", "simple"):
            if s.bind_user is None and s.bind_password is None:
                return {"authentication": ldap3.ANONYMOUS}
            return {
                "authentication": ldap3.SIMPLE,
                "user": s.bind_user or "",
                "password": s.bind_password or "",
            }
        mech = mech.upper()
        credentials: Any
        if mech == "EXTERNAL":
            # An empty authzid, present: without credentials slapd waits for another step.
            credentials = s.auth_user or ""
        elif mech == "PLAIN":
            credentials = (s.auth_user or "", s.auth_name or "", s.bind_password or "")
        else:  # DIGEST-MD5
            credentials = (s.auth_realm, s.auth_name or "", s.bind_password or "", s.auth_user)
        return {
            "authentication": ldap3.SASL,
            "sasl_mechanism": mech,
            "sasl_credentials": credentials,
        }

    def _keepalive(self, sock: socket.socket | None) -> None:
        s = self.settings
        if sock is None or (
            s.keepalive_idle is None and s.keepalive_probes is None and s.keepalive_interval is None
        ):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            (getattr(socket, "TCP_KEEPIDLE", None), s.keepalive_idle),
            (getattr(socket, "TCP_KEEPCNT", None), s.keepalive_probes),
            (getattr(socket, "TCP_KEEPINTVL", None), s.keepalive_interval),
        ):
            if option is not None and value is not None and value > 0:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def _drop(self, conn: Any) -> None:
        with self._lock:
            self._connections.discard(conn)
        _discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def _with_connection(self, work: Callable[[Any], _T]) -> _T:
        """Run `work` on this thread's connection; on a connection failure, once more on a
        new one (OpenDKIM reconnects once per lookup too)."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                try:
                    conn = self._connect()
                except _Failed as exc:
                    raise StoreError(f"{self.describe()}: {exc}") from None
                self._local.conn = conn
            try:
                return work(conn)
            except _Failed as exc:
                self._drop(conn)
                if attempt == 2:
                    raise StoreError(f"{self.describe()}: {exc}") from None
        raise AssertionError("unreachable")

    # -- the RemoteStore interface -------------------------------------------------------------

    async def open(self) -> None:
        await self._run(lambda: self._with_connection(lambda conn: None))

    async def get(self, key: str) -> list[Row]:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            # LDAP strings are UTF-8 (RFC 4511 section 4.1.2): a key that is not (bytes kept
            # as surrogates) can be in no entry.
            return []
        q = self.query
        base = expand(q.dn, key, escape_dn_value)
        search_filter = expand(q.filter, key, escape_filter_value)
        return await self._run(
            lambda: self._with_connection(lambda conn: self._search(conn, base, search_filter))
        )

    def _search(self, conn: Any, base: str, search_filter: str) -> list[Row]:
        import ldap3
        from ldap3.core.exceptions import (
            LDAPException,
            LDAPInvalidDnError,
            LDAPInvalidFilterError,
        )

        q = self.query
        scope = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}[q.scope]
        try:
            conn.search(
                base,
                search_filter,
                search_scope=scope,
                attributes=list(q.attributes) or [ldap3.NO_ATTRIBUTES],
                time_limit=self.settings.timeout,
                auto_escape=False,
            )
        except LDAPInvalidDnError:
            # ldap3 checks the DN before sending it; a key that makes it invalid ("" or
            # "a..b" in $D) is what the server would answer invalidDNSyntax: not found.
            return []
        except LDAPInvalidFilterError as exc:
            # The filter template is malformed (keys are escaped, so it is the URL's): a
            # configuration fault, reported for this lookup (the server is fine).
            raise StoreError(f"{self.describe()}: bad filter: {exc}") from None
        except LDAPException as exc:
            raise _Failed(_ldap3_reason(exc)) from None
        result = conn.result or {}
        code = int(result.get("result", 0) or 0)
        # RFC 4511 codes 32-47 are name errors (noSuchObject, invalidDNSyntax, ...):
        # LDAP_NAME_ERROR in libldap, "not found" in opendkim-db.c.
        if 32 <= code <= 47:
            return []
        # sizeLimitExceeded (4): the entries that came are answers.
        if code not in (0, 4):
            if code in (51, 52, 80, 81):  # busy, unavailable, other, server down
                raise _Failed(str(result.get("description") or code))
            raise StoreError(f"{self.describe()}: search failed: {result.get('description')}")
        return [self._row(entry) for entry in conn.response or [] if _is_entry(entry)]

    def _row(self, entry: Mapping[str, Any]) -> Row:
        raw = entry.get("raw_attributes") or {}
        lowered = {str(k).lower(): v for k, v in raw.items()}
        row: list[str] = []
        for name in self.query.attributes:
            values = lowered.get(name.lower()) or []
            value = values[0] if values else b""
            try:
                row.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
            except UnicodeDecodeError:
                raise StoreError(f"{self.describe()}: {name} is not UTF-8 text") from None
        return tuple(row)

    def walk(self) -> AsyncIterator[tuple[str, Row]]:
        return self._walk()

    async def _walk(self) -> AsyncIterator[tuple[str, Row]]:
        key_attr = self._walk_attribute()
        q = self.query
        search_filter = q.filter.replace(f"({key_attr}=$d)", f"({key_attr}=*)", 1)

        def collect(conn: Any) -> list[tuple[str, Row]]:
            import ldap3
            from ldap3.core.exceptions import LDAPException

            scope = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}[q.scope]
            found: list[tuple[str, Row]] = []
            try:
                for entry in conn.extend.standard.paged_search(
                    q.dn,
                    search_filter,
                    search_scope=scope,
                    attributes=[*q.attributes, key_attr],
                    paged_size=_PAGE,
                    generator=True,
                ):
                    if not _is_entry(entry):
                        continue
                    raw = {str(k).lower(): v for k, v in entry["raw_attributes"].items()}
                    for value in raw.get(key_attr.lower()) or []:
                        found.append((value.decode("utf-8", "replace"), self._row(entry)))
            except LDAPException as exc:
                raise _Failed(_ldap3_reason(exc)) from None
            return found

        for item in await self._run(lambda: self._with_connection(collect), bounded=False):
            yield item

    def _walk_attribute(self) -> str:
        """The attribute holding the key, when the URL makes that plain: a base DN without
        `$d`/`$D` and a filter with exactly one `$`, in one `(attribute=$d)`."""
        q = self.query
        filt = q.filter
        if "$" not in q.dn and filt.count("$") == 1:
            end = filt.find("=$d)")
            start = filt.rfind("(", 0, end)
            if end != -1 and start != -1:
                attr = filt[start + 1 : end]
                if attr and all(c.isalnum() or c in "-;." for c in attr):
                    return attr
        raise StoreError(
            f"{self.describe()}: cannot walk: the key must appear once, as (attribute=$d) "
            "in the filter, and not in the base DN"
        )

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        self._local = threading.local()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if connections:
            await asyncio.get_running_loop().run_in_executor(None, _unbind_all, connections)


def _unbind_all(connections: list[Any]) -> None:
    for conn in connections:
        _discard(conn)


def _discard(conn: Any) -> None:
    """Unbind and close, whatever state the connection is in (a dead one may fail to say
    goodbye, and ldap3 then leaves its socket open)."""
    with contextlib.suppress(Exception):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _result_text(conn: Any) -> str:
    result = conn.result or {}
    reason = str(result.get("description") or "refused")
    message = result.get("message")
    return reason + (f" ({message})" if message else "")


def _is_entry(entry: Mapping[str, Any]) -> bool:
    return entry.get("type") == "searchResEntry"


def _ldap3_reason(exc: BaseException) -> str:
    # ldap3's messages carry socket errors and server replies, never the bind password.
    return str(exc) or type(exc).__name__


def _libldap_cacert() -> str | None:
    """Where libldap (so OpenDKIM) would find its CA file: $LDAPTLS_CACERT, then TLS_CACERT
    in ldap.conf; None means the system's default store."""
    from_env = os.environ.get("LDAPTLS_CACERT")
    if from_env:
        return from_env
    conf = os.environ.get("LDAPCONF") or "/etc/ldap/ldap.conf"
    try:
        with open(conf, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                words = line.split(None, 1)
                if len(words) == 2 and words[0].upper() == "TLS_CACERT":
                    return words[1].strip()
    except OSError:
        pass
    return None


def from_spec(text: str, settings: LdapSettings | None = None) -> LdapStore:
    """The store an `ldap:`/`ldaps:`/`ldapi:` data set value describes."""
    urls = parse_urls(text)
    settings = settings or LdapSettings()
    if settings.timeout <= 0 or settings.max_connections <= 0:
        raise StoreSpecError("ldap: data set: the timeout and the pool size must be positive")
    mech = settings.auth_mechanism.strip()
    if mech.lower() not in ("", "none", "simple") and mech.upper() not in SASL_MECHANISMS:
        raise StoreSpecError(
            f'LDAPAuthMechanism "{mech}" is not supported',
            "use simple (the default), EXTERNAL, PLAIN or DIGEST-MD5",
        )
    try:
        import ldap3  # noqa: F401
    except ImportError:
        raise MissingExtra("ldap", "ldap", "ldap3") from None
    return LdapStore(urls, settings)
