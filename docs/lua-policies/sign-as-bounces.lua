-- SetupPolicyScript with a KeyTable and no SigningTable: sign every message with the key
-- "mailkey", in the name of the domain's bounce address (i=).
local domain = odkim.get_fromdomain(ctx)
if domain ~= nil then
  odkim.sign(ctx, "mailkey", "bounces@" .. domain)
end
