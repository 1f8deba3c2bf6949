"""TXT records in DNS master-file syntax (RFC 1035 5.1), as the key tools write them.

`dkimd genkey` and opendkim-genkey write SELECTOR.txt as

    mail._domainkey	IN	TXT	( "v=DKIM1; h=sha256; k=rsa; "
              "p=MIIBIjANBgkq..." )  ; ----- DKIM key mail for example.com

and `genzone -F` writes `mail._domainkey.example.com.	IN	TXT	( "v=DKIM1\\;k=rsa\\;p=..." )`.
This module reads one such entry: an owner name, an optional TTL and class in either order,
a type, and its data, continued over lines while a parenthesis is open. Quoted strings
take `\\X` (X itself) and `\\DDD` (a decimal byte); `;` outside quotes starts a comment.
A TXT record's text is its strings joined (RFC 6376 3.6.2.2).

Not supported, on purpose (the callers report them as errors): an entry without an owner
name (inheriting the previous one), `$INCLUDE`, and quoted strings spanning lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["IGNORED_TYPES", "Token", "ZoneEntry", "ZoneSyntaxError", "entry_start", "tokenize"]

CLASSES = frozenset({"in", "ch", "hs", "cs"})
# Types a key-record file may carry beside its TXT records (genzone -S writes SOA and NS):
# read past, never answered.
IGNORED_TYPES = frozenset(
    {"soa", "ns", "a", "aaaa", "mx", "cname", "ptr", "srv", "caa", "spf", "dname", "ds"}
)
_TTL = re.compile(rb"[0-9]+[smhdwSMHDW]?(?:[0-9]+[smhdwSMHDW])*")
# What genkey (ours and opendkim-genkey) writes after each record: names its domain.
_GENKEY_COMMENT = re.compile(rb"-----\s*DKIM key (\S+) for (\S+)")
_SPECIAL = b' \t\r\n\v\f();"'


class ZoneSyntaxError(ValueError):
    """A line that is not valid master-file syntax; the message says why."""


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "string", "(" or ")"
    text: bytes = b""


@dataclass
class ZoneEntry:
    """One resource record: owner as written, type lower-cased, data tokens, comments."""

    owner: str
    rtype: str
    data: list[Token] = field(default_factory=list)
    comments: list[bytes] = field(default_factory=list)
    depth: int = 0  # parentheses still open

    def feed(self, tokens: list[Token], comment: bytes | None) -> None:
        """Add the tokens of one more line of this entry."""
        for token in tokens:
            if token.kind == "(":
                self.depth += 1
            elif token.kind == ")":
                if self.depth == 0:
                    raise ZoneSyntaxError('")" without a matching "("')
                self.depth -= 1
            else:
                self.data.append(token)
        if comment is not None:
            self.comments.append(comment)

    def txt(self) -> bytes:
        """The TXT record's text: its character-strings, joined."""
        if not self.data:
            raise ZoneSyntaxError("TXT record without any text")
        return b"".join(token.text for token in self.data)

    def genkey_domain(self) -> tuple[str, str] | None:
        """(selector, domain) from genkey's `; ----- DKIM key S for D` comment, if any."""
        for comment in self.comments:
            match = _GENKEY_COMMENT.search(comment)
            if match is not None:
                return match[1].decode("ascii", "replace"), match[2].decode("ascii", "replace")
        return None


def tokenize(line: bytes) -> tuple[list[Token], bytes | None]:
    """The tokens of one line, and its comment (the text after an unquoted `;`)."""
    tokens: list[Token] = []
    i, end = 0, len(line)
    while i < end:
        c = line[i : i + 1]
        if c in b" \t\r\n\v\f":
            i += 1
        elif c == b";":
            return tokens, line[i + 1 :]
        elif c in b"()":
            tokens.append(Token(c.decode()))
            i += 1
        elif c == b'"':
            text, i = _quoted(line, i + 1)
            tokens.append(Token("string", text))
        else:
            start = i
            while i < end and line[i : i + 1] not in _SPECIAL:
                i += 1
            tokens.append(Token("word", line[start:i]))
    return tokens, None


def _quoted(line: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    while i < len(line):
        c = line[i]
        if c == 0x22:  # closing quote
            return bytes(out), i + 1
        if c == 0x5C:  # backslash
            digits = line[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                value = int(digits)
                if value > 255:
                    raise ZoneSyntaxError(f"escape \\{digits.decode()} is not a byte")
                out.append(value)
                i += 4
                continue
            if i + 1 >= len(line):
                break
            out.append(line[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    raise ZoneSyntaxError("quoted string not closed on this line")


def entry_start(line: bytes) -> ZoneEntry | None:
    """The entry `line` begins when it reads OWNER [TTL] [CLASS] TYPE ..., else None.

    None means the line is not master-file syntax at all (the caller may read it another
    way); a line that is, but is broken, raises ZoneSyntaxError.
    """
    words = line.split()
    if len(words) < 2 or words[0][:1] in (b'"', b"(", b")", b";"):
        return None
    rest = words[1:]
    seen_ttl = seen_class = False
    while rest:
        word = rest[0]
        if not seen_ttl and _TTL.fullmatch(word):
            seen_ttl = True
        elif not seen_class and word.lower().decode("ascii", "replace") in CLASSES:
            seen_class = True
        else:
            break
        rest = rest[1:]
    if not rest:
        return None
    rtype = rest[0].split(b"(", 1)[0].decode("ascii", "replace").lower()
    if rtype != "txt" and rtype not in IGNORED_TYPES:
        return None
    owner = words[0].decode("utf-8", "surrogateescape")
    if (
        owner.lower() in CLASSES
        or owner.lower() in ("txt", *IGNORED_TYPES)
        or (_TTL.fullmatch(words[0]))
    ):
        raise ZoneSyntaxError(
            "record without an owner name (write the name, e.g. mail._domainkey.example.com.)"
        )
    tokens, comment = tokenize(line)
    # Past the owner, the TTL and class words, and the type word.
    skip = 1 + (len(words) - 1 - len(rest)) + 1
    if len(tokens) < skip or any(t.kind != "word" for t in tokens[:skip]):
        raise ZoneSyntaxError("cannot tell the owner name, TTL, class and type apart")
    entry = ZoneEntry(owner, rtype)
    entry.feed(tokens[skip:], comment)
    return entry
