-- Journey writes shared by the append and sweep scripts (prepended to
-- each). The service computes every journey transition from the states it
-- last read, and sends the result with the version of those states; a
-- script writes it only if the version still holds (a compare-and-set), so
-- the states, their stat counters, listings and deadlines change in the
-- same atomic step as the events that moved them.
--
-- The states hash: journey name -> state JSON; field "" -> version.
-- The write set, from ARGV[at]: "1" if it changes anything (a state, a
-- counter, the latest interactions: the append script then checks for
-- duplicates first) else "0";
-- the number of states, then (if any) the
-- new version, chosen by the service so it knows it without asking (never
-- reused, even after the hash expires: see VersionedStates::next_version),
-- then per state (journey, JSON); the number of index operations, then per
-- operation
-- (op, key, a, b): "h" HINCRBY key a b, "z" ZADD key a b (score a,
-- member b), "r" ZREM key b, "e" PEXPIREAT key a if an "h" of this call
-- created a field of key (so a new key always gets its expiry, and a day's
-- counters are not pushed again by every write: they expire at a fixed
-- instant, STATS_KEPT_DAYS after their day).
--
-- The counters, listings and deadline index are global keys (one per
-- journey and day, per listing, one deadline index), outside the
-- customer's hash slot: see the README on Redis Cluster.

-- nil when the states are still at `expected` ("" skips the check), else
-- the reply that sends the current states back: {"stale", fields...}.
local function journeys_stale(states, expected)
  if expected == '' then return nil end
  local version = redis.call('HGET', states, '') or '0'
  if version ~= expected then
    return {'stale', redis.call('HGETALL', states)}
  end
  return nil
end

local function journeys_write(states, expected, at, ttl)
  if expected == '' then return end
  at = at + 1 -- whether it moves a journey: the append script's business
  local n = tonumber(ARGV[at])
  at = at + 1
  if n > 0 then
    local fields = {'', ARGV[at]}
    at = at + 1
    for i = at, at + 2 * n - 1 do fields[#fields + 1] = ARGV[i] end
    -- A new hash (every field added, the version's among them) gets the
    -- profile's expiry here; afterwards the append script pushes it with
    -- the profile's other keys.
    if redis.call('HSET', states, unpack(fields)) == n + 1 then
      redis.call('PEXPIRE', states, ttl)
    end
  end
  at = at + 2 * n
  local ops = tonumber(ARGV[at])
  at = at + 1
  local created = {}
  for i = at, at + 4 * ops - 1, 4 do
    local op, key = ARGV[i], ARGV[i + 1]
    if op == 'h' then
      -- The new value equals the increment when the field was absent.
      if redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3]) == tonumber(ARGV[i + 3]) then
        created[key] = true
      end
    elseif op == 'z' then
      redis.call('ZADD', key, ARGV[i + 2], ARGV[i + 3])
    elseif op == 'r' then
      redis.call('ZREM', key, ARGV[i + 3])
    elseif op == 'e' then
      if created[key] then redis.call('PEXPIREAT', key, ARGV[i + 2]) end
    end
  end
end
