"""The tag=value list grammar shared by DKIM-Signature fields and key records (RFC 6376 3.2).

    tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
    tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
    tag-name  =  ALPHA *ALNUMPUNC
    tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
    tval      =  1*VALCHAR          ; VALCHAR = %x21-3A / %x3C-7E

Values are returned as `str` decoded from Latin-1, so every input byte maps to exactly one
character and nothing is lost. Bytes above 0x7E are accepted (some signers put UTF-8 in i= or z=;
rejecting them would only turn their mail into permerrors), control characters are not.
"""

from __future__ import annotations

import re

from dkimd.dkim.errors import TagListError

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# FWS is WSP with optional CRLF folding; a verifier sees the unfolded or folded form.
_FWS = " \t\r\n"
# Anything below SP except the FWS characters, and DEL: not allowed in a value.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The same set as bytes, for one C-level pass over a whole list given as bytes: deleting
# every byte that may appear leaves only the ones that may not (the regex's character
# class costs several times more per byte).
_GOOD_BYTES = bytes(b for b in range(256) if not _BAD_VALUE.match(chr(b)))


def _bad_fold(text: str) -> bool:
    """Whether a CR or LF in `text` is anything but folding (CRLF followed by WSP).

    The same test as the regex ``\\r(?!\\n)|(?<!\\r)\\n|\\r\\n(?![ \\t])``, by counting:
    every CR starts a CRLF, every LF ends one, every CRLF is followed by SP or TAB. The
    regex's lookarounds at every position took half the time of parsing a signature.
    """
    crlf = text.count("\r\n")
    return not (
        text.count("\r") == crlf == text.count("\n") == text.count("\r\n ") + text.count("\r\n\t")
    )


TagList = dict[str, str]


def parse_tag_list(data: bytes | str) -> TagList:
    """Parse a tag-list into an insertion-ordered dict of tag name -> value (FWS trimmed).

    Raises `TagListError` for a malformed list or a repeated tag (RFC 6376 3.2: "Tags with
    duplicate names MUST NOT occur within a single tag-list").
    """
    if isinstance(data, bytes):
        text = data.decode("latin-1")
        bad_char = bool(data.translate(None, _GOOD_BYTES))
    else:
        text = data
        bad_char = _BAD_VALUE.search(text) is not None
    tags: TagList = {}
    # One scan of the whole list usually proves every value clean (a character that is bad
    # anywhere is bad in a value too); only a list that fails it is checked value by value.
    clean = not bad_char and not _bad_fold(text)
    specs = text.split(";")
    for index, spec in enumerate(specs):
        if not spec.strip(_FWS):
            # Only the last spec may be empty: that is the optional trailing ";".
            if index == len(specs) - 1:
                break
            raise TagListError("empty tag-spec")
        name, eq, value = spec.partition("=")
        if not eq:
            raise TagListError("tag-spec without '='")
        name = name.strip(_FWS)
        if not _NAME.match(name):
            raise TagListError("malformed tag name")
        value = value.strip(_FWS)
        if not clean and (_BAD_VALUE.search(value) or _bad_fold(value)):
            raise TagListError(f"invalid character in value of tag {name!r}")
        if name in tags:
            raise TagListError(f"duplicate tag {name!r}")
        tags[name] = value
    return tags


def strip_fws(value: str) -> str:
    """A value with every FWS character removed (base64 values may be folded anywhere)."""
    # Four C-level replace passes: str.translate with a deletion table looks every
    # character up in a dict, ~10x slower on a 2048-bit b= value.
    return value.replace(" ", "").replace("\t", "").replace("\r", "").replace("\n", "")
