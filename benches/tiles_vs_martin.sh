#!/usr/bin/env bash
# Tile speed side by side, one run, one machine (issue 3, acceptance 7): riskmap
# uncached (cache off) and cached, then Martin on PostGIS over the same data, uncached
# and cached, all with wrk over the same path list (../shared/bench/paths.lua).
#   benches/tiles_vs_martin.sh DATA_DIR PATHS_FILE [SECONDS]
# Martin must be set up first: ../shared/bench/martin_baseline.sh setup DATASET_DIR.
set -euo pipefail
data=${1:?usage: tiles_vs_martin.sh DATA_DIR PATHS_FILE [SECONDS]}
paths=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
secs=${3:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$here/../shared/bench}
bin=$here/target/release/riskmap
layers=risk_points,pipelines,sensors
port=18400
(cd "$here" && cargo build --release --quiet)

run_wrk() { # run_wrk PORT
  PATHS=$paths PREFIX=/tiles/$layers/ SUFFIX=.mvt wrk -t2 -c32 -d"${secs}s" --timeout 30s \
    -s "$bench/paths.lua" "http://127.0.0.1:$1" | grep rps=
}
serve() { # serve CACHE_MB
  "$bin" serve --data "$data" --layers "$here/layers" --listen 127.0.0.1:$port --no-demo --tile-cache-mb "$1" \
    >/tmp/riskmap-bench-$port.log 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do sleep 0.2; done
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); paths: $(wc -l <"$paths") from $paths"
serve 0
r_unc=$(run_wrk $port); echo "riskmap uncached: $r_unc"
kill $pid; wait $pid 2>/dev/null || true
serve 512
PATHS=$paths PREFIX=/tiles/$layers/ SUFFIX=.mvt wrk -t2 -c32 -d5s -s "$bench/paths.lua" "http://127.0.0.1:$port" >/dev/null
r_c=$(run_wrk $port); echo "riskmap cached:   $r_c"
kill $pid; wait $pid 2>/dev/null || true
m_unc=$("$bench/martin_baseline.sh" rps "$paths" "$secs"); echo "$m_unc (uncached)"
m_c=$("$bench/martin_baseline.sh" rps "$paths" "$secs" cache); echo "$m_c (cached)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$(field rps "$r_unc")" "$(field rps "$r_c")" "$(field rps "$m_unc")" "$(field rps "$m_c")" <<'PY'
import sys
ru, rc, mu, mc = map(float, sys.argv[1:])
print(f"ratio uncached riskmap/martin: {ru / mu:.1f}x   (goal: 40x)")
print(f"ratio cached   riskmap/martin: {rc / mc:.1f}x")
print(f"riskmap from cache: {rc:.0f} tiles/s (goal: 10000)")
PY
