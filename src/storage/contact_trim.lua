-- The contact index's retention, shared by the append and reserve scripts
-- (prepended to both). A contact index is a ZSET of packed contacts (see
-- append.lua) beside a HASH of their ids.

-- The event id a packed contact starts with.
local function contact_id_of(packed)
  local sep = string.find(packed, '\31', 1, true)
  return sep and string.sub(packed, 1, sep - 1) or packed
end

-- Whether a packed contact is a reservation (its kind, the second field:
-- "r" or "R"; an event's is "e" or "E").
local function contact_reserved(packed)
  local sep = string.find(packed, '\31', 1, true)
  local kind = sep and string.sub(packed, sep + 1, sep + 1)
  return kind == 'r' or kind == 'R'
end

-- Removes contacts before `cutoff` (µs, kept a string: Lua's numbers
-- would lose microseconds), then the oldest past `max`; their ids leave
-- `cids` where they still name those entries.
local function trim_contacts(contacts, cids, cutoff, max)
  local function forget(members)
    for _, packed in ipairs(members) do
      local id = contact_id_of(packed)
      if redis.call('HGET', cids, id) == packed then redis.call('HDEL', cids, id) end
    end
  end
  local old = redis.call('ZRANGEBYSCORE', contacts, '-inf', '(' .. cutoff)
  if #old > 0 then
    forget(old)
    redis.call('ZREMRANGEBYSCORE', contacts, '-inf', '(' .. cutoff)
  end
  local excess = redis.call('ZCARD', contacts) - max
  if excess > 0 then
    forget(redis.call('ZRANGE', contacts, 0, excess - 1))
    redis.call('ZREMRANGEBYRANK', contacts, 0, excess - 1)
  end
end
