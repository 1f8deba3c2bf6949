"""Incoming Authentication-Results fields that claim to be ours (RFC 8601 section 5).

An MTA must delete A-R fields carrying its own authserv-id before adding its own, or a
sender could forge our verdict. As OpenDKIM does (KeepAuthResults no, the default), the
fields deleted are those with our authserv-id that carry a dkim result: a verdict of
another method under our name belongs to the filter that writes that method. Pure: the
session turns the indexes into milter header changes.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence

from dkimd.dkim import AR_FIELD_NAME, HeaderField

__all__ = [
    "authserv_id_of",
    "carries_dkim_result",
    "forged_result_indexes",
    "listed_host",
    "plain_marks",
]

_AR_KEY = AR_FIELD_NAME.lower()


def forged_result_indexes(
    headers: Sequence[HeaderField],
    authserv_id: str,
    *,
    hosts: Container[str] | None = None,
    any_method: bool = False,
) -> list[int]:
    """1-based indexes, among the Authentication-Results fields, of those to delete, as the
    milter protocol counts them (opendkim.c mlfi_eom, KeepAuthResults no).

    A field goes when its authserv-id is ours (compared case-insensitively), or, with
    `hosts` (RemoveARFrom), when `listed_host` finds it there instead; and when it carries
    a dkim result, or whatever it carries with `any_method` (RemoveARAll).
    """
    ours = authserv_id.lower()
    doomed: list[int] = []
    index = 0
    for h in headers:
        if h.key != _AR_KEY:
            continue
        index += 1
        their_id = authserv_id_of(h.value)
        claimed = their_id == ours if hosts is None else listed_host(their_id, hosts)
        if claimed and (any_method or carries_dkim_result(h.value)):
            doomed.append(index)
    return doomed


def listed_host(host: str, hosts: Container[str]) -> bool:
    """Whether `host` is in `hosts` by its full name or as a ".domain" entry for one of its
    parent domains (RemoveARFrom, opendkim.conf(5))."""
    if not host:
        return False
    if host in hosts:
        return True
    labels = host.split(".")
    return any("." + ".".join(labels[i:]) in hosts for i in range(1, len(labels)))


def plain_marks(text: str) -> Iterator[tuple[str, bool]]:
    """Each character of an Authentication-Results value with whether it is plain: outside
    comments and quoted strings, and not one of their delimiters or escapes (RFC 8601 2.2,
    RFC 5322 3.2.2-3.2.4). Only plain characters are the field's syntax: a ";" or "dkim="
    inside a comment or a quoted string is text."""
    depth = 0
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
            yield ch, False
        elif ch == "\\" and (quoted or depth):
            escaped = True
            yield ch, False
        elif quoted:
            quoted = ch != '"'
            yield ch, False
        elif ch == "(":
            depth += 1
            yield ch, False
        elif ch == ")" and depth:
            depth -= 1
            yield ch, False
        elif depth:
            yield ch, False
        elif ch == '"':
            quoted = True
            yield ch, False
        else:
            yield ch, True


def carries_dkim_result(value: bytes) -> bool:
    """Whether an Authentication-Results value has a "dkim=" resinfo (RFC 8601 2.2).

    Comments and quoted strings are skipped, so "(dkim=pass)" or reason="dkim=pass" do
    not count; any CR or LF is folding whitespace.
    """
    text = value.decode("utf-8", "replace")
    plain = "".join(ch for ch, is_plain in plain_marks(text) if is_plain)
    # The first element is the authserv-id (and version); each later one starts a resinfo.
    for resinfo in plain.split(";")[1:]:
        method = resinfo.split("=", 1)[0].strip().split("/", 1)[0].strip()
        if method.lower() == "dkim" and "=" in resinfo:
            return True
    return False


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
