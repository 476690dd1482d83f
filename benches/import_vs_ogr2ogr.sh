#!/usr/bin/env bash
# Uploads over HTTP against ogr2ogr into PostGIS for the same files (issue 9, acceptance
# 7), in one run on one machine:
#   risk_points  the 136,000-point GeoJSON
#   pipelines    the 47,934 lines as a zipped shapefile in Gauss–Krüger EPSG:4547 with
#                GBK text (made here with ogr2ogr; its 10-character DBF names mapped back)
#   sensors      the 4.52 M-row CSV
# riskmap: the release server on a new store, each file POSTed to
# /collections/{layer}/imports with curl; the time is until the 201, which comes after
# the commit is durable and the layer is served from the index.
# ogr2ogr: `ogr2ogr -f PostgreSQL` of the same file into a new database (PostgreSQL 15,
# fsync and synchronous_commit on, as installed), reprojecting to EPSG:4326 as riskmap
# does; COPY is its default for a new table. Durable when ogr2ogr exits.
# Both on a quiet machine. Then the sensors again, into a second new store, while wrk
# draws tiles (2 connections) for the p99 and a risk point is PATCHed every 0.2 s for
# the longest edit wait.
#   benches/import_vs_ogr2ogr.sh DATASET_DIR
set -euo pipefail
dataset=$(cd "${1:?usage: import_vs_ogr2ogr.sh DATASET_DIR}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${SHARED_BENCH:-$here/../shared/bench}
bin=${RISKMAP_BIN:-$here/target/release/riskmap}
port=${PORT:-18710}
db=riskmap_import_bench
work=$(mktemp -d /tmp/riskmap-importbench.XXXXXX)
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
export PGHOST=127.0.0.1 PGUSER=postgres
pg_ctlcluster 15 main start 2>/dev/null || true
for _ in $(seq 30); do pg_isready -q && break; sleep 1; done

cpu_mark() { read -r steal0 total0 < <(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat); }
steal_pct() { awk -v s0="$steal0" -v t0="$total0" '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; printf "%.0f", 100*($9-s0)/(t-t0)}' /proc/stat; }
now() { date +%s.%N; }
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# The pipelines as a zipped Gauss–Krüger shapefile with GBK text.
ogr2ogr -f "ESRI Shapefile" -t_srs EPSG:4547 -lco ENCODING=CP936 "$work/pipelines_4547.shp" "$dataset/pipelines.geojson"
(cd "$work" && zip -q pipelines_4547.zip pipelines_4547.shp pipelines_4547.shx pipelines_4547.dbf pipelines_4547.prj pipelines_4547.cpg)

# riskmap: a new store, a key, the server.
start_server() { # data dir -> sets pid, key, base
  local data=$1
  "$bin" --data "$data" init >/dev/null 2>&1
  # What the features name: plan templates and sensor types.
  "$bin" --data "$data" import --plans "$dataset/plans.json" >/dev/null
  "$bin" --data "$data" import --sensor-types "$dataset/sensor_types.csv" >/dev/null
  key=$("$bin" --data "$data" keys add --role admin --name bench 2>/dev/null)
  RISKMAP_LOG=warn "$bin" --data "$data" serve --no-demo --listen "127.0.0.1:$port" >"$data.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
  base="http://127.0.0.1:$port"
}
start_server "$work/data"

upload() { # layer content-type file query -> "features seconds"
  local t0 t1 out
  t0=$(now)
  out=$(curl -s -w '\n%{http_code}' -X POST -H "Authorization: Bearer $key" -H "Content-Type: $2" \
        --data-binary @"$3" "$base/collections/$1/imports$4")
  t1=$(now)
  local code=${out##*$'\n'}
  if [[ $code != 201 ]]; then echo "upload of $1 answered $code: ${out%$'\n'*}" >&2; exit 1; fi
  local n; n=$(printf '%s' "${out%$'\n'*}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["added"]+r["updated"]+r["unchanged"], r["timings_ms"]["prepare"], r["timings_ms"]["check"], r["timings_ms"]["write"])')
  echo "$n $(echo "$t1 - $t0" | bc -l)"
}
ogr() { # table file extra... -> seconds
  local t0 t1
  t0=$(now)
  ogr2ogr -f PostgreSQL "PG:dbname=$db host=127.0.0.1 user=postgres" "$@" -lco GEOMETRY_NAME=geom -lco FID=fid -t_srs EPSG:4326 >/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}

declare -A rm_n rm_s pg_s rm_detail
cpu_mark
read -r n p c w s < <(upload risk_points application/geo+json "$dataset/risk_points.geojson" "")
rm_n[risk_points]=$n; rm_s[risk_points]=$s; rm_detail[risk_points]="prepare ${p} ms, check ${c} ms, write ${w} ms"
read -r n p c w s < <(upload pipelines application/zip "$work/pipelines_4547.zip" "?map=diameter_m:diameter_mm")
rm_n[pipelines]=$n; rm_s[pipelines]=$s; rm_detail[pipelines]="prepare ${p} ms, check ${c} ms, write ${w} ms"
read -r n p c w s < <(upload sensors text/csv "$dataset/sensors.csv" "")
rm_n[sensors]=$n; rm_s[sensors]=$s; rm_detail[sensors]="prepare ${p} ms, check ${c} ms, write ${w} ms"
steal=$(steal_pct)
rss=$(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$pid/status)
kill $pid; wait $pid 2>/dev/null || true

# The sensors again, into a second new store, under tile load and edits.
start_server "$work/data2"
upload risk_points application/geo+json "$dataset/risk_points.geojson" "" >/dev/null
upload pipelines application/zip "$work/pipelines_4547.zip" "?map=diameter_m:diameter_mm" >/dev/null

# The sensors, with tile load and edits beside them.
PATHS="$work/tilepaths.txt"
python3 - "$PATHS" <<'PY'
import random, sys, math
rnd = random.Random(3)
with open(sys.argv[1], "w") as f:
    for _ in range(3000):
        z = rnd.randint(8, 15); lon = rnd.uniform(105.3, 110.1); lat = rnd.uniform(28.2, 32.2)
        n = 2 ** z; x = int((lon + 180) / 360 * n); r = math.radians(lat)
        y = int((1 - math.log(math.tan(r) + 1 / math.cos(r)) / math.pi) / 2 * n)
        f.write(f"{z}/{x}/{y}\n")
PY
(
  i=0; max=0
  while [[ ! -e "$work/sensors.done" ]]; do
    i=$((i+1)); lvl=$([[ $((i % 2)) == 0 ]] && echo I || echo II)
    t=$(curl -s -o /dev/null -w '%{time_total} %{http_code}' -X PATCH -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/merge-patch+json' -d "{\"properties\":{\"level\":\"$lvl\"}}" \
        "$base/collections/risk_points/items/R000001")
    echo "$t" >>"$work/edits.txt"
    sleep 0.2
  done
) &
edits=$!
PATHS="$PATHS" PREFIX="/tiles/risk_points,pipelines,sensors/" SUFFIX=".mvt" \
  wrk -t2 -c2 -d3600s -s "$bench/paths.lua" "$base" >"$work/wrk.txt" 2>&1 &
wrkpid=$!
sleep 2 # wrk and the edits under way
cpu_mark
read -r n p c w s < <(upload sensors text/csv "$dataset/sensors.csv" "")
touch "$work/sensors.done"
kill -INT $wrkpid 2>/dev/null || true
wait $wrkpid 2>/dev/null || true
wait $edits 2>/dev/null || true
loaded="${s} s (prepare ${p} ms, check ${c} ms, write ${w} ms), hypervisor steal $(steal_pct)%"
tiles=$(grep -o 'requests=.*' "$work/wrk.txt" || echo "wrk: no summary")
edit_max=$(awk '{ if ($1 > m) m = $1; n++; if ($2 != 200) bad++ } END { printf "%.3f s over %d edits (%d not 200)", m, n, bad }' "$work/edits.txt")

# ogr2ogr into PostGIS, the same files.
psql -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -q -d "$db" -c "CREATE EXTENSION postgis"
cpu_mark
pg_s[risk_points]=$(ogr "$dataset/risk_points.geojson" -nln risk_points)
pg_s[pipelines]=$(ogr "/vsizip/$work/pipelines_4547.zip/pipelines_4547.shp" -nln pipelines)
pg_s[sensors]=$(ogr "$dataset/sensors.csv" -nln sensors -oo X_POSSIBLE_NAMES=lon -oo Y_POSSIBLE_NAMES=lat -oo KEEP_GEOM_COLUMNS=NO -s_srs EPSG:4326)
pg_steal=$(steal_pct)
echo "riskmap steal ${steal}%, peak resident ${rss}; ogr2ogr steal ${pg_steal}%"
printf '%-12s %10s %12s %14s %12s %14s %7s\n' file features "riskmap s" "riskmap f/s" "ogr2ogr s" "ogr2ogr f/s" ratio
for l in risk_points pipelines sensors; do
  awk -v l="$l" -v n="${rm_n[$l]}" -v a="${rm_s[$l]}" -v b="${pg_s[$l]}" 'BEGIN {
    printf "%-12s %10d %12.2f %14.0f %12.2f %14.0f %6.2fx\n", l, n, a, n / a, b, n / b, b / a }'
  echo "             riskmap: ${rm_detail[$l]}"
done
echo "sensors under tile load and edits: $loaded"
echo "  tiles meanwhile: $tiles"
echo "  longest edit: $edit_max"
psql -d "$db" -At -c "SELECT 'postgis risk_points=' || count(*) FROM risk_points" -c "SELECT 'postgis pipelines=' || count(*) FROM pipelines" -c "SELECT 'postgis sensors=' || count(*) FROM sensors"
