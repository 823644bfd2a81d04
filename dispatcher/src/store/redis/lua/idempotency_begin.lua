-- Reserve an idempotency key, or find what it was used for.
-- KEYS[1] the record. ARGV[1] the request's fingerprint; ARGV[2] now; ARGV[3] ms
-- the reservation lasts. A record whose time has passed is as good as absent
-- (compared on otpd's clock, like the verifications; Redis's expiry reclaims it).
-- Returns {'started'}, {'in_progress'}, {'mismatch'} or {'replay', status, body}.
local f = redis.call('HMGET', KEYS[1], 'fp', 'st', 'la', 'cs', 'bd')
local now = tonumber(ARGV[2])
if f[1] and tonumber(f[3]) > now then
  if f[1] ~= ARGV[1] then return {'mismatch'} end
  if f[2] == 'p' then return {'in_progress'} end
  return {'replay', f[4], f[5]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'st', 'p', 'la', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'started'}
