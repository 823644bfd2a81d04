-- GCRA over several keys at once: every verdict first, then, if all allow and
-- ARGV[2] is 'charge', every charge. The arithmetic of gcra.rs, in microseconds
-- (exact in Lua's doubles; nanoseconds since 1970 are not).
-- KEYS[i] one limit's key. ARGV[1] now; ARGV[2] 'charge' or 'peek'; then for
-- key i, ARGV[1 + 2i] its emission interval and ARGV[2 + 2i] its tolerance.
-- A key holds its TAT and expires when the TAT passes (back to a full burst, as
-- good as absent), so Redis holds only keys that are limiting something.
-- Returns {0} if allowed, else {i, wait} for the key that keeps it out longest.
local now = tonumber(ARGV[1])
local tats = {}
local worst, worst_wait = 0, -1
for i = 1, #KEYS do
  local emission = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = nil
  -- The same key twice in one request sees its own charge.
  for j = i - 1, 1, -1 do
    if KEYS[j] == KEYS[i] then tat = tats[j]; break end
  end
  if tat == nil then tat = tonumber(redis.call('GET', KEYS[i]) or '0') end
  if tat < now then tat = now end
  local ahead = tat - now
  if ahead <= tolerance then
    tats[i] = tat + emission
  else
    tats[i] = tat
    local wait = ahead - tolerance
    if wait > worst_wait then worst, worst_wait = i, wait end
  end
end
if worst > 0 then return {worst, string.format('%.0f', worst_wait)} end
if ARGV[2] == 'charge' then
  for i = 1, #KEYS do
    local ttl = math.ceil((tats[i] - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
  end
end
return {0}
