-- FinalPolicyScript: deliver, but mark mail whose signatures failed, for the user's filters.
if tostring(ctx) == "userdata: (nil)" then return end

local failed = {}
for i = 0, odkim.get_sigcount(ctx) - 1 do
  local sig = odkim.get_sighandle(ctx, i)
  if odkim.sig_result(sig) ~= DKIM_SIGERROR_OK then
    failed[#failed + 1] = odkim.sig_getdomain(sig)
  end
end
if #failed > 0 then
  odkim.add_header(ctx, "X-DKIM-Failed", table.concat(failed, ", "))
end
