-- Compare and count one attempt, atomically, deciding the check's limits in the
-- same step (gcra_lib.lua comes first).
-- KEYS[1] the record; KEYS[2], if given, the caller's address limit key.
-- ARGV[1] the typed code's MAC; ARGV[2] the client; ARGV[3] now; ARGV[4] the
-- limits' time in µs, or '' when no limits are decided here; ARGV[5], [6] the
-- address limit's emission interval and tolerance; ARGV[7] the key prefix of the
-- subjects' wrong-code limit, or '' (the key ends with the record's `sk`, the hashed
-- name the issuing node wrote: key names never hold the subject itself),
-- ARGV[8], [9] its emission interval and tolerance.
-- Returns {'limited', wait µs} when the address is over its limit (nothing is
-- counted); nil if unknown (or another client's); else {outcome, attempts left,
-- number, country, subject, wait µs or '', '1' if this attempt locked it or ''}. Outcomes: approved, wrong, locked,
-- already_approved, no_code (an approval request whose PIN was never sent), or the
-- final status (denied, canceled, expired).: the wait when the wrong code took the
-- subject past its wrong-code limit, and the verification was locked for it.
local lnow = ARGV[4] ~= '' and tonumber(ARGV[4])
if lnow and KEYS[2] then
  local ok, wait = gcra_key(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), lnow)
  if not ok then return {'limited', string.format('%.0f', wait)} end
end
local f = redis.call('HMGET', KEYS[1], 'cl', 'st', 'ex', 'at', 'ma', 'mac', 'to', 'cc', 'su', 'ch', 'n', 'sk')
if not f[2] or not same_client(f[1], ARGV[2]) then return false end
local now = tonumber(ARGV[3])
local at, ma = tonumber(f[4]), tonumber(f[5])
local outcome = status(f[2], f[3], now)
local locked_now = ''
-- An approval request has a PIN only once it fell back to SMS.
local code_sent = f[10] ~= 'app'
if not code_sent then
  for i = 1, tonumber(f[11]) do
    if redis.call('HGET', KEYS[1], i .. 'c') == 'sms' then code_sent = true; break end
  end
end
if outcome == 'approved' then
  outcome = 'already_approved'
elseif outcome == 'pending' and not code_sent then
  outcome = 'no_code'
elseif outcome == 'pending' then
  at = at + 1
  if ct_eq(f[6], ARGV[1]) then
    outcome = 'approved'
    redis.call('HSET', KEYS[1], 'at', at, 'st', 'a', 'sa', now)
  elseif at >= ma then
    outcome = 'locked'
    locked_now = '1'
    redis.call('HSET', KEYS[1], 'at', at, 'st', 'l', 'sa', now)
  else
    outcome = 'wrong'
    redis.call('HSET', KEYS[1], 'at', at)
  end
end
local subject_wait = ''
if lnow and ARGV[7] ~= '' and f[12] and (outcome == 'wrong' or outcome == 'locked') then
  local ok, wait = gcra_key(ARGV[7] .. f[12], tonumber(ARGV[8]), tonumber(ARGV[9]), lnow)
  if not ok then
    -- Guessing across verifications: this one is locked too.
    subject_wait = string.format('%.0f', wait)
    if outcome == 'wrong' then
      redis.call('HSET', KEYS[1], 'st', 'l', 'sa', now)
    end
  end
end
local left = ma - at
if left < 0 then left = 0 end
return {outcome, left, f[7], f[8] or '', f[9] or '', subject_wait, locked_now}
