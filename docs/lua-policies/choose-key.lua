-- A lua: SigningTable ("SigningTable lua:/etc/dkimd/choose-key.lua"): the key for a
-- sender. OpenDKIM asks with "user@domain", then "domain" (then its parents); `query`
-- holds the key asked for, the value returned is the KeyTable name (":signer" may follow).
local keys = { ["example.com"] = "com-key", ["example.org"] = "org-key" }

local domain = string.match(query, "@(.+)$") or query
return keys[string.lower(domain)]
