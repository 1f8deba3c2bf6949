-- dkimd daemon sessions driven by OpenDKIM's miltertest, playing Postfix.
--
-- Run as:  miltertest -D data=/path/to/data.lua -s session.lua
-- data.lua (written by tests/interop/test_milter_miltertest.py) sets the globals
--   SOCKET    "inet:PORT@127.0.0.1"
--   VERSION   milter protocol version offered (6, or 2 like Postfix's milter_protocol = 2)
--   STEPS     protocol steps offered (0x1FFFFF for v6, 0x7F for v2, as Postfix)
--   ACTIONS   actions offered (0x1FF for v6, 0x3F for v2, as Postfix)
--   CLIENT    {host=..., addr=...}          CONNECT_MACROS {name, value, ...}
--   MESSAGES  list of {mail_macros={...}, from=..., rcpt={...}, headers={{name, value}, ...},
--             body=..., abort=bool (send SMFIC_ABORT after the message),
--             collect={header names to read back}, change={header names to check}}
--   EXPECT_CONNECT  the reply char expected to the connect step ("c" or "a")
--
-- Output, one fact per line, for the Python side to assert on:
--   leadspc <0|1>
--   connect <reply char>
--   msg <n> reply <char>
--   msg <n> smtpreply <i> <true|false>   (SMFIR_REPLYCODE: MT_SMTPREPLY vs m.smtpreply[i],
--                                         each {code, enhanced code, text})
--   msg <n> insert <name> <true|false>              (mt.eom_check MT_HDRINSERT)
--   msg <n> header <name> <index> <hex of value>    (mt.getheader: value as the filter sent it)
--   msg <n> change <name> <true|false>              (MT_HDRCHANGE)
--   msg <n> delete <name> <true|false>              (MT_HDRDELETE)
--   done

local function fail(what)
	-- miltertest exits 1 on error() without printing the message: echo it first.
	mt.echo("dkimd-miltertest-FAIL: " .. what)
	error(what)
end

local function check(cond, what)
	if not cond then
		fail(what)
	end
end

local function ok(err, what)
	if err ~= nil then
		fail(what .. ": " .. tostring(err))
	end
end

local function hex(s)
	return (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
end

local function say(...)
	mt.echo(table.concat({...}, " "))
end

local unpack_ = table.unpack or unpack

local REPLY = {
	[SMFIR_CONTINUE] = "c", [SMFIR_ACCEPT] = "a", [SMFIR_REJECT] = "r",
	[SMFIR_TEMPFAIL] = "t", [SMFIR_DISCARD] = "d", [SMFIR_REPLYCODE] = "y",
	[SMFIR_SKIP] = "s",
}

local function reply(conn)
	local r = mt.getreply(conn)
	return REPLY[r] or ("?" .. tostring(r))
end

dofile(data)

local conn = mt.connect(SOCKET, 40, 0.1)
check(conn ~= nil, "mt.connect(" .. SOCKET .. ") failed")
mt.set_timeout(20)
-- miltertest(8) documents mt.negotiate(conn, version, actions, steps), but miltertest.c
-- reads argument 3 as the protocol steps and argument 4 as the actions.
ok(mt.negotiate(conn, VERSION, STEPS, ACTIONS), "mt.negotiate()")
check(mt.test_action(conn, SMFIF_ADDHDRS), "SMFIF_ADDHDRS not negotiated")
check(mt.test_action(conn, SMFIF_CHGHDRS), "SMFIF_CHGHDRS not negotiated")
local leadspc = mt.test_option(conn, SMFIP_HDR_LEADSPC)
say("leadspc", leadspc and "1" or "0")

ok(mt.macro(conn, SMFIC_CONNECT, unpack_(CONNECT_MACROS)), "mt.macro(connect)")
ok(mt.conninfo(conn, CLIENT.host, CLIENT.addr), "mt.conninfo()")
local r = reply(conn)
say("connect", r)
if r ~= "c" then
	mt.disconnect(conn, true)
	say("done")
	return
end
-- A filter may ask not to be sent HELO/RCPT at all (SMFIP_NOHELO/NORCPT), as dkimd does;
-- Postfix then skips them, and miltertest refuses to send them. Do as Postfix does.
local function skippable(what, fn, ...)
	local called, err = pcall(fn, ...)
	if not called then
		if string.find(tostring(err), "negotiated SMFIP_NO", 1, true) then
			return false
		end
		fail(what .. ": " .. tostring(err))
	end
	ok(err, what)
	return true
end

if skippable("mt.helo()", mt.helo, conn, CLIENT.host) then
	check(reply(conn) == "c", "helo: no continue")
end

for n, m in ipairs(MESSAGES) do
	ok(mt.macro(conn, SMFIC_MAIL, unpack_(m.mail_macros)), "mt.macro(mail)")
	ok(mt.mailfrom(conn, m.from), "mt.mailfrom()")
	check(reply(conn) == "c", "mail: no continue")
	for _, rcpt in ipairs(m.rcpt) do
		if skippable("mt.rcptto()", mt.rcptto, conn, rcpt) then
			check(reply(conn) == "c", "rcpt: no continue")
		end
	end
	for _, h in ipairs(m.headers) do
		-- With SMFIP_HDR_LEADSPC negotiated, miltertest itself puts a blank before the value
		-- (as Postfix sends "From: x" as " x"): give the value without it either way.
		ok(mt.header(conn, h[1], h[2]), "mt.header(" .. h[1] .. ")")
	end
	ok(mt.eoh(conn), "mt.eoh()")
	local body = m.body
	local chunk = 65535
	for i = 1, #body, chunk do
		ok(mt.bodystring(conn, string.sub(body, i, i + chunk - 1)), "mt.bodystring()")
	end
	ok(mt.eom(conn), "mt.eom()")
	local rr = reply(conn)
	say("msg", n, "reply", rr)
	if rr == "y" then
		-- MT_SMTPREPLY matches the whole reply: code, enhanced code and text
		for i, want in ipairs(m.smtpreply or {}) do
			local hit = mt.eom_check(conn, MT_SMTPREPLY, want[1], want[2], want[3])
			say("msg", n, "smtpreply", i, tostring(hit))
		end
	end
	for _, name in ipairs(m.collect) do
		say("msg", n, "insert", name, tostring(mt.eom_check(conn, MT_HDRINSERT, name)))
		for i = 0, 9 do
			local v = mt.getheader(conn, name, i)
			if v == nil then
				break
			end
			say("msg", n, "header", name, i, hex(v))
		end
	end
	for _, name in ipairs(m.change) do
		say("msg", n, "change", name, tostring(mt.eom_check(conn, MT_HDRCHANGE, name)))
		say("msg", n, "delete", name, tostring(mt.eom_check(conn, MT_HDRDELETE, name)))
	end
	if m.abort then
		ok(mt.abort(conn), "mt.abort()")
	end
end
ok(mt.disconnect(conn, true), "mt.disconnect()")
say("done")
