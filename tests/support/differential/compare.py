"""What differs between OpenDKIM's transcript and dkimd's for the same message.

Each difference is named by an *aspect*, the key docs/differences.md uses:

* ``reply:<stage>`` -- the reply at connect, helo, mail, rcpt, data, header, eoh, body, eom
  (a step the filter declined or asked no reply for counts as continue: that is what the
  MTA does); ``reply:final-at-eom`` when OpenDKIM's final reply at end of headers is dkimd's
  at end of message (the replies in between are then not compared);
* ``outcome`` -- the reply that ended the message, wherever it came;
* ``sig:count``, ``sig:position`` and ``sig:<tag>`` -- the DKIM-Signature fields added, tag
  by tag with folding whitespace removed; ``b=`` and ``t=`` are left out (a fresh signature
  and the clock) and ``x=`` is compared as ``x - t``; ``sig:h+From`` when dkimd's h= is
  OpenDKIM's with From oversigned, any other h= difference is ``sig:h``;
* ``ar:count``, ``ar:authserv-id`` and ``ar:<method>`` -- the Authentication-Results fields
  added, field by field (each method's results, comments and properties, blanks collapsed);
* ``hdr:<name>`` -- any other field added; ``chg:<name>`` -- the effect of the changes and
  deletions of fields called so, applied as Postfix applies them; ``mod:<kind>`` -- body
  replacement, quarantine, recipient or sender changes;
* ``start`` -- one daemon refused the configuration and the other started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from support.differential.client import Transcript

__all__ = ["Difference", "compare", "parse_authres", "signature_tags"]

STAGES = ("connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom", "eof")


@dataclass(frozen=True)
class Difference:
    aspect: str
    opendkim: str
    dkimd: str

    def __str__(self) -> str:
        return f"{self.aspect}: OpenDKIM {self.opendkim!r}, dkimd {self.dkimd!r}"


def _blanks(text: str) -> str:
    return " ".join(text.split())


def signature_tags(value: str) -> dict[str, str]:
    """The tags of a DKIM-Signature value, folding whitespace removed; without b= and t=, and
    x= as its distance from t=."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip()] = re.sub(r"\s+", "", tag_value)
    t = tags.pop("t", None)
    tags.pop("b", None)
    if "x" in tags:
        x = tags["x"]
        tags["x"] = f"t+{int(x) - int(t)}" if t and x.isdigit() and t.isdigit() else x
    return tags


