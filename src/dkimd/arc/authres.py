"""The arc= result in Authentication-Results (RFC 8617 section 10.1 registers the method and
the header.oldest-pass property; smtp.remote-ip is the client the chain was received from).

    arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1
    arc=fail reason="AMS i=2: body hash mismatch" smtp.remote-ip=192.0.2.1
    arc=none
"""

from __future__ import annotations

import contextlib
import ipaddress

from dkimd.arc.fields import ChainState
from dkimd.arc.verifier import ArcResult


def _quoted(text: str) -> str:
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def arc_ar_item(result: ArcResult, remote_ip: str | None = None) -> str:
    """One resinfo item for `result` (no authserv-id, no trailing ";")."""
    parts = [f"arc={result.state.value}"]
    if result.reason:
        parts.append(f"reason={_quoted(result.reason)}")
    if result.state is ChainState.PASS and result.oldest_pass is not None:
        parts.append(f"header.oldest-pass={result.oldest_pass}")
    if remote_ip:
        # Only an address goes in: the macro comes from the MTA, but a value that is not one
        # has no place in the header.
        with contextlib.suppress(ValueError):
            parts.append(f"smtp.remote-ip={ipaddress.ip_address(remote_ip.strip('[]'))}")
    return " ".join(parts)
