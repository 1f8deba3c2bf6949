"""Drive a milter handler through its contract (dkimd.milter.handler) without a socket.

`settle` follows what a handler returns for one event as the server does: a request is
answered now when it can be, else performed by `dkimd.server.perform_request` (the
server's own bounded, failure-proof runner), and handed back with `provide`, until the
handler gives its reply. A prefetch is not started here: the same request comes back at
end of message and is performed then (tests/unit/test_server.py covers the overlap).
"""

from __future__ import annotations

from dkimd.milter.handler import HandlerResult, MilterHandler, Prefetch, Request, Step
from dkimd.server import perform_request


async def settle(handler: MilterHandler, step: Step) -> HandlerResult:
    """The handler's reply after every request it makes on the way is answered."""
    while isinstance(step, Request):
        answer = step.answer_now()
        if answer is None:
            answer = await perform_request(step)
        step = handler.provide(answer)
    if isinstance(step, Prefetch):
        return None
    return step