def _split_resinfo(text: str) -> list[str]:
    """Split an A-R value at the semicolons outside comments."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        if ch == ";" and not depth:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [_blanks(p) for p in parts]


def parse_authres(value: str) -> tuple[str, dict[str, list[str]]]:
    """(authserv-id, {method: [resinfo, ...]}) of an Authentication-Results value."""
    first, *rest = _split_resinfo(value)
    methods: dict[str, list[str]] = {}
    for resinfo in rest:
        if resinfo:
            method = resinfo.split("=", 1)[0].strip().lower()
            methods.setdefault(method, []).append(resinfo)
    return first, methods


def _normal_reply(reply: str) -> str:
    return "c" if reply == "-" else reply


def _added(t: Transcript, name: str) -> list[tuple[str, str]]:
    """(position, value) of each field called `name` the filter added or inserted."""
    out = []
    for mod in t.mods:
        if mod[0] in ("add", "ins") and str(mod[-2]).lower() == name.lower():
            where = "add" if mod[0] == "add" else f"ins@{mod[1]}"
            out.append((where, str(mod[-1])))
    return out


def _same_verdict_later(theirs: Transcript, ours: Transcript) -> bool:
    """OpenDKIM ended the message at end of headers, dkimd (which asked for no reply there)
    with the same reply at end of message."""
    return (
        theirs.final[0] == "eoh"
        and ours.final[0] == "eom"
        and theirs.final[1] == ours.final[1]
        and _normal_reply(ours.stage("eoh")) == "c"
    )


def _oversigned_from(theirs_h: str, ours_h: str) -> bool:
    """dkimd's h= is OpenDKIM's with one more From (RFC 6376 8.15 oversigning)."""
    return ours_h != theirs_h and ours_h.lower() == (theirs_h + ":From").lower()


def _changed(t: Transcript, key: str) -> list[tuple[int, str]]:
    """The effect of the SMFIR_CHGHEADER requests for fields called `key`, as Postfix applies
    them: (occurrence, new value or "" for deleted), occurrences counted among the fields
    still there (index 0 means 1, as in Sendmail), in the original numbering, sorted."""
    deleted: set[int] = set()
    effect: dict[int, str] = {}
    for mod in t.mods:
        if mod[0] != "chg" or str(mod[2]).lower() != key:
            continue
        index, value = max(int(str(mod[1])), 1), str(mod[3])
        occurrence = seen = 0
        while seen < index:
            occurrence += 1
            if occurrence not in deleted:
                seen += 1
        if value == "":
            deleted.add(occurrence)
        effect[occurrence] = value
    return sorted(effect.items())


def compare(theirs: Transcript, ours: Transcript) -> list[Difference]:
    """Every difference between OpenDKIM's transcript (`theirs`) and dkimd's (`ours`)."""
    diffs: list[Difference] = []

    def differ(aspect: str, a: object, b: object) -> None:
        if a != b:
            diffs.append(Difference(aspect, str(a), str(b)))

    stages = STAGES
    if _same_verdict_later(theirs, ours):
        # The same final reply, at end of message instead of end of headers: one aspect
        # for the whole shape, so the rest of the replies are still compared.
        diffs.append(
            Difference("reply:final-at-eom", f"eoh {theirs.final[1]}", f"eom {ours.final[1]}")
        )
        stages = tuple(s for s in STAGES if s not in ("eoh", "body", "eom"))
    for stage in stages:
        differ(
            f"reply:{stage}", _normal_reply(theirs.stage(stage)), _normal_reply(ours.stage(stage))
        )
    differ("outcome", theirs.final[1], ours.final[1])

    sig_a, sig_b = _added(theirs, "DKIM-Signature"), _added(ours, "DKIM-Signature")
    differ("sig:count", len(sig_a), len(sig_b))
    for (where_a, a), (where_b, b) in zip(sig_a, sig_b, strict=False):
        differ("sig:position", where_a, where_b)
        tags_a, tags_b = signature_tags(a), signature_tags(b)
        if _oversigned_from(tags_a.get("h", ""), tags_b.get("h", "")):
            diffs.append(Difference("sig:h+From", tags_a["h"], tags_b["h"]))
            tags_b["h"] = tags_a["h"]
        for tag in sorted(set(tags_a) | set(tags_b)):
            differ(f"sig:{tag}", tags_a.get(tag, "(none)"), tags_b.get(tag, "(none)"))

    ar_a, ar_b = _added(theirs, "Authentication-Results"), _added(ours, "Authentication-Results")
    differ("ar:count", len(ar_a), len(ar_b))
    for (where_a, a), (where_b, b) in zip(ar_a, ar_b, strict=False):
        differ("ar:position", where_a, where_b)
        (id_a, methods_a), (id_b, methods_b) = parse_authres(a), parse_authres(b)
        differ("ar:authserv-id", id_a, id_b)
        for method in sorted(set(methods_a) | set(methods_b)):
            differ(f"ar:{method}", methods_a.get(method, []), methods_b.get(method, []))

    names = {
        str(m[-2]).lower(): str(m[-2])
        for m in theirs.mods + ours.mods
        if m[0] in ("add", "ins", "chg")
    }
    for key, name in sorted(names.items()):
        if key not in ("dkim-signature", "authentication-results"):
            differ(
                f"hdr:{name}",
                [(w, _blanks(v)) for w, v in _added(theirs, name)],
                [(w, _blanks(v)) for w, v in _added(ours, name)],
            )
        differ(f"chg:{name}", _changed(theirs, key), _changed(ours, key))
    other_kinds = {str(m[0]) for m in theirs.mods + ours.mods} - {"add", "ins", "chg"}
    for kind in sorted(other_kinds):
        differ(
            f"mod:{kind}",
            [m[1:] for m in theirs.mods if m[0] == kind],
            [m[1:] for m in ours.mods if m[0] == kind],
        )
    return diffs
