"""A minimal HTTP/1.x endpoint for scrapes, on asyncio (no thread, no web framework).

Prometheus asks ``GET /metrics``; this answers that (and ``/``) with the rendered text,
anything else with 404, one request per connection. A scrape is small and rare, so the
limits are strict: the request head must arrive within ``READ_TIMEOUT`` seconds and fit
in ``MAX_HEAD`` bytes, and at most ``MAX_CLIENTS`` connections are served at once (the
rest are closed at once), so a stuck or hostile client cannot pin memory or tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

__all__ = ["MAX_CLIENTS", "serve_http"]

log = logging.getLogger("dkimd.metrics")

READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_HEAD = 8192
MAX_CLIENTS = 16

#: The page: (body, Content-Type), built per scrape.
Render = Callable[[], tuple[bytes, str]]


async def serve_http(sock: socket.socket, render: Render) -> None:
    """Answer scrapes on the listening ``sock`` until cancelled."""
    busy = 0

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy
        if busy >= MAX_CLIENTS:
            writer.close()
            return
        busy += 1
        try:
            await _answer(reader, writer, render)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or was too slow: nothing to tell it
        except asyncio.CancelledError:
            pass  # the listener stops; asyncio's stream callback must not see it raised
        except Exception:
            log.exception("metrics: scrape failed")
        finally:
            busy -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(client, sock=sock, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, render: Render
) -> None:
    async with asyncio.timeout(READ_TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    request_line = head.split(b"\r\n", 1)[0].split()
    method = request_line[0] if request_line else b""
    path = request_line[1].split(b"?", 1)[0] if len(request_line) > 1 else b""
    if method not in (b"GET", b"HEAD"):
        status, body, ctype = "405 Method Not Allowed", b"GET only\n", "text/plain"
    elif path in (b"/metrics", b"/"):
        body, ctype = render()
        status = "200 OK"
    else:
        status, body, ctype = "404 Not Found", b"try /metrics\n", "text/plain"
    header = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    writer.write(header if method == b"HEAD" else header + body)
    async with asyncio.timeout(WRITE_TIMEOUT):
        await writer.drain()
