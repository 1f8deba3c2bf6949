"""`memcache:` data sets, as opendkim(8) documents them.

    memcache:host[:port][,host[:port]...]/prefix

opendkim(8): "a comma-separated list of hosts ... each optionally followed by ':' and a port
number; that list must be followed by a slash and a string that will be used to prefix
queries ... all strings sent to the dataset will be prefixed with 'keyname:'". So the
memcached key for a lookup of `example.com` with the prefix `keyname` is
`keyname:example.com` (opendkim-db.c: `snprintf("%s:%s", prefix, key)`), and its value is
one field, split on ':' by the caller as a `file:` value is. The port defaults to 11211; an
IPv6 address is written in brackets (`[::1]:11211`), which OpenDKIM's parser cannot take.

With several hosts, a key lives on one of them, chosen as libmemcached (OpenDKIM's client)
chooses with its default settings: the one-at-a-time hash of the whole key, modulo the number
of hosts. A table written by a libmemcached-based tool is found where that tool put it.

The client is memcached's text protocol over asyncio streams, written here: `get` for
lookups and `lru_crawler metadump all` for a walk are all it needs. memcached keys are at
most 250 bytes without spaces or control characters, so a lookup key that breaks those
rules cannot be stored and is answered "not found" without a request (libmemcached would
send it as is, letting a key with CR LF inject a second command).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from dkimd.stores.base import Row, StoreError, StoreSpecError

__all__ = ["MemcacheStore", "from_spec", "server_index"]

DEFAULT_PORT = 11211
#: Seconds a lookup (connect included) may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 5.0
#: memcached's limit on a key's length, in bytes.
MAX_KEY_BYTES = 250
#: The largest value accepted from a server (memcached's default item size limit): a reply
#: announcing more is a bad reply, never an allocation of that size.
MAX_VALUE_BYTES = 1024 * 1024
#: Connections per server at most, all kept open between lookups: more lookups at once wait
#: for one (within their timeout) rather than open hundreds during a burst.
MAX_CONNECTIONS_PER_SERVER = 16
#: Bytes of keys in one `get k1 k2 ...` line (memcached refuses command lines past 2048).
MAX_GET_LINE = 1900


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_spec(text: str) -> tuple[tuple[Server, ...], str]:
    """The servers and the prefix of a `memcache:` value; StoreSpecError if unusable."""
    body = text.strip()
    if body.lower().startswith("memcache:"):
        body = body[len("memcache:") :]
    hosts, slash, prefix = body.partition("/")
    if not slash:
        raise StoreSpecError(
            "memcache: data set: no /prefix after the host list",
            "write memcache:host[:port][,host[:port]...]/prefix",
        )
    servers: list[Server] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        servers.append(_parse_server(item))
    if not servers:
        raise StoreSpecError("memcache: data set: no host before the /prefix")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in prefix):
        raise StoreSpecError("memcache: data set: the prefix has a space or control character")
    return tuple(servers), prefix


def _parse_server(item: str) -> Server:
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise StoreSpecError(f'memcache: data set: bad host "{item}"')
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise StoreSpecError(f'memcache: data set: bad host "{item}"')
    if not port_text:
        return Server(host, DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StoreSpecError(f'memcache: data set: bad port in "{item}"')
    return Server(host, int(port_text))


def one_at_a_time(data: bytes) -> int:
    """Bob Jenkins' one-at-a-time hash, libmemcached's (hashkit's) default key hash."""
    h = 0
    for byte in data:
        h = (h + byte) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    return (h + (h << 15)) & 0xFFFFFFFF


def server_index(key: bytes, count: int) -> int:
    """Which of `count` servers holds `key` (libmemcached's default modula distribution)."""
    return 0 if count == 1 else one_at_a_time(key) % count


def valid_key(key: bytes) -> bool:
    """Whether memcached can hold `key`: 1-250 bytes, none of them a space or control."""
    return 0 < len(key) <= MAX_KEY_BYTES and all(0x20 < b != 0x7F for b in key)


class _BadReply(Exception):
    pass


_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class MemcacheStore:
    """One `memcache:` data set: a few connections per server, `get` per lookup."""

    def __init__(
        self, servers: tuple[Server, ...], prefix: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.servers = servers
        self.prefix = prefix
        self.timeout = timeout
        self._idle: dict[Server, list[_Stream]] = {s: [] for s in servers}
        self._slots = {s: asyncio.Semaphore(MAX_CONNECTIONS_PER_SERVER) for s in servers}

    def describe(self) -> str:
        return "memcache:" + ",".join(str(s) for s in self.servers) + "/" + self.prefix

    def _failed(self, server: Server, reason: str) -> StoreError:
        return StoreError(f"{self.describe()}: {server}: {reason}")

    def _release(self, server: Server, stream: _Stream) -> None:
        idle = self._idle[server]
        if len(idle) < MAX_CONNECTIONS_PER_SERVER:
            idle.append(stream)
        else:
            stream[1].close()

    async def _command(self, server: Server, line: bytes) -> list[tuple[bytes, bytes]]:
        """Send one retrieval command; the (key, value) pairs of its reply, up to END."""
        try:
            async with asyncio.timeout(self.timeout), self._slots[server]:
                idle = self._idle[server]
                while idle:
                    # A kept connection may have died with a restarted server: then the
                    # same lookup goes on over a new one.
                    try:
                        return await self._exchange(server, idle.pop(), line)
                    except (OSError, EOFError):
                        continue
                stream = await asyncio.open_connection(server.host, server.port)
                return await self._exchange(server, stream, line)
        except TimeoutError:
            raise self._failed(server, f"no answer within {self.timeout:g} s") from None
        except _BadReply as exc:
            raise self._failed(server, f"bad reply: {exc}") from None
        except asyncio.LimitOverrunError:
            raise self._failed(server, "bad reply: a line too long") from None
        except (OSError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            raise self._failed(server, reason) from None

    async def _exchange(
        self, server: Server, stream: _Stream, line: bytes
    ) -> list[tuple[bytes, bytes]]:
        reader, writer = stream
        try:
            writer.write(line)
            await writer.drain()
            items = await _read_values(reader)
        except BaseException:
            # The connection is in an unknown state (half a reply read, cancelled): never
            # reuse it.
            writer.close()
            raise
        self._release(server, stream)
        return items

    async def open(self) -> None:
        # memcached has no login: that every server answers a `get` is all there is to check.
        probe = self._key("")
        if not valid_key(probe):
            probe = b"dkimd-probe"
        for server in self.servers:
            await self._command(server, b"get " + probe + b"\r\n")

    def _key(self, key: str) -> bytes:
        """The memcached key for `key`; b"" (never valid) when it has no byte form."""
        try:
            # surrogateescape: bytes that came in undecodable go out as they came.
            return f"{self.prefix}:{key}".encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return b""

    async def get(self, key: str) -> list[Row]:
        name = self._key(key)
        if not valid_key(name):
            return []
        server = self.servers[server_index(name, len(self.servers))]
        for got, value in await self._command(server, b"get " + name + b"\r\n"):
            if got == name:
                try:
                    return [(value.decode("utf-8"),)]
                except UnicodeDecodeError:
                    raise self._failed(server, "a value is not UTF-8 text") from None
        return []

    async def get_many(self, keys: list[str]) -> dict[str, list[Row]]:
        """Many keys with `get k1 k2 ...` per server (each key on the server `get` asks),
        lines kept under memcached's 2048-byte command limit; the servers at once."""
        by_server: dict[int, dict[bytes, str]] = {}
        for key in keys:
            name = self._key(key)
            if valid_key(name):
                index = server_index(name, len(self.servers))
                by_server.setdefault(index, {})[name] = key
        found: dict[str, list[Row]] = {}

        async def ask(server: Server, names: dict[bytes, str]) -> None:
            line: list[bytes] = []
            size = 0
            chunks: list[list[bytes]] = []
            for name in names:
                if line and size + len(name) + 1 > MAX_GET_LINE:
                    chunks.append(line)
                    line, size = [], 0
                line.append(name)
                size += len(name) + 1
            chunks.append(line)
            for chunk in chunks:
                for got, value in await self._command(server, b"get " + b" ".join(chunk) + b"\r\n"):
                    key = names.get(got)
                    if key is None or key in found:
                        continue
                    try:
                        found[key] = [(value.decode("utf-8"),)]
                    except UnicodeDecodeError:
                        raise self._failed(server, "a value is not UTF-8 text") from None

        await asyncio.gather(*(ask(self.servers[i], names) for i, names in by_server.items()))
        return found

    def walk(self) -> AsyncIterator[tuple[str, Row]]:
        return self._walk()

    async def _walk(self) -> AsyncIterator[tuple[str, Row]]:
        # OpenDKIM cannot walk a memcache: data set; memcached (1.5 and later) can list its
        # keys with `lru_crawler metadump all`. A key is listed from the server `get` reads
        # it from, so the walk sees exactly what lookups see.
        prefix = self._key("")
        for index, server in enumerate(self.servers):
            for name in await self._dump_keys(server):
                if not name.startswith(prefix) or not valid_key(name):
                    continue
                if server_index(name, len(self.servers)) != index:
                    continue
                for got, value in await self._command(server, b"get " + name + b"\r\n"):
                    if got == name:
                        key = name[len(prefix) :].decode("utf-8", "surrogateescape")
                        yield key, (value.decode("utf-8", "replace"),)

    async def _dump_keys(self, server: Server) -> list[bytes]:
        """Every key `server` holds (`lru_crawler metadump all`), over a connection of its
        own: the dump is long and must not hold up lookups."""
        keys: list[bytes] = []
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(b"lru_crawler metadump all\r\n")
                await writer.drain()
            while True:
                # each line within the timeout; the whole dump takes what the table takes
                async with asyncio.timeout(self.timeout):
                    # (metadump ends its key lines with a bare LF, END with CR LF)
                    line = (await reader.readuntil(b"\n")).rstrip(b"\r\n")
                if line == b"END":
                    return keys
                if not line.startswith(b"key="):
                    reason = line[:80].decode("ascii", "replace").strip()
                    raise self._failed(server, f"cannot list keys: {reason}")
                keys.append(unquote_to_bytes(line[4:].split(b" ", 1)[0]))
        except TimeoutError:
            raise self._failed(server, f"no answer within {self.timeout:g} s") from None
        except asyncio.LimitOverrunError:
            raise self._failed(server, "bad reply: a line too long") from None
        except (OSError, EOFError) as exc:
            raise self._failed(server, str(exc) or type(exc).__name__) from None
        finally:
            if writer is not None:
                writer.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                _, writer = idle.pop()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _read_values(reader: asyncio.StreamReader) -> list[tuple[bytes, bytes]]:
    items: list[tuple[bytes, bytes]] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"END\r\n":
            return items
        words = line[:-2].split(b" ")
        if words[0] != b"VALUE" or len(words) not in (4, 5):
            raise _BadReply(line[:80].decode("ascii", "replace").strip())
        if not words[3].isdigit() or int(words[3]) > MAX_VALUE_BYTES:
            raise _BadReply(f"value length {words[3][:20]!r}")
        data = await reader.readexactly(int(words[3]) + 2)
        if data[-2:] != b"\r\n":
            raise _BadReply("value not followed by CR LF")
        items.append((words[1], data[:-2]))


def from_spec(text: str, *, timeout: float = DEFAULT_TIMEOUT) -> MemcacheStore:
    """The store a `memcache:` data set value describes (StoreSpecError if unusable)."""
    servers, prefix = parse_spec(text)
    return MemcacheStore(servers, prefix, timeout)
