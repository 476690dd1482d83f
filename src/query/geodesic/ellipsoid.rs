//! The WGS84 ellipsoid: constants, Karney's solver, Earth-centred coordinates and the
//! chord bounds that let most decisions skip Karney's iteration.
//!
//! # The chord bounds (metres)
//!
//! For two points on the ellipsoid with straight-line (chord) distance `c` in space and
//! geodesic distance `s`:
//!
//! - `c <= s`: a straight line is the shortest curve in space;
//! - `s <= 2ρ·asin(c / 2ρ)` with `ρ = b²/a` (6,335 km, the smallest radius of curvature of
//!   the ellipsoid): the plane through both points and the centre cuts the ellipsoid in an
//!   ellipse whose radius of curvature is at least `ρ`; by Schur's comparison theorem its
//!   arc between the points is no longer than a circular arc of radius `ρ` on the same
//!   chord, and the geodesic is no longer than that arc. Used below 1,000 km only.
//!
//! The gap is `c³/24ρ²`: 0.13 µm at 500 m, 1 mm at 10 km.
//!
//! A geodesic segment is a space curve of curvature at most `1/ρ` (a geodesic's curvature
//! is the normal curvature of the surface in its direction). Its point at arc length `s`
//! lies within `κ·s·(L−s)/2 <= L²/8ρ` of the point at fraction `s/L` of its chord: apply
//! the interpolation error bound `|h(s)| <= max|h''|·s(L−s)/2` to `h = γ − chord`, which
//! vanishes at both ends, along the direction of `h(s)`. So the distance from a point to
//! the chord segment, less that sagitta, is a lower bound of the distance to the geodesic
//! segment.

use std::sync::LazyLock;

use geo_types::Coord;
use geographiclib_rs::Geodesic;

/// Semi-major axis, metres.
pub(crate) const A: f64 = 6_378_137.0;
/// Flattening.
pub(crate) const F: f64 = 1.0 / 298.257_223_563;
/// Semi-minor axis, metres.
pub(crate) const B: f64 = A * (1.0 - F);
/// First eccentricity squared.
pub(crate) const E2: f64 = F * (2.0 - F);
/// Smallest radius of curvature on the ellipsoid (meridional, at the equator), metres.
pub(crate) const RHO_MIN: f64 = B * B / A;
/// Slack added to every bound, metres: covers the rounding of Earth-centred coordinates
/// (about 1e-9 relative of 6.4e6 m) and of Karney's solution (15 nm).
pub(crate) const SLACK_M: f64 = 1e-6;
/// Chords longer than this get no upper bound from [`chord_upper_m`].
const CHORD_LIMIT_M: f64 = 1_000_000.0;

/// Karney's solver for WGS84, built once (its series coefficients cost a few µs).
pub(crate) static WGS84: LazyLock<Geodesic> = LazyLock::new(Geodesic::wgs84);

/// A point in Earth-centred, Earth-fixed coordinates, metres.
pub(crate) type V3 = [f64; 3];

/// Earth-centred coordinates of a WGS84 lon/lat (degrees) on the ellipsoid surface.
pub(crate) fn ecef(c: Coord) -> V3 {
    let (sp, cp) = c.y.to_radians().sin_cos();
    let (sl, cl) = c.x.to_radians().sin_cos();
    let n = A / (1.0 - E2 * sp * sp).sqrt();
    [n * cp * cl, n * cp * sl, n * (1.0 - E2) * sp]
}

pub(crate) fn sub(p: V3, q: V3) -> V3 {
    [p[0] - q[0], p[1] - q[1], p[2] - q[2]]
}

pub(crate) fn dot(p: V3, q: V3) -> f64 {
    p[0] * q[0] + p[1] * q[1] + p[2] * q[2]
}

pub(crate) fn norm(p: V3) -> f64 {
    dot(p, p).sqrt()
}

/// Largest geodesic distance two points `chord_m` apart in space can be, metres
/// (infinite beyond 1,000 km, where the bound is not used).
pub(crate) fn chord_upper_m(chord_m: f64) -> f64 {
    if chord_m > CHORD_LIMIT_M || chord_m.is_nan() {
        return f64::INFINITY;
    }
    2.0 * RHO_MIN * (chord_m / (2.0 * RHO_MIN)).asin() + SLACK_M
}

/// Bounds on the geodesic distance from `c` to the geodesic segment between `pa` and
/// `pb` (all Earth-centred), with the fraction of the chord nearest `c`:
/// `(lower, upper, t)`, metres. `PreparedGeometry` computes its two parts apart
/// ([`chord_gap`] per point asked, [`sagitta_m`] once per edge).
#[cfg(test)]
pub(crate) fn segment_bounds(c: V3, pa: V3, pb: V3) -> (f64, f64, f64) {
    let (d3, t) = chord_gap(c, pa, pb);
    let sag = sagitta_m(norm(sub(pb, pa)));
    let lower = (d3 - sag - SLACK_M).max(0.0);
    let upper = chord_upper_m(d3 + sag);
    (lower, upper, t)
}

