"""dkimd.stores.dataset.run_apart: the configuration load's way to await a store (the
log-in check, a list read whole) from synchronous code, bounded in time."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dkimd.stores.base import StoreError
from dkimd.stores.dataset import run_apart


def test_the_answer_comes_back_on_the_callers_thread() -> None:
    async def work() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert run_apart(work, 1.0, what="no answer", name="dkimd-test-apart") == "dkimd-test-apart"


def test_a_store_that_does_not_answer_is_a_store_error_in_time() -> None:
    async def work() -> None:
        await asyncio.sleep(30)

    started = time.monotonic()
    with pytest.raises(StoreError, match=r"^not read within 0\.2s$"):
        run_apart(work, 0.2, what="not read", name="dkimd-test-apart")
    assert time.monotonic() - started < 2.0


def test_what_the_work_raises_is_raised_here() -> None:
    async def work() -> None:
        raise StoreError("dsn:sqlite3://x/y: no such table")

    with pytest.raises(StoreError, match="no such table"):
        run_apart(work, 1.0, what="no answer", name="dkimd-test-apart")


def test_it_runs_where_a_loop_is_already_running() -> None:
    async def work() -> int:
        return 7

    async def caller() -> int:
        return run_apart(work, 1.0, what="no answer", name="dkimd-test-apart")

    assert asyncio.run(caller()) == 7
