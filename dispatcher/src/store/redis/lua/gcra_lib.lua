-- GCRA, the arithmetic of gcra.rs in microseconds (exact in Lua's doubles;
-- nanoseconds since 1970 are not). A key holds its TAT and expires when the TAT
-- passes (back to a full burst, as good as absent), so Redis holds only keys that
-- are limiting something.

-- The verdicts on KEYS[first .. first + count - 1], the quota of the i-th in
-- ARGV[arg + 2i - 1] (emission interval) and ARGV[arg + 2i] (tolerance), charging
-- nothing. Returns the position (1-based within the set) of the key that keeps the
-- request out longest and its wait, or 0; and the TAT each key would have if
-- charged (the same key twice in one set sees its own charge).
local function gcra_decide(first, count, arg, now)
  local tats = {}
  local worst, worst_wait = 0, -1
  for i = 1, count do
    local key = KEYS[first + i - 1]
    local emission = tonumber(ARGV[arg + 2 * i - 1])
    local tolerance = tonumber(ARGV[arg + 2 * i])
    local tat = nil
    for j = i - 1, 1, -1 do
      if KEYS[first + j - 1] == key then tat = tats[j]; break end
    end
    if tat == nil then tat = tonumber(redis.call('GET', key) or '0') end
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
  return worst, worst_wait, tats
end

-- Charge the set decided by `gcra_decide(first, …)`: its keys take their new TATs.
local function gcra_charge(first, tats, now)
  for i = 1, #tats do
    local ttl = math.ceil((tats[i] - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[first + i - 1], string.format('%.0f', tats[i]), 'PX', ttl)
  end
end

-- One key by name (it may be one the script found, not one it was given): charge
-- it if it allows. Returns true, or false and the wait.
local function gcra_key(key, emission, tolerance, now)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local ahead = tat - now
  if ahead > tolerance then return false, ahead - tolerance end
  tat = tat + emission
  local ttl = math.ceil((tat - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
  return true, 0
end
