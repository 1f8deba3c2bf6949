"""Header and body canonicalization (RFC 6376 section 3.4), the body side incremental.

The body canonicalizers are the hot loop of the daemon: every byte of every message goes through
them. They work on whole chunks with C-level bytes operations (translate, replace, rstrip, rfind)
and never loop over bytes in Python. Between chunks they carry only a few bytes of state:

* a CR at the end of a chunk (it may be the first half of a CRLF in the next one);
* for relaxed, whether whitespace ended the chunk (it is dropped if a CRLF follows, RFC 6376
  3.4.4 "Ignore all whitespace at the end of lines", and merges with whitespace that follows);
* the number of CRLFs that ended the canonical output so far. Empty lines at the end of the body
  are ignored (3.4.3, 3.4.4) but we cannot know a line is "at the end" until more content or the
  end arrives; they are counted, not stored, so a body of millions of empty lines costs nothing.

Length limits (l=, 3.5) count canonical bytes: hashing stops at the limit, counting goes on so
the verifier can report how much content was not covered.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Final, Literal

from dkimd.dkim.headers import HeaderField

Canon = Literal["simple", "relaxed"]
CANONS: Final = ("simple", "relaxed")

_CRLF = b"\r\n"
_TAB_TO_SP = bytes.maketrans(b"\t", b" ")
# Held empty lines are released in slices of this many CRLFs, so memory stays bounded.
_CRLF_BLOCK = _CRLF * 32768


# --- headers (3.4.1, 3.4.2) ---


# One regex pass beats repeated bytes.replace(b"  ", b" ") by 3x on mail text (measured with
# bench/bench_canon.py): the runs are short and many, and each replace pass copies the chunk.
_SPACE_RUN = re.compile(rb"  +")


def _collapse_spaces(data: bytes) -> bytes:
    return _SPACE_RUN.sub(b" ", data) if b"  " in data else data


def canonicalize_header(field: HeaderField, canon: str, *, crlf: bool = True) -> bytes:
    """One header field in canonical form, with a trailing CRLF unless `crlf` is false.

    simple (3.4.1): the field exactly as on the wire.
    relaxed (3.4.2): name lowercased; value unfolded; every run of WSP one SP; WSP at the end of
    the value and around the colon deleted.
    """
    if canon == "simple":
        out = field.raw
    else:
        cached = field.relaxed
        if cached is None:
            value = field.value.replace(b"\r\n", b"").translate(_TAB_TO_SP)
            cached = field.key + b":" + _collapse_spaces(value).strip(b" ")
            object.__setattr__(field, "relaxed", cached)  # frozen: set once, as `key` is
        out = cached
    return out + _CRLF if crlf else out


# --- body (3.4.3, 3.4.4) ---


def _trailing_crlf_count(data: bytes) -> int:
    """How many complete CRLF pairs end `data` (without scanning more than its CR/LF tail)."""
    if not data.endswith(b"\n"):
        return 0
    start = len(data.rstrip(b"\r\n"))
    tail = data[start:]
    # Inside the tail only CR and LF remain; a run of pairs alternates, so the pairs begin just
    # after the last doubled byte ("\r\r" or "\n\n"), on a CR.
    begin = max(tail.rfind(b"\r\r"), tail.rfind(b"\n\n")) + 1
    if tail[begin : begin + 1] == b"\n":
        begin += 1
    return (len(tail) - begin) // 2


class BodyCanonicalizer:
    """Canonicalize a body fed in chunks and hash it as it goes.

    `canon` is "simple" or "relaxed"; `hash_name` a hashlib name; `limit` the l= value (hash at
    most that many canonical bytes) or None. After `finish()` (idempotent): `digest()`,
    `length` (all canonical bytes, including any beyond the limit) and `hashed`.
    """

    __slots__ = (
        "_emitted",
        "_finished",
        "_hash",
        "_held",
        "_pending",
        "_relaxed",
        "hashed",
        "length",
        "limit",
    )

    def __init__(self, canon: str = "relaxed", hash_name: str = "sha256", limit: int | None = None):
        if canon not in CANONS:
            raise ValueError(f"unknown body canonicalization {canon!r}")
        if limit is not None and limit < 0:
            raise ValueError("negative body length limit")
        self._relaxed = canon == "relaxed"
        self._hash = hashlib.new(hash_name)
        self.limit = limit
        self.length = 0  # canonical bytes produced
        self.hashed = 0  # canonical bytes hashed (== length unless a limit cut it)
        self._held = 0  # CRLFs ending the output so far, not yet emitted
        self._pending = b""  # at most b" \r": whitespace and/or a CR ending the last chunk
        self._emitted = False  # any non-CRLF content emitted (relaxed: the body is non-empty)
        self._finished = False

    # Output side: count, and hash up to the limit.
    def _out(self, data: bytes) -> None:
        n = len(data)
        if not n:
            return
        self.length += n
        limit = self.limit
        if limit is None:
            self._hash.update(data)
            self.hashed += n
            return
        room = limit - self.hashed
        if room <= 0:
            return
        if n > room:
            data = data[:room]
            n = room
        self._hash.update(data)
        self.hashed += n

    def _release_held(self) -> None:
        held = self._held
        self._held = 0
        limit = self.limit
        while held:
            if limit is not None and self.hashed >= limit:
                # Past the limit: only the count matters, and it needs no bytes.
                self.length += 2 * held
                return
            n = min(held, len(_CRLF_BLOCK) // 2)
            self._out(_CRLF_BLOCK[: 2 * n])
            held -= n

    def _content(self, data: bytes) -> None:
        """`data` has been normalized; emit it, holding back its trailing CRLFs."""
        if not data:
            return
        held = _trailing_crlf_count(data)
        end = len(data) - 2 * held
        if end == 0:
            self._held += held
            return
        self._release_held()
        self._out(data[:end] if held else data)
        self._emitted = True
        self._held = held

    def update(self, chunk: bytes) -> None:
        if self._finished:
            raise ValueError("body canonicalizer already finished")
        if not chunk:
            return
        if self._relaxed:
            self._update_relaxed(chunk)
        else:
            self._update_simple(chunk)

    def _update_simple(self, chunk: bytes) -> None:
        # 3.4.3: the body as is, except that empty lines at its end are ignored.
        if self._pending:
            chunk = self._pending + chunk
            self._pending = b""
        if chunk.endswith(b"\r"):
            self._pending = b"\r"
            chunk = chunk[:-1]
        self._content(chunk)

    def _update_relaxed(self, chunk: bytes) -> None:
        # 3.4.4: WSP runs become one SP, WSP before CRLF goes, empty lines at the end go.
        data = self._pending + chunk.translate(_TAB_TO_SP)
        cr = b""
        if data.endswith(b"\r"):
            cr = b"\r"
            data = data[:-1]
        core = data.rstrip(b" ")
        ws = b" " if len(core) != len(data) else b""
        self._pending = ws + cr
        core = _collapse_spaces(core)
        if b" \r\n" in core:
            core = core.replace(b" \r\n", b"\r\n")
        self._content(core)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        pending, self._pending = self._pending, b""
        if self._relaxed:
            # A body that canonicalizes to nothing hashes the empty string (RFC 6376 errata
            # 1384, which dkimpy and OpenDKIM follow); otherwise it ends with exactly one CRLF.
            # Whitespace ending the last, unterminated line stays: the RFC only strips it before
            # a CRLF, and dkimpy keeps it too.
            if pending:
                self._release_held()
                self._out(pending + _CRLF)
            elif self._emitted:
                self._out(_CRLF)
        else:
            # 3.4.3: "If there is no body or no CRLF at the end of the body, a CRLF is added."
            if pending:
                self._release_held()
                self._out(pending)
            self._out(_CRLF)
        self._held = 0

    def digest(self) -> bytes:
        self.finish()
        return self._hash.digest()

    @property
    def beyond_limit(self) -> int:
        """Canonical bytes after the l= limit (0 when there is no limit or nothing beyond)."""
        return self.length - self.hashed


BodyHashKey = tuple[str, str, int | None]

# A line end as FixCRLF knows one: CRLF, or a CR or LF alone.
_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")


class CrlfFixer:
    """OpenDKIM's FixCRLF (libopendkim DKIM_LIBFLAGS_FIXCRLF): every CR or LF that is not
    part of a CRLF becomes a CRLF before the body is canonicalized, as an MTA down the line
    would rewrite it. Incremental: a CR ending a chunk waits for the next one's first byte.
    """

    __slots__ = ("_cr",)

    def __init__(self) -> None:
        self._cr = False  # the last chunk ended with a CR not yet known to be bare

    def feed(self, chunk: bytes) -> bytes:
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
        # Most bodies have no bare CR or LF: three C-speed counts beat the regex pass.
        crlf = chunk.count(_CRLF)
        if chunk.count(b"\r") == crlf and chunk.count(b"\n") == crlf:
            return chunk
        return _ANY_LINE_END.sub(_CRLF, chunk)

    def finish(self) -> bytes:
        """What is still held at the end of the body: a last bare CR, as CRLF."""
        held, self._cr = self._cr, False
        return _CRLF if held else b""


class BodyHashSet:
    """Several body hashes over one pass: one canonicalizer per (canon, hash, limit).

    Signing an RSA and an Ed25519 signature with the same canonicalization, or verifying several
    signatures, canonicalizes and hashes the body once per distinct key, not once per signature.
    `fix_crlf` puts a `CrlfFixer` in front of all of them.
    """

    def __init__(self, keys: Iterable[BodyHashKey] = (), *, fix_crlf: bool = False) -> None:
        self._hashers: dict[BodyHashKey, BodyCanonicalizer] = {}
        self._fixer = CrlfFixer() if fix_crlf else None
        for key in keys:
            self.add(key)

    def add(self, key: BodyHashKey) -> BodyCanonicalizer:
        hasher = self._hashers.get(key)
        if hasher is None:
            canon, hash_name, limit = key
            hasher = self._hashers[key] = BodyCanonicalizer(canon, hash_name, limit)
        return hasher

    def __getitem__(self, key: BodyHashKey) -> BodyCanonicalizer:
        return self._hashers[key]

    def __len__(self) -> int:
        return len(self._hashers)

    def update(self, chunk: bytes) -> None:
        if self._fixer is not None:
            chunk = self._fixer.feed(chunk)
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def finish(self) -> None:
        if self._fixer is not None:
            tail = self._fixer.finish()
            if tail:
                for hasher in self._hashers.values():
                    hasher.update(tail)
        for hasher in self._hashers.values():
            hasher.finish()


class _CollectingCanonicalizer(BodyCanonicalizer):
    __slots__ = ("parts",)

    def __init__(self, canon: str) -> None:
        super().__init__(canon)
        self.parts: list[bytes] = []

    def _out(self, data: bytes) -> None:
        self.parts.append(data)
        self.length += len(data)


def canonicalize_body(body: bytes, canon: str) -> bytes:
    """The whole canonical body at once (for tests and small inputs; the hot path hashes)."""
    c = _CollectingCanonicalizer(canon)
    c.update(body)
    c.finish()
    return b"".join(c.parts)
