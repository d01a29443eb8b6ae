-- miltertest(8) script for sealgate's milter (run by tests/integration/milter.rs):
--   miltertest -D port=PORT -s tests/milter/session.lua
-- sealgate runs with SEALGATE_SECURE_DOMAINS=secure.example.org=example.org,vault.example.net
-- and an expired certificate for expired@example.org in its key store.
--
-- miltertest never sends macros on its own: every TLS and SASL macro is scripted here, the way
-- Postfix sends them. Any unexpected reply fails the script, so miltertest exits non-zero.
--
-- Traps (OpenDKIM miltertest 1.6.0):
-- - mt.negotiate(conn, version, steps, actions): the code reads the protocol steps before
--   the actions, unlike the manual; nil everywhere means libmilter's defaults.
-- - A step the filter declined in negotiation (SMFIP_NOBODY) makes its mt.* call raise a
--   Lua error rather than return one: pcall it.
-- - mt.eom_check(conn, MT_HDRCHANGE, name, value, index) reads the index from the value's
--   position; MT_HDRDELETE(name, index) is the reliable way to check deletions.
-- - The message of an error() is printed only when it is the one value left on Lua's stack,
--   which it often is not: fail() echoes it first.

local SECURE = "<user@secure.example.org>"
local BARE_SECURE = "<boss@vault.example.net>"
local NORMAL = "<other@example.org>"
local EXPIRED = "<expired@example.org>"
local EXPIRED_TWIN = "<expired@secure.example.org>"

-- Reports `message` on stdout, then stops the script (miltertest exits 1).
local function fail(message)
	mt.echo("FAILED: " .. message)
	error(message, 2)
end

local function reply_name(code)
	if code == nil or code == 0 then
		return "(none)"
	end
	return string.format("'%s'", string.char(code))
end

-- Fails unless the mt.* call returned nil (success).
local function ok(what, err)
	if err ~= nil then
		fail(what .. " failed: " .. tostring(err))
	end
end

-- Fails unless the last reply was `want`.
local function expect(conn, what, want)
	local got = mt.getreply(conn)
	if got ~= want then
		fail(string.format("%s: got reply %s, expected %s", what, reply_name(got),
			reply_name(want)))
	end
end

local function open(label)
	mt.echo("--- " .. label)
	local conn = mt.connect("inet:" .. port .. "@127.0.0.1")
	if conn == nil then
		fail("mt.connect() to port " .. port .. " failed")
	end
	ok("negotiate", mt.negotiate(conn, nil, nil, nil))
	ok("conninfo", mt.conninfo(conn, "client.example.net", "192.0.2.10"))
	expect(conn, "conninfo", SMFIR_CONTINUE)
	return conn
end

local function helo(conn, name)
	ok("helo", mt.helo(conn, name))
	expect(conn, "helo " .. name, SMFIR_CONTINUE)
end

local function mailfrom(conn, from)
	ok("mailfrom", mt.mailfrom(conn, from))
	expect(conn, "mailfrom " .. from, SMFIR_CONTINUE)
end

local function rcpt(conn, to, want)
	ok("rcptto", mt.rcptto(conn, to))
	expect(conn, "rcptto " .. to, want)
end

local function header(conn, name, value)
	ok("header", mt.header(conn, name, value))
	expect(conn, "header " .. name, SMFIR_CONTINUE)
end

local TLS13 = { "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384",
	"{cipher_bits}", "256" }

-- 1. Negotiation: sealgate asks for what it uses and nothing else.
local conn = open("negotiation, plaintext client")
if not mt.test_option(conn, SMFIP_NOBODY) then
	fail("sealgate should decline the body (SMFIP_NOBODY)")
end
if not mt.test_action(conn, SMFIF_CHGHDRS) then
	fail("sealgate should ask to change headers (SMFIF_CHGHDRS)")
end
if not mt.test_action(conn, SMFIF_SETSYMLIST) then
	fail("sealgate should ask for its macros (SMFIF_SETSYMLIST)")
end
if mt.test_action(conn, SMFIF_ADDHDRS) or mt.test_action(conn, SMFIF_CHGBODY)
	or mt.test_action(conn, SMFIF_ADDRCPT) or mt.test_action(conn, SMFIF_DELRCPT) then
	fail("sealgate asks for actions it never uses")
end

-- 2. No TLS (no macros at HELO): secure addresses are refused at RCPT, the others pass.
helo(conn, "client.example.net")
mailfrom(conn, "<sender@example.net>")
rcpt(conn, SECURE, SMFIR_REPLYCODE)
rcpt(conn, NORMAL, SMFIR_CONTINUE)
rcpt(conn, BARE_SECURE, SMFIR_REPLYCODE)
-- An unusable key: SEALGATE_UNUSABLE_KEY=tempfail (the default) refuses it too.
rcpt(conn, EXPIRED, SMFIR_REPLYCODE)
ok("abort", mt.abort(conn))

