#!/usr/bin/env python3
"""Writes the hostile inputs of issue 7 for benches/hostile.sh into OUT_DIR:

- zigzag_line.json: a pipeline of N vertices zigzagging with a growing amplitude, the
  case where every Douglas-Peucker split peels one vertex (quadratic for plain DP);
- comb_polygon.json: a boundary polygon whose top edge is such a zigzag (simple, valid);
- plain_line.json: a pipeline of N vertices along a gentle curve;
- sensors_changed.csv (with --sensors FILE): the sensors with every type_id changed, so
  that re-importing it changes every row (the server then rebuilds the layer).

N defaults to 1,000,000, the largest geometry riskmap accepts (model::geometry::MAX_VERTICES);
coordinates carry 7 decimals so each body stays under the 32 MiB body limit.
Usage: hostile_inputs.py OUT_DIR [--vertices N] [--sensors sensors.csv]
"""
import argparse, csv, json, math, os


def zigzag(n):
    for i in range(n):
        a = min(1e-7 * (1 + i), 0.01)
        yield (106.4 + i * 1e-6, 29.5 if i % 2 == 0 else 29.5 + a)


def fmt(points):
    return "[" + ",".join("[%.7f,%.7f]" % p for p in points) + "]"


def write(path, feature_id, geometry_json, properties):
    with open(path, "w") as fh:
        fh.write('{"type":"Feature","id":%s,"geometry":%s,"properties":%s}'
                 % (json.dumps(feature_id), geometry_json, json.dumps(properties)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--vertices", type=int, default=1_000_000)
    ap.add_argument("--sensors")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    n = a.vertices
    write(os.path.join(a.out, "zigzag_line.json"), "HOSTILE_ZIGZAG",
          '{"type":"LineString","coordinates":%s}' % fmt(zigzag(n)), {"kind": "gas"})
    top = list(zigzag(n - 3))
    ring = top + [(top[-1][0], 29.49), (106.4, 29.49), top[0]]
    write(os.path.join(a.out, "comb_polygon.json"), "HOSTILE_COMB",
          '{"type":"Polygon","coordinates":[%s]}' % fmt(ring), {"name": "comb"})
    plain = ((106.2 + i * 6e-7, 29.3 + 0.05 * math.sin(i / n * 6.0)) for i in range(n))
    write(os.path.join(a.out, "plain_line.json"), "HOSTILE_PLAIN",
          '{"type":"LineString","coordinates":%s}' % fmt(plain), {"kind": "water_supply"})
    if a.sensors:
        with open(a.sensors, newline="") as src, \
                open(os.path.join(a.out, "sensors_changed.csv"), "w", newline="") as dst:
            r, w = csv.reader(src), csv.writer(dst)
            header = next(r)
            w.writerow(header)
            t = header.index("type_id")
            for row in r:
                row[t] = str(int(row[t]) % 254 + 1)
                w.writerow(row)


if __name__ == "__main__":
    main()
