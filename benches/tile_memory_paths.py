#!/usr/bin/env python3
"""Print COUNT distinct z/x/y tile paths (XYZ, EPSG:3857 grid) where a riskmap store has data.

Tiles are those of the store's points (risk points and sensors, read straight from the
GeoPackage) at zooms MINZ..MAXZ, each with its 3x3 neighbourhood, deduplicated and shuffled
with a fixed seed, so every path is drawn once before any repeats and most tiles hold features.
Usage: tile_memory_paths.py STORE.gpkg [--count 120000] [--minz 14] [--maxz 18] > paths.txt
"""
import argparse, math, random, sqlite3, struct

# GeoPackage binary header: envelope length in bytes for each envelope indicator (flags bits 1-3).
ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def point_of(blob):
    """(lon, lat) of a GeoPackage point blob, or None for other geometry types."""
    flags = blob[3]
    start = 8 + ENVELOPE_BYTES.get((flags >> 1) & 7, 0)
    order = "<" if blob[start] == 1 else ">"
    (kind,) = struct.unpack_from(order + "I", blob, start + 1)
    if kind % 1000 != 1:
        return None
    return struct.unpack_from(order + "dd", blob, start + 5)


def tile_of(lon, lat, z):
    n = 2 ** z
    x = int((lon + 180.0) / 360.0 * n)
    lat = max(min(lat, 85.0511), -85.0511)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--count", type=int, default=120_000)
    ap.add_argument("--minz", type=int, default=14)
    ap.add_argument("--maxz", type=int, default=18)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    db = sqlite3.connect(f"file:{a.store}?mode=ro", uri=True)
    tables = [r[0] for r in db.execute(
        "SELECT table_name FROM gpkg_geometry_columns WHERE geometry_type_name IN ('POINT', 'MULTIPOINT')")]
    rng = random.Random(a.seed)
    points = []
    for t in tables:
        # At most 200,000 points a layer (a city's 4.5 M sensors would only slow this down).
        n = db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        step = max(1, n // 200_000)
        for (blob,) in db.execute(f'SELECT geom FROM "{t}" WHERE fid % ? = 0', (step,)):
            if blob and (p := point_of(blob)):
                points.append(p)
    rng.shuffle(points)
    seen, out = set(), []
    # Each point adds its tiles at every zoom; deep zooms have more distinct tiles, so
    # most paths are z17-z18 (demo: 4,000 at z14, 61,000 at z18), street-level panning.
    zooms = list(range(a.minz, a.maxz + 1))
    for lon, lat in points:
        for z in zooms:
            cx, cy = tile_of(lon, lat, z)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    t = (z, cx + dx, cy + dy)
                    if t not in seen and 0 <= t[1] < 2 ** z and 0 <= t[2] < 2 ** z:
                        seen.add(t)
                        out.append(t)
    if len(out) < a.count:
        raise SystemExit(f"only {len(out)} distinct tiles near the store's points; need {a.count}")
    rng.shuffle(out)
    for z, x, y in out[: a.count]:
        print(f"{z}/{x}/{y}")


if __name__ == "__main__":
    main()
