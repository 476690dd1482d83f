#!/usr/bin/env bash
# Restart benchmark (issue 2, acceptance 3): start `riskmap serve` on an existing store,
# time until GET /health answers 200, read the resident memory once serving, stop.
# Repeats RUNS times. Usage: benches/city_startup.sh DATA_DIR [RUNS]
# Build first: cargo build --release. Prints one line per run and the machine load.
set -euo pipefail
data=${1:?usage: city_startup.sh DATA_DIR [RUNS]}
runs=${2:-3}
bin=${RISKMAP_BIN:-$(dirname "$0")/../target/release/riskmap}
layers=${RISKMAP_LAYERS:-$(dirname "$0")/../layers}
port=${PORT:-18123}
echo "machine: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  "$bin" serve --data "$data" --layers "$layers" --listen 127.0.0.1:$port --no-demo >/tmp/riskmap_startup_$i.log 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
    if ! kill -0 $pid 2>/dev/null; then echo "server died:"; cat /tmp/riskmap_startup_$i.log; exit 1; fi
    sleep 0.05
  done
  end=$(date +%s.%N)
  rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  hwm_kb=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  features=$(curl -s "http://127.0.0.1:$port/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["features"])')
  kill $pid; wait $pid 2>/dev/null || true
  printf 'run %d: health 200 after %.2f s, rss %.0f MiB (peak %.0f MiB), %s features\n' "$i" \
    "$(echo "$end - $start" | bc)" "$(echo "$rss_kb/1024" | bc -l)" "$(echo "$hwm_kb/1024" | bc -l)" "$features"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
