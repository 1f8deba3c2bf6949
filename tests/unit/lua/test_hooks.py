"""The four policy-script hooks through a real MilterSession: what each odkim function
sees and does at its hook, and how failures end a message."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dkimd import milter
from dkimd.config import ConfigError, parse_config_text
from dkimd.dkim import HeaderField, Signer, SigningRequest, load_private_key
from dkimd.dns.testdata import TestDnsFile
from dkimd.milter.handler import ConnectionInfo
from dkimd.session import MilterSession, Runtime, RuntimeHolder, SessionStats
from support.handler import settle
from support.milterwire import macro, pkt

INTERNAL = "127.0.0.1"
OUTSIDE = "198.51.100.7"
HEADERS = [
    (b"From", b" Alice <alice@example.com>"),
    (b"To", b" bob@example.net"),
    (b"Subject", b" hello"),
    (b"Received", b" from a"),
    (b"Received", b" from b"),
]
BODY = b"Hello,\r\nthis is a test.\r\n"


class Site:
    """A key, its DNS record, a KeyTable/SigningTable, and policy scripts, in `tmp`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.key_path = tmp / "mail.private"
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.records = {
            "mail._domainkey.example.com": "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        }
        (tmp / "keys").write_text(f"mailkey example.com:mail:{self.key_path}\n")
        (tmp / "signing").write_text("*@example.com mailkey\n")

    def script(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def config(self, extra: str = "", *, tables: bool = True) -> str:
        text = "Mode sv\nRequireSafeKeys no\nAuthservID mx.test\nSocket inet:8891@127.0.0.1\n"
        if tables:
            text += (
                f"KeyTable file:{self.tmp / 'keys'}\nSigningTable refile:{self.tmp / 'signing'}\n"
            )
        return text + extra

    def signed_headers(self) -> list[tuple[bytes, bytes]]:
        signer = Signer(
            SigningRequest("example.com", "mail", load_private_key(self.key_path.read_bytes()))
        )
        signer.feed_body(BODY)
        sig = signer.sign([HeaderField(n, v) for n, v in HEADERS])
        return [(sig.name, sig.value), *HEADERS]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


class Mta:
    """One milter connection to a session over `config_text` (or an existing holder)."""

    def __init__(
        self, config_text: str, records: dict[str, str], holder: RuntimeHolder | None = None
    ) -> None:
        if holder is None:
            config = parse_config_text(config_text)
            holder = RuntimeHolder(Runtime.build(config, TestDnsFile.from_records(records)))
        self.holder = holder
        protocol = milter.ProtocolFlag.HDR_LEADSPC | milter.ProtocolFlag.NR_HDR
        self.conn = milter.Connection(
            milter.FilterOptions(actions=milter.ActionFlag(0x1FF), protocol=protocol)
        )
        self.session = MilterSession(ConnectionInfo(self.conn, "t"), self.holder, SessionStats())
        self.client_name = "client.example"

    async def feed(self, data: bytes) -> list[milter.Action]:
        self.conn.receive_data(data)
        out: list[milter.Action] = []
        while True:
            event = self.conn.next_event()
            if event is milter.NEED_DATA:
                return out
            if isinstance(event, milter.OptionNegotiation):
                self.conn.send(milter.Continue())
                continue
            result = await settle(self.session, self.session.handle(event))
            if result is None:
                self.conn.send(milter.Continue())
                continue
            actions = [result] if isinstance(result, milter.Action) else list(result)
            self.conn.send_many(actions)
            out += actions

    async def message(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        client: str = INTERNAL,
        rcpts: Sequence[str] = ("<bob@example.net>", "<carol@example.org>"),
    ) -> list[milter.Action]:
        optneg = pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        name = self.client_name.encode()
        connect = pkt(b"C", name + b"\x004" + struct.pack(">H", 25) + client.encode() + b"\0")
        stream = optneg + macro(b"C", {"j": "mx.test.example"}) + connect
        stream += macro(b"M", {"i": "QID1", "{auth_type}": ""})
        stream += pkt(b"M", b"<alice@example.com>\0")
        for rcpt in rcpts:
            stream += pkt(b"R", rcpt.encode() + b"\0")
        replies = await self.feed(stream)
        for name, value in headers:
            replies += await self.feed(pkt(b"L", name + b"\0" + value + b"\0"))
        replies += await self.feed(pkt(b"N"))
        if any(
            isinstance(a, milter.FinalAction) and not isinstance(a, milter.Continue)
            for a in replies
        ):
            return replies
        replies += await self.feed(pkt(b"B", BODY))
        return [
            a for a in replies + await self.feed(pkt(b"E")) if not isinstance(a, milter.Continue)
        ]


def run(
    mta: Mta, headers: Sequence[tuple[bytes, bytes]] = HEADERS, **kw: object
) -> list[milter.Action]:
    return asyncio.run(mta.message(headers, **kw))  # type: ignore[arg-type]


def added(actions: Sequence[milter.Action], name: bytes) -> list[bytes]:
    return [
        a.value
        for a in actions
        if isinstance(a, (milter.InsertHeader, milter.AddHeader)) and a.name == name
    ]


def lua_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What scripts logged with odkim.log(ctx, "probe ..."), without the queue id."""
    messages = [r.getMessage() for r in caplog.records]
    return ["probe " + m.split(": probe ", 1)[1] for m in messages if ": probe " in m]


# -- setup --


def test_setup_sign_with_key_name_and_signer(site: Site) -> None:
    script = site.script("setup.lua", 'odkim.sign(ctx, "mailkey", "signer@example.com")\n')
    # The table would not sign this sender; the script's request is used instead.
    (site.tmp / "signing").write_text("nobody@example.org mailkey\n")
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    actions = run(mta, client=OUTSIDE)
    [sig] = added(actions, b"DKIM-Signature")
    assert b"i=signer@example.com" in sig and b"d=example.com" in sig
    assert isinstance(actions[-1], milter.Accept)


def test_setup_sign_returns_0_for_an_unknown_key(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    script = site.script(
        "setup.lua",
        'odkim.log(ctx, "probe " .. tostring(odkim.sign(ctx, "nosuchkey")) .. " "'
        ' .. tostring(odkim.sign(ctx, "mailkey", 100)))\n',
    )
    mta = Mta(site.config(f"SetupPolicyScript {script}\nLogWhy yes\n"), site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(mta)
    assert lua_log(caplog) == ["probe 0.0 1.0"]
    [sig] = added(actions, b"DKIM-Signature")
    assert b"l=" in sig  # the length argument asks for l=


def test_setup_sign_by_name_needs_a_keytable(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script("setup.lua", 'odkim.sign(ctx, "mailkey")\n')
    config = site.config(
        f"SetupPolicyScript {script}\nDomain example.com\nSelector mail\nKeyFile {site.key_path}\n",
        tables=False,
    )
    mta = Mta(config, site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(mta)
    # A script error is On-InternalError (default tempfail), with the message logged.
    assert actions == [milter.ReplyCode(451, "4.7.0", "internal DKIM error")]
    assert any("odkim.sign(): request requires KeyTable" in r.getMessage() for r in caplog.records)


def test_setup_sign_without_key_name_uses_the_single_key(site: Site) -> None:
    script = site.script("setup.lua", "odkim.sign(ctx)\n")
    config = site.config(
        f"SetupPolicyScript {script}\nSelector mail\nKeyFile {site.key_path}\n", tables=False
    )
    [sig] = added(run(Mta(config, site.records), client=OUTSIDE), b"DKIM-Signature")
    assert b"d=example.com" in sig and b"s=mail" in sig


def test_setup_reads_the_message_and_connection(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    script = site.script(
        "setup.lua",
        """
local function s(v) return tostring(v) end
odkim.log(ctx, "probe " .. table.concat({
  s(odkim.get_header(ctx, "subject", 0)), s(odkim.get_header(ctx, "Received", -1)),
  s(odkim.get_header(ctx, "Received", 0)), s(odkim.get_header(ctx, "Received", 2)),
  s(odkim.get_clienthost(ctx)), s(odkim.get_clientip(ctx)), s(odkim.get_envfrom(ctx)),
  s(odkim.get_fromdomain(ctx)), s(odkim.rcpt_count(ctx)), s(odkim.get_rcpt(ctx, 1)),
  s(odkim.get_rcpt(ctx, 2)), s(#odkim.get_rcptarray(ctx)), s(odkim.internal_ip(ctx)),
  s(odkim.get_mtasymbol(ctx, "i")), s(odkim.get_mtasymbol(ctx, "{i}")),
  s(odkim.get_mtasymbol(ctx, "nope")), s(odkim.check_popauth(ctx)),
}, "|"))
""",
    )
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        run(mta)
    assert lua_log(caplog) == [
        "probe  hello| from b| from a|nil|client.example|127.0.0.1|alice@example.com|example.com"
        "|2.0|carol@example.org|nil|2|1.0|QID1|QID1|nil|nil"
    ]


def test_setup_argument_errors_are_openDKIMs(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script(
        "setup.lua",
        """
local _, a = pcall(odkim.get_header, ctx, "Subject")
local _, b = pcall(odkim.get_header, 1, "Subject", 0)
local _, c = pcall(odkim.get_rcpt, ctx, {})
odkim.log(ctx, "probe " .. tostring(a) .. "|" .. tostring(b) .. "|" .. tostring(c))
""",
    )
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        run(mta)
    assert lua_log(caplog) == [
        "probe odkim.get_header(): incorrect argument count"
        "|odkim.get_header(): incorrect argument type|odkim.get_rcpt(): incorrect argument type"
    ]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SMFIS_REJECT", milter.Reject()),
        ("SMFIS_TEMPFAIL", milter.TempFail()),
        ("SMFIS_DISCARD", milter.Discard()),
        ("SMFIS_ACCEPT", milter.Accept()),
    ],
)
def test_setup_set_result_ends_the_message(site: Site, code: str, expected: milter.Action) -> None:
    script = site.script("setup.lua", f"assert(odkim.set_result(ctx, {code}) == 1)\n")
    assert run(Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)) == [expected]


def test_setup_set_result_refuses_other_codes(site: Site) -> None:
    script = site.script("setup.lua", "assert(odkim.set_result(ctx, 0) == nil)\n")
    actions = run(Mta(site.config(f"SetupPolicyScript {script}\n"), site.records))
    assert added(actions, b"DKIM-Signature") and isinstance(actions[-1], milter.Accept)


def test_setup_replace_header_changes_only_the_filters_copy(site: Site) -> None:
    headers = site.signed_headers()
    changed = [(n, b" Mallory <m@example.com>" if n == b"From" else v) for n, v in headers]
    script = site.script(
        "setup.lua", 'assert(odkim.replace_header(ctx, "From", 0, "Alice <alice@example.com>"))\n'
    )
    actions = run(
        Mta(site.config(f"SetupPolicyScript {script}\n"), site.records), changed, client=OUTSIDE
    )
    [ar] = added(actions, b"Authentication-Results")
    assert b"dkim=pass" in ar
    assert not [a for a in actions if isinstance(a, milter.ChangeHeader) and a.name == b"From"]


def test_setup_verify_and_use_ltag_and_xtag(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script(
        "setup.lua",
        """
local before = odkim.xtag(ctx, "zz", "1")
odkim.sign(ctx, "mailkey")
odkim.use_ltag(ctx)
odkim.log(ctx, "probe " .. before .. " " .. odkim.xtag(ctx, "xy", "two") .. " "
  .. odkim.xtag(ctx, "d", "bad") .. " " .. tostring(odkim.verify(ctx)))
""",
    )
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        [sig] = added(run(mta), b"DKIM-Signature")
    assert lua_log(caplog) == ["probe 0.0 1.0 -1.0 nil"]
    assert b"xy=two" in sig and b"l=" in sig and b"zz=" not in sig


def test_setup_verify_verifies_what_would_not_be(site: Site) -> None:
    script = site.script("setup.lua", "odkim.verify(ctx)\n")
    # Mode s: nothing would be verified, an outside client's mail would pass untouched.
    config = site.config(f"SetupPolicyScript {script}\n").replace("Mode sv", "Mode s")
    actions = run(Mta(config, site.records), site.signed_headers(), client=OUTSIDE)
    [ar] = added(actions, b"Authentication-Results")
    assert b"dkim=pass" in ar


def test_setup_signfor_and_data_sets(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    listed = site.tmp / "domains"
    listed.write_text("example.com\nExample.NET\n")
    script = site.script(
        "setup.lua",
        f"""
local db = odkim.db_open("file:{listed}", true)
local st = odkim.get_dbhandle(ctx, DB_SIGNINGTABLE)
odkim.log(ctx, "probe " .. odkim.db_check(db, "EXAMPLE.net") .. " " .. odkim.db_check(db, "x.org")
  .. " " .. tostring(odkim.get_dbhandle(ctx, DB_DONTSIGNTO)) .. " " .. odkim.db_close(db)
  .. " " .. odkim.signfor(ctx, "someone@example.com") .. " " .. odkim.signfor(ctx, "a@b.org")
  .. " " .. odkim.db_check(st, "*@example.com"))
""",
    )
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        [sig] = added(run(mta, client=OUTSIDE), b"DKIM-Signature")
    assert lua_log(caplog) == ["probe 1.0 0.0 nil 1.0 1.0 0.0 1.0"]
    assert b"d=example.com" in sig


def test_db_open_failure_raises(site: Site) -> None:
    script = site.script("setup.lua", 'odkim.db_open("file:/nonexistent/list")\n')
    actions = run(Mta(site.config(f"SetupPolicyScript {script}\n"), site.records))
    assert actions == [milter.ReplyCode(451, "4.7.0", "internal DKIM error")]


def test_db_open_refuses_a_data_set_behind_a_server(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    # Opening one per call would log in on the event loop and leave a pool behind; the
    # value holds a password, which the error must not repeat.
    url = "dsn:pgsql://dkim:S3cret-Pw@1+127.0.0.1/mail/table=t?keycol=k?datacol=v"
    script = site.script("setup.lua", f'odkim.db_open("{url}")\n')
    with caplog.at_level(logging.DEBUG, logger="dkimd"):
        actions = run(Mta(site.config(f"SetupPolicyScript {script}\n"), site.records))
    assert actions == [milter.ReplyCode(451, "4.7.0", "internal DKIM error")]
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "can't open a dsn: data set from a script" in text
    assert "S3cret" not in text


# -- failures and limits --


def test_runaway_setup_tempfails_and_logs_the_line(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    script = site.script("loop.lua", "local n = 0\nwhile true do n = n + 1 end\n")
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(mta)
    assert actions == [milter.TempFail()]
    assert any(
        "loop.lua:2: script stopped" in r.getMessage() and str(script) in r.getMessage()
        for r in caplog.records
    )
    # The next message on a fresh connection is served as usual by the same scripts' state.
    mta2 = Mta(site.config(), site.records)
    assert added(run(mta2), b"DKIM-Signature")


def test_error_is_on_internal_error(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script("bad.lua", "\nerror('no policy for you')\n")
    config = site.config(f"SetupPolicyScript {script}\nOn-InternalError reject\n")
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(Mta(config, site.records))
    assert actions == [milter.ReplyCode(550, "5.7.0", "internal DKIM error")]
    assert any(f"bad.lua:2: no policy for you ({script})" in r.getMessage() for r in caplog.records)


def test_a_function_of_another_hook_is_nil(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    setup = site.script("setup.lua", "odkim.log(ctx, 'probe ' .. type(odkim.add_header))\n")
    final = site.script("final.lua", 'odkim.sign(ctx, "mailkey")\n')
    config = site.config(f"SetupPolicyScript {setup}\nFinalPolicyScript {final}\n")
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(Mta(config, site.records))
    assert lua_log(caplog) == ["probe nil"]
    assert actions == [milter.ReplyCode(451, "4.7.0", "internal DKIM error")]
    assert any(
        "attempt to call a nil value (field 'sign')" in r.getMessage() for r in caplog.records
    )


# -- screen --


def test_screen_sees_and_ignores_signatures(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script(
        "screen.lua",
        """
local n = odkim.get_sigcount(ctx)
local sig = odkim.get_sighandle(ctx, 0)
odkim.log(ctx, "probe " .. n .. " " .. odkim.sig_getdomain(sig) .. " "
  .. odkim.sig_getidentity(sig) .. " " .. #odkim.get_sigarray(ctx) .. " "
  .. tostring(odkim.get_sighandle(ctx, 1)) .. " " .. tostring(EXPORTED))
if odkim.sig_getdomain(sig) ~= odkim.get_fromdomain(ctx) or true then odkim.sig_ignore(sig) end
""",
    )
    setup = site.script("setup.lua", 'odkim.export(ctx, "EXPORTED", "from-setup")\n')
    config = site.config(f"ScreenPolicyScript {script}\nSetupPolicyScript {setup}\n")
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(Mta(config, site.records), site.signed_headers(), client=OUTSIDE)
    assert lua_log(caplog) == ["probe 1.0 example.com @example.com 1 nil from-setup"]
    # The only signature ignored: the message counts as unsigned (no A-R by default).
    assert added(actions, b"Authentication-Results") == []
    assert isinstance(actions[-1], milter.Accept)


def test_screen_parse_field(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script(
        "screen.lua",
        'local u, d = odkim.parse_field("Alice <alice@Example.COM>")\n'
        'odkim.log(ctx, "probe " .. u .. " " .. d .. " " .. tostring(odkim.parse_field("x")))\n',
    )
    with caplog.at_level(logging.INFO, logger="dkimd"):
        run(
            Mta(site.config(f"ScreenPolicyScript {script}\n"), site.records),
            site.signed_headers(),
            client=OUTSIDE,
        )
    assert lua_log(caplog) == ["probe alice example.com nil"]


# -- statistics and final --


def test_final_reads_results_and_changes_the_message(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    script = site.script(
        "final.lua",
        """
local sig = odkim.get_sighandle(ctx, 0)
odkim.log(ctx, "probe " .. odkim.sig_result(sig) .. " " .. odkim.sig_bhresult(sig) .. " "
  .. DKIM_SIGERROR_BADSIG .. " " .. tostring(odkim.quarantine(ctx, "no")) .. " "
  .. tostring(odkim.set_reply(ctx, "250", "", "x")) .. " "
  .. tostring(odkim.add_header(ctx, "Bad Name", "x")))
assert(odkim.add_header(ctx, "X-Policy", "checked") == 1)
assert(odkim.del_header(ctx, "Received", 0) == 1)
assert(odkim.add_rcpt(ctx, "<audit@example.net>") == 1)
assert(odkim.del_rcpt(ctx, "<carol@example.org>") == 1)
""",
    )
    headers = site.signed_headers()
    tampered = [(n, b" changed" if n == b"Subject" else v) for n, v in headers]
    config = site.config(f"FinalPolicyScript {script}\n")
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(Mta(config, site.records), tampered, client=OUTSIDE)
    assert lua_log(caplog) == ["probe 28.0 0.0 28.0 nil nil nil"]
    assert added(actions, b"X-Policy") == [b" checked"]
    assert added(actions, b"X-Original-Recipient") == [b" <carol@example.org>"]
    assert milter.ChangeHeader(1, b"Received", b"") in actions
    assert milter.AddRecipient("<audit@example.net>") in actions
    assert milter.DeleteRecipient("<carol@example.org>") in actions
    [ar] = added(actions, b"Authentication-Results")
    assert b"dkim=fail" in ar
    assert isinstance(actions[-1], milter.Accept)


def test_final_set_result_and_reply(site: Site) -> None:
    script = site.script(
        "final.lua",
        """
if odkim.get_sigcount(ctx) == 0 then
  odkim.set_reply(ctx, "550", "5.7.1", "unsigned mail from " .. odkim.get_fromdomain(ctx))
  odkim.set_result(ctx, SMFIS_REJECT)
end
""",
    )
    config = site.config(f"FinalPolicyScript {script}\n")
    actions = run(Mta(config, site.records), client=OUTSIDE)
    assert actions[-1] == milter.ReplyCode(550, "5.7.1", "unsigned mail from example.com")
    signed = run(Mta(config, site.records), site.signed_headers(), client=OUTSIDE)
    assert isinstance(signed[-1], milter.Accept)


def test_final_runs_for_signed_mail(site: Site) -> None:
    script = site.script("final.lua", 'odkim.add_header(ctx, "X-Signed-By-Policy", "yes")\n')
    actions = run(Mta(site.config(f"FinalPolicyScript {script}\n"), site.records))
    assert added(actions, b"DKIM-Signature") and added(actions, b"X-Signed-By-Policy") == [b" yes"]


def test_statistics_hook(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script(
        "stats.lua",
        'odkim.stats(ctx, "sigs", odkim.get_sigcount(ctx))\n'
        'odkim.stats(ctx, "from", odkim.get_envfrom(ctx))\n',
    )
    config = site.config(f"StatisticsPolicyScript {script}\n")
    with caplog.at_level(logging.INFO, logger="dkimd"):
        run(Mta(config, site.records), site.signed_headers(), client=OUTSIDE)
    messages = [r.getMessage() for r in caplog.records]
    assert "QID1: statistic sigs=1.0" in messages
    assert "QID1: statistic from=alice@example.com" in messages


# -- configuration --


def test_scripts_are_compiled_at_load(site: Site) -> None:
    script = site.script("setup.lua", "odkim.sign(ctx\n")
    with pytest.raises(ConfigError) as caught:
        parse_config_text(site.config(f"SetupPolicyScript {script}\n"))
    assert "Lua compilation error" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config_text(site.config(f"FinalPolicyScript {site.tmp / 'missing.lua'}\n"))
    assert "cannot read" in str(caught.value)


def test_without_lupa_a_script_is_a_config_error(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dkimd.lua.config

    monkeypatch.setattr(dkimd.lua.config, "lua_available", lambda: False)
    script = site.script("setup.lua", "odkim.verify(ctx)\n")
    with pytest.raises(ConfigError) as caught:
        parse_config_text(site.config(f"SetupPolicyScript {script}\n"))
    [problem] = caught.value.problems
    assert problem.hint == "pip install dkimd[lua]" and problem.option == "SetupPolicyScript"


def test_reload_swaps_the_scripts(site: Site) -> None:
    first = site.script("one.lua", "odkim.set_result(ctx, SMFIS_REJECT)\n")
    holder = Mta(site.config(f"SetupPolicyScript {first}\n"), site.records).holder
    assert run(Mta("", site.records, holder)) == [milter.Reject()]
    first.write_text("odkim.set_result(ctx, SMFIS_TEMPFAIL)\n")
    # Compiled at load: a changed file counts from the next reload on.
    assert run(Mta("", site.records, holder)) == [milter.Reject()]
    reloaded = parse_config_text(site.config(f"SetupPolicyScript {first}\n"))
    holder.current = Runtime.build(reloaded, TestDnsFile.from_records(site.records))
    assert run(Mta("", site.records, holder)) == [milter.TempFail()]


def test_no_lua_work_per_message_without_scripts(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dkimd.lua.message

    def refuse(*args: object) -> None:
        raise AssertionError("LuaMessage made without scripts")

    monkeypatch.setattr(dkimd.lua.message.LuaMessage, "__init__", refuse)
    actions = run(Mta(site.config(), site.records))
    assert added(actions, b"DKIM-Signature")


def test_a_configuration_without_scripts_never_loads_dkimd_lua(site: Site) -> None:
    import subprocess
    import sys

    code = (
        "import sys, dkimd.session, dkimd.daemon, dkimd.server\n"
        "from dkimd.config import parse_config_text\n"
        f"parse_config_text({site.config()!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('dkimd.lua') or m == 'lupa'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("call", ["odkim.verify(ctx)", "assert(odkim.resign(ctx) == 1)"])
def test_setup_verify_and_sign_the_same_message(site: Site, call: str) -> None:
    script = site.script("setup.lua", f'{call}\nodkim.sign(ctx, "mailkey", "relay@example.com")\n')
    actions = run(
        Mta(site.config(f"SetupPolicyScript {script}\n"), site.records),
        site.signed_headers(),
        client=OUTSIDE,
    )
    [ar] = added(actions, b"Authentication-Results")
    [sig] = added(actions, b"DKIM-Signature")
    assert b"dkim=pass" in ar and b"i=relay@example.com" in sig
    assert isinstance(actions[-1], milter.Accept)


def test_verify_and_sign_a_bad_signature_follows_on_bad_signature(site: Site) -> None:
    script = site.script("setup.lua", 'odkim.verify(ctx)\nodkim.sign(ctx, "mailkey")\n')
    tampered = [(n, b" changed" if n == b"Subject" else v) for n, v in site.signed_headers()]
    config = site.config(f"SetupPolicyScript {script}\nOn-BadSignature reject\n")
    actions = run(Mta(config, site.records), tampered, client=OUTSIDE)
    assert added(actions, b"DKIM-Signature") == []
    assert actions[-1] == milter.ReplyCode(550, "5.7.0", "bad DKIM signature data")


@pytest.mark.parametrize("kind", ["setup", "screen", "statistics", "final"])
def test_every_function_refuses_bad_arguments_by_name(
    site: Site, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each odkim function, called with wrong counts and kinds of arguments, either answers
    or raises OpenDKIM's "odkim.NAME(): ..." error: never an internal Python message."""
    option = {
        "setup": "SetupPolicyScript",
        "screen": "ScreenPolicyScript",
        "statistics": "StatisticsPolicyScript",
        "final": "FinalPolicyScript",
    }[kind]
    script = site.script(
        f"{kind}.lua",
        """
local shapes = { {}, {ctx}, {1}, {ctx, {}}, {ctx, "x", "y", "z", "w", "v"}, {"a", 1, true} }
local bad = {}
local names = {}
for name in pairs(odkim) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  for _, args in ipairs(shapes) do
    local ok, err = pcall(odkim[name], table.unpack(args, 1, 6))
    if not ok and not string.find(tostring(err), "^odkim%.") then
      bad[#bad + 1] = name .. ": " .. tostring(err)
    end
  end
end
odkim.log(ctx, "probe " .. #names .. " " .. table.concat(bad, "; "))
""",
    )
    with caplog.at_level(logging.INFO, logger="dkimd"):
        mta = Mta(site.config(f"{option} {script}\n"), site.records)
        run(mta, site.signed_headers(), client=OUTSIDE)
    [line] = lua_log(caplog)
    count, _, bad = line.removeprefix("probe ").partition(" ")
    assert int(count) > 10 and bad == ""


# The odkim tables of OpenDKIM 2.11 (Debian), listed by a script walking `odkim` in each
# hook of the real filter (2026-12-04). Statistics is not built into that filter: its list
# is opendkim-lua(3)'s without odkim.spam.
OBSERVED = {
    "setup": "check_popauth db_check db_close db_open export get_clienthost get_clientip "
    "get_dbhandle get_envfrom get_fromdomain get_header get_mtasymbol get_rcpt get_rcptarray "
    "internal_ip log rcpt_count replace_header resign set_result sign signfor use_ltag verify "
    "xtag",
    "screen": "db_check db_close db_open export get_dbhandle get_envfrom get_fromdomain "
    "get_header get_mtasymbol get_rcpt get_rcptarray get_sigarray get_sigcount get_sighandle "
    "internal_ip log parse_field rcpt_count sig_getdomain sig_getidentity sig_ignore",
    "statistics": "export get_envfrom get_header get_mtasymbol get_rcpt get_rcptarray "
    "get_sigarray get_sigcount get_sighandle internal_ip log parse_field rbl_check rcpt_count "
    "sig_bhresult sig_bodylength sig_canonlength sig_getdomain sig_getidentity sig_result stats",
    "final": "add_header add_rcpt del_header del_rcpt get_clienthost get_clientip get_envfrom "
    "get_fromdomain get_header get_mtasymbol get_rcpt get_rcptarray get_sigarray "
    "get_sigcount get_sighandle internal_ip log parse_field quarantine rbl_check rcpt_count "
    "set_reply set_result sig_bhresult sig_bodylength sig_canonlength sig_getdomain "
    "sig_getidentity sig_result xtag",
}


@pytest.mark.parametrize("kind", sorted(OBSERVED))
def test_each_hook_has_opendkims_functions_and_no_others(
    site: Site, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    option = {
        "setup": "SetupPolicyScript",
        "screen": "ScreenPolicyScript",
        "statistics": "StatisticsPolicyScript",
        "final": "FinalPolicyScript",
    }[kind]
    script = site.script(
        f"{kind}.lua",
        "local names = {}\n"
        "for name, fn in pairs(odkim) do if type(fn) == 'userdata' or type(fn) == 'function'"
        " then names[#names + 1] = name end end\n"
        "table.sort(names)\n"
        "odkim.log(ctx, 'probe ' .. table.concat(names, ' '))\n",
    )
    with caplog.at_level(logging.INFO, logger="dkimd"):
        mta = Mta(site.config(f"{option} {script}\n"), site.records)
        run(mta, site.signed_headers(), client=OUTSIDE)
    assert lua_log(caplog) == ["probe " + " ".join(sorted(OBSERVED[kind].split()))]


def test_bytes_reach_scripts_unchanged(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    raw = bytes(range(0x80, 0x100)) + b"\x01\x7f"
    script = site.script(
        "setup.lua",
        'local v = odkim.get_header(ctx, "X-Raw", 0)\n'
        'odkim.log(ctx, "probe " .. #v .. " " .. string.byte(v, 2) .. " " .. string.byte(v, -1))\n'
        'odkim.replace_header(ctx, "X-Raw", 0, string.reverse(v))\n'
        'odkim.log(ctx, "probe " .. string.byte(odkim.get_header(ctx, "X-Raw", 0), 2))\n',
    )
    headers = [*HEADERS, (b"X-Raw", b" " + raw)]
    with caplog.at_level(logging.INFO, logger="dkimd"):
        actions = run(Mta(site.config(f"SetupPolicyScript {script}\n"), site.records), headers)
    assert lua_log(caplog) == [f"probe {len(raw) + 1} 128 127", "probe 127"]
    assert added(actions, b"DKIM-Signature")


def test_clienthost_of_a_client_without_a_name(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    script = site.script("setup.lua", 'odkim.log(ctx, "probe " .. odkim.get_clienthost(ctx))\n')
    mta = Mta(site.config(f"SetupPolicyScript {script}\n"), site.records)
    mta.client_name = "[198.51.100.7]"
    with caplog.at_level(logging.INFO, logger="dkimd"):
        run(mta, client=OUTSIDE)
    assert lua_log(caplog) == ["probe [198.51.100.7]"]


def test_limits_are_configurable(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    script = site.script("count.lua", "local n = 0\nfor i = 1, 300000 do n = n + i end\n")
    roomy = site.config(f"SetupPolicyScript {script}\n")
    assert added(run(Mta(roomy, site.records)), b"DKIM-Signature")
    tight = roomy + "LuaInstructionLimit 100000\nLuaTimeLimit 1\n"
    with caplog.at_level(logging.INFO, logger="dkimd"):
        assert run(Mta(tight, site.records)) == [milter.TempFail()]
    assert "count.lua:2: script stopped" in caplog.text
    with pytest.raises(ConfigError, match="LuaTimeLimit: 0 is out of range"):
        parse_config_text(roomy + "LuaTimeLimit 0\n")
