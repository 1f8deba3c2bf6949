-- dkimd milter codec interop: OpenDKIM's miltertest plays the MTA against dkimd.server.
--
-- Globals given with -D: port (TCP port of the filter on 127.0.0.1), version and
-- steps (what to offer in option negotiation: 6/0x1FFFFF like Postfix's default,
-- 2/0x7F like Postfix with milter_protocol = 2), leadspc (1 if the filter is expected
-- to agree to SMFIP_HDR_LEADSPC: header values then carry their leading space).
--
-- The filter under test (tests/interop/test_miltertest_codec.py) inserts
-- "X-Dkimd-Test: queue=<macro i>" at index 0 and adds "X-Dkimd-Count: <n>" at the
-- end of each message, then continues.

-- miltertest exits 1 on error() without printing the message: echo it first.
local function fail(what)
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
		fail(what .. ": " .. err)
	end
end

conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
check(conn ~= nil, "mt.connect() failed")

-- miltertest(8) documents mt.negotiate(conn, version, actions, steps), but its source
-- (miltertest.c mt_negotiate) reads argument 3 as the protocol steps and argument 4 as
-- the actions. Offer all actions, as Postfix does (0x1FF).
ok(mt.negotiate(conn, tonumber(version), tonumber(steps), 511), "mt.negotiate()")
check(mt.test_action(conn, SMFIF_ADDHDRS), "SMFIF_ADDHDRS not negotiated")
check(not mt.test_action(conn, SMFIF_CHGBODY), "SMFIF_CHGBODY negotiated, never requested")

ok(mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.com", "{daemon_name}", "miltertest"),
	"mt.macro(connect)")
ok(mt.conninfo(conn, "client.example.com", "192.0.2.1"), "mt.conninfo()")
check(mt.getreply(conn) == SMFIR_CONTINUE, "connect: no continue")
ok(mt.helo(conn, "client.example.com"), "mt.helo()")
check(mt.getreply(conn) == SMFIR_CONTINUE, "helo: no continue")

local sp = ""
if tonumber(leadspc) == 1 then
	sp = " "
end
check(mt.test_option(conn, SMFIP_HDR_LEADSPC) == (sp == " "), "unexpected SMFIP_HDR_LEADSPC")

for n = 1, 2 do
	local qid = "QID" .. n
	ok(mt.macro(conn, SMFIC_MAIL, "i", qid, "{auth_authen}", "alice"), "mt.macro(mail)")
	ok(mt.mailfrom(conn, "<sender@example.org>", "SIZE=100"), "mt.mailfrom()")
	check(mt.getreply(conn) == SMFIR_CONTINUE, "mail: no continue")
	ok(mt.rcptto(conn, "<rcpt@example.net>"), "mt.rcptto()")
	check(mt.getreply(conn) == SMFIR_CONTINUE, "rcpt: no continue")
	ok(mt.header(conn, "From", "Sender <sender@example.org>"), "mt.header(From)")
	ok(mt.header(conn, "Subject", "interop " .. n), "mt.header(Subject)")
	ok(mt.eoh(conn), "mt.eoh()")
	ok(mt.bodystring(conn, "Hello from miltertest.\r\n"), "mt.bodystring()")
	ok(mt.bodyrandom(conn, 100000), "mt.bodyrandom()")
	ok(mt.eom(conn), "mt.eom()")
	check(mt.getreply(conn) == SMFIR_CONTINUE, "eom: no continue")
	check(mt.eom_check(conn, MT_HDRINSERT, "X-Dkimd-Test"), "X-Dkimd-Test not inserted")
	check(mt.eom_check(conn, MT_HDRINSERT, "X-Dkimd-Test", sp .. "queue=" .. qid, 0),
		"X-Dkimd-Test: wrong value or index")
	check(mt.eom_check(conn, MT_HDRADD, "X-Dkimd-Count", sp .. tostring(n)),
		"X-Dkimd-Count not added")
	ok(mt.abort(conn), "mt.abort()")
end

-- an SMTP command the MTA did not recognise, then a polite quit
if tonumber(version) >= 3 then
	ok(mt.unknown(conn, "XYZZY"), "mt.unknown()")
	check(mt.getreply(conn) == SMFIR_CONTINUE, "unknown: no continue")
end
ok(mt.disconnect(conn, true), "mt.disconnect()")
mt.echo("dkimd-miltertest-ok")
