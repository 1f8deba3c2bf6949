"""The cost of one policy-script call, alone: a setup hook run the way the session runs it.

    python bench/lua_hook.py CONF [CALLS]

CONF names a SetupPolicyScript (e.g. one line `odkim.sign(ctx, "testkey")`). Prints the
best of five rounds of CALLS (default 20000) calls, in microseconds of CPU per call. The
key lookup odkim.sign makes is answered by a stub, so this is the Lua side only: the
fresh globals, the odkim call, the limits' hook.
"""

from __future__ import annotations

import sys
import time

from dkimd.config import load_config
from dkimd.dkim import HeaderField
from dkimd.lua.api import Effects, HookKind, MessageFacts


def main(argv: list[str]) -> int:
    config = load_config(argv[0])
    calls = int(argv[1]) if len(argv) > 1 else 20000
    scripts = config.policy_scripts
    if scripts is None or not scripts.has(HookKind.SETUP):
        print("the configuration names no SetupPolicyScript", file=sys.stderr)
        return 2
    headers = [HeaderField(b"From", b" Alice <alice@example.com>"), HeaderField(b"To", b" b@x")]
    ready = object()

    def once() -> None:
        facts = MessageFacts(
            headers,
            config,
            client_address="127.0.0.1",
            from_domain="example.com",
            resolve_key=lambda name, signer: ready,
        )
        failure = scripts.run(HookKind.SETUP, facts, Effects())
        if failure is not None:
            raise SystemExit(f"script failed: {failure.message}")

    for _ in range(1000):
        once()
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            once()
        best = min(best, (time.process_time() - started) / calls)
    print(f"{best * 1e6:.1f} us of CPU per setup hook call ({calls} calls, best of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
