-- The expiry of a profile's keys, shared by the append and reserve scripts
-- (prepended to each). Both take the profile's keys in append.lua's order:
-- timeline, ids, summary, contacts, cids, idents, merges, alias, journeys.
--
-- A profile's keys live `ttl` after its last write, give or take 1 %.
-- Pushing every key on every call was a tenth of the append's commands;
-- instead they are all pushed to ttl + 1 % when `sentinel`'s remaining time
-- falls under ttl (an active customer: about once per 1 % of the
-- retention), and a key this call wrote that the sentinel's writes do not
-- always come with (`touched`, by KEYS index) is pushed on its own, so a
-- new key always has one. PEXPIRE on a key that does not exist does
-- nothing.
--
-- The keys that lead to the profile from other slots live as long as it
-- does: when the profile's keys are pushed, `result` gets its identities
-- ("i" type US value; not its customer id, which has no index key) and
-- the profiles merged into it ("m" id, whose alias keys lead here), and
-- the service pushes those keys too.
local function push_profile_expiry(sentinel, ttl, touched, result)
  local keep = tonumber(ttl) + math.floor(tonumber(ttl) / 100)
  if redis.call('PTTL', sentinel) < tonumber(ttl) then
    for _, k in ipairs({1, 2, 3, 4, 5, 6, 7, 9}) do
      redis.call('PEXPIRE', KEYS[k], keep)
    end
    local own = 'customer_id\31'
    for _, packed in ipairs(redis.call('HKEYS', KEYS[6])) do
      if string.sub(packed, 1, #own) ~= own then result[#result + 1] = 'i' .. packed end
    end
    for _, absorbed in ipairs(redis.call('HKEYS', KEYS[7])) do
      result[#result + 1] = 'm' .. absorbed
    end
  else
    for k in pairs(touched) do
      redis.call('PEXPIRE', KEYS[k], keep)
    end
  end
end
