-- wrk script: POST /v1/verifications with a distinct number per request, so every
-- request creates a verification (a repeat would hit the resend cooldown, 429).
-- Each thread counts up from its own random base in an 11-digit space after +49, so
-- threads and repeated runs against the same server do not collide.
local threads = {}

function setup(thread)
  math.randomseed(os.time() + #threads * 7919)
  thread:set("base", math.random(0, 99999) * 1000000)
  table.insert(threads, thread)
end

counter = 0

function request()
  counter = counter + 1
  local body = string.format('{"to":"+49%011d"}', base + counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
