"""malformed.check_sender handed the policy's sender address: the verdict it gives alone.

The session makes the plan first and passes its SenderHeaders address on, so the author
check looks no further when there is one; nothing about the outcome may change.
"""

from __future__ import annotations

import pytest

from dkimd.config import parse_config_text
from dkimd.dkim import HeaderField
from dkimd.malformed import BadFormat, check_sender
from dkimd.policy import sender_address

GOOD = b" Alice <alice@example.com>"
BAD = b" undisclosed-recipients:;"

HEADER_SETS = [
    [(b"From", GOOD)],
    [(b"From", BAD)],
    [(b"Subject", b" no author")],
    [(b"Sender", GOOD), (b"From", BAD)],
    [(b"Sender", BAD), (b"From", GOOD)],
    [(b"From ", GOOD)],
    [(b"FROM", BAD), (b"From", GOOD)],
    [(b"Reply-To", GOOD)],
    [(b"Reply-To", GOOD), (b"From", GOOD)],
]


@pytest.mark.parametrize("listed", [None, "From", "Sender,From", "Sender", "Reply-To,Sender"])
@pytest.mark.parametrize("fields", HEADER_SETS)
def test_same_verdict_with_the_policys_sender(
    listed: str | None, fields: list[tuple[bytes, bytes]]
) -> None:
    config = parse_config_text(f"SenderHeaders {listed}\n" if listed else "")
    headers = [HeaderField(name, value) for name, value in fields]
    sender = sender_address(headers, config.sender_headers)
    alone = check_sender(headers, config)
    assert check_sender(headers, config, sender) == alone
    if sender is not None:
        assert alone is None


def test_no_author_is_bad_format() -> None:
    config = parse_config_text("SenderHeaders Sender\n")
    # No Sender field and an unusable From: the From fallback finds no author either.
    headers = [HeaderField(b"From", BAD)]
    assert check_sender(headers, config, None) == BadFormat("can't determine message sender")
    assert check_sender([HeaderField(b"From", GOOD)], config, None) is None
