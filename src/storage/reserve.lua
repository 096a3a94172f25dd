-- Records a reserved contact if the customer's contact index is still at
-- the version the caller decided on (compare-and-set): two engines racing
-- for the last allowed contact cannot both record one.
--
-- KEYS[1] contacts  ZSET (see append.lua)
-- KEYS[2] cids      HASH, field "" = contact version
-- KEYS[3] alias     STRING, set once the profile is merged away
-- ARGV[1] expected version, ARGV[2] score (µs), ARGV[3] reservation id,
-- ARGV[4] packed contact, ARGV[5] ttl (ms), ARGV[6] cutoff (µs) and
-- ARGV[7] most contacts held: the retention an append enforces (with
-- contact_trim.lua, prepended), so that reservations alone (exempt ones
-- are always allowed) cannot grow the index
-- Returns 1 when recorded, 0 when the version moved, -1 when the profile
-- was merged away (the caller follows the merge and decides again).
local contacts, cids = KEYS[1], KEYS[2]
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local version = tonumber(redis.call('HGET', cids, '')) or 0
if version ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', contacts, ARGV[2], ARGV[4])
redis.call('HSET', cids, ARGV[3], ARGV[4])
redis.call('HINCRBY', cids, '', 1)
trim_contacts(contacts, cids, ARGV[6], tonumber(ARGV[7]))
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', contacts) < ttl then redis.call('PEXPIRE', contacts, ttl) end
if redis.call('PTTL', cids) < ttl then redis.call('PEXPIRE', cids, ttl) end
return 1
