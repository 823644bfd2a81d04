-- List up to ARGV[2] escalations due by ARGV[1] in the indexes KEYS[1..] (one
-- partition's on a cluster, every partition's on one server), in key order. They
-- stay listed: only escalate.lua takes one out, in the step that escalates it (or
-- finds it disarmed), so a pass cut short by an error loses none.
local left = tonumber(ARGV[2])
local out = {}
for _, index in ipairs(KEYS) do
  if left <= 0 then break end
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[1], 'LIMIT', 0, left)
  for _, key in ipairs(due) do table.insert(out, key) end
  left = left - #due
end
return out
