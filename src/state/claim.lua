-- Claims a message id for delivery: KEYS[1] the claim, ARGV[1] its lifetime in ms.
-- Returns "new" when this call claimed it (now pending), otherwise the claim's state:
-- "p" (pending: being delivered) or "d" (delivered; any other value is an old claim, delivered).
-- ARGV[2]: "0" on a call's first try; on a try repeated because the first one's answer was
-- lost with its connection, the call's time limit in ms. A pending claim made within it (its
-- time to live has run down by less) is taken for the first try's own. (The value
-- stays "p": gateways of an earlier version, sharing this Redis, read any other as delivered.)
local ok = redis.call('SET', KEYS[1], 'p', 'NX', 'PX', ARGV[1])
if ok then
  return 'new'
end
local held = redis.call('GET', KEYS[1])
if not held then
  return 'new'
end
local since = tonumber(ARGV[2])
if held == 'p' and since > 0 and redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[1]) - since then
  return 'new'
end
return held
