-- GCRA over several keys at once (gcra_lib.lua comes first): every verdict first,
-- then, if all allow and ARGV[2] is 'charge', every charge.
-- KEYS[i] one limit's key. ARGV[1] now; ARGV[2] 'charge' or 'peek'; then for
-- key i, ARGV[1 + 2i] its emission interval and ARGV[2 + 2i] its tolerance.
-- Returns {0} if allowed, else {i, wait} for the key that keeps it out longest.
local now = tonumber(ARGV[1])
local worst, wait, tats = gcra_decide(1, #KEYS, 2, now)
if worst > 0 then return {worst, string.format('%.0f', wait)} end
if ARGV[2] == 'charge' then gcra_charge(1, tats, now) end
return {0}
