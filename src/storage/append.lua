-- Appends events to one profile's timeline, atomically, and applies
-- retention. Every key is the profile's (one hash tag, one cluster slot).
-- The same script takes in a merged profile's events ("merge mode"), so a
-- merge counts events exactly as appends do.
--
-- KEYS[1] timeline  ZSET  score = occurred_at (µs), member = encoded event
-- KEYS[2] ids       HASH  event_id -> initiator digit .. channel
-- KEYS[3] summary   HASH  first, last, c:<ch>, k:<ch>, t:<ch>, lc, lct, lk,
--                         lkt, tz, tzt
-- KEYS[4] contacts  ZSET  score = occurred_at, member = packed contact
--                         (event_id first, see codec::pack_contact)
-- KEYS[5] cids      HASH  event_id -> packed contact; field "" holds the
--                         contact version (bumped on every new contact)
-- KEYS[6] idents    HASH  type US value -> first seen (µs) US first channel
-- KEYS[7] merges    HASH  absorbed profile id -> merge instant (µs)
-- KEYS[8] alias     STRING "done:<survivor>" or "pending:<survivor>" once
--                          this profile is merged away
-- KEYS[9] journeys  HASH  journey -> state JSON, "" -> version (see
--                         journey_writes.lua, prepended to this script,
--                         as contact_trim.lua, merge_rules.lua and
--                         profile_expiry.lua are)
-- ARGV[1] cutoff (µs): events older than this are removed
-- ARGV[2] max events (and contacts) held
-- ARGV[3] ttl (ms) for all keys but the alias
-- ARGV[4] number of events, ARGV[5] number of identity entries,
-- ARGV[6] number of reservations
-- ARGV[7] merge mode: the absorbed profile id ("" for a plain append)
-- ARGV[8] merge instant (µs), then the absorbed profile's own merges, each
--         as RS absorbed id US instant; ARGV[9] unique identity types joined by US;
-- ARGV[10] most identities a profile may hold; ARGV[11] the absorbed
--          profile's first seen ("" if none); ARGV[12] the version of
--          the journey states the write set was computed from ("": none)
-- then per event (8): score, event_id, channel, initiator ("1" customer,
--   "2" company), encoded event, packed contact ("" unless the company
--   initiated it), timezone attribute ("" if none), identities (type US
--   value, joined by RS)
-- then per identity entry (2): type US value, first seen US channel
-- then per reservation (2): score, packed contact (in merge mode, every
--   entry of the absorbed profile's contact index: one whose id the
--   survivor holds is left out)
-- then the journey write set (journey_writes.lua) unless ARGV[12] is "";
--   in merge mode, the journeys the absorbed profile's states carry over
--   and the listings and deadlines it leaves
-- Returns the alias (a string) when the profile was merged away, writing
-- nothing; {"refused", reason} when a merge would break a rule;
-- {"stale", fields...} when the journey states moved on, writing nothing;
-- {"held", positions...} when the journey write set changes anything and
-- some events are held already, writing nothing (below);
-- otherwise one integer per event: 1 stored, 0 duplicate, followed by the
-- identities and merged profiles whose keys to push when the profile's
-- expiry was pushed (profile_expiry.lua), and "again" when a merge run
-- again left its journey write set (below).
local timeline, ids, summary, contacts, cids, idents, merges, alias, journeys =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local US, RS = '\31', '\30'

local redirect = redis.call('GET', alias)
if redirect then
  return redirect
end
-- Instants stay strings: Lua turns a number back into text with 14
-- significant digits, which would lose microseconds.
local cutoff = ARGV[1]
local max_events = tonumber(ARGV[2])
local ttl = ARGV[3]
local n_events, n_idents, n_reservations = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local merging = ARGV[7]
local first_event = 13
local first_ident = first_event + 8 * n_events
local first_reservation = first_ident + 2 * n_idents
local first_journey_write = first_reservation + 2 * n_reservations

-- Merge mode: refuse, before any write, a merge that would give the
-- profile two values of a unique type or too many identities
-- (merge_rules.lua, prepended). First: a merge refused is refused
-- whatever became of the survivor's journey states.
if merging ~= '' then
  local refusal = rules_refusal(ARGV[9], tonumber(ARGV[10]), function(consider)
    for _, packed in ipairs(redis.call('HKEYS', idents)) do consider(packed) end
    for i = first_ident, first_reservation - 1, 2 do consider(ARGV[i]) end
  end)
  if refusal then return refusal end
