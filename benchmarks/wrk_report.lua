-- Prints wrk's summary as one JSON line, so the benchmark reads exact counts and latency
-- percentiles (microseconds) instead of parsing the human-readable report.
--
-- With BENCH_USERS=n and BENCH_TOKEN=t, each request carries the next of n users' tokens,
-- `Bearer t-0000` ... (many users of one tenant, for the shape-cache row).
local users = tonumber(os.getenv("BENCH_USERS") or "0")
local token = os.getenv("BENCH_TOKEN")
if users > 0 and token then
  local n = 0
  request = function()
    n = n + 1
    wrk.headers["Authorization"] = string.format("Bearer %s-%04d", token, n % users)
    return wrk.format(nil)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
