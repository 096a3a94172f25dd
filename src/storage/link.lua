-- Records identities on a profile, if the profile may hold them all with
-- what it holds: checked here, where the profile's identities live, so two
-- links that each pass the merge rules cannot together break them
-- (merge_rules.lua, prepended). Runs before the service claims the
-- identities' index keys: an identity is on the profile before any key
-- leads to it, so a racing link or event always counts it (at worst a
-- link is refused that need not have been). Those the claim then finds
-- held elsewhere are taken off again by the service.
--
-- KEYS[1] idents  HASH  type US value -> first seen (µs) US first channel
-- ARGV[1] unique identity types joined by US; ARGV[2] most identities a
-- profile may hold; ARGV[3] the profile's own customer id as an identity
-- (type US value; "" for an anonymous profile); ARGV[4] first seen value;
-- ARGV[5] ttl (ms) of the hash; from ARGV[6] the identities to record.
-- Returns {"ok", the identities this call added...}, or {"refused",
-- reason} having written nothing.
local holds = {}
for _, packed in ipairs(redis.call('HKEYS', KEYS[1])) do holds[packed] = true end
if ARGV[3] ~= '' then holds[ARGV[3]] = true end
local added, seen = {}, {}
for i = 6, #ARGV do
  if not holds[ARGV[i]] and not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    added[#added + 1] = ARGV[i]
  end
end
-- Linking again what the profile holds adds nothing, and is never refused.
if #added > 0 then
  local refusal = rules_refusal(ARGV[1], tonumber(ARGV[2]), function(consider)
    for packed in pairs(holds) do consider(packed) end
    for _, packed in ipairs(added) do consider(packed) end
  end)
  if refusal then return refusal end
end
for _, packed in ipairs(added) do
  redis.call('HSET', KEYS[1], packed, ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok', unpack(added)}
