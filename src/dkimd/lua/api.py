"""The `odkim` functions of opendkim-lua(3), per hook, with OpenDKIM's arguments, returns
and errors.

Each hook gets only the functions OpenDKIM registers for it; calling another one is, as in
OpenDKIM, calling a nil field (a script error). A function called with the wrong number or
kinds of arguments raises the error OpenDKIM raises ("odkim.NAME(): incorrect argument
count" / "... type"). What a function asks for (sign with a key, reject, add a header) is
recorded in `Effects`; the session applies it where OpenDKIM would.

`MessageFacts` is what a script may read about the message and its connection; the session
builds it at the hook and passes its own header list, which `odkim.replace_header` edits
(the filter's copy only: the message itself is never changed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dkimd.config import Config
from dkimd.config.datasets import Dataset, open_dataset
from dkimd.dkim import HeaderField, field_key
from dkimd.policy import parse_address
from dkimd.stores import SCHEMES, scheme_of

__all__ = [
    "DB_CONSTANTS",
    "SMFIS",
    "Effects",
    "HookKind",
    "MessageFacts",
    "SigInfo",
    "SignSpec",
    "build_odkim",
    "constants_for",
]


class LuaCallError(Exception):
    """Raised by an odkim function: becomes a Lua error with this text."""


# libmilter's sfsistat values, as OpenDKIM exports them to scripts.
SMFIS = {
    "SMFIS_CONTINUE": 0,
    "SMFIS_REJECT": 1,
    "SMFIS_DISCARD": 2,
    "SMFIS_ACCEPT": 3,
    "SMFIS_TEMPFAIL": 4,
}
# opendkim.h's data set selectors for odkim.get_dbhandle.
DB_CONSTANTS = {
    "DB_DOMAINS": 1,
    "DB_THIRDPARTY": 2,
    "DB_DONTSIGNTO": 3,
    "DB_MTAS": 4,
    "DB_MACROS": 5,
    "DB_SIGNINGTABLE": 6,
}
# dkim.h: DKIM_SIGBH_* and the DKIM_SIGERROR_* values the verifier's outcomes map to.
SIGBH_UNTESTED, SIGBH_MATCH, SIGBH_MISMATCH = -1, 0, 1

# Tags libopendkim writes itself, which odkim.xtag may not add (dkim_add_xtag).
_KNOWN_TAGS = frozenset(["v", "a", "b", "bh", "c", "d", "h", "i", "l", "q", "s", "t", "x", "z"])
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_TAG_VALUE = re.compile(r"[\x21-\x3a\x3c-\x7e \t]*\Z")  # VALCHAR and WSP, no ";"


class HookKind:
    SETUP = "setup"
    SCREEN = "screen"
    STATISTICS = "statistics"
    FINAL = "final"


@dataclass(slots=True)
class SignSpec:
    """odkim.sign's request: a KeyTable name (None: the single key), i=, l= length."""

    key_name: str | None
    signer: str | None = None
    length: int | None = None


@dataclass(slots=True)
class SigInfo:
    """One signature as the screen, statistics and final scripts see it."""

    index: int
    domain: str | None
    identity: str | None
    sig_error: int = -1  # DKIM_SIGERROR_*; -1 (unknown) before verification
    bh_result: int = SIGBH_UNTESTED
    body_length: int | None = None
    canon_length: int | None = None


@dataclass(slots=True)
class MessageFacts:
    """What scripts may read about one message and its connection."""

    headers: list[HeaderField]
    config: Config
    client_address: str | None = None
    client_hostname: str | None = None
    envelope_sender: str = ""
    recipients: list[str] = field(default_factory=list)
    macro: Callable[[str], str | None] = lambda name: None
    internal: bool = False
    from_domain: str | None = None
    signatures: list[SigInfo] = field(default_factory=list)
    #: odkim.sign's key lookup: (KeyTable name or None, i=) -> a signing request, or None
    #: when there is no such usable key (odkim.sign then returns 0).
    resolve_key: Callable[[str | None, str | None], object | None] = lambda name, signer: None


