-- The merge rules (domain::profile::MergeRules::conflict, in the same
-- words), checked in the profile's own slot so that two writers cannot
-- each pass them on their own and together break them. Prepended to the
-- append script (merge mode) and the link script.
--
-- `unique_types`: the identity types a profile holds one value of, joined
-- by US; `max`: the most identities it may hold; `each` is called with a
-- function to call on every identity (type US value) the profile would
-- hold, repeats allowed. Returns nil when the rules hold, else
-- {'refused', reason}.
local function rules_refusal(unique_types, max, each)
  local US = '\31'
  local unique, kinds = {}, {}
  local start = 1
  while start <= #unique_types + 1 do
    local stop = string.find(unique_types, US, start, true) or (#unique_types + 1)
    local kind = string.sub(unique_types, start, stop - 1)
    if kind ~= '' and not unique[kind] then
      unique[kind] = {}
      kinds[#kinds + 1] = kind
    end
    start = stop + 1
  end
  local all, count = {}, 0
  each(function(packed)
    if all[packed] then return end
    all[packed] = true
    count = count + 1
    local sep = string.find(packed, US, 1, true)
    if not sep then return end
    local values = unique[string.sub(packed, 1, sep - 1)]
    if values then values[#values + 1] = string.sub(packed, sep + 1) end
  end)
  -- In the types' order, as the service's check reads them.
  table.sort(kinds)
  for _, kind in ipairs(kinds) do
    local values = unique[kind]
    if #values > 1 then
      table.sort(values)
      return {'refused', kind .. ' is unique per profile but the profiles hold ' .. table.concat(values, ' and ')}
    end
  end
  if count > max then
    return {'refused', 'the merged profile would hold ' .. count ..
      ' identities, more than the limit of ' .. max}
  end
  return nil
end
