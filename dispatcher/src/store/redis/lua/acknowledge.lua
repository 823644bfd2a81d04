-- The app says the push arrived: the latest push counts as delivered and the
-- escalation is disarmed (not for an approval request, which falls back when no
-- answer comes).
-- KEYS[1] the record; KEYS[2] the escalation index. ARGV[1] now.
-- Returns nil if unknown, else {outcome, HGETALL}: 'acknowledged',
-- 'already_acknowledged', 'not_push', or the final status.
local f = redis.call('HMGET', KEYS[1], 'st', 'ex', 'n', 'ak', 'ch')
if not f[1] then return false end
local now = tonumber(ARGV[1])
local s = status(f[1], f[2], now)
if s ~= 'pending' then return {s, redis.call('HGETALL', KEYS[1])} end
local push = nil
for i = tonumber(f[3]), 1, -1 do
  if redis.call('HGET', KEYS[1], i .. 'c') == 'push' then push = i; break end
end
if not push then return {'not_push', redis.call('HGETALL', KEYS[1])} end
if f[4] then return {'already_acknowledged', redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], 'ak', now)
if f[5] ~= 'app' then
  redis.call('HDEL', KEYS[1], 'ea')
  redis.call('ZREM', KEYS[2], KEYS[1])
end
if not reported(redis.call('HGET', KEYS[1], push .. 's')) then
  redis.call('HSET', KEYS[1], push .. 's', 'delivered', push .. 'r', now)
end
return {'acknowledged', redis.call('HGETALL', KEYS[1])}
