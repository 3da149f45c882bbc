-- Claims a message id for delivery: KEYS[1] the claim, ARGV[1] its lifetime in ms, ARGV[2] the
-- pending value, "p" and a nonce unique to this claim.
-- Returns "new" when this call claimed it (now pending), otherwise the claim's state: a value
-- starting with "p" (pending: being delivered) or "d" (delivered; any other value is an old
-- claim, delivered). A claim holding this call's own value was made by this call's first
-- try, whose answer was lost with its connection: it is this call's, so "new" too.
local ok = redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1])
if ok then
  return 'new'
end
local held = redis.call('GET', KEYS[1])
if not held or held == ARGV[2] then
  return 'new'
end
return held
