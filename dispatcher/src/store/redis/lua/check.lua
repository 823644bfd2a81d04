-- Compare and count one attempt, atomically.
-- KEYS[1] the record. ARGV[1] the typed code's MAC; ARGV[2] the client; ARGV[3] now.
-- Returns nil if unknown (or another client's), else
-- {outcome, attempts left, number, country, subject}.
local f = redis.call('HMGET', KEYS[1], 'cl', 'st', 'ex', 'at', 'ma', 'mac', 'to', 'cc', 'su')
if not f[2] or not same_client(f[1], ARGV[2]) then return false end
local now = tonumber(ARGV[3])
local at, ma = tonumber(f[4]), tonumber(f[5])
local outcome = status(f[2], f[3], now)
if outcome == 'approved' then
  outcome = 'already_approved'
elseif outcome == 'pending' then
  at = at + 1
  if ct_eq(f[6], ARGV[1]) then
    outcome = 'approved'
    redis.call('HSET', KEYS[1], 'at', at, 'st', 'a', 'sa', now)
  elseif at >= ma then
    outcome = 'locked'
    redis.call('HSET', KEYS[1], 'at', at, 'st', 'l', 'sa', now)
  else
    outcome = 'wrong'
    redis.call('HSET', KEYS[1], 'at', at)
  end
end
local left = ma - at
if left < 0 then left = 0 end
return {outcome, left, f[7], f[8] or '', f[9] or ''}
