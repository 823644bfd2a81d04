-- Cancel or lock a pending verification.
-- KEYS[1] the record. ARGV[1] the client; ARGV[2] 'cancel' or 'lock'; ARGV[3] now.
-- Returns nil if unknown (or another client's), else {outcome, HGETALL} where the
-- outcome is 'canceled', 'already_canceled' or 'final:' .. the status it is in.
local f = redis.call('HMGET', KEYS[1], 'cl', 'st', 'ex')
if not f[2] or not same_client(f[1], ARGV[1]) then return false end
local now = tonumber(ARGV[3])
local s = status(f[2], f[3], now)
local outcome = 'final:' .. s
if s == 'pending' and ARGV[2] == 'cancel' then
  redis.call('HSET', KEYS[1], 'st', 'c', 'sa', now)
  outcome = 'canceled'
elseif s == 'pending' then
  redis.call('HSET', KEYS[1], 'st', 'l', 'sa', now)
  outcome = 'final:locked'
elseif s == 'canceled' and ARGV[2] == 'cancel' then
  outcome = 'already_canceled'
end
return {outcome, redis.call('HGETALL', KEYS[1])}