@dataclass(slots=True)
class Effects:
    """What the scripts of one message asked for, applied by the session."""

    sign: list[SignSpec] = field(default_factory=list)
    # The requests odkim.sign made, in order (SigningRequests, typed loosely here).
    requests: list[tuple[object, SignSpec]] = field(default_factory=list)
    verify: bool = False
    resign: bool = False
    use_ltag: bool = False
    # odkim.xtag: (tag, value, how many of the first requests it applies to)
    xtags: list[tuple[str, str, int]] = field(default_factory=list)
    result: int | None = None  # an SMFIS_* code other than continue
    reply: tuple[str, str, str] | None = None  # rcode, xcode, text
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    del_headers: list[tuple[str, int]] = field(default_factory=list)
    add_rcpts: list[str] = field(default_factory=list)
    del_rcpts: list[str] = field(default_factory=list)
    ignored: set[int] = field(default_factory=set)  # screen: signature indexes
    stats: list[tuple[str, str]] = field(default_factory=list)
    # odkim.export: globals handed to the later scripts of the same message.
    exports: dict[str, str] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)


class Ctx:
    """The `ctx` global: an opaque token (OpenDKIM passes a light userdata)."""

    __slots__ = ()


class DbHandle:
    """A data set handle from odkim.get_dbhandle or odkim.db_open."""

    __slots__ = ("dataset", "icase")

    def __init__(self, dataset: Dataset, icase: bool = False) -> None:
        self.dataset = dataset
        self.icase = icase


class SigHandle:
    """A signature handle (odkim.get_sighandle)."""

    __slots__ = ("info",)

    def __init__(self, info: SigInfo) -> None:
        self.info = info


def _is_string(value: object) -> bool:
    """lua_isstring: strings and numbers."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """lua_isnumber: numbers and strings that read as numbers."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value.strip())
        except ValueError:
            return False
        return True
    return False


def _to_int(value: object) -> int:
    if isinstance(value, str):
        return int(float(value.strip()))
    assert isinstance(value, (int, float))
    return int(value)


