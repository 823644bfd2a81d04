-- Remove a device. KEYS[1] the subscriber. ARGV[1] platform; ARGV[2] token.
-- Returns nil if the subject is unknown, else 1 if there was such a device, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local dv = redis.call('HGET', KEYS[1], 'dv') or ''
local head = ARGV[1] .. '\t' .. ARGV[2] .. '\t'
local out, found = {}, false
for line in string.gmatch(dv, '[^\n]+') do
  if string.sub(line, 1, #head) == head then found = true else table.insert(out, line) end
end
if not found then return 0 end
redis.call('HSET', KEYS[1], 'dv', table.concat(out, '\n'))
return 1
