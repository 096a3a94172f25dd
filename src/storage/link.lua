-- Records identities on a profile, once their index keys point at it (the
-- service claimed them with SET NX just before), if the profile may hold
-- them all with what it holds: checked here, where the profile's
-- identities live, so two links that each pass the merge rules cannot
-- together break them (merge_rules.lua, prepended).
--
-- KEYS[1] idents  HASH  type US value -> first seen (µs) US first channel
-- ARGV[1] unique identity types joined by US; ARGV[2] most identities a
-- profile may hold; ARGV[3] the profile's own customer id as an identity
-- (type US value; "" for an anonymous profile); ARGV[4] first seen value;
-- ARGV[5] ttl (ms) of the hash; from ARGV[6] the identities to record.
-- Returns 1, or {"refused", reason} having written nothing.
local held = redis.call('HKEYS', KEYS[1])
local holds = {}
for _, packed in ipairs(held) do holds[packed] = true end
if ARGV[3] ~= '' then holds[ARGV[3]] = true end
local adds = false
for i = 6, #ARGV do
  if not holds[ARGV[i]] then adds = true end
end
-- Linking again what the profile holds adds nothing, and is never refused.
if adds then
  local refusal = rules_refusal(ARGV[1], tonumber(ARGV[2]), function(consider)
    for packed in pairs(holds) do consider(packed) end
    for i = 6, #ARGV do consider(ARGV[i]) end
  end)
  if refusal then return refusal end
end
for i = 6, #ARGV do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