def _to_str(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


def _check(name: str, args: Sequence[object], counts: Sequence[int], *ok: bool) -> None:
    if len(args) not in counts:
        raise LuaCallError(f"odkim.{name}(): incorrect argument count")
    if not all(ok):
        raise LuaCallError(f"odkim.{name}(): incorrect argument type")


def _ctx_ok(args: Sequence[object]) -> bool:
    return bool(args) and isinstance(args[0], Ctx)


def _header_index(headers: Sequence[HeaderField], name: str, n: int) -> int | None:
    """The position in `headers` of instance `n` of `name` (negative: from the end)."""
    key = field_key(name.encode("latin-1"))
    where = [i for i, h in enumerate(headers) if h.key == key]
    if n < 0:
        n += len(where)
    if 0 <= n < len(where):
        return where[n]
    return None


def _value_text(value: bytes) -> str:
    """A header value as OpenDKIM hands it to a script: what follows the colon, with the
    blank after it (observed: " yes" for "X-No-DKIM: yes", even from an MTA that drops the
    blank, to which OpenDKIM adds one back)."""
    if not value.startswith((b" ", b"\t")):
        value = b" " + value
    return value.decode("latin-1")


class OdkimCall:
    """The state behind the odkim functions during one hook call."""

    __slots__ = ("effects", "facts", "kind", "log", "make_table")

    def __init__(
        self,
        kind: str,
        facts: MessageFacts,
        effects: Effects,
        make_table: Callable[..., object],
        log: Callable[[str], None],
    ) -> None:
        self.kind = kind
        self.facts = facts
        self.effects = effects
        self.make_table = make_table
        self.log = log


def _no_table(items: object, *values: object) -> object:
    return None


def _no_log(text: str) -> None:
    return None


# What the slot holds between calls (odkim functions are only reachable during one).
IDLE_CALL = OdkimCall(HookKind.SETUP, MessageFacts([], Config()), Effects(), _no_table, _no_log)


def _functions(slot: CallSlot) -> dict[str, Callable[..., object]]:
    """Every odkim function, reading the call in progress from `slot` (built once per
    sandbox; `build_odkim` picks a hook's set)."""

    def check_popauth(*a: object) -> object:
        _check("check_popauth", a, (1,), _ctx_ok(a))
        return None  # no POPAUTH database in this build (OpenDKIM: nil when not configured)

    def db_check(*a: object) -> object:
        _check("db_check", a, (2,), len(a) == 2 and isinstance(a[0], DbHandle) and _is_string(a[1]))
        handle = a[0]
        assert isinstance(handle, DbHandle)
        key = _to_str(a[1])
        if handle.icase:
            key = key.lower()
        return 1 if key in handle.dataset else 0

    def db_close(*a: object) -> object:
        _check("db_close", a, (1,), isinstance(a[0], DbHandle) if a else False)
        return 1

    def db_open(*a: object) -> object:
        _check("db_open", a, (1, 2), bool(a) and _is_string(a[0]))
        icase = len(a) == 2 and a[1] is True
        scheme = scheme_of(_to_str(a[0]))
        if scheme in SCHEMES:
            # Opening one logs in (seconds, on the event loop) and leaves a connection pool
            # per call; nor may the value (it may hold a password) go into the error.
            raise LuaCallError(
                f"odkim.db_open(): can't open a {scheme}: data set from a script;"
                " name it in the configuration (odkim.get_dbhandle)"
            )
        dataset, problems = open_dataset(_to_str(a[0]), case_insensitive=icase)
        if dataset is None:
            why = problems[0].message if problems else "cannot open"
            raise LuaCallError(f"odkim.db_open(): can't open {_to_str(a[0])}: {why}")
        return DbHandle(dataset, icase)

    def export(*a: object) -> object:
        if len(a) < 3 or len(a) % 2 == 0:
            raise LuaCallError("odkim.export(): incorrect argument count")
        if not _ctx_ok(a):
            raise LuaCallError("odkim.export(): incorrect argument type")
        for i in range(1, len(a), 2):
            name, value = a[i], a[i + 1]
            if not _is_string(name) or not _is_string(value):
                raise LuaCallError("odkim.export(): incorrect argument type")
            slot.call.effects.exports[_to_str(name)] = _to_str(value)
        return None

    def get_clienthost(*a: object) -> object:
        _check("get_clienthost", a, (1,), _ctx_ok(a))
        facts = slot.call.facts
        host, address = facts.client_hostname, facts.client_address
        if address is not None and host in (None, address):
            # A client without a name: the MTA's "[address]", brackets kept (dkimd strips
            # them for its host lists).
            return f"[{address}]"
        return host

    def get_clientip(*a: object) -> object:
        _check("get_clientip", a, (1,), _ctx_ok(a))
        return slot.call.facts.client_address

    def get_dbhandle(*a: object) -> object:
        _check("get_dbhandle", a, (2,), _ctx_ok(a), len(a) == 2 and _is_number(a[1]))
        which = _to_int(a[1])
        config = slot.call.facts.config
        dataset: Dataset | None = None
        if which == DB_CONSTANTS["DB_DOMAINS"] and config.single_key is not None:
            dataset = config.single_key.domains
        elif which == DB_CONSTANTS["DB_DONTSIGNTO"]:
            dataset = config.dont_sign_mail_to
        elif which == DB_CONSTANTS["DB_SIGNINGTABLE"] and config.signing_table is not None:
            dataset = config.signing_table.dataset
        return DbHandle(dataset) if dataset is not None else None

    def get_envfrom(*a: object) -> object:
        _check("get_envfrom", a, (1,), _ctx_ok(a))
        return slot.call.facts.envelope_sender

    def get_fromdomain(*a: object) -> object:
        _check("get_fromdomain", a, (1,), _ctx_ok(a))
        return slot.call.facts.from_domain

    def get_header(*a: object) -> object:
        _check(
            "get_header", a, (3,), _ctx_ok(a), len(a) == 3 and _is_string(a[1]) and _is_number(a[2])
        )
        index = _header_index(slot.call.facts.headers, _to_str(a[1]), _to_int(a[2]))
        return None if index is None else _value_text(slot.call.facts.headers[index].value)

    def get_mtasymbol(*a: object) -> object:
        _check("get_mtasymbol", a, (2,), _ctx_ok(a), len(a) == 2 and _is_string(a[1]))
        name = _to_str(a[1])
        value = slot.call.facts.macro(name)
        if value is None and len(name) > 1 and not name.startswith("{"):
            value = slot.call.facts.macro("{" + name + "}")  # libmilter tries both spellings
        return value

    def get_rcpt(*a: object) -> object:
        _check("get_rcpt", a, (2,), _ctx_ok(a), len(a) == 2 and _is_number(a[1]))
        n = _to_int(a[1])
        return slot.call.facts.recipients[n] if 0 <= n < len(slot.call.facts.recipients) else None

    def get_rcptarray(*a: object) -> object:
        _check("get_rcptarray", a, (1,), _ctx_ok(a))
        return slot.call.make_table(None, *slot.call.facts.recipients)

    def internal_ip(*a: object) -> object:
        _check("internal_ip", a, (1,), _ctx_ok(a))
        return 1 if slot.call.facts.internal else 0

    def log(*a: object) -> object:
        _check("log", a, (2,), _ctx_ok(a), len(a) == 2 and _is_string(a[1]))
        slot.call.log(_to_str(a[1]))
        return None

    def rcpt_count(*a: object) -> object:
        _check("rcpt_count", a, (1,), _ctx_ok(a))
        return len(slot.call.facts.recipients)

    def replace_header(*a: object) -> object:
        _check(
            "replace_header",
            a,
            (4,),
            _ctx_ok(a),
            len(a) == 4 and _is_string(a[1]) and _is_number(a[2]) and _is_string(a[3]),
        )
        index = _header_index(slot.call.facts.headers, _to_str(a[1]), _to_int(a[2]))
        if index is None:
            return None
        old = slot.call.facts.headers[index]
        lead = old.value[: len(old.value) - len(old.value.lstrip(b" \t"))]
        new = _to_str(a[3]).encode("latin-1")
        slot.call.facts.headers[index] = HeaderField(old.name, lead + new)
        return 1

    def resign(*a: object) -> object:
        _check("resign", a, (1,), _ctx_ok(a))
        slot.call.effects.resign = True
        slot.call.effects.verify = True
        return 1

    def set_result(*a: object) -> object:
        _check("set_result", a, (2,), _ctx_ok(a), len(a) == 2 and _is_number(a[1]))
        code = _to_int(a[1])
        if code not in (
            SMFIS["SMFIS_TEMPFAIL"],
            SMFIS["SMFIS_ACCEPT"],
            SMFIS["SMFIS_DISCARD"],
            SMFIS["SMFIS_REJECT"],
        ):
            return None
        slot.call.effects.result = code
        return 1

    def sign(*a: object) -> object:
        if not 1 <= len(a) <= 4:
            raise LuaCallError("odkim.sign(): incorrect argument count")
        if not _ctx_ok(a) or (len(a) > 1 and not _is_string(a[1])):
            raise LuaCallError("odkim.sign(): incorrect argument type")
        spec = SignSpec(_to_str(a[1]) if len(a) > 1 else None)
        if spec.key_name is not None and slot.call.facts.config.key_table is None:
            raise LuaCallError("odkim.sign(): request requires KeyTable")
        for extra in a[2:]:
            if isinstance(extra, (int, float)) and not isinstance(extra, bool):
                spec.length = int(extra)
            elif isinstance(extra, str):
                spec.signer = extra
            else:
                raise LuaCallError("odkim.sign(): incorrect argument type")
        made = slot.call.facts.resolve_key(spec.key_name, spec.signer)
        if made is None:
            return 0
        slot.call.effects.sign.append(spec)
        slot.call.effects.requests.append((made, spec))
        return 1

    def signfor(*a: object) -> object:
        _check("signfor", a, (2, 3), _ctx_ok(a), len(a) >= 2 and _is_string(a[1]))
        multi = len(a) == 3 and a[2] is True
        address = parse_address(_to_str(a[1]).encode("latin-1"))
        config = slot.call.facts.config
        if address is None or config.signing_table is None:
            return 0
        matches = config.signing_table.lookup_address(address, multiple=multi)
        applied = 0
        for match in matches:
            spec = SignSpec(match.key_name, match.signer)
            made = slot.call.facts.resolve_key(spec.key_name, spec.signer)
            if made is not None:
                slot.call.effects.sign.append(spec)
                slot.call.effects.requests.append((made, spec))
                applied += 1
        return applied

    def use_ltag(*a: object) -> object:
        _check("use_ltag", a, (1,), _ctx_ok(a))
        slot.call.effects.use_ltag = True
        return None

    def verify(*a: object) -> object:
        _check("verify", a, (1,), _ctx_ok(a))
        slot.call.effects.verify = True
        return None

    def xtag(*a: object) -> object:
        _check("xtag", a, (3,), _ctx_ok(a), len(a) == 3 and _is_string(a[1]) and _is_string(a[2]))
        tag, value = _to_str(a[1]), _to_str(a[2])
        # Added to the signatures requested so far (none: nothing to do, and no error).
        count = len(slot.call.effects.requests)
        if count == 0:
            return 0
        if tag in _KNOWN_TAGS or not _TAG_NAME.match(tag) or not _TAG_VALUE.match(value):
            return -1
        if any(t == tag for t, _, _ in slot.call.effects.xtags):
            return -1
        slot.call.effects.xtags.append((tag, value, count))
        return count

    # -- signatures (screen, statistics, final) --

    def get_sigarray(*a: object) -> object:
        _check("get_sigarray", a, (1,), _ctx_ok(a))
        return slot.call.make_table(None, *(SigHandle(s) for s in slot.call.facts.signatures))

    def get_sigcount(*a: object) -> object:
        _check("get_sigcount", a, (1,), _ctx_ok(a))
        return len(slot.call.facts.signatures)

    def get_sighandle(*a: object) -> object:
        _check("get_sighandle", a, (2,), _ctx_ok(a), len(a) == 2 and _is_number(a[1]))
        n = _to_int(a[1])
        return (
            SigHandle(slot.call.facts.signatures[n])
            if 0 <= n < len(slot.call.facts.signatures)
            else None
        )

    def parse_field(*a: object) -> object:
        _check("parse_field", a, (1,), bool(a) and _is_string(a[0]))
        address = parse_address(_to_str(a[0]).encode("latin-1"))
        if address is None:
            return None
        user, _, domain = address.rpartition("@")
        return (user, domain)

    def sig_handle(name: str, a: Sequence[object]) -> SigInfo:
        _check(name, a, (1,), bool(a) and isinstance(a[0], SigHandle))
        handle = a[0]
        assert isinstance(handle, SigHandle)
        return handle.info

    def sig_getdomain(*a: object) -> object:
        return sig_handle("sig_getdomain", a).domain

    def sig_getidentity(*a: object) -> object:
        info = sig_handle("sig_getidentity", a)
        if info.identity is not None:
            return info.identity
        return None if info.domain is None else "@" + info.domain

    def sig_ignore(*a: object) -> object:
        slot.call.effects.ignored.add(sig_handle("sig_ignore", a).index)
        return None

    def sig_bhresult(*a: object) -> object:
        return sig_handle("sig_bhresult", a).bh_result

    def sig_bodylength(*a: object) -> object:
        _check("sig_bodylength", a, (2,), _ctx_ok(a), len(a) == 2 and isinstance(a[1], SigHandle))
        return sig_handle("sig_bodylength", a[1:]).body_length

    def sig_canonlength(*a: object) -> object:
        _check("sig_canonlength", a, (2,), _ctx_ok(a), len(a) == 2 and isinstance(a[1], SigHandle))
        return sig_handle("sig_canonlength", a[1:]).canon_length

    def sig_result(*a: object) -> object:
        return sig_handle("sig_result", a).sig_error

    def stats(*a: object) -> object:
        _check("stats", a, (3,), _ctx_ok(a), len(a) == 3 and _is_string(a[1]) and _is_string(a[2]))
        slot.call.effects.stats.append((_to_str(a[1]), _to_str(a[2])))
        return None

    def rbl_check(*a: object) -> object:
        _check(
            "rbl_check",
            a,
            (3, 4),
            _ctx_ok(a),
            len(a) >= 3 and _is_string(a[1]) and _is_string(a[2]),
            len(a) < 4 or _is_number(a[3]),
        )
        # No resolver is reachable from inside a synchronous hook: OpenDKIM's "error" answer.
        return None

    # -- final --

    def add_header(*a: object) -> object:
        _check(
            "add_header", a, (3,), _ctx_ok(a), len(a) == 3 and _is_string(a[1]) and _is_string(a[2])
        )
        name, value = _to_str(a[1]), _to_str(a[2])
        if not name or any(c in name for c in ": \t\r\n") or "\0" in value:
            return None
        slot.call.effects.add_headers.append((name, value))
        return 1

    def add_rcpt(*a: object) -> object:
        _check("add_rcpt", a, (2,), _ctx_ok(a), len(a) == 2 and _is_string(a[1]))
        slot.call.effects.add_rcpts.append(_to_str(a[1]))
        return 1

    def del_header(*a: object) -> object:
        _check(
            "del_header", a, (3,), _ctx_ok(a), len(a) == 3 and _is_string(a[1]) and _is_number(a[2])
        )
        slot.call.effects.del_headers.append((_to_str(a[1]), _to_int(a[2])))
        return 1

    def del_rcpt(*a: object) -> object:
        _check("del_rcpt", a, (2,), _ctx_ok(a), len(a) == 2 and _is_string(a[1]))
        slot.call.effects.del_rcpts.append(_to_str(a[1]))
        return 1

    def quarantine(*a: object) -> object:
        _check("quarantine", a, (2,), _ctx_ok(a), len(a) == 2 and _is_string(a[1]))
        # smfi_quarantine fails: OpenDKIM asks the MTA for SMFIF_QUARANTINE only under
        # CaptureUnknownErrors, and so its scripts cannot quarantine (observed: nil).
        return None

    def set_reply(*a: object) -> object:
        _check(
            "set_reply",
            a,
            (4,),
            _ctx_ok(a),
            len(a) == 4 and all(_is_string(x) for x in a[1:]),
        )
        rcode, xcode, text = (_to_str(x) for x in a[1:4])
        if not re.fullmatch(r"[45][0-9][0-9]", rcode):
            return None
        if xcode and not re.fullmatch(rf"{rcode[0]}\.[0-9]{{1,3}}\.[0-9]{{1,3}}", xcode):
            return None
        if any(c in text for c in "\r\n\0"):
            return None
        slot.call.effects.reply = (rcode, xcode, text)
        return 1

    return {
        name.rstrip("_"): fn
        for name, fn in locals().items()
        if callable(fn) and name not in ("sig_handle",)
    }


def _words(text: str) -> list[str]:
    return text.split()


# Which functions each hook's odkim table has: as OpenDKIM 2.11 (Debian) registers them,
# listed by a script walking `odkim` in each hook. opendkim-lua(3) also names odkim.spam,
# which that build leaves out ("experimental feature not enabled"). The statistics hook is
# not built into it either; its list is the man page's.
HOOK_FUNCTIONS: dict[str, frozenset[str]] = {
    HookKind.SETUP: frozenset(
        _words(
            "check_popauth db_check db_close db_open export get_clienthost get_clientip "
            "get_dbhandle get_envfrom get_fromdomain get_header get_mtasymbol get_rcpt "
            "get_rcptarray internal_ip log rcpt_count replace_header resign set_result sign "
            "signfor use_ltag verify xtag"
        )
    ),
    HookKind.SCREEN: frozenset(
        _words(
            "db_check db_close db_open export get_dbhandle get_envfrom get_fromdomain get_header "
            "get_mtasymbol get_rcpt get_rcptarray get_sigarray get_sigcount get_sighandle "
            "internal_ip log parse_field rcpt_count sig_getdomain sig_getidentity sig_ignore"
        )
    ),
    HookKind.STATISTICS: frozenset(
        _words(
            "export get_envfrom get_header get_mtasymbol get_rcpt get_rcptarray get_sigarray "
            "get_sigcount get_sighandle internal_ip log parse_field rcpt_count rbl_check "
            "sig_bhresult sig_bodylength sig_canonlength sig_getdomain sig_getidentity "
            "sig_result stats"
        )
    ),
    HookKind.FINAL: frozenset(
        _words(
            "add_header add_rcpt del_header del_rcpt get_clienthost get_clientip get_envfrom "
            "get_fromdomain get_header get_mtasymbol get_rcpt get_rcptarray get_sigarray "
            "get_sigcount get_sighandle internal_ip log parse_field quarantine rbl_check "
            "rcpt_count set_reply set_result sig_bhresult sig_bodylength sig_canonlength "
            "sig_getdomain sig_getidentity sig_result xtag"
        )
    ),
}

# dkim.h's DKIM_SIGERROR_* and DKIM_SIGBH_*, which the final script gets as globals.
SIG_CONSTANTS: dict[str, int] = {
    "DKIM_SIGBH_UNTESTED": SIGBH_UNTESTED,
    "DKIM_SIGBH_MATCH": SIGBH_MATCH,
    "DKIM_SIGBH_MISMATCH": SIGBH_MISMATCH,
    **{
        f"DKIM_SIGERROR_{name}": number
        for number, name in enumerate(
            _words(
                "OK VERSION DOMAIN EXPIRED FUTURE TIMESTAMPS UNUSED INVALID_HC INVALID_BC "
                "MISSING_A INVALID_A MISSING_H INVALID_L INVALID_Q INVALID_QO MISSING_D EMPTY_D "
                "MISSING_S EMPTY_S MISSING_B EMPTY_B CORRUPT_B NOKEY DNSSYNTAX KEYFAIL MISSING_BH "
                "EMPTY_BH CORRUPT_BH BADSIG SUBDOMAIN MULTIREPLY EMPTY_H INVALID_H TOOLARGE_L "
                "MBSFAILED KEYVERSION KEYUNKNOWNHASH KEYHASHMISMATCH NOTEMAILKEY UNUSED2 "
                "KEYTYPEMISSING KEYTYPEUNKNOWN KEYREVOKED KEYDECODE"
            )
        )
        if not name.startswith("UNUSED")
    },
    "DKIM_SIGERROR_UNKNOWN": -1,
}


class CallSlot:
    """The hook call in progress, read by the odkim functions (one sandbox runs one call
    at a time)."""

    __slots__ = ("call",)

    def __init__(self) -> None:
        self.call: OdkimCall = IDLE_CALL


def _as_lua_number(fn: Callable[..., object]) -> Callable[..., object]:
    """OpenDKIM pushes every number with lua_pushnumber: a float in Lua 5.3 (so a count
    prints as "1.0" there, and here)."""

    def call(*args: object) -> object:
        result = fn(*args)
        if isinstance(result, int) and not isinstance(result, bool):
            return float(result)
        return result

    return call


def build_odkim(slot: CallSlot, kind: str) -> dict[str, Callable[..., object]]:
    """The odkim table's functions for a `kind` hook."""
    wanted = HOOK_FUNCTIONS[kind]
    return {name: _as_lua_number(fn) for name, fn in _functions(slot).items() if name in wanted}


def constants_for(kind: str) -> dict[str, float]:
    """The global constants OpenDKIM defines for a hook's script (floats, as above)."""
    values: dict[str, int] = {}
    if kind in (HookKind.SETUP, HookKind.SCREEN):
        values.update(DB_CONSTANTS)
    if kind in (HookKind.SETUP, HookKind.FINAL):
        values.update({k: v for k, v in SMFIS.items() if k != "SMFIS_CONTINUE"})
    if kind in (HookKind.STATISTICS, HookKind.FINAL):
        values.update(SIG_CONSTANTS)
    return {name: float(value) for name, value in values.items()}
