"""The Lua tests need lupa (the `lua` extra): skipped without it, failed under CI."""

from __future__ import annotations

import pytest

from dkimd.lua.sandbox import lua_available


@pytest.fixture(autouse=True)
def _need_lupa() -> None:
    if not lua_available():
        from support.tools import unavailable

        unavailable("lupa is not installed (pip install dkimd[lua])")
