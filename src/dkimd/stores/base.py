"""The one interface every remote data set back end implements.

A back end answers "which rows does this key have?" and nothing else: caching, negative
caching, request coalescing, per-lookup timeouts and the once-per-outage log line live in
front of it, shared by all back ends. A back end is asynchronous (a native asyncio client,
or a blocking driver behind a bounded thread pool) and never blocks the event loop.

Rows are tuples of the data fields the data set's URL names (`datacol=a,b` for `dsn:`, the
attributes of an `ldap:` URL); a store whose value is one string (memcached, a Redis string)
answers one-field rows, which the caller splits on ':' exactly as a `file:` value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["MissingExtra", "RemoteStore", "Row", "StoreError", "StoreSpecError"]

Row = tuple[str, ...]


class StoreError(Exception):
    """A lookup that could not be answered: server down, timeout, refused login, bad reply.

    The message is for the log: it names the store by `RemoteStore.describe()` and never
    carries a password or other credential.
    """


class StoreSpecError(ValueError):
    """A data set URL that cannot be used as written (a configuration error: exit 78)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class MissingExtra(StoreSpecError):
    """The URL needs a driver that is not installed: names the `dkimd[...]` extra."""

    def __init__(self, kind: str, extra: str, module: str) -> None:
        super().__init__(
            f'{kind}: data sets need the Python module "{module}", which is not installed',
            f"pip install 'dkimd[{extra}]'",
        )
        self.extra = extra


class RemoteStore(Protocol):
    """One remote data set, as its URL describes it."""

    def describe(self) -> str:
        """The URL with any password replaced by `***`: safe for logs and `dkimd check`."""
        ...

    async def open(self) -> None:
        """Connect (or check that a connection can be made) and log in.

        Raises StoreError when the server is unreachable or refuses the credentials; at
        start that is a configuration error (exit 78) unless SoftStart is set.
        """
        ...

    async def get(self, key: str) -> list[Row]:
        """The rows stored under `key`, in the store's order; [] when there is none.

        `key` is data, never part of a query's text. Raises StoreError.
        """
        ...

    def walk(self) -> AsyncIterator[tuple[str, Row]]:
        """Every (key, row) of the data set, for `dkimd check --walk`. Raises StoreError."""
        ...

    async def close(self) -> None:
        """Release connections; the store may be opened again after."""
        ...
