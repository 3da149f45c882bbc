-- The GCRA of src/state/gcra.rs (`Gcra::decide`), for several limits as one atomic step:
-- the request is counted against every key when all of them allow it, against none otherwise.
--
-- KEYS[i]             the state key of limit i
-- ARGV[1], ARGV[2]    "now" as seconds and nanoseconds; both "" = the server's clock (TIME),
--                     so instances with skewed clocks agree (the values are for tests)
-- ARGV[2i+1]          limit i's emission interval T, nanoseconds
-- ARGV[2i+2]          limit i's tolerance B*T, nanoseconds
-- Returns four integers per key: allowed (1 or 0), remaining, reset_after_ns, retry_after_ns.
--
-- Lua numbers are doubles: exact for integers below 2^53 (104 days in nanoseconds), not for
-- absolute times in nanoseconds. So a TAT is stored as the decimal digits of its nanoseconds
-- since the epoch (the memory backend's u64, as text), and all arithmetic is done on
-- differences to now, which a limit's tolerance bounds.
if redis.replicate_commands then
  -- Redis < 5 needs this before a script that writes after reading TIME.
  redis.replicate_commands()
end
local E9 = 1000000000
local MAX = 4611686018427387904 -- 2^62: reply integers stay in range whatever the config

local now_s, now_ns
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now_s = tonumber(t[1])
  now_ns = tonumber(t[2]) * 1000
else
  now_s = tonumber(ARGV[1])
  now_ns = tonumber(ARGV[2])
end

local out = {}
local new_diffs = {}
local all = true
for i = 1, #KEYS do
  local t = tonumber(ARGV[2 * i + 1])
  local tol = tonumber(ARGV[2 * i + 2])
  -- tat - now, with a missing or past TAT counting as now: tat = max(tat, now).
  local diff = 0
  local v = redis.call('GET', KEYS[i])
  if v and #v > 9 then
    local s = tonumber(string.sub(v, 1, -10))
    local ns = tonumber(string.sub(v, -9))
    if s and ns then
      diff = (s - now_s) * E9 + (ns - now_ns)
      if diff < 0 then
        diff = 0
      end
    end
  end
  local new_diff = diff + t          -- new_tat - now
  local allow_diff = new_diff - tol  -- allow_at - now
  if allow_diff <= 0 then
    local left = tol - math.min(new_diff, tol)
    local remaining = math.floor(left / t)
    -- Exact integer division whatever the rounding of left / t.
    if (remaining + 1) * t <= left then
      remaining = remaining + 1
    elseif remaining * t > left then
      remaining = remaining - 1
    end
    out[#out + 1] = 1
    out[#out + 1] = math.min(remaining, MAX)
    out[#out + 1] = math.min(new_diff, MAX)
    out[#out + 1] = 0
    new_diffs[i] = new_diff
  else
    all = false
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = math.min(diff, MAX)
    out[#out + 1] = math.min(allow_diff, MAX)
  end
end

if all then
  for i = 1, #KEYS do
    local d = now_ns + new_diffs[i]
    local carry = math.floor(d / E9)
    local ns = d - carry * E9
    if ns < 0 then
      carry = carry - 1
      ns = ns + E9
    elseif ns >= E9 then
      carry = carry + 1
      ns = ns - E9
    end
    -- The key lives exactly as long as its TAT is in the future (rounded up to a ms).
    local ttl_ms = math.ceil(new_diffs[i] / 1000000)
    redis.call('SET', KEYS[i], string.format('%d%09d', now_s + carry, ns), 'PX', string.format('%d', ttl_ms))
  end
end
return out
