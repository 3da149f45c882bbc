-- Claims a message id for delivery: KEYS[1] the claim, ARGV[1] its lifetime in ms.
-- Returns "new" when this call claimed it (now pending), otherwise the claim's state:
-- "p" (pending: being delivered) or "d" (delivered; any other value is an old claim, delivered).
local ok = redis.call('SET', KEYS[1], 'p', 'NX', 'PX', ARGV[1])
if ok then
  return 'new'
end
return redis.call('GET', KEYS[1]) or 'new'
