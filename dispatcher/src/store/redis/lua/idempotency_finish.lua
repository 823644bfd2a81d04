-- Keep the response of a reserved key. KEYS[1] the record. ARGV[1] fingerprint;
-- ARGV[2] status; ARGV[3] body; ARGV[4] now; ARGV[5] ms to keep it.
local f = redis.call('HMGET', KEYS[1], 'fp', 'st')
if f[1] ~= ARGV[1] or f[2] ~= 'p' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'd', 'cs', ARGV[2], 'bd', ARGV[3],
  'la', tonumber(ARGV[4]) + tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
