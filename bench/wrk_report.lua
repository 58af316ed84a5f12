-- Machine-readable summary for bench/run.sh. Only done() is defined, so wrk
-- keeps its fast static-request path (no per-request Lua).
-- Latencies are wrk's histogram values in microseconds.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d\n", summary.requests, summary.duration))
  io.write(string.format("BENCH errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("BENCH lat_p50_us=%d lat_p90_us=%d lat_p99_us=%d lat_p999_us=%d lat_max_us=%d lat_mean_us=%.1f\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
