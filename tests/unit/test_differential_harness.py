"""The differential harness's own logic (support.differential), without any daemon: how two
transcripts are compared, and how docs/differences.md is read."""

from __future__ import annotations

from support.differential.client import Transcript, split_message
from support.differential.compare import Difference, compare, parse_authres, signature_tags
from support.differential.expected import expected_differences, explain, parse

SIG = " v=1; a=rsa-sha256; d=example.com; s=mail;\n\tt=100; x=400; h=From:To; bh=AB CD=; b=xyz"


def transcript(final: tuple[str, str], *mods: tuple[object, ...], eoh: str = "c") -> Transcript:
    replies = [("connect", "c"), ("eoh", eoh)]
    if final[0] == "eom":
        replies += [("body", "c"), final]
    else:
        replies[-1] = final
    return Transcript(replies=replies, mods=list(mods))


def aspects(a: Transcript, b: Transcript) -> list[str]:
    return [d.aspect for d in compare(a, b)]


def test_signature_tags_leave_out_b_and_t_and_fold_whitespace() -> None:
    assert signature_tags(SIG) == {
        "v": "1",
        "a": "rsa-sha256",
        "d": "example.com",
        "s": "mail",
        "x": "t+300",
        "h": "From:To",
        "bh": "ABCD=",
    }


def test_same_transcripts_do_not_differ() -> None:
    a = transcript(("eom", "a"), ("ins", 0, "DKIM-Signature", SIG))
    b = transcript(
        ("eom", "a"), ("ins", 0, "DKIM-Signature", SIG.replace("t=100; x=400", "t=7; x=307"))
    )
    assert compare(a, b) == []


def test_no_reply_asked_counts_as_continue() -> None:
    assert aspects(transcript(("eom", "a")), transcript(("eom", "a"), eoh="-")) == []


def test_from_oversigning_is_its_own_aspect() -> None:
    a = transcript(("eom", "a"), ("ins", 0, "DKIM-Signature", SIG))
    b = transcript(
        ("eom", "a"), ("ins", 0, "DKIM-Signature", SIG.replace("From:To", "From:To:From"))
    )
    c = transcript(("eom", "a"), ("ins", 0, "DKIM-Signature", SIG.replace("From:To", "From")))
    assert aspects(a, b) == ["sig:h+From"]
    assert aspects(a, c) == ["sig:h"]


def test_the_same_verdict_later_is_one_aspect() -> None:
    early, late = transcript(("eoh", "a")), transcript(("eom", "a"), eoh="-")
    assert aspects(early, late) == ["reply:final-at-eom"]
    assert "outcome" in aspects(early, transcript(("eom", "y 451 4.7.5 x"), eoh="-"))


def test_authentication_results_compared_field_by_field() -> None:
    ar = " mx; dkim=pass (1024-bit key; unprotected) header.d=example.com; dkim-atps=neutral"
    assert parse_authres(ar) == (
        "mx",
        {
            "dkim": ["dkim=pass (1024-bit key; unprotected) header.d=example.com"],
            "dkim-atps": ["dkim-atps=neutral"],
        },
    )
    a = transcript(("eom", "a"), ("ins", 0, "Authentication-Results", ar))
    b = transcript(
        ("eom", "a"), ("ins", 0, "Authentication-Results", ar.replace("neutral", "pass"))
    )
    assert aspects(a, b) == ["ar:dkim-atps"]


def test_deletions_compared_by_effect() -> None:
    # Deleting the first field twice (OpenDKIM) and the second, then the first (dkimd) leave
    # the same header in Postfix; deleting the first twice is not deleting the first once.
    twice = transcript(
        ("eom", "a"), ("chg", 0, "DKIM-Signature", ""), ("chg", 0, "DKIM-Signature", "")
    )
    down = transcript(
        ("eom", "a"), ("chg", 2, "DKIM-Signature", ""), ("chg", 1, "DKIM-Signature", "")
    )
    once = transcript(("eom", "a"), ("chg", 1, "DKIM-Signature", ""))
    assert aspects(twice, down) == []
    assert aspects(twice, once) == ["chg:DKIM-Signature"]


def test_split_message_keeps_leading_blanks_and_folds() -> None:
    headers, body = split_message(b"A:  x\n\ty\nB:z\n\nbody\n")
    assert headers == [(b"A", b"  x\r\n\ty"), (b"B", b"z")]
    assert body == b"body\r\n"


def test_the_differences_table_is_read() -> None:
    rows = {row.id: row for row in expected_differences()}
    assert "from-oversign" in rows and "key-lookup-error" in rows
    a = transcript(("eom", "a"), ("ins", 0, "DKIM-Signature", SIG))
    b = transcript(
        ("eom", "a"), ("ins", 0, "DKIM-Signature", SIG.replace("h=From:To", "h=From:To:From"))
    )
    [diff] = compare(a, b)
    assert explain("baseline/s/unsigned", diff) == "from-oversign"
    assert explain("baseline/s/unsigned", Difference("sig:h", "From", "To")) is None


def test_a_row_needs_cases_and_aspects() -> None:
    text = (
        "## Expected differences\n\n| Id | Cases | Aspects | OpenDKIM 2.11 | dkimd | Why |\n"
        "|----|----|----|----|----|----|\n| `x` | `a/*` `b` | `ar:*` | o | d | because `a|b` |\n"
    )
    [row] = parse(text)
    assert (row.id, row.cases, row.aspects) == ("x", ("a/*", "b"), ("ar:*",))
    assert row.covers("a/v/m", "ar:dkim") and not row.covers("c/v/m", "ar:dkim")
