-- Queue the SMS send of a pending escalation if it is due, at most once.
-- KEYS[1] the record; KEYS[2] the escalation index; KEYS[3] the delivery stream.
-- ARGV[1] 'push_timeout' (due only at its time) or 'push_failed' (at once);
-- ARGV[2] now; ARGV[3] '1' to queue the SMS send on the stream in the same step.
-- Returns nil if nothing was escalated, else HGETALL with the new send last.
-- The record leaves the escalation index here, with its escalation or once it has
-- none left to make (gone, final, acknowledged); one not yet due is listed again at
-- its own time.
local f = redis.call('HMGET', KEYS[1], 'st', 'ex', 'n', 'ea')
local now = tonumber(ARGV[2])
if not f[1] or status(f[1], f[2], now) ~= 'pending' or not f[4] then
  redis.call('ZREM', KEYS[2], KEYS[1])
  return false
end
if ARGV[1] == 'push_timeout' and now < tonumber(f[4]) then
  redis.call('ZADD', KEYS[2], tonumber(f[4]), KEYS[1])
  return false
end
redis.call('HDEL', KEYS[1], 'ea')
redis.call('ZREM', KEYS[2], KEYS[1])
local n = tonumber(f[3]) + 1
redis.call('HSET', KEYS[1], 'n', n, n .. 'c', 'sms', n .. 'e', ARGV[1], n .. 's', 'queued', n .. 'q', now)
if ARGV[3] == '1' then enqueue(KEYS[3], KEYS[1], n, 'sms') end
return redis.call('HGETALL', KEYS[1])
