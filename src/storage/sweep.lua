-- Writes a sweep's journey update for one profile (the drops the service
-- computed), if the profile's journey states are still at the version the
-- service read: an instance that lost the race to another writes nothing,
-- so each drop is counted once.
--
-- KEYS[1] the profile's journey states hash; KEYS[2] its alias
-- ARGV[1] expected version; ARGV[2] ttl (ms); from ARGV[3] the write set
-- Returns {"merging"} when the profile is being merged (fenced: its
-- journeys go to the survivor with the merge), writing nothing. A profile
-- merged away has no states left: its due deadlines just go.
local alias = redis.call('GET', KEYS[2])
if alias and string.sub(alias, 1, 8) == 'pending:' then return {'merging'} end
local stale = journeys_stale(KEYS[1], ARGV[1])
if stale then return stale end
journeys_write(KEYS[1], ARGV[1], 3, ARGV[2])
return {}
