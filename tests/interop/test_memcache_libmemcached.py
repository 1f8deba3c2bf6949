"""memcache: tables written by libmemcached (OpenDKIM's memcached client) are read back.

Debian's OpenDKIM is built without memcached support, so the comparison is with libmemcached
itself: its `memccp` (libmemcached-tools) stores values over three memcached servers with
its default key distribution, and dkimd's store, given the same server list, must find every
key on the server libmemcached chose, and the value it stored.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from dkimd.stores.memcache import from_spec, server_index
from support.kvservers import Memcached
from support.tools import require

pytestmark = pytest.mark.interop


def test_keys_are_where_libmemcached_puts_them(tmp_path: Path) -> None:
    memccp = require("memccp")
    names = [f"example{i}.test" for i in range(40)]
    files = tmp_path / "files"
    files.mkdir()
    for name in names:
        # memccp stores each file under its base name: the prefix, ":", the data set key
        (files / f"dkim:{name}").write_text(f"{name}:sel:/keys/{name}.pem")
    with (
        Memcached(tmp_path / "a") as a,
        Memcached(tmp_path / "b") as b,
        Memcached(tmp_path / "c") as c,
    ):
        servers = [a, b, c]
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
        subprocess.run(
            [memccp, f"--servers={hosts}", *(str(files / f"dkim:{n}") for n in names)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        # libmemcached spread them over all three (so the choice of server is tested)
        assert all(s.stat("curr_items") > 0 for s in servers)

        async def run() -> list[object]:
            store = from_spec(f"memcache:{hosts}/dkim")
            await store.open()
            try:
                return [await store.get(n) for n in names]
            finally:
                await store.close()

        assert asyncio.run(run()) == [[(f"{n}:sel:/keys/{n}.pem",)] for n in names]
        # and each key is on the server server_index names, not found by luck elsewhere
        for name in names:
            holder = servers[server_index(f"dkim:{name}".encode(), 3)]
            assert holder.has(f"dkim:{name}"), name
