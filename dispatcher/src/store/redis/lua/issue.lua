-- Issue or resend, atomically.
-- KEYS[1] the dedupe entry of (number, purpose, client); KEYS[2] the candidate's
-- record; KEYS[3] the partition's escalation index.
-- ARGV[1] now; ARGV[2] ms to keep the record; ARGV[3] ms until it expires;
-- ARGV[4] the channel asked for; ARGV[5] the candidate's first channel;
-- ARGV[6] when its escalation is due, or ''; ARGV[7..] its fields and values.
-- Returns {'created'}, {'resent', key, HGETALL}, or {'refused', key, why, retry ms, expires}.
local now = tonumber(ARGV[1])
local current = redis.call('GET', KEYS[1])
if current then
  local f = redis.call('HMGET', current, 'st', 'ex', 'n', 'ms', 'cd', 'cr')
  if f[1] and status(f[1], f[2], now) == 'pending' then
    local n = tonumber(f[3])
    -- `auto` keeps to where the code went last (after an escalation, SMS).
    local channel = ARGV[5]
    if ARGV[4] == 'auto' and channel == 'push' then
      channel = redis.call('HGET', current, n .. 'c') or channel
    end
    if n >= tonumber(f[4]) then
      return {'refused', current, 'max_sends', 0, f[2]}
    end
    local last = tonumber(redis.call('HGET', current, n .. 'q') or f[6])
    local ready = last + tonumber(f[5])
    if now < ready then
      return {'refused', current, 'cooldown', ready - now, f[2]}
    end
    n = n + 1
    redis.call('HSET', current, 'n', n, n .. 'c', channel, n .. 's', 'queued', n .. 'q', now)
    return {'resent', current, redis.call('HGETALL', current)}
  end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], KEYS[2], 'PX', ARGV[3])
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[6], KEYS[2])
end
return {'created'}
