//! The nearest point of a geodesic segment to a point: a bracketed Newton iteration along
//! the segment, with Karney's solutions for every distance.
//!
//! # Why it finds the global minimum
//!
//! Let `f(s)` be the geodesic distance from `C` to the point `P(s)` at arc length `s`
//! along the segment. Where `f` is smooth (P ≠ C, P before C's cut locus),
//! `f'(s) = cos θ`, θ the angle at P between the segment and the geodesic from C, and
//! `f''(s) = sin²θ · M21/m12` (the geodesic curvature of the circle about C through P is
//! `M21/m12`, and the segment itself has none). At a critical point θ = 90°, so
//! `f'' = M21/m12 > 0` as long as `M21 > 0`, which holds within about 10,000 km of C
//! (a quarter meridian; a test checks 9,000 km in every direction). A smooth function whose
//! every critical point is a strict minimum has at most one (two minima would enclose a
//! maximum), so on a piece whose points all lie within 9,000 km of C, `f` decreases then
//! increases. Segments are cut into pieces of at most [`PIECE_M`]; every point of a piece
//! is within `PIECE_M` of its nearest point, so the argument covers every piece whose
//! distance is below 8,000 km. Farther pieces are searched the same way (exact on the
//! sphere, where `f` has one minimum per half circle) but without this proof; no query of
//! this server measures such distances.
//!
//! On a unimodal `f`, the sign of `f'` says on which side the minimum lies, so a bracket
//! `[lo, hi]` always holds it; Newton steps that leave the bracket are replaced by the
//! bracket's end (first time) or its middle. The result is `f` at a point of the segment,
//! so never below the true minimum, and above it by less than [`TOLERANCE_M`].

use geo_types::Coord;
use geographiclib_rs::{GeodesicLine, capability as caps};

use super::ellipsoid::WGS84;

/// Longest piece searched as one unimodal function, metres.
pub(crate) const PIECE_M: f64 = 1_000_000.0;
/// Iteration stops when a step along the segment is below this, metres. The distance
/// found is then above the minimum by at most `|f'|·step`, far below a millimetre.
pub(crate) const TOLERANCE_M: f64 = 1e-7;
/// Iterations before giving up on convergence (never reached in tests: Newton takes 2–5
/// steps, and the bracket halves at worst, from 1,000 km to 1e-7 m in 44).
const MAX_STEPS: usize = 100;

/// Karney's inverse distance, metres, between two lon/lat points (degrees).
pub(crate) fn karney_m(a: Coord, b: Coord) -> f64 {
    WGS84._gen_inverse(a.y, a.x, b.y, b.x, caps::DISTANCE).1
}

/// Geodesic distance, metres, from `c` to the geodesic segment from `a` to `b`;
/// `t_guess` (0..=1) is where along the segment to start looking.
pub(crate) fn point_segment_m(c: Coord, a: Coord, b: Coord, t_guess: f64) -> f64 {
    let (_a12, length, salp1, calp1, ..) =
        WGS84._gen_inverse(a.y, a.x, b.y, b.x, caps::DISTANCE | caps::AZIMUTH);
    if length.is_nan() || length <= 0.0 {
        // A zero-length segment is its vertex (NaN input stays NaN).
        return if length == 0.0 {
            karney_m(c, a)
        } else {
            f64::NAN
        };
    }
    let azi1 = salp1.atan2(calp1).to_degrees();
    let line = GeodesicLine::new(
        &WGS84,
        a.y,
        a.x,
        azi1,
        Some(caps::LATITUDE | caps::LONGITUDE | caps::AZIMUTH | caps::DISTANCE_IN),
        Some(salp1),
        Some(calp1),
    );
    let pieces = (length / PIECE_M).ceil().max(1.0);
    let piece = length / pieces;
    let guess = t_guess.clamp(0.0, 1.0) * length;
    let mut best = f64::INFINITY;
    // `pieces` is at most 21 for any geodesic (20,004 km long at most).
    let count = pieces as usize;
    for i in 0..count {
        let lo = piece * i as f64;
        let hi = if i + 1 == count {
            length
        } else {
            piece * (i + 1) as f64
        };
        let start = if (lo..=hi).contains(&guess) {
            guess
        } else {
            0.5 * (lo + hi)
        };
        best = best.min(minimise(c, &line, lo, hi, start));
        if best == 0.0 {
            break;
        }
    }
    best
}

/// Distance from `c` to the point at arc length `s` of `line`, with its first and
/// second derivatives in `s`.
fn evaluate(c: Coord, line: &GeodesicLine, s: f64) -> (f64, f64, f64) {
    let (_, lat, lon, azi, ..) =
        line._gen_position(false, s, caps::LATITUDE | caps::LONGITUDE | caps::AZIMUTH);
    let (_, d, _, _, salp2, calp2, m12, _, m21, _) = WGS84._gen_inverse(
        c.y,
        c.x,
        lat,
        lon,
        caps::DISTANCE | caps::AZIMUTH | caps::REDUCEDLENGTH | caps::GEODESICSCALE,
    );
    let (sa, ca) = azi.to_radians().sin_cos();
    // cos and sin of the angle between the segment and the geodesic from c, at P.
    let cos_t = ca * calp2 + sa * salp2;
    let sin_t = sa * calp2 - ca * salp2;
    (d, cos_t, sin_t * sin_t * m21 / m12)
}

/// Minimum over `[lo, hi]` of the distance from `c` to `line`, starting at `start`.
fn minimise(c: Coord, line: &GeodesicLine, mut lo: f64, mut hi: f64, start: f64) -> f64 {
    let (mut lo_seen, mut hi_seen) = (false, false);
    let mut s = start;
    let mut best = f64::INFINITY;
    for _ in 0..MAX_STEPS {
        let (d, g, h) = evaluate(c, line, s);
        if d.is_nan() {
            return f64::NAN;
        }
        best = best.min(d);
        if d == 0.0 {
            return 0.0;
        }
        if g >= 0.0 {
            hi = s;
            hi_seen = true;
        }
        if g <= 0.0 {
            lo = s;
            lo_seen = true;
        }
        if hi - lo <= TOLERANCE_M {
            break;
        }
        let newton = s - g / h;
        let next = if newton > lo && newton < hi {
            newton
        } else if newton <= lo && !lo_seen {
            lo
        } else if newton >= hi && !hi_seen {
            hi
        } else {
            0.5 * (lo + hi)
        };
        if (next - s).abs() <= TOLERANCE_M {
            break;
        }
        s = next;
    }
    best
}
