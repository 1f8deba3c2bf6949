"""Incoming Authentication-Results fields that claim to be ours (RFC 8601 section 5).

An MTA must delete A-R fields carrying its own authserv-id before adding its own, or a
sender could forge our verdict. Pure: the session turns the indexes into milter
header changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from dkimd.dkim import AR_FIELD_NAME, HeaderField

__all__ = ["authserv_id_of", "forged_result_indexes"]

_AR_KEY = AR_FIELD_NAME.lower()


def forged_result_indexes(headers: Sequence[HeaderField], authserv_id: str) -> list[int]:
    """1-based indexes, among the Authentication-Results fields, of those claiming
    `authserv_id` (compared case-insensitively), as the milter protocol counts them."""
    ours = authserv_id.lower()
    doomed: list[int] = []
    index = 0
    for h in headers:
        if h.key != _AR_KEY:
            continue
        index += 1
        if authserv_id_of(h.value) == ours:
            doomed.append(index)
    return doomed


def authserv_id_of(value: bytes) -> str:
    """The authserv-id of an Authentication-Results value, lower-cased (RFC 8601 2.2).

    The id is a token or a quoted-string, after optional CFWS. Any CR or LF counts as
    folding whitespace: Postfix passes bare ones through, and a forger must not be able to
    hide our id behind one.
    """
    text = value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").lstrip()
    while text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                text = text[i + 1 :].lstrip()
                break
        else:
            return ""
    if text.startswith('"'):
        out: list[str] = []
        escaped = False
        for ch in text[1:]:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                return "".join(out).strip().lower()
            else:
                out.append(ch)
        return ""
    end = len(text)
    for stop in (";", " ", "\t", "("):
        pos = text.find(stop)
        if pos != -1:
            end = min(end, pos)
    return text[:end].lower()
