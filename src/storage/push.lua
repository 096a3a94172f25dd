-- Pushes the expiry of a key that leads to a profile from another slot, if
-- it still leads there: an identity's index key holding the profile's id,
-- or a merged profile's alias once the merge is done ("done:" and where it
-- leads, which may be an earlier survivor). A key moved meanwhile (an
-- unlink and a link elsewhere, a merge fence still "pending:") is left as
-- it is.
--
-- KEYS[1] the key; ARGV[1] what it must hold, or with ARGV[2] = "prefix"
-- how it must begin; ARGV[3] its new expiry (ms).
-- Returns 1 when pushed, else 0.
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
if held == ARGV[1] or (ARGV[2] == 'prefix' and string.sub(held, 1, #ARGV[1]) == ARGV[1]) then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
