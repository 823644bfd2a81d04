-- wrk script: POST /v1/verifications with a distinct number per request, so every
-- request creates a verification (a repeat would hit the resend cooldown, 429).
-- The numbers are German mobiles (+49 151 and eight digits, valid in libphonenumber's
-- plan): each thread counts up from its own random base, so threads and repeated
-- runs against the same server seldom collide.
local threads = {}

function setup(thread)
  math.randomseed(os.time() + #threads * 7919)
  thread:set("base", math.random(0, 99) * 1000000)
  table.insert(threads, thread)
end

counter = 0

function request()
  counter = counter + 1
  local body = string.format('{"to":"+49151%08d"}', (base + counter) % 100000000)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
