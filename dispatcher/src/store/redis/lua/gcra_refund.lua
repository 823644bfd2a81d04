-- Give one request back to each key: its TAT moves back one emission interval;
-- a key back at a full burst goes.
-- KEYS[i] one limit's key. ARGV[1] now; ARGV[1 + i] key i's emission interval.
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local back = tat - tonumber(ARGV[1 + i])
  if back <= now then
    redis.call('DEL', KEYS[i])
  else
    local ttl = math.ceil((back - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%.0f', back), 'PX', ttl)
  end
end
return 0
