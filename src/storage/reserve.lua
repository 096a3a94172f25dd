-- Records a reserved contact if the customer's contact index is still at
-- the version the caller decided on (compare-and-set): two engines racing
-- for the last allowed contact cannot both record one.
--
-- KEYS: the profile's keys in append.lua's order (timeline, ids, summary,
-- contacts, cids, idents, merges, alias, journeys); this script writes
-- KEYS[4] contacts and KEYS[5] cids (field "" = contact version), reads
-- KEYS[8] alias, and pushes the expiry of them all (profile_expiry.lua).
-- ARGV[1] expected version, ARGV[2] score (µs), ARGV[3] reservation id,
-- ARGV[4] packed contact, ARGV[5] ttl (ms), ARGV[6] cutoff (µs) and
-- ARGV[7] most contacts held: the retention an append enforces (with
-- contact_trim.lua, prepended), so that reservations alone (exempt ones
-- are always allowed) cannot grow the index
-- Returns {1, leads...} when recorded (the leads as the append script
-- answers them: keys to push when the profile's were pushed), 0 when the
-- version moved, -1 when the profile was merged away (the caller reads
-- again, through the merge, and decides again), -2 when the profile holds
-- the id already.
--
-- A reservation keeps the whole profile alive, as an append does: a
-- customer the company only contacts stays found by the identities its
-- contacts were checked by, as long as those contacts count.
local contacts, cids = KEYS[4], KEYS[5]
if redis.call('EXISTS', KEYS[8]) == 1 then
  return -1
end
local version = tonumber(redis.call('HGET', cids, '')) or 0
if version ~= tonumber(ARGV[1]) then
  return 0
end
-- An id the profile already holds, an event's or a contact's the caller's
-- read did not return (the version is the one read, so any contact it
-- could return, it did): recorded, the reservation would count until it
-- left the window, an event with its id being a duplicate.
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 or redis.call('HEXISTS', cids, ARGV[3]) == 1 then
  return -2
end
redis.call('ZADD', contacts, ARGV[2], ARGV[4])
redis.call('HSET', cids, ARGV[3], ARGV[4])
redis.call('HINCRBY', cids, '', 1)
trim_contacts(contacts, cids, ARGV[6], tonumber(ARGV[7]))
-- The contacts are the sentinel; the index of ids always comes with them.
local result = {1}
push_profile_expiry(contacts, ARGV[5], {[5] = true}, result)
return result
