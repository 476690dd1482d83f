#!/usr/bin/env bash
# Reads during hostile writes (issue 7, acceptance 2). A release server on a copy of
# DATA_DIR serves two closed loops of reads, tiles (uncached: the tile cache is off, so
# every tile is drawn) and items, for SECONDS each, first idle, then while each hostile
# write runs:
#   zigzag   POST of a pipeline of N vertices whose every Douglas-Peucker split peels one
#            vertex (quadratic for plain DP),
#   comb     POST of a boundary polygon with such a zigzag edge,
#   plain    POST of a plain line of N vertices,
#   reimport `riskmap import` (another process) of every sensor with a changed value, so
#            the server rebuilds the whole layer (4.52 M at city scale),
# and prints p50/p99/max of each loop, the write's status and duration, and the restart
# time before and after (the hostile features stored; RESTARTS=N times each, default 1).
# Goal: p99 within twice idle.
#   benches/hostile.sh DATA_DIR INPUTS_DIR TILE_PATHS [SECONDS]
# INPUTS_DIR from benches/hostile_inputs.py (--sensors for the re-import); TILE_PATHS from
# ../shared/bench/tile_paths.py. DATA_DIR itself is never changed.
set -euo pipefail
data=$(cd "${1:?usage: hostile.sh DATA_DIR INPUTS_DIR TILE_PATHS [SECONDS]}" && pwd)
inputs=$(cd "${2:?INPUTS_DIR}" && pwd)
paths=$(cd "$(dirname "${3:?TILE_PATHS}")" && pwd)/$(basename "$3")
secs=${4:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$here/../shared/bench}
bin=${RISKMAP_BIN:-$here/target/release/riskmap}
layers=$here/layers
port=${PORT:-18500}
tile_layers=risk_points,pipelines,sensors
work=$(mktemp -d /tmp/riskmap-hostile.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
cp -r "$data"/. "$work"/

# Item reads: one risk point in 68 by id, and a page of the items in each tile of zoom 12+
# of the tile paths.
python3 - "$work/riskmap.gpkg" "$paths" >"$work/items.txt" <<'PY'
import math, sqlite3, sys
for (rid,) in sqlite3.connect(sys.argv[1]).execute("SELECT id FROM risk_points WHERE fid % 68 = 0"):
    print("/" + rid)
def lon(x, z): return x / 2 ** z * 360 - 180
def lat(y, z): return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / 2 ** z))))
for line in open(sys.argv[2]):
    z, x, y = map(int, line.split("/"))
    if z >= 12:
        print("?limit=100&bbox=%.6f,%.6f,%.6f,%.6f" % (lon(x, z), lat(y + 1, z), lon(x + 1, z), lat(y, z)))
PY

serve() {
  NO_COLOR=1 "$bin" serve --data "$work" --layers "$layers" --listen 127.0.0.1:$port --no-demo --tile-cache-mb 0 \
    >>"$work/server.log" 2>&1 &
  pid=$!
  local t0; t0=$(date +%s.%N)
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
    kill -0 $pid 2>/dev/null || { echo "server died:"; tail "$work/server.log"; exit 1; }
    sleep 0.05
  done
  echo "restart to /health 200: $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s, rss $(awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status) MiB"
  echo "  loaded: $(grep -o 'layer loaded.*' "$work/server.log" | tail -"$(ls "$layers" | grep -c '\.toml$')" | sed 's/layer loaded layer=//; s/ features=/:/; s/ elapsed_ms=/ in /; s/$/ ms/' | tr '\n' ';')"
}
stop() { kill $pid; wait $pid 2>/dev/null || true; }

reads() { # reads LABEL DURATION: tile and item loops side by side
  PATHS=$paths PREFIX=/tiles/$tile_layers/ SUFFIX=.mvt wrk -t1 -c2 -d"$2" --timeout 60s \
    -s "$bench/paths.lua" "http://127.0.0.1:$port" | grep rps= | sed "s/^/  $1 tiles: /" &
  local w1=$!
  PATHS=$work/items.txt PREFIX=/collections/risk_points/items SUFFIX= wrk -t1 -c1 -d"$2" --timeout 60s \
    -s "$bench/paths.lua" "http://127.0.0.1:$port" | grep rps= | sed "s/^/  $1 items: /" &
  local w2=$!
  wait $w1 $w2
}

post() { # post LAYER FILE: status and seconds of the write
  curl -s -o "$work/post.out" -w '%{http_code} %{time_total}s' -X POST \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/geo+json' \
    --data-binary "@$1" "http://127.0.0.1:$port/collections/$2/items"
}

echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); $(wc -l <"$paths") tile paths, $(wc -l <"$work/items.txt") item paths, ${secs}s per run"
key=$("$bin" keys add --role planner --name hostile-bench --data "$work" --layers "$layers")
# RESTARTS (default 1): restarts timed before and after, to see the spread.
for _ in $(seq 2 "${RESTARTS:-1}"); do serve; stop; done
serve
reads idle "${secs}s"
for s in zigzag:pipelines:zigzag_line.json comb:boundary:comb_polygon.json plain:pipelines:plain_line.json; do
  IFS=: read -r name layer file <<<"$s"
  ( sleep 2; echo "  $name: POST $(du -h "$inputs/$file" | cut -f1) -> $(post "$inputs/$file" "$layer")" ) &
  poster=$!
  reads "$name" "${secs}s"
  wait $poster
done
if [ -f "$inputs/sensors_changed.csv" ]; then
  # Two phases, each measured on its own: while the import (another process, at its
  # default priority: idle) reads and commits, then while the server rebuilds the layer
  # beside the live one. wrk is stopped with SIGINT, which makes it report what it
  # measured.
  reads reimport-import 3600s &
  readers=$!
  sleep 2
  t0=$(date +%s.%N)
  "$bin" import --data "$work" --layers "$layers" --layer sensors "$inputs/sensors_changed.csv" >"$work/import.log" 2>&1 \
    && st=0 || st=$?
  pkill -INT -f "wrk .*127.0.0.1:$port" || true
  wait $readers
  echo "  reimport: riskmap import exited $st after $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s: $(tail -1 "$work/import.log")"
  if ! grep -q 'layer reloaded' "$work/server.log"; then
    reads reimport-reload 3600s &
    readers=$!
    for _ in $(seq 1 600); do grep -q 'layer reloaded' "$work/server.log" && break; sleep 1; done
    pkill -INT -f "wrk .*127.0.0.1:$port" || true
    wait $readers
  fi
  (grep -o 'layer reloaded.*' "$work/server.log" || echo "no reload logged") | tail -1 | sed 's/^/  server: /'
  echo "  reads stopped $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s after the import started"
fi
stop
echo "after the hostile writes:"
for _ in $(seq 1 "${RESTARTS:-1}"); do serve; stop; done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
