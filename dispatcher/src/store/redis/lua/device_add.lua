-- Add a device to a subscriber, or refresh it if its token is known.
-- KEYS[1] the subscriber. ARGV[1] platform; ARGV[2] token; ARGV[3] the device's
-- line; ARGV[4] devices allowed. Devices are lines 'platform\ttoken\tapp\tadded', then
-- '\talgorithm:key' when the device enrolled a key (replaced with its line).
-- Returns nil if unknown, else {1 if it fit else 0, HGETALL}.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local dv = redis.call('HGET', KEYS[1], 'dv') or ''
local head = ARGV[1] .. '\t' .. ARGV[2] .. '\t'
local out, found = {}, false
for line in string.gmatch(dv, '[^\n]+') do
  if string.sub(line, 1, #head) == head then
    table.insert(out, ARGV[3])
    found = true
  else
    table.insert(out, line)
  end
end
if not found then
  if #out >= tonumber(ARGV[4]) then
    return {0, redis.call('HGETALL', KEYS[1])}
  end
  table.insert(out, ARGV[3])
end
redis.call('HSET', KEYS[1], 'dv', table.concat(out, '\n'))
return {1, redis.call('HGETALL', KEYS[1])}
