-- SetupPolicyScript: internal mail marked "X-No-DKIM: yes" is passed on untouched
-- (no signature, no verification); anything else is handled as the tables say.
-- A value comes as it follows the colon, blank included (" yes").
local mark = odkim.get_header(ctx, "X-No-DKIM", 0)
if odkim.internal_ip(ctx) == 1 and mark ~= nil and string.match(string.lower(mark), "^%s*yes%s*$") then
  odkim.set_result(ctx, SMFIS_ACCEPT)
end