end

local journey_version = ARGV[12]
-- Merge mode run again after its first run landed: a merge's write set
-- starts with the state field "~carried:<absorbed>" = the version of the
-- absorbed profile's states it carried (fenced, they cannot change until
-- the merge ends). Found already written, that run carried the journeys,
-- so this one's write set (computed from states that may hold them) is
-- left, and the answer ends with "again". A later merge of the same
-- profile (unlinked meanwhile) carries states of another version.
local again = false
if merging ~= '' and journey_version ~= '' and tonumber(ARGV[first_journey_write + 1]) > 0 then
  local field, carried = ARGV[first_journey_write + 3], ARGV[first_journey_write + 4]
  if string.sub(field, 1, 9) == '~carried:' and redis.call('HGET', journeys, field) == carried then
    journey_version = ''
    again = true
  end
end
local stale = journeys_stale(journeys, journey_version)
if stale then return stale end

-- A duplicate must not move journeys (an event of a profile merged in, or
-- an id sent again with new content: the service's states do not know
-- it): when the write set changes anything, events already held are
-- answered before any write, {"held", position...} (0-based), and the
-- service computes the write set again without them.
if journey_version ~= '' and ARGV[first_journey_write] == '1' then
  local held = {}
  for i = first_event, first_ident - 1, 8 do
    if redis.call('HEXISTS', ids, ARGV[i + 1]) == 1 then
      held[#held + 1] = (i - first_event) / 8
    end
  end
  if #held > 0 then return {'held', unpack(held)} end
end

local function split(s, sep)
  local parts = {}
  local start = 1
  while true do
    local at = string.find(s, sep, start, true)
    if not at then
      parts[#parts + 1] = string.sub(s, start)
      return parts
    end
    parts[#parts + 1] = string.sub(s, start, at - 1)
    start = at + 1
  end
end


local function min_field(field, value)
  local current = tonumber(redis.call('HGET', summary, field))
  if current == nil or tonumber(value) < current then
    redis.call('HSET', summary, field, value)
  end
end

-- The id of a stored event: its encoding starts with field 1 (0x0a, a varint
-- length of one or two bytes since ids are at most 128 bytes, the id).
local function event_id_of(body)
  local len = string.byte(body, 2)
  if len < 128 then
    return string.sub(body, 3, 2 + len)
  end
  len = (len - 128) + string.byte(body, 3) * 128
  return string.sub(body, 4, 3 + len)
end

local function forget(body)
  local id = event_id_of(body)
  local meta = redis.call('HGET', ids, id)
  redis.call('HDEL', ids, id)
  if not meta then
    return
  end
  local channel = string.sub(meta, 2)
  local counter = (string.sub(meta, 1, 1) == '1' and 'c:' or 'k:') .. channel
  redis.call('HINCRBY', summary, counter, -1)
  local held = redis.call('HMGET', summary, 'c:' .. channel, 'k:' .. channel)
  if (tonumber(held[1]) or 0) + (tonumber(held[2]) or 0) <= 0 then
    redis.call('HDEL', summary, 'c:' .. channel, 'k:' .. channel, 't:' .. channel)
  end
end

local touched_identities = false
local function record_identity(packed, seen)
  local current = redis.call('HGET', idents, packed)
  if not current then
    redis.call('HSET', idents, packed, seen)
    touched_identities = true
    return
  end
  -- The earliest sighting wins (a merge may bring an earlier one); at the
  -- same instant an event's channel beats a bare link's empty one.
  local sep = string.find(current, US, 1, true)
  local new_sep = string.find(seen, US, 1, true)
  if not (sep and new_sep) then return end
  local old_at, new_at = tonumber(string.sub(current, 1, sep - 1)), tonumber(string.sub(seen, 1, new_sep - 1))
  if new_at < old_at or (new_at == old_at and sep == #current and new_sep < #seen) then
    redis.call('HSET', idents, packed, seen)
    touched_identities = true
  end
end

-- Keys written here that not every stored event writes (see the expiry
-- at the end), by their KEYS index.
local touched = {}

local result = {}
for i = first_event, first_ident - 1, 8 do
  local score, id, channel, initiator, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local contact, tz, event_identities = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  if redis.call('HSETNX', ids, id, initiator .. channel) == 0 then
    result[#result + 1] = 0
  else
    redis.call('ZADD', timeline, score, body)
    -- The summary's instants in one read and one write.
    local latest = initiator == '1' and 'lct' or 'lkt'
    local held = redis.call('HMGET', summary, 'first', 'last', 't:' .. channel, latest, 'tzt')
    local at = tonumber(score)
    local changes = {}
    local function later(i) return held[i] == false or at > tonumber(held[i]) end
    if held[1] == false or at < tonumber(held[1]) then
      changes[#changes + 1] = 'first'; changes[#changes + 1] = score
    end
    if later(2) then changes[#changes + 1] = 'last'; changes[#changes + 1] = score end
    if later(3) then changes[#changes + 1] = 't:' .. channel; changes[#changes + 1] = score end
    if later(4) then
      changes[#changes + 1] = latest; changes[#changes + 1] = score
      changes[#changes + 1] = initiator == '1' and 'lc' or 'lk'; changes[#changes + 1] = body
    end
    if tz ~= '' and later(5) then
      changes[#changes + 1] = 'tzt'; changes[#changes + 1] = score
      changes[#changes + 1] = 'tz'; changes[#changes + 1] = tz
    end
    if #changes > 0 then redis.call('HSET', summary, unpack(changes)) end
    redis.call('HINCRBY', summary, (initiator == '1' and 'c:' or 'k:') .. channel, 1)
    if contact ~= '' then
      -- A reservation made under this id becomes the contact itself.
      local reserved = redis.call('HGET', cids, id)
      if reserved then redis.call('ZREM', contacts, reserved) end
      redis.call('ZADD', contacts, score, contact)
      redis.call('HSET', cids, id, contact)
      redis.call('HINCRBY', cids, '', 1)
      touched[4], touched[5] = true, true
    end
    if event_identities ~= '' then
      for _, packed in ipairs(split(event_identities, RS)) do
        record_identity(packed, score .. US .. channel)
      end
    end
    result[#result + 1] = 1
  end
end

for i = first_ident, first_reservation - 1, 2 do
  record_identity(ARGV[i], ARGV[i + 1])
end
for i = first_reservation, first_reservation + 2 * n_reservations - 1, 2 do
  local packed = ARGV[i + 1]
  local id = contact_id_of(packed)
  local held = redis.call('HGET', cids, id)
  -- An event's contact (carried by a merge) replaces a reservation of its
  -- id, as the event itself would.
  if held and contact_reserved(held) and not contact_reserved(packed) then
    redis.call('ZREM', contacts, held)
    held = false
  end
  if not held then
    redis.call('ZADD', contacts, ARGV[i], packed)
    redis.call('HSET', cids, id, packed)
    touched[4], touched[5] = true, true
  end
end
if touched_identities then touched[6] = true end
if merging ~= '' then
  -- The absorbed profile's history comes along: the survivor holds the
  -- data of every profile it names.
  local history = split(ARGV[8], RS)
  redis.call('HSET', merges, merging, history[1])
  for i = 2, #history do
    local sep = string.find(history[i], US, 1, true)
    if sep then
      redis.call('HSETNX', merges, string.sub(history[i], 1, sep - 1), string.sub(history[i], sep + 1))
    end
  end
  redis.call('HINCRBY', cids, '', 1)
  touched[5], touched[7] = true, true
  if ARGV[11] ~= '' then min_field('first', ARGV[11]) end
end

local old = redis.call('ZRANGEBYSCORE', timeline, '-inf', '(' .. cutoff)
for _, body in ipairs(old) do forget(body) end
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', timeline, '-inf', '(' .. cutoff)
end
local excess = redis.call('ZCARD', timeline) - max_events
if excess > 0 then
  for _, body in ipairs(redis.call('ZRANGE', timeline, 0, excess - 1)) do forget(body) end
  redis.call('ZREMRANGEBYRANK', timeline, 0, excess - 1)
end

trim_contacts(contacts, cids, cutoff, max_events)

journeys_write(journeys, journey_version, first_journey_write, ttl)

-- Expiry (profile_expiry.lua, prepended): the timeline is written by
-- every stored event.
push_profile_expiry(timeline, ttl, touched, result)
if again then result[#result + 1] = 'again' end
return result
