-- Issue or resend, atomically, deciding the request's limits in the same step.
-- KEYS[1] the dedupe entry of (number, purpose, client); KEYS[2] the candidate's
-- record; KEYS[3] the partition's escalation index; KEYS[4] its delivery stream;
-- KEYS[5..] the limits' keys: the gate's, the charge's, the fallback's; then, when
-- the candidate has a subject, the subject's index in this partition.
-- ARGV[1] now; ARGV[2] ms to keep the record; ARGV[3] ms until it expires;
-- ARGV[4] the channel asked for; ARGV[5] the candidate's first channel;
-- ARGV[6] when its escalation is due, or ''; ARGV[7] the stream's capacity, or ''
-- when jobs are not queued here; ARGV[8] the consumer to hand the job to, or '';
-- ARGV[9] the limits' time in µs, or '' when no limits are decided here;
-- ARGV[10], [11], [12] how many keys the gate, the charge and the fallback have;
-- ARGV[13] the position in the charge of the reserved share whose refusal falls
-- back, or 0; then each limit key's emission interval and tolerance (see
-- gcra_lib.lua); then the candidate's fields and values.
-- Returns {'created', job?}, {'resent', key, HGETALL, job?}, {'overloaded'},
-- {'limited', key position, wait µs}, or {'refused', key, why, retry ms, expires}.
-- Limits come first (as when a limiter is asked before the store), and are
-- charged only when a code is sent: a refusal, a full queue or a resend too soon
-- costs nothing. With a stream, the send is queued in the same step: no
-- verification without its job, no job without its verification; and with a
-- consumer, the oldest unread job (see `hand_over`) comes back as `job`.
local now = tonumber(ARGV[1])
local gate, nc, nf = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local fields = 14 + 2 * (gate + nc + nf)
local charge_from, charge_tats, lnow = 0, nil, 0
if ARGV[9] ~= '' then
  lnow = tonumber(ARGV[9])
  local k, a = 5, 13
  local w, wait = gcra_decide(k, gate, a, lnow)
  if w > 0 then return {'limited', k - 5 + w, string.format('%.0f', wait)} end
  k, a = k + gate, a + 2 * gate
  local tats
  w, wait, tats = gcra_decide(k, nc, a, lnow)
  if w > 0 and w == tonumber(ARGV[13]) and nf > 0 then
    k, a = k + nc, a + 2 * nc
    w, wait, tats = gcra_decide(k, nf, a, lnow)
  end
  if w > 0 then return {'limited', k - 5 + w, string.format('%.0f', wait)} end
  charge_from, charge_tats = k, tats
end
local function charge()
  if charge_tats then gcra_charge(charge_from, charge_tats, lnow) end
end

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
    charge()
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
charge()
redis.call('HSET', KEYS[2], unpack(ARGV, fields))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], KEYS[2], 'PX', ARGV[3])
-- The subject's index: scored by when each record goes, trimmed of the gone and to
-- the newest SUBJECT_KEPT, living as long as its longest-kept record.
local index = KEYS[5 + gate + nc + nf]
if index then
  local keep = tonumber(ARGV[2])
  redis.call('ZADD', index, now + keep, KEYS[2])
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  redis.call('ZREMRANGEBYRANK', index, 0, -(SUBJECT_KEPT + 1))
  if redis.call('PTTL', index) < keep then
    redis.call('PEXPIRE', index, keep)
  end
end
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[6], KEYS[2])
end
local job = false
if queued then
  enqueue(KEYS[4], KEYS[2], 1, ARGV[5])
  job = hand_over(KEYS[4], ARGV[8])
end
return {'created', job}
