-- Appends events to one customer's timeline, atomically, and applies
-- retention. Every key is the customer's (one hash tag, one cluster slot).
--
-- KEYS[1] timeline  ZSET  score = occurred_at (µs), member = encoded event
-- KEYS[2] ids       HASH  event_id -> initiator digit .. channel
-- KEYS[3] summary   HASH  first, last, c:<ch>, k:<ch>, t:<ch>, lc, lct, lk,
--                         lkt, tz, tzt
-- KEYS[4] contacts  ZSET  score = occurred_at, member = packed contact
--                         (event_id first, see codec::pack_contact)
-- KEYS[5] cids      HASH  event_id -> packed contact; field "" holds the
--                         contact version (bumped on every new contact)
-- ARGV[1] cutoff (µs): events older than this are removed
-- ARGV[2] max events (and contacts) held
-- ARGV[3] ttl (ms) for all keys
-- ARGV[4..] per event: score, event_id, channel, initiator ("1" customer,
--           "2" company), encoded event, packed contact ("" unless the
--           company initiated it), timezone attribute ("" if none)
-- Returns one integer per event: 1 stored, 0 duplicate.
local timeline, ids, summary, contacts, cids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- Instants stay strings: Lua turns a number back into text with 14
-- significant digits, which would lose microseconds.
local cutoff = ARGV[1]
local max_events = tonumber(ARGV[2])
local ttl = ARGV[3]

local function max_field(field, value)
  local current = tonumber(redis.call('HGET', summary, field))
  if current == nil or tonumber(value) > current then
    redis.call('HSET', summary, field, value)
    return true
  end
  return false
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

local function contact_id_of(packed)
  local sep = string.find(packed, '\31', 1, true)
  return sep and string.sub(packed, 1, sep - 1) or packed
end

local function forget_contacts(members)
  for _, packed in ipairs(members) do
    local id = contact_id_of(packed)
    if redis.call('HGET', cids, id) == packed then redis.call('HDEL', cids, id) end
  end
end

local result = {}
for i = 4, #ARGV, 7 do
  local score, id, channel, initiator, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local contact, tz = ARGV[i + 5], ARGV[i + 6]
  if redis.call('HSETNX', ids, id, initiator .. channel) == 0 then
    result[#result + 1] = 0
  else
    local at = score
    redis.call('ZADD', timeline, score, body)
    min_field('first', at)
    max_field('last', at)
    max_field('t:' .. channel, at)
    if initiator == '1' then
      redis.call('HINCRBY', summary, 'c:' .. channel, 1)
      if max_field('lct', at) then redis.call('HSET', summary, 'lc', body) end
    else
      redis.call('HINCRBY', summary, 'k:' .. channel, 1)
      if max_field('lkt', at) then redis.call('HSET', summary, 'lk', body) end
    end
    if contact ~= '' then
      -- A reservation made under this id becomes the contact itself.
      local reserved = redis.call('HGET', cids, id)
      if reserved then redis.call('ZREM', contacts, reserved) end
      redis.call('ZADD', contacts, score, contact)
      redis.call('HSET', cids, id, contact)
      redis.call('HINCRBY', cids, '', 1)
    end
    if tz ~= '' and max_field('tzt', at) then
      redis.call('HSET', summary, 'tz', tz)
    end
    result[#result + 1] = 1
  end
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

local old_contacts = redis.call('ZRANGEBYSCORE', contacts, '-inf', '(' .. cutoff)
if #old_contacts > 0 then
  forget_contacts(old_contacts)
  redis.call('ZREMRANGEBYSCORE', contacts, '-inf', '(' .. cutoff)
end
local contact_excess = redis.call('ZCARD', contacts) - max_events
if contact_excess > 0 then
  forget_contacts(redis.call('ZRANGE', contacts, 0, contact_excess - 1))
  redis.call('ZREMRANGEBYRANK', contacts, 0, contact_excess - 1)
end

for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ttl)
end
return result
