-- Create or replace a subscriber, keeping each number to one subject.
-- KEYS[1] the subscriber; KEYS[2] the owner entry of its number.
-- ARGV[1] subject; ARGV[2..] the subscriber's fields and values, among them 'pk',
-- the name of its number's owner entry (KEYS[2]): names are keyed hashes, so the
-- record keeps it to find the old entry when the number changes.
-- Returns {'created'}, {'replaced'} or {'taken', owner}.
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return {'taken', owner} end
local existed = redis.call('EXISTS', KEYS[1]) == 1
local old = redis.call('HGET', KEYS[1], 'pk')
if old and old ~= KEYS[2] then
  if redis.call('GET', old) == ARGV[1] then redis.call('DEL', old) end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SET', KEYS[2], ARGV[1])
if existed then return {'replaced'} end
return {'created'}
