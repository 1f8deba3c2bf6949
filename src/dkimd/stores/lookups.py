"""Remote data set rows as requests the server performs, so the session never awaits.

`RemoteRowsHandler` wraps a session (any `MilterHandler`) when the configuration has a
remote data set. Around each call into the session it sets the rows fetched for the
current message (dkimd.stores.dataset.PINS). When a lookup needs rows that are not in
memory, the data set raises `RowsMissing`; the wrapper answers the event with a
`NeedRows` request instead (the server reads nothing more from the MTA meanwhile, so
replies stay in order), and when the rows are there it hands the same event to the
session again, now with them pinned. The session's end-of-headers work up to its plan
only reads tables and the message, so running it again is safe; OpenDKIM's SigningTable
walk is asked as one round (SigningTable.lookup prefetches every candidate key), and a
KeyTable entry it names as the next.

Pinned rows stay for the whole message: a cache entry expiring between end-of-headers and
end-of-message does not make the message ask again.

A store that fails or does not answer in time: its keys are pinned as failed, the data set
raises StoreError when asked, and the session answers with the On-InternalError action
(tempfail by default) -- the message is not lost, the MTA retries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from dkimd import milter
from dkimd.milter.handler import MilterHandler, Request, Step
from dkimd.stores.base import Row, StoreError
from dkimd.stores.cache import StoreCache
from dkimd.stores.dataset import PINS, Pins, RowsMissing, pin_key

__all__ = ["NeedRows", "RemoteRowsHandler"]

#: Rounds of "fetch, run again" one event may take (SigningTable, then KeyTable, then
#: whatever a policy script asks); past this the message gets the internal error action.
MAX_ROUNDS = 6

#: Seconds on top of the store's own per-lookup timeout before the server gives up.
_MARGIN = 1.0

RowAnswers = dict[tuple[int, str], "list[Row] | StoreError"]


class NeedRows(Request[RowAnswers]):
    """The rows of some keys in some remote stores; failures are answers too."""

    __slots__ = ("timeout", "wanted")

    def __init__(self, wanted: Sequence[tuple[StoreCache, str]]) -> None:
        seen: dict[tuple[int, str], tuple[StoreCache, str]] = {}
        for cache, key in wanted:
            seen.setdefault(pin_key(cache, key), (cache, key))
        self.wanted = tuple(seen.values())
        self.timeout = max(c.settings.timeout for c, _ in self.wanted) + _MARGIN

    def __repr__(self) -> str:
        return f"NeedRows({', '.join(k for _, k in self.wanted)})"

    def answer_now(self) -> RowAnswers | None:
        found: RowAnswers = {}
        for cache, key in self.wanted:
            rows = cache.cached(key)
            if rows is None:
                return None
            found[pin_key(cache, key)] = rows
        return found

    async def perform(self) -> RowAnswers:
        # One get_many per store: a back end that can answers all its keys in one query.
        by_store: dict[int, tuple[StoreCache, list[str]]] = {}
        for cache, key in self.wanted:
            by_store.setdefault(id(cache), (cache, []))[1].append(key)
        groups = list(by_store.values())
        results = await asyncio.gather(*(cache.get_many(keys) for cache, keys in groups))
        answers: RowAnswers = {}
        for (cache, _), found in zip(groups, results, strict=True):
            for key, rows in found.items():
                answers[pin_key(cache, key)] = rows
        return answers

    def failed(self, error: BaseException) -> RowAnswers:
        reason = StoreError("no answer in time" if isinstance(error, TimeoutError) else "failed")
        return {pin_key(c, k): reason for c, k in self.wanted}


class RemoteRowsHandler:
    """A session with remote data sets: fetches their rows before the session needs them.

    `unavailable` is the session's reply when a store cannot answer for the current
    message (its On-InternalError action).
    """

    __slots__ = ("_event", "_inner", "_pins", "_retry", "_rounds", "_unavailable")

    def __init__(self, inner: MilterHandler, unavailable: Callable[[milter.Event], Step]) -> None:
        self._inner = inner
        self._unavailable = unavailable
        self._event: milter.Event | None = None  # the event being answered
        self._pins: Pins = {}
        self._retry: Callable[[], Step] | None = None  # the call waiting for NeedRows
        self._rounds = 0

    def handle(self, event: milter.Event) -> Step:
        if isinstance(event, milter.MailFrom | milter.Connect | milter.Abort):
            self._pins = {}  # a new message: fetch afresh (within the cache's TTL)
        self._rounds = 0
        self._event = event
        return self._run(lambda: self._inner.handle(event))

    def provide(self, answer: Any) -> Step:
        retry, self._retry = self._retry, None
        if retry is None:
            return self._run(lambda: self._inner.provide(answer))
        self._pins.update(answer)
        return self._run(retry)

    def close(self) -> None:
        self._pins = {}
        self._retry = None
        self._inner.close()

    def _run(self, call: Callable[[], Step]) -> Step:
        while True:
            token = PINS.set(self._pins)
            try:
                return call()
            except RowsMissing as need:
                request = NeedRows(need.wanted)
                self._rounds += 1
                if self._rounds > MAX_ROUNDS:
                    return self._fail()
                now = request.answer_now()
                if now is None:
                    self._retry = call
                    return request
                self._pins.update(now)  # all cached: run again at once
            except StoreError:
                return self._fail()
            finally:
                PINS.reset(token)

    def _fail(self) -> Step:
        event = self._event
        assert event is not None
        return self._unavailable(event)
