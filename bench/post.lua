-- wrk script: POST a small JSON body (a chat message), optionally paced.
-- Usage: wrk ... -s post.lua [-- <delay_ms_per_request_per_connection> <path>]
local delay_ms = 0
local path = "/hook"

function init(args)
  if args[1] then delay_ms = tonumber(args[1]) end
  if args[2] then path = args[2] end
end

wrk.method = "POST"
wrk.body = '{"message":"hello from the load generator","session":"bench"}'
wrk.headers["Content-Type"] = "application/json"

function request()
  return wrk.format(nil, path)
end

function delay()
  return delay_ms
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
