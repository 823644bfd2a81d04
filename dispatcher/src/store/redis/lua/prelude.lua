-- Shared by every verification script (prepended to each). Field names are those of
-- record.rs. Times are Unix milliseconds, passed in by the caller: the lifecycle runs
-- on otpd's clock, Redis's own clock only drives key expiry.

local function status(st, ex, now)
  if st == 'p' then
    if now >= tonumber(ex) then return 'expired' end
    return 'pending'
  elseif st == 'a' then return 'approved'
  elseif st == 'c' then return 'canceled'
  elseif st == 'l' then return 'locked'
  end
  return 'corrupt'
end

-- A delivery report says the end of a send's story.
local function reported(s)
  return s == 'delivered' or s == 'undeliverable' or s == 'expired' or s == 'rejected'
end

-- Whether two strings are equal, in time that depends on their length only.
local function ct_eq(a, b)
  if #a ~= #b then return false end
  local acc = 0
  for i = 1, #a do
    acc = bit.bor(acc, bit.bxor(string.byte(a, i), string.byte(b, i)))
  end
  return acc == 0
end

-- The caller's client as passed ('' when the API is open, '=' .. name otherwise)
-- against the stored one.
local function same_client(stored, arg)
  if stored then return arg == '=' .. stored end
  return arg == ''
end

-- Append the delivery job of send `send` of the verification at `vkey` to the
-- partition's stream: what a worker needs, the code only in its sealed form.
local function enqueue(stream, vkey, send, kind)
  local f = redis.call('HMGET', vkey, 'to', 'lo', 'pu', 'sc', 'cn', 'ex', 'su', 'mc')
  local entry = {'v', string.match(vkey, '([^:]+)$'), 'n', send, 'k', kind,
    'to', f[1], 'lo', f[2], 'pu', f[3], 'sc', f[4], 'cn', f[5], 'ex', f[6]}
  if f[7] then table.insert(entry, 'su'); table.insert(entry, f[7]) end
  if f[8] then table.insert(entry, 'mc'); table.insert(entry, f[8]) end
  return redis.call('XADD', stream, '*', unpack(entry))
end
