-- Delete a subscriber and free its number. KEYS[1] the subscriber.
-- ARGV[1] subject. Returns 1, or 0 if unknown.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'pk')
if old and redis.call('GET', old) == ARGV[1] then redis.call('DEL', old) end
redis.call('DEL', KEYS[1])
return 1
