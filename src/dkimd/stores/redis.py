"""`redis:` and `rediss:` data sets, a dkimd extension: one Redis key per data set key.

    redis://[[user]:password@]host[:port][/db][?key=string|hash|list&prefix=P&fields=a,b
            &timeout=SECONDS&ca=/path/ca.pem]
    rediss://...                              (TLS; `ca=` names the CA file to trust)

The Redis key read for a lookup is `prefix` followed by the data set key, byte for byte (no
separator is added: write it into the prefix, `prefix=dkim:keys:`). What a key holds is
named by `key=`:

* `string` (the default): the value is one field, split on ':' by the caller exactly as the
  value of a `file:` line (`example.com:sel:/keys/example.pem`).
* `hash`: the fields of the hash make one row, in the order `fields=` names them
  (`HMGET`; a field that is missing reads as ""); without `fields=`, every field, in the
  order of the field names (Redis keeps no order of its own for a large hash).
* `list`: every element is a row of one field (several signatures for one SigningTable key).

redis-py's asyncio client talks to the server: the protocol is length-prefixed, so a key
holding spaces, CR/LF or `*)(` is data and never a command. The client reconnects by itself
on the next lookup after the server comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from dkimd.stores.base import MissingExtra, Row, StoreError, StoreSpecError

__all__ = ["RedisStore", "from_spec"]

_KINDS = ("string", "hash", "list")
_DEFAULT_PORT = 6379
#: Seconds a lookup (connect included) may take unless the URL says `timeout=`.
DEFAULT_TIMEOUT = 5.0
#: Lookups in flight at once, so connections open at once: more wait (within their timeout)
#: rather than open a connection each during a burst (redis-py's pool has no bound).
MAX_CONNECTIONS = 16
#: Keys asked per SCAN round while walking.
_SCAN_COUNT = 500


@dataclass(frozen=True, slots=True)
class RedisSpec:
    """What a `redis:` URL says, parsed and checked."""

    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)  # never in a repr (logs, tracebacks)
    kind: str
    prefix: str
    fields: tuple[str, ...]
    timeout: float
    ca_file: str | None

    def describe(self) -> str:
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:***@"
        elif self.username is not None:
            auth = f"{self.username}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"key={self.kind}"
        if self.prefix:
            query += f"&prefix={self.prefix}"
        if self.fields:
            query += "&fields=" + ",".join(self.fields)
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{host}:{self.port}/{self.db}?{query}"


def parse_spec(text: str) -> RedisSpec:
    """Parse a `redis:`/`rediss:` data set value; StoreSpecError says what is wrong."""
    try:
        url = urlsplit(text.strip())
        port = url.port
    except ValueError:
        # Not urlsplit's message: it quotes the text it took for a port, which is the
        # password's start when the password holds an unencoded "/", "?" or "#".
        raise StoreSpecError(
            "redis: data set: the host or port cannot be read",
            'a "/", "?", "#" or "@" in the password is written %2F, %3F, %23, %40',
        ) from None
    scheme = url.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise StoreSpecError(f'redis: data set: unknown scheme "{url.scheme}"')
    if not url.hostname:
        raise StoreSpecError(
            "redis: data set: no host", "write redis://host[:port][/db][?key=string|hash|list]"
        )
    path = url.path.strip("/")
    if path and not path.isdigit():
        raise StoreSpecError(f'redis: data set: database "{path}" is not a number')
    options: dict[str, str] = {}
    for name, value in parse_qsl(url.query, keep_blank_values=True, strict_parsing=False):
        if name in options:
            raise StoreSpecError(f'redis: data set: "{name}" given twice')
        options[name] = value
    unknown = sorted(set(options) - {"key", "prefix", "fields", "timeout", "ca"})
    if unknown:
        raise StoreSpecError(
            f"redis: data set: unknown parameter {', '.join(unknown)}",
            "parameters are key=, prefix=, fields=, timeout=, ca=",
        )
    kind = options.get("key", "string")
    if kind not in _KINDS:
        raise StoreSpecError(f'redis: data set: key="{kind}": must be string, hash or list')
    fields = tuple(f for f in options.get("fields", "").split(",") if f)
    if fields and kind != "hash":
        raise StoreSpecError("redis: data set: fields= only applies to key=hash")
    try:
        timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        raise StoreSpecError("redis: data set: timeout= must be a number of seconds") from None
    if not 0 < timeout <= 3600:
        raise StoreSpecError("redis: data set: timeout= must be between 0 and 3600 seconds")
    ca_file = options.get("ca") or None
    if ca_file is not None and scheme != "rediss":
        raise StoreSpecError("redis: data set: ca= needs rediss:// (TLS)")
    return RedisSpec(
        tls=scheme == "rediss",
        host=url.hostname,
        port=port or _DEFAULT_PORT,
        db=int(path) if path else 0,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password is not None else None,
        kind=kind,
        prefix=options.get("prefix", ""),
        fields=fields,
        timeout=timeout,
        ca_file=ca_file,
    )


def _text(value: bytes | str, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(f"{what} is not UTF-8 text") from None


class RedisStore:
    """One `redis:` data set: a redis-py asyncio client with its own connection pool."""

    def __init__(self, spec: RedisSpec) -> None:
        self.spec = spec
        self._client: Any = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def describe(self) -> str:
        return self.spec.describe()

    def _error(self, exc: BaseException) -> StoreError:
        # redis-py's messages name host and port and the server's reply, never the password.
        reason = str(exc) or type(exc).__name__
        return StoreError(f"{self.describe()}: {reason}")

    def _make_client(self) -> Any:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise MissingExtra("redis", "redis", "redis") from None
        spec = self.spec
        kwargs: dict[str, Any] = {}
        if spec.tls:
            kwargs["ssl"] = True
            kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
            # (redis-py 5 did not check the name by default; 6 does: say it either way)
            kwargs["ssl_check_hostname"] = True
            if spec.ca_file is not None:
                kwargs["ssl_ca_certs"] = spec.ca_file
        return aioredis.Redis(
            host=spec.host,
            port=spec.port,
            db=spec.db,
            username=spec.username,
            password=spec.password,
            socket_timeout=spec.timeout,
            socket_connect_timeout=spec.timeout,
            # One immediate retry: a pooled connection that died with a restarted server is
            # replaced on the same lookup. More (with back-off) would only stretch an outage
            # the data set layer already answers (tempfail, one log line).
            retry=Retry(NoBackoff(), 1),
            **kwargs,
        )

    def _client_or_new(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    @contextlib.asynccontextmanager
    async def _asking(self, *, slot: bool = True) -> AsyncIterator[None]:
        """One exchange with the server: within the timeout (and a connection slot), its
        failures told as StoreError."""
        import redis.exceptions

        try:
            async with asyncio.timeout(self.spec.timeout):
                if not slot:
                    yield
                    return
                async with self._slots:
                    yield
        except TimeoutError:
            raise StoreError(
                f"{self.describe()}: no answer within {self.spec.timeout:g} s"
            ) from None
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._error(exc) from None

    async def open(self) -> None:
        client = self._client_or_new()
        async with self._asking(slot=False):
            await client.ping()

    async def get(self, key: str) -> list[Row]:
        try:
            # surrogateescape: bytes that came in undecodable go out as they came.
            name = (self.spec.prefix + key).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return []  # a lone surrogate: no byte string, so no Redis key, has it
        client = self._client_or_new()
        async with self._asking():
            return await self._read(client, name)
        raise AssertionError("unreachable")  # mypy: a context manager may swallow

    async def get_many(self, keys: list[str]) -> dict[str, list[Row]]:
        """Many keys in one round trip: the same reads as `get`, in one pipeline (no
        transaction: each read stands alone, as separate `get`s would)."""
        names: dict[str, bytes] = {}
        for key in keys:
            try:
                names[key] = (self.spec.prefix + key).encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                continue  # no byte string, so no Redis key: no rows
        if not names:
            return {}
        client = self._client_or_new()
        async with self._asking():
            pipe = client.pipeline(transaction=False)
            for name in names.values():
                self._command(pipe, name)
            replies = await pipe.execute()
        found: dict[str, list[Row]] = {}
        for (key, name), reply in zip(names.items(), replies, strict=True):
            rows = self._rows(reply, f"{self.describe()}: the value of {name[:80]!r}")
            if rows:
                found[key] = rows
        return found

    def _rows(self, reply: Any, what: str) -> list[Row]:
        """The rows of a reply to `_command`."""
        spec = self.spec
        if spec.kind == "string":
            return [] if reply is None else [(_text(reply, what),)]
        if spec.kind == "list":
            return [(_text(item, what),) for item in reply]
        if spec.fields:
            if all(v is None for v in reply):
                return []
            return [tuple("" if v is None else _text(v, what) for v in reply)]
        if not reply:
            return []
        return [tuple(_text(reply[f], what) for f in sorted(reply))]

    def _command(self, client: Any, name: bytes) -> Any:
        """Ask for the value of `name` as the kind says, on a client (an awaitable reply)
        or a pipeline (queued); `_rows` reads the reply."""
        spec = self.spec
        if spec.kind == "string":
            return client.get(name)
        if spec.kind == "list":
            return client.lrange(name, 0, -1)
        if spec.fields:
            return client.hmget(name, list(spec.fields))
        return client.hgetall(name)

    async def _read(self, client: Any, name: bytes) -> list[Row]:
        reply = await self._command(client, name)
        return self._rows(reply, f"{self.describe()}: the value of {name[:80]!r}")

    async def walk(self) -> AsyncIterator[tuple[str, Row]]:
        import redis.exceptions

        client = self._client_or_new()
        prefix = self.spec.prefix.encode("utf-8")
        pattern = _glob_escape(prefix) + b"*"
        try:
            async for name in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                key = _text(name[len(prefix) :], f"{self.describe()}: a key")
                for row in await self._read(client, name):
                    yield key, row
        except (redis.exceptions.RedisError, OSError) as exc:
            raise self._error(exc) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _glob_escape(prefix: bytes) -> bytes:
    """`prefix` as a literal in a SCAN MATCH pattern (Redis globs: * ? [ ] and \\)."""
    out = bytearray()
    for byte in prefix:
        if byte in b"*?[]\\":
            out.append(0x5C)
        out.append(byte)
    return bytes(out)


def from_spec(text: str) -> RedisStore:
    """The store a `redis:`/`rediss:` data set value describes (StoreSpecError if unusable)."""
    spec = parse_spec(text)
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise MissingExtra("redis", "redis", "redis") from None
    return RedisStore(spec)
