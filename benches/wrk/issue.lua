-- wrk script: POST /v1/verifications with a distinct Spanish mobile number per request
-- (each wrk thread takes its own range), so every request creates a verification.
local counter = 0
local base = 0

function setup(thread)
  thread:set("base", math.random(0, 89) * 1000000)
end

function request()
  counter = counter + 1
  local body = string.format('{"to":"+346%08d"}', (base + counter) % 100000000)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
