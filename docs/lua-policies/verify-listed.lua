-- ScreenPolicyScript: verify only signatures made by domains we have agreements with; the
-- others are ignored, as if absent.
local trusted = { ["example.com"] = true }

for i = 0, odkim.get_sigcount(ctx) - 1 do
  local sig = odkim.get_sighandle(ctx, i)
  local domain = odkim.sig_getdomain(sig)
  if type(domain) == "string" and not trusted[string.lower(domain)] then
    odkim.sig_ignore(sig)
  end
end
