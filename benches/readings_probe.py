#!/usr/bin/env python3
"""Probe for benches/readings.sh: while a flood of readings runs, raises warnings on
risk points kept out of the flood, one every INTERVAL seconds, and measures the delay
from each reading's answer to its warning on /warnings/stream and in the tile of the
`warnings` layer holding the point (the tile's bytes name the risk point once drawn).

  readings_probe.py BASE KEY PROBES.csv SECONDS INTERVAL
PROBES.csv: sensor_id,risk_point_id,lon,lat (one sensor per probe risk point).
Prints one line: probes=N sse_p50_ms= sse_p99_ms= tile_p50_ms= tile_p99_ms= missed=
"""
import csv, http.client, json, math, re, sys, threading, time
from datetime import datetime, timezone
from urllib.parse import urlparse

base, key, probes_file, seconds, interval = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
u = urlparse(base)
probes = list(csv.reader(open(probes_file)))
seen = {}  # risk point id -> time the raised event arrived
lock = threading.Lock()


# The subject of a raised event ({"id": ..., "layer": ...} in either order).
SUBJECT = re.compile(rb'"subject":\{[^}]*"id":"([^"]+)"')


def listen():
    # Reads the stream in chunks and looks only into `raised` events naming a probe
    # point: a storm sends thousands of events a second, and a line-by-line parse in
    # Python took a good part of a core from the server it measures.
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    c.request("GET", "/warnings/stream")
    r = c.getresponse()
    wanted = {p[1].encode() for p in probes}
    rest = b""
    while True:
        chunk = r.read1(1 << 16)
        if not chunk:
            return
        now = time.monotonic()
        *events, rest = (rest + chunk).split(b"\n\n")
        for e in events:
            if b"event: raised" not in e:
                continue
            m = SUBJECT.search(e)
            if m and m.group(1) in wanted:
                with lock:
                    seen.setdefault(m.group(1).decode(), now)


def tile_of(lon, lat, z=14):
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return f"{z}/{x}/{y}"


threading.Thread(target=listen, daemon=True).start()
time.sleep(1)
sse, tile, missed = [], [], 0
start = time.monotonic()
for sensor, rp, lon, lat in probes:
    if time.monotonic() - start > seconds:
        break
    t_next = time.monotonic() + interval
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = json.dumps({"sensor_id": sensor, "ts": ts, "value": 1e6})
    c.request("POST", "/readings", body, {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"})
    r = c.getresponse()
    rep = json.loads(r.read())
    answered = time.monotonic()
    if r.status != 200 or rep.get("transitions", 0) < 1:
        missed += 1
        continue
    path = f"/tiles/warnings/{tile_of(float(lon), float(lat))}.mvt"
    got_tile = None
    while time.monotonic() - answered < 10:
        t = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        t.request("GET", path)
        resp = t.getresponse()
        data = resp.read()
        if rp.encode() in data:
            got_tile = time.monotonic()
            break
        time.sleep(0.005)
    deadline = answered + 10
    while rp not in seen and time.monotonic() < deadline:
        time.sleep(0.002)
    with lock:
        s = seen.get(rp)
    if s is None or got_tile is None:
        missed += 1
        continue
    sse.append(max(0.0, s - answered) * 1000)
    tile.append((got_tile - answered) * 1000)
    time.sleep(max(0.0, t_next - time.monotonic()))


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(math.ceil(p / 100 * len(v))) - 1)]


print(f"probes={len(sse)} sse_p50_ms={pct(sse, 50):.1f} sse_p99_ms={pct(sse, 99):.1f} "
      f"tile_p50_ms={pct(tile, 50):.1f} tile_p99_ms={pct(tile, 99):.1f} missed={missed}")
