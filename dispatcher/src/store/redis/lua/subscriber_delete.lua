-- Delete a subscriber and free its number. KEYS[1] the subscriber.
-- ARGV[1] subject; ARGV[2] owner entries' prefix. Returns 1, or 0 if unknown.
local old = redis.call('HGET', KEYS[1], 'ph')
if not old then return 0 end
local k = ARGV[2] .. old
if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
return 1
