-- Release a reservation whose request failed. KEYS[1] the record; ARGV[1] fingerprint.
local f = redis.call('HMGET', KEYS[1], 'fp', 'st')
if f[1] == ARGV[1] and f[2] == 'p' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
