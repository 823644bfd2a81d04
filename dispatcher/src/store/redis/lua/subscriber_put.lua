-- Create or replace a subscriber, keeping each number to one subject.
-- KEYS[1] the subscriber; KEYS[2] the owner entry of its number.
-- ARGV[1] subject; ARGV[2] number's digits; ARGV[3] owner entries' prefix;
-- ARGV[4..] the subscriber's fields and values.
-- Returns {'created'}, {'replaced'} or {'taken', owner}.
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return {'taken', owner} end
local old = redis.call('HGET', KEYS[1], 'ph')
if old and old ~= ARGV[2] then
  local k = ARGV[3] .. old
  if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SET', KEYS[2], ARGV[1])
if old then return {'replaced'} end
return {'created'}
