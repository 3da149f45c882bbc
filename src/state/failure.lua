-- A failure counter whose window opens at the first failure (src/state/memory.rs,
-- `count_failure`). KEYS[1]: the counter; ARGV[1]: the window in milliseconds.
-- Returns the count including this failure. A counter without an expiry (which this script
-- never leaves behind) is given one, so no key can outlive its window.
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
