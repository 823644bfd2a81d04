-- A worker takes send `ARGV[1]` of the verification KEYS[1] before handing it to a
-- channel, so that a job handed out twice (claimed from a node that stopped) is
-- never sent twice. ARGV[2] the worker's name.
-- Returns 'go'; 'answered' (done before: only acknowledge the job); 'gone';
-- 'mine': a worker of this same node has it (a second copy of the job); or
-- 'interrupted': another node took it and never answered — it may have reached
-- the channel, so it is not sent again.
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
local i = tonumber(ARGV[1])
if not n or i < 1 or i > n then return 'gone' end
if redis.call('HEXISTS', KEYS[1], i .. 'a') == 1 then return 'answered' end
local taker = redis.call('HGET', KEYS[1], i .. 'k')
if taker == ARGV[2] then return 'mine' end
if taker then return 'interrupted' end
redis.call('HSET', KEYS[1], i .. 'k', ARGV[2])
return 'go'
