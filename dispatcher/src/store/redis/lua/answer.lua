-- An app's verified answer to an approval request (channel 'app'): the first one
-- makes the verification final, and disarms its escalation to SMS.
-- KEYS[1] the record; KEYS[2] the escalation index.
-- ARGV[1] 'approve' or 'deny'; ARGV[2] the answering device key's thumbprint;
-- ARGV[3] now.
-- Returns nil if unknown, else {outcome, HGETALL}: 'answered' (recorded now),
-- 'not_app', or the final status it already had.
local f = redis.call('HMGET', KEYS[1], 'st', 'ex', 'ch')
if not f[1] then return false end
local now = tonumber(ARGV[3])
local s = status(f[1], f[2], now)
if s ~= 'pending' then return {s, redis.call('HGETALL', KEYS[1])} end
if f[3] ~= 'app' then return {'not_app', redis.call('HGETALL', KEYS[1])} end
local st = 'a'
if ARGV[1] == 'deny' then st = 'd' end
redis.call('HSET', KEYS[1], 'st', st, 'sa', now, 'ad', ARGV[2])
redis.call('HDEL', KEYS[1], 'ea')
redis.call('ZREM', KEYS[2], KEYS[1])
return {'answered', redis.call('HGETALL', KEYS[1])}
