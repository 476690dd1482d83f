-- wrk script: each request POSTs the next line of the file named by env BODIES (one
-- JSON document per line) to env TARGET (a path), as application/geo+json; threads
-- start at different offsets. Prints the same summary line as ../shared/bench/paths.lua.
local bodies, n, i = {}, 0, 0
local target = os.getenv("TARGET") or "/"
for line in io.lines(os.getenv("BODIES")) do n = n + 1; bodies[n] = line end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("offset", counter * 997) end
function init(args) i = offset or 0 end
function request()
  i = i + 1
  return wrk.format("POST", target, {["Content-Type"] = "application/geo+json", ["Accept-Encoding"] = "gzip"},
    bodies[(i % n) + 1])
end
function done(summary, latency, requests)
  io.write(string.format("requests=%d errors_status=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, summary.errors.status, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
