-- FinalPolicyScript: reject unsigned mail claiming to be from the listed domains.
-- OpenDKIM 2.11 also runs each script once when it loads it, with a NULL ctx; a final
-- script that reaches for a signature then would fail and take OpenDKIM down, so it stops
-- there (dkimd never runs a script without a message).
if tostring(ctx) == "userdata: (nil)" then return end

local protected = { ["example.com"] = true, ["example.org"] = true }

local domain = odkim.get_fromdomain(ctx)
if domain ~= nil and protected[string.lower(domain)] and odkim.get_sigcount(ctx) == 0 then
  odkim.set_reply(ctx, "550", "5.7.1", "unsigned mail from " .. domain .. " refused")
  odkim.set_result(ctx, SMFIS_REJECT)
end