-- A second message on the same connection after ABORT; unauthenticated, so no scrubbing.
mailfrom(conn, "<sender@example.net>")
rcpt(conn, NORMAL, SMFIR_CONTINUE)
header(conn, "Subject", "plain")
header(conn, "X-Mailer", "kept 1.0")
ok("eoh", mt.eoh(conn))
expect(conn, "eoh", SMFIR_CONTINUE)
ok("eom", mt.eom(conn))
expect(conn, "eom", SMFIR_CONTINUE)
if mt.eom_check(conn, MT_HDRDELETE) or mt.eom_check(conn, MT_HDRCHANGE) then
	fail("an unauthenticated message had its headers changed")
end
ok("disconnect", mt.disconnect(conn))

-- 3. TLS announced with the EHLO after STARTTLS (Postfix's milter_helo_macros): accepted,
-- for this and the next message of the connection, which repeats no macro.
conn = open("TLS at HELO")
helo(conn, "client.example.net")
mt.macro(conn, SMFIC_HELO, table.unpack(TLS13))
helo(conn, "client.example.net")
mailfrom(conn, "<sender@example.net>")
rcpt(conn, SECURE, SMFIR_CONTINUE)
rcpt(conn, BARE_SECURE, SMFIR_CONTINUE)
-- The secure twin's key is looked up under its mailbox (expired@example.org).
rcpt(conn, EXPIRED_TWIN, SMFIR_REPLYCODE)
ok("abort", mt.abort(conn))
mailfrom(conn, "<sender@example.net>")
rcpt(conn, SECURE, SMFIR_CONTINUE)
ok("disconnect", mt.disconnect(conn))

-- 4. A client that sends MAIL right after STARTTLS, without a second EHLO: the TLS macros
-- sealgate asks for at MAIL decide.
conn = open("TLS only at MAIL")
helo(conn, "client.example.net")
mt.macro(conn, SMFIC_MAIL, "i", "4F00D1", table.unpack(TLS13))
mailfrom(conn, "<sender@example.net>")
rcpt(conn, SECURE, SMFIR_CONTINUE)
ok("disconnect", mt.disconnect(conn))

-- 5. TLS below SEALGATE_TLS_MIN_VERSION (TLSv1.2), announced at RCPT.
conn = open("TLSv1.1")
helo(conn, "old.example.net")
mailfrom(conn, "<sender@example.net>")
mt.macro(conn, SMFIC_RCPT, "{tls_version}", "TLSv1.1", "{cipher}", "ECDHE-RSA-AES256-SHA")
rcpt(conn, SECURE, SMFIR_REPLYCODE)
rcpt(conn, NORMAL, SMFIR_CONTINUE)
ok("disconnect", mt.disconnect(conn))

-- 6. An authenticated submission ({auth_authen} at MAIL): the listed headers are deleted at
-- the end of the message, every occurrence, names compared without case; others stay.
conn = open("authenticated submission")
helo(conn, "[192.168.1.20]")
mt.macro(conn, SMFIC_MAIL, "{auth_authen}", "alice", "i", "4F00D2", table.unpack(TLS13))
mailfrom(conn, "<alice@example.org>")
rcpt(conn, "<friend@example.net>", SMFIR_CONTINUE)
header(conn, "From", "Alice <alice@example.org>")
header(conn, "X-Mailer", "Fancy Mailer 1.0")
header(conn, "Subject", "hello")
header(conn, "User-Agent", "Mozilla/5.0 Thunderbird/115.0")
header(conn, "x-mailer", "second one")
header(conn, "X-Originating-IP", "[192.168.1.20]")
ok("eoh", mt.eoh(conn))
expect(conn, "eoh", SMFIR_CONTINUE)
-- Declined in negotiation: miltertest refuses to send it.
if pcall(mt.bodystring, conn, "body\r\n") then
	fail("miltertest sent a body although sealgate declined it (SMFIP_NOBODY)")
end
ok("eom", mt.eom(conn))
expect(conn, "eom", SMFIR_CONTINUE)
local deleted = {
	{ "X-Mailer", 1 }, { "x-mailer", 2 }, { "User-Agent", 1 }, { "X-Originating-IP", 1 },
}
for _, d in ipairs(deleted) do
	if not mt.eom_check(conn, MT_HDRDELETE, d[1], d[2]) then
		fail(string.format("%s #%d was not deleted", d[1], d[2]))
	end
end
for _, kept in ipairs({ "From", "Subject" }) do
	if mt.eom_check(conn, MT_HDRCHANGE, kept) then
		fail(kept .. " was changed")
	end
end
if mt.eom_check(conn, MT_HDRADD) or mt.eom_check(conn, MT_HDRINSERT)
	or mt.eom_check(conn, MT_BODYCHANGE) then
	fail("sealgate changed more than headers")
end

-- The next message of the same (still authenticated-looking) connection comes without
-- {auth_authen}: the SASL macro is per message, so nothing is scrubbed.
mailfrom(conn, "<bob@example.net>")
rcpt(conn, NORMAL, SMFIR_CONTINUE)
header(conn, "X-Mailer", "kept")
ok("eom", mt.eom(conn))
expect(conn, "eom", SMFIR_CONTINUE)
if mt.eom_check(conn, MT_HDRDELETE) then
	fail("the unauthenticated message after an authenticated one was scrubbed")
end
ok("disconnect", mt.disconnect(conn))

mt.echo("--- all milter checks passed")