/// The distance in space from `c` to the chord segment `pa`–`pb` (all Earth-centred),
/// and the fraction of the chord nearest `c`: the part of [`segment_bounds`] that
/// depends on `c`.
pub(crate) fn chord_gap(c: V3, pa: V3, pb: V3) -> (f64, f64) {
    let ab = sub(pb, pa);
    let len2 = dot(ab, ab);
    let t = if len2 > 0.0 {
        (dot(sub(c, pa), ab) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let q = [pa[0] + t * ab[0], pa[1] + t * ab[1], pa[2] + t * ab[2]];
    (norm(sub(c, q)), t)
}

/// How far a geodesic segment whose chord is `chord_m` long can stray from its chord,
/// metres: the part of [`segment_bounds`] that depends on the segment alone.
pub(crate) fn sagitta_m(chord_m: f64) -> f64 {
    let length = chord_upper_m(chord_m);
    length * length / (8.0 * RHO_MIN)
}

/// Meridional radius of curvature at latitude `phi` (radians), metres.
pub(crate) fn meridional_radius(phi: f64) -> f64 {
    let s = phi.sin();
    let w2 = 1.0 - E2 * s * s;
    A * (1.0 - E2) / (w2 * w2.sqrt())
}

/// Radius of the parallel at latitude `phi` (radians), metres: `N·cos φ`.
pub(crate) fn parallel_radius(phi: f64) -> f64 {
    let (s, c) = phi.sin_cos();
    (A * c / (1.0 - E2 * s * s).sqrt()).max(0.0)
}

/// `x` degrees wrapped into (-180, 180].
pub(crate) fn wrap180(x: f64) -> f64 {
    let r = x.rem_euclid(360.0);
    if r > 180.0 { r - 360.0 } else { r }
}

#[cfg(test)]
mod tests {
    use geo_types::coord;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::query::geodesic::segment::{karney_m, point_segment_m};

    fn random_coord(rng: &mut ChaCha8Rng, near: Coord, spread: f64) -> Coord {
        coord! {
            x: wrap180(near.x + rng.random_range(-spread..spread)),
            y: (near.y + rng.random_range(-spread..spread)).clamp(-90.0, 90.0),
        }
    }

    #[test]
    fn chord_bounds_hold_between_points() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for i in 0..20_000 {
            let spread = [0.01, 0.1, 1.0, 5.0][i % 4];
            let start =
                coord! { x: rng.random_range(-180.0..180.0), y: rng.random_range(-90.0..90.0) };
            let a = random_coord(&mut rng, start, 0.0001);
            let b = random_coord(&mut rng, a, spread);
            let chord = norm(sub(ecef(a), ecef(b)));
            let s = karney_m(a, b);
            assert!(chord - SLACK_M <= s, "{a:?} {b:?}: chord {chord} > {s}");
            assert!(
                s <= chord_upper_m(chord),
                "{a:?} {b:?}: {s} > {}",
                chord_upper_m(chord)
            );
            if chord < 500.0 {
                assert!(chord_upper_m(chord) - s < 2e-6, "loose at {chord} m");
            }
        }
    }

    #[test]
    fn segment_bounds_hold_around_the_exact_distance() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for i in 0..3_000 {
            let spread = [0.005, 0.05, 0.5, 3.0][i % 4];
            let centre =
                coord! { x: rng.random_range(-180.0..180.0), y: rng.random_range(-89.0..89.0) };
            let a = random_coord(&mut rng, centre, spread);
            let b = random_coord(&mut rng, centre, spread);
            let c = random_coord(&mut rng, centre, spread);
            let (lower, upper, t) = segment_bounds(ecef(c), ecef(a), ecef(b));
            let exact = point_segment_m(c, a, b, t);
            assert!(
                lower <= exact,
                "{c:?} to {a:?}-{b:?}: lower {lower} > {exact}"
            );
            assert!(
                exact <= upper,
                "{c:?} to {a:?}-{b:?}: upper {upper} < {exact}"
            );
        }
    }

    #[test]
    fn wrap180_keeps_the_half_open_range() {
        assert_eq!(wrap180(180.0), 180.0);
        assert_eq!(wrap180(-180.0), 180.0);
        assert_eq!(wrap180(190.0), -170.0);
        assert_eq!(wrap180(-190.0), 170.0);
        assert_eq!(wrap180(0.0), 0.0);
    }
}
