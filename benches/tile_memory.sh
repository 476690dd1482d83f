#!/usr/bin/env bash
# Memory under tile load (issue 7, acceptance 3). For the default cache and for
# `--tile-cache-mb 64`: start a release server on DATA_DIR, read its resident memory once
# serving (the base), run wrk over 120,000 distinct tiles for LOAD seconds, stay idle for IDLE
# seconds, sampling VmRSS every second; print the peak and the final resident memory against
# the budget stated in the README ("Memory budget"):
#   base + cache budget + CONNS x per-connection allowance + render slots x per-render allowance
#   benches/tile_memory.sh DATA_DIR [LOAD_SECONDS=60] [IDLE_SECONDS=60]
# Env: CONNS (wrk connections, 64), CACHES ("default 64": cache sizes in MiB), LAYERS
# (the composite tile, "risk_points,pipelines,sensors"), PORT (18460), PATHS (a path file
# to reuse instead of generating one), RISKMAP_BIN (the binary; else built in release).
set -euo pipefail
data=${1:?usage: tile_memory.sh DATA_DIR [LOAD_SECONDS] [IDLE_SECONDS]}
load=${2:-60}
idle=${3:-60}
conns=${CONNS:-64}
caches=${CACHES:-default 64}
layers=${LAYERS:-risk_points,pipelines,sensors}
port=${PORT:-18460}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$here/../shared/bench}
if [[ -z ${RISKMAP_BIN:-} ]]; then
  (cd "$here" && cargo build --release --quiet --bin riskmap)
  # A copy: in a target directory shared between work trees, another build may replace
  # release/riskmap while this runs.
  RISKMAP_BIN=$(mktemp /tmp/riskmap-tile-memory-bin.XXXXXX)
  cp "${CARGO_TARGET_DIR:-$here/target}/release/riskmap" "$RISKMAP_BIN"
fi
# The allowances the README states (KiB): keep them in step with "Memory budget" there.
per_conn_kib=${PER_CONN_KIB:-256}
per_render_kib=${PER_RENDER_KIB:-8192}
render_slots=$(( 2 * $(nproc) ))
default_cache_mib=256

paths=${PATHS:-}
if [[ -z $paths ]]; then
  paths=$(mktemp /tmp/tile_memory_paths.XXXXXX)
  python3 "$here/benches/tile_memory_paths.py" "$data/riskmap.gpkg" --count 120000 >"$paths"
fi
echo "machine: $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "paths: $(wc -l <"$paths") distinct tiles ($(cut -d/ -f1 "$paths" | sort -n | uniq -c | awk '{printf "z%s:%s ", $2, $1}')), layers $layers, $conns connections"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
for cache in $caches; do
  args=()
  mib=$default_cache_mib
  if [[ $cache != default ]]; then args=(--tile-cache-mb "$cache"); mib=$cache; fi
  log=/tmp/riskmap-tile-memory-$port.log
  "$RISKMAP_BIN" serve --data "$data" --layers "$here/layers" --listen "127.0.0.1:$port" --no-demo \
    "${args[@]}" >"$log" 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
    kill -0 $pid 2>/dev/null || { echo "server died:"; cat "$log"; exit 1; }
    sleep 0.2
  done
  # The base once start-up's transient buffers are given back (jemalloc: 10 s decay).
  sleep 15
  base=$(rss_kib $pid)
  samples=$(mktemp /tmp/tile_memory_rss.XXXXXX)
  ( while kill -0 $pid 2>/dev/null; do echo "$(date +%s) $(rss_kib $pid)"; sleep 1; done ) >"$samples" 2>/dev/null &
  sampler=$!
  result=$(PATHS=$paths PREFIX=/tiles/$layers/ SUFFIX=.mvt wrk -t2 -c"$conns" -d"${load}s" --timeout 30s \
    -s "$bench/paths.lua" "http://127.0.0.1:$port" | grep rps= || true)
  metrics=$(curl -s "http://127.0.0.1:$port/metrics")
  cached=$(awk '/^riskmap_tile_cache_bytes/ {print $2}' <<<"$metrics")
  entries=$(awk '/^riskmap_tile_cache_entries/ {print $2}' <<<"$metrics")
  load_end=$(date +%s)
  sleep "$idle"
  final=$(rss_kib $pid)
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  kill $sampler 2>/dev/null || true
  kill $pid; wait $pid 2>/dev/null || true
  # Peak under load and idle: the samples (VmHWM also counts start-up's index build).
  peak=$(awk '$2 > m {m = $2} END {print m}' "$samples")
  at_load_end=$(awk -v t="$load_end" '$1 <= t {v = $2} END {print v}' "$samples")
  budget=$(( base + mib * 1024 + conns * per_conn_kib + render_slots * per_render_kib ))
  verdict() { if (( $1 <= budget )); then echo "within"; else echo "OVER"; fi; }
  printf 'cache %s (%d MiB): %s\n' "$cache" "$mib" "$result"
  printf '  cache after load: %.1f MiB charged, %s tiles\n' "$(bc -l <<<"${cached:-0}/1048576")" "${entries:-?}"
  printf '  resident MiB: base %.0f, at load end %.0f, peak %.0f, final (after %ss idle) %.0f; VmHWM (start-up included) %.0f\n' \
    "$(bc -l <<<"$base/1024")" "$(bc -l <<<"$at_load_end/1024")" "$(bc -l <<<"$peak/1024")" "$idle" "$(bc -l <<<"$final/1024")" "$(bc -l <<<"$hwm/1024")"
  printf '  budget %.0f MiB = base %.0f + cache %d + %d conns x %d KiB + %d render slots x %d KiB: peak %s, final %s\n' \
    "$(bc -l <<<"$budget/1024")" "$(bc -l <<<"$base/1024")" "$mib" "$conns" "$per_conn_kib" "$render_slots" "$per_render_kib" \
    "$(verdict "$peak")" "$(verdict "$final")"
  rm -f "$samples"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
