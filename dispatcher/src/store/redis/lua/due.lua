-- Take up to ARGV[2] escalations due by ARGV[1] out of the indexes KEYS[1..] (one
-- partition's on a cluster, every partition's on one server), in key order.
local left = tonumber(ARGV[2])
local out = {}
for _, index in ipairs(KEYS) do
  if left <= 0 then break end
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[1], 'LIMIT', 0, left)
  if #due > 0 then
    redis.call('ZREM', index, unpack(due))
    for _, key in ipairs(due) do table.insert(out, key) end
    left = left - #due
  end
end
return out
