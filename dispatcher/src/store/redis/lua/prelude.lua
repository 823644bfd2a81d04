-- Shared by every verification script (prepended to each). Field names are those of
-- record.rs. Times are Unix milliseconds, passed in by the caller: the lifecycle runs
-- on otpd's clock, Redis's own clock only drives key expiry.

local function status(st, ex, now)
  if st == 'p' then
    if now >= tonumber(ex) then return 'expired' end
    return 'pending'
  elseif st == 'a' then return 'approved'
  elseif st == 'd' then return 'denied'
  elseif st == 'c' then return 'canceled'
  elseif st == 'l' then return 'locked'
  end
  return 'corrupt'
end

-- A delivery report says the end of a send's story.
local function reported(s)
  return s == 'delivered' or s == 'undeliverable' or s == 'expired' or s == 'rejected'
    or s == 'unconfirmed'
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
  local f = redis.call('HMGET', vkey, 'to', 'lo', 'pu', 'sc', 'cn', 'ex', 'su', 'mc', 'cg', 'cl')
  local entry = {'v', string.match(vkey, '([^:]+)$'), 'n', send, 'k', kind,
    'to', f[1], 'lo', f[2], 'pu', f[3], 'sc', f[4], 'cn', f[5], 'ex', f[6]}
  if f[7] then table.insert(entry, 'su'); table.insert(entry, f[7]) end
  if f[8] then table.insert(entry, 'mc'); table.insert(entry, f[8]) end
  if kind == 'push' and f[9] then
    table.insert(entry, 'cg'); table.insert(entry, f[9])
  end
  -- Whose it is: the requester an approval push names, and whose events its send's.
  if f[10] then table.insert(entry, 'cl'); table.insert(entry, f[10]) end
  return redis.call('XADD', stream, '*', unpack(entry))
end

-- Hand the node whose consumer is `consumer` (or nobody, if '') the oldest job of
-- `stream` that no node has read yet — usually the one just appended — so that it
-- needs no read of its own to deliver what it accepted. The job is then pending
-- with that node as if it had read it. Returns {entry id, {field, value, …}}, or
-- false (no consumer, nothing unread, or the group not made yet).
local function hand_over(stream, consumer)
  if consumer == '' then return false end
  local got = redis.pcall('XREADGROUP', 'GROUP', 'otpd', consumer, 'COUNT', 1,
    'STREAMS', stream, '>')
  if type(got) ~= 'table' or got.err or not got[1] then return false end
  return got[1][2][1] or false
end
