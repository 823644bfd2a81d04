-- Issue or resend, atomically.
-- KEYS[1] the dedupe entry of (number, purpose, client); KEYS[2] the candidate's
-- record; KEYS[3] the partition's escalation index; KEYS[4] its delivery stream.
-- ARGV[1] now; ARGV[2] ms to keep the record; ARGV[3] ms until it expires;
-- ARGV[4] the channel asked for; ARGV[5] the candidate's first channel;
-- ARGV[6] when its escalation is due, or ''; ARGV[7] the stream's capacity, or ''
-- when jobs are not queued here; ARGV[8] the consumer to hand the job to, or '';
-- ARGV[9..] the candidate's fields and values.
-- Returns {'created', job?}, {'resent', key, HGETALL, job?}, {'overloaded'}, or
-- {'refused', key, why, retry ms, expires}. With a stream, the send is queued in the
-- same step: no verification without its job, no job without its verification;
-- and with a consumer, the oldest unread job (see `hand_over`) comes back as `job`.
local now = tonumber(ARGV[1])
local queued = ARGV[7] ~= ''
if queued and redis.call('XLEN', KEYS[4]) >= tonumber(ARGV[7]) then
  return {'overloaded'}
end
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
    local job = false
    if queued then
      enqueue(KEYS[4], current, n, channel)
      job = hand_over(KEYS[4], ARGV[8])
    end
    return {'resent', current, redis.call('HGETALL', current), job}
  end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 9))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], KEYS[2], 'PX', ARGV[3])
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[6], KEYS[2])
end
local job = false
if queued then
  enqueue(KEYS[4], KEYS[2], 1, ARGV[5])
  job = hand_over(KEYS[4], ARGV[8])
end
return {'created', job}
