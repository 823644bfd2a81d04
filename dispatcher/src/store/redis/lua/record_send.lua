-- Record a channel's answer about one send, once.
-- KEYS[1] the record. ARGV[1] the send; ARGV[2] 'sent', 'failed' or 'expired';
-- ARGV[3] the reference or the error; ARGV[4] the routing details or '';
-- ARGV[5] now; ARGV[6] the job's stream entry, or ''. Returns 1 if recorded, 0 if
-- gone, no such send, or answered before. With an entry (KEYS[2] its stream), the
-- job is acknowledged and deleted in the same step: the stream keeps only jobs not
-- yet answered, and no answered job is ever handed out again.
if ARGV[6] ~= '' then
  redis.call('XACK', KEYS[2], 'otpd', ARGV[6])
  redis.call('XDEL', KEYS[2], ARGV[6])
end
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
local i = tonumber(ARGV[1])
if not n or i < 1 or i > n then return 0 end
if redis.call('HEXISTS', KEYS[1], i .. 'a') == 1 then return 0 end
redis.call('HSET', KEYS[1], i .. 'a', ARGV[5])
if ARGV[2] == 'sent' then
  -- A report may have overtaken the channel's answer; it says more.
  if not reported(redis.call('HGET', KEYS[1], i .. 's')) then
    redis.call('HSET', KEYS[1], i .. 's', 'sent')
  end
  redis.call('HSET', KEYS[1], i .. 'f', ARGV[3])
else
  redis.call('HSET', KEYS[1], i .. 's', ARGV[2], i .. 'x', ARGV[3])
end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], i .. 'd')
else
  redis.call('HSET', KEYS[1], i .. 'd', ARGV[4])
end
return 1
