#!/usr/bin/env bash
# Connections and overload (issue 7, acceptance 4 and 5), on the built-in demo:
#   benches/connections.sh [hold|overload|all]
# hold:     20,000 connections held open by two client processes (10,000 idle
#           keep-alive after one request, 10,000 half-sent heads) against the release
#           server at its defaults (fd limit 20,000: cap 18,976 connections, header
#           timeout 10 s, idle timeout 60 s), while /health is probed on a fresh
#           connection 50 times a second: its p50/p99/max, the connections the server
#           closed and after how long, and the server's open fds and RSS over time.
# overload: the sustainable uncached tile rate (wrk, 32 connections, cache off, limits
#           lifted), then open-loop load (examples/loadgen.rs: latency from each
#           request's intended start) at 50/s ("idle") and at twice the sustainable
#           rate with the default limits: admitted p99 against idle p99, the 503s'
#           latency, /health meanwhile, and RSS.
# Needs: wrk, python3, curl. Builds the release binary and the load generator.
set -euo pipefail
what=${1:-all}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
# RISKMAP_BIN / LOADGEN: prebuilt binaries (a build directory shared with other
# checkouts may hold another branch's binary by the time this runs).
bin=${RISKMAP_BIN:-$target/release/riskmap}
loadgen=${LOADGEN:-$target/release/examples/loadgen}
bench=${SHARED_BENCH:-$here/../shared/bench}
port=18500
addr=127.0.0.1:$port
data=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; rm -rf "$data"' EXIT
if [[ -z ${RISKMAP_BIN:-} ]]; then
  (cd "$here" && cargo build --release --quiet --bin riskmap --example loadgen)
fi

serve() { # serve ARGS...: the demo on $addr; sets $pid
  NO_COLOR=1 "$bin" serve --data "$data" --layers "$here/layers" --listen "$addr" "$@" \
    >>"$data/server.log" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://$addr/health"; do sleep 0.2; done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }

echo "machine: $(nproc) cores, open-file limit $(ulimit -n); load before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $what == hold || $what == all ]]; then
  serve
  grep -o 'max_connections=[0-9]*.*idle_timeout_s=[0-9]*' "$data/server.log" | tail -1 || true
  echo "idle server: rss ${RSS:-$(rss_mb)} MB, fds $(fds)"
  "$loadgen" --addr "$addr" --rate 0 --secs 85 --probe /health --probe-rate 50 >"$data/probe.txt" &
  probe=$!
  sleep 2
  hold_start=$(date +%s)
  python3 "$here/benches/connections_hold.py" "$addr" 10000 idle 90 >"$data/idle.txt" &
  h1=$!
  python3 "$here/benches/connections_hold.py" "$addr" 10000 half 90 >"$data/half.txt" &
  h2=$!
  peak_fds=0 peak_rss=0
  while kill -0 $h1 2>/dev/null || kill -0 $h2 2>/dev/null; do
    f=$(fds) r=$(rss_mb)
    ((f > peak_fds)) && peak_fds=$f
    ((r > peak_rss)) && peak_rss=$r
    printf 't=%3ss server fds=%5s rss=%4s MB\n' $(($(date +%s) - hold_start)) "$f" "$r"
    sleep 5
  done
  wait $probe
  cat "$data/idle.txt" "$data/half.txt"
  echo "server peak fds: $peak_fds, peak rss: $peak_rss MB, after: fds $(fds), rss $(rss_mb) MB"
  echo "/health on a fresh connection, 50/s throughout:"
  cat "$data/probe.txt" | grep probe
  curl -s "http://$addr/metrics" | grep -E '^riskmap_(connections_|open_conn|accept_err)' || true
  stop
fi

if [[ $what == overload || $what == all ]]; then
  curl_paths() {
    serve --tile-cache-mb 0
    curl -sf "http://$addr/collections/risk_points/items?limit=10000" >"$data/rp.geojson"
    python3 "$bench/tile_paths.py" "$data/rp.geojson" --count 2000 >"$data/paths.txt"
  }
  curl_paths
  layers=risk_points,pipelines,sensors
  stop
  # Capacity: closed loop, limits lifted (as before this change).
  serve --tile-cache-mb 0 --max-tile-requests 100000 --queue-wait-ms 0
  cap=$(PATHS=$data/paths.txt PREFIX=/tiles/$layers/ SUFFIX=.mvt wrk -t2 -c32 -d15s --timeout 30s \
    -s "$bench/paths.lua" "http://$addr" | grep rps=)
  echo "capacity (wrk -c32, no limit): $cap"
  stop
  rate=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$cap")
  rate2=$(python3 -c "print(round(2 * $rate))")
  serve --tile-cache-mb 0
  grep -o 'limits=Limits {[^}]*}' "$data/server.log" | tail -1 || true
  gen() { "$loadgen" --addr "$addr" --paths "$data/paths.txt" --prefix "/tiles/$layers/" --suffix .mvt "$@"; }
  base_rss=$(rss_mb)
  echo "--- idle: 50 tiles/s open loop, 15 s"
  gen --rate 50 --secs 15 --connections 16
  echo "--- overload: $rate2 tiles/s open loop (2x capacity), 20 s, /health probed 20/s"
  (for _ in $(seq 20); do rss_mb; echo; sleep 1; done) >"$data/rss.txt" &
  sampler=$!
  gen --rate "$rate2" --secs 20 --connections 256 --probe /health --probe-rate 20
  # The sampler only: a bare `wait` would also wait for the server.
  wait $sampler
  echo "server rss: idle before the overload $base_rss MB; during it max $(sort -n "$data/rss.txt" | tail -1) MB; after: $(rss_mb) MB"
  curl -s "http://$addr/metrics" | grep -E '^riskmap_rejected_requests_total' || true
  stop
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
