-- Compare-and-set on one string key, the step every merge move is made
-- of: set KEYS[1] to ARGV[2] (delete it when ARGV[2] is "") if it holds
-- ARGV[1] ("" meaning absent); on success also delete KEYS[2..] (all in
-- the same slot as KEYS[1]). ARGV[3], when given, is the new value's
-- expiry (ms); without it the key has none (alias keys).
-- Returns 1 on success, otherwise the value found (or "" when absent).
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then
  return current or ''
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
for k = 2, #KEYS do
  redis.call('DEL', KEYS[k])
end
return 1
