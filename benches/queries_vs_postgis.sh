#!/usr/bin/env bash
# Planners' queries over HTTP against the same queries in PostGIS (issue 8, acceptance 5),
# in one run on one machine:
#   within     sensors within 500 m (geodesic) of a random risk point, by distance
#   nearest    the 10 sensors nearest to a random risk point
#   intersects sensors in a 2 km square around a random risk point (POSTed GeoJSON)
#   corridor   risk points within 200 m of a random pipeline
#   filter     items?filter=S_DWITHIN(geometry, POINT(risk point), 500) over the sensors
# riskmap: the release server on STORE_DIR, wrk with 2 connections for SECONDS each,
# twice: whole GeoJSON features (the default answer), then lean ones
# (`skipGeometry=true&properties=`: id, distance_m and links, what PostGIS's scripts
# return: ids and distances).
# PostGIS: ../shared/bench/pg_queries (pgbench, 2 clients, SECONDS each) on DBNAME,
# loaded from DATASET_DIR by ../shared/bench/load_postgis.sh; its `within` is also the
# equivalent of `filter`. Prints one line per query and engine, then the ratios.
#   benches/queries_vs_postgis.sh STORE_DIR DATASET_DIR DBNAME [SECONDS]
set -euo pipefail
store=$(cd "${1:?usage: queries_vs_postgis.sh STORE_DIR DATASET_DIR DBNAME [SECONDS]}" && pwd)
dataset=$(cd "${2:?DATASET_DIR}" && pwd)
db=${3:?DBNAME}
secs=${4:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$here/../shared/bench}
bin=${RISKMAP_BIN:-$here/target/release/riskmap}
port=${PORT:-18700}
work=$(mktemp -d /tmp/riskmap-queries.XXXXXX)
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT

# Inputs: 2,000 random risk points and 2,000 random pipelines (seeded), as paths and
# bodies for wrk.
python3 - "$dataset" "$work" <<'PY'
import json, math, random, sys, urllib.parse
ds, out = sys.argv[1], sys.argv[2]
rnd = random.Random(8)
points = [f["geometry"]["coordinates"] for f in json.load(open(ds + "/risk_points.geojson"))["features"]]
pipes = [f["properties"].get("id") or f.get("id") for f in json.load(open(ds + "/pipelines.geojson"))["features"]]
pts = [rnd.choice(points) for _ in range(2000)]
with open(out + "/within.txt", "w") as f:
    for lon, lat in pts: f.write(f"/collections/sensors/within?lon={lon}&lat={lat}&radius_m=500&limit=10000\n")
with open(out + "/nearest.txt", "w") as f:
    for lon, lat in pts: f.write(f"/collections/sensors/nearest?lon={lon}&lat={lat}&k=10\n")
with open(out + "/filter.txt", "w") as f:
    for lon, lat in pts:
        q = urllib.parse.quote(f"S_DWITHIN(geometry,POINT({lon} {lat}),500)")
        f.write(f"/collections/sensors/items?filter={q}&limit=10000\n")
with open(out + "/corridor.txt", "w") as f:
    for _ in range(2000): f.write(f"/collections/risk_points/corridor?along=pipelines/{urllib.parse.quote(rnd.choice(pipes))}&distance_m=200&limit=10000\n")
with open(out + "/intersects.txt", "w") as f:
    for lon, lat in pts:
        dlat = 1000 / 111320.0; dlon = 1000 / (111320.0 * math.cos(math.radians(lat)))
        ring = [[lon - dlon, lat - dlat], [lon + dlon, lat - dlat], [lon + dlon, lat + dlat], [lon - dlon, lat + dlat], [lon - dlon, lat - dlat]]
        f.write(json.dumps({"type": "Polygon", "coordinates": [ring]}) + "\n")
PY

# CPU time the hypervisor gave to others while this VM wanted it (steal), in percent
# of all CPU time since `cpu_mark`: a run with much of it is not comparable to another.
cpu_mark() { read -r steal0 total0 < <(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat); }
steal_pct() { awk -v s0="$steal0" -v t0="$total0" '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; printf "%.0f", 100*($9-s0)/(t-t0)}' /proc/stat; }
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); ${secs}s per query, 2 connections / clients"
NO_COLOR=1 "$bin" serve --data "$store" --layers "$here/layers" --listen 127.0.0.1:$port --no-demo >"$work/server.log" 2>&1 &
pid=$!
until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
  kill -0 $pid 2>/dev/null || { echo "server died:"; tail "$work/server.log"; exit 1; }
  sleep 0.2
done
echo "riskmap: $(curl -s "http://127.0.0.1:$port/health" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["layers"])')"
declare -A rm_rps
lean='&skipGeometry=true&properties='
for v in full lean; do
  for q in within nearest filter corridor; do
    paths=$work/$q.txt
    if [[ $v == lean ]]; then awk -v s="$lean" '{print $0 s}' "$work/$q.txt" >"$work/$q.lean.txt"; paths=$work/$q.lean.txt; fi
    # Warm-up: the first requests fault in the index pages.
    PATHS=$paths PREFIX= SUFFIX= wrk -t1 -c2 -d2s -s "$bench/paths.lua" "http://127.0.0.1:$port" >/dev/null
    cpu_mark
    line=$(PATHS=$paths PREFIX= SUFFIX= wrk -t2 -c2 -d"${secs}s" --timeout 30s -s "$bench/paths.lua" "http://127.0.0.1:$port" | grep rps=)
    echo "riskmap $q ($v) $line steal=$(steal_pct)%"
    rm_rps[$q.$v]=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$line")
  done
  target="/collections/sensors/intersects?limit=10000"
  [[ $v == lean ]] && target="$target$lean"
  BODIES=$work/intersects.txt TARGET="$target" wrk -t1 -c2 -d2s -s "$here/benches/post_bodies.lua" "http://127.0.0.1:$port" >/dev/null
  cpu_mark
  line=$(BODIES=$work/intersects.txt TARGET="$target" wrk -t2 -c2 -d"${secs}s" --timeout 30s -s "$here/benches/post_bodies.lua" "http://127.0.0.1:$port" | grep rps=)
  echo "riskmap intersects ($v) $line steal=$(steal_pct)%"
  rm_rps[intersects.$v]=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$line")
done
kill $pid; wait $pid 2>/dev/null || true
pid=

# Warm-up, as riskmap had: PostgreSQL's buffers and the page cache hold the tables and
# indexes the queries read (a cold first pass ran `within` three times slower).
"$bench/pg_queries/run.sh" "$db" 5 >/dev/null
cpu_mark
pg=$("$bench/pg_queries/run.sh" "$db" "$secs")
echo "$pg"
echo "postgis: steal over its four queries $(steal_pct)%"
echo "ratios (riskmap queries/s over PostGIS transactions/s):"
for q in within nearest intersects corridor filter; do
  pq=$q; [[ $q == filter ]] && pq=within
  p=$(grep "postgis $pq " <<<"$pg" | sed -n 's/.*tps=\([0-9.]*\).*/\1/p')
  python3 -c "print('  $q: %.1f times (full features), %.1f times (lean)' % (${rm_rps[$q.full]} / $p, ${rm_rps[$q.lean]} / $p))"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
