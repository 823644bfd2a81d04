-- Record a delivery report about one send; the first report stands.
-- KEYS[1] the record. ARGV[1] the send; ARGV[2] the reported state;
-- ARGV[3] '' or '=' .. error; ARGV[4] now. Returns the record as the report left
-- it (HGETALL), or false if it changed nothing.
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
local i = tonumber(ARGV[1])
if not n or i < 1 or i > n then return false end
local s = redis.call('HGET', KEYS[1], i .. 's')
if s == 'failed' or reported(s) then return false end
redis.call('HSET', KEYS[1], i .. 's', ARGV[2], i .. 'r', ARGV[4])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], i .. 'x', string.sub(ARGV[3], 2))
end
return redis.call('HGETALL', KEYS[1])
