-- SetupPolicyScript: mail to several recipients (a list expansion) is signed with l=, so
-- that a list footer added downstream does not break the signature. The SigningTable
-- still chooses the keys.
if odkim.rcpt_count(ctx) > 1 then
  odkim.use_ltag(ctx)
end
