//! Number helpers: drift-free money sums and JavaScript-shaped JSON numbers.
//!
//! Costs are summed over hundreds of thousands of small values; a naive `f64` running sum drifts
//! and depends on order, so every aggregate uses [`Exact`] (fixed point, order-independent,
//! exactly invertible). OpenClaw is JavaScript, where
//! every number is a double and `JSON.stringify(3)` prints `3`, not `3.0`: [`Js`] reproduces that.

use serde::{Deserialize, Serialize, Serializer};

/// An exact sum of doubles: each value is rounded once to a multiple of 2^-60 and the
/// multiples are added as integers. Sums are therefore independent of order and subtraction
/// undoes addition exactly, which is what lets an answer be kept up to date by removing a
/// session's old contribution and adding its new one: the result is bit for bit the answer a
/// full recomputation gives. The rounding (≤ 4.4e-19 per value, dollars or milliseconds) is far
/// below what a double shows of a sum. The range (±2^67) covers any plausible total; values
/// beyond it are refused upstream as implausible (see `line.rs`), and the arithmetic wraps
/// rather than panics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exact(i128);

/// 2^60, the number of units in 1.
const SCALE: f64 = (1u64 << 60) as f64;
/// Largest magnitude converted; anything larger is clamped (never reached by plausible data).
const LIMIT: f64 = 1.0e20;

impl Exact {
    pub const ZERO: Exact = Exact(0);

    /// `x` rounded to the nearest unit; non-finite values count as zero.
    #[inline]
    pub fn of(x: f64) -> Exact {
        if !x.is_finite() {
            return Exact(0);
        }
        Exact((x.clamp(-LIMIT, LIMIT) * SCALE).round() as i128)
    }

    #[inline]
    pub fn add(&mut self, o: Exact) {
        self.0 = self.0.wrapping_add(o.0);
    }

    #[inline]
    pub fn sub(&mut self, o: Exact) {
        self.0 = self.0.wrapping_sub(o.0);
    }

    /// Adds `o` once for `sign` 1, removes it for -1.
    #[inline]
    pub fn apply(&mut self, o: Exact, sign: i64) {
        if sign >= 0 { self.add(o) } else { self.sub(o) }
    }

    #[inline]
    pub fn add_f64(&mut self, x: f64) {
        self.add(Exact::of(x));
    }

    /// The nearest double.
    #[inline]
    pub fn value(&self) -> f64 {
        self.0 as f64 / SCALE
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The raw units, for ordering without rounding.
    pub fn units(&self) -> i128 {
        self.0
    }
}

/// Adds or removes `o` in a token or count sum. Wrapping, so that removal undoes addition even
/// past `u64::MAX` (not reachable with plausible data).
#[inline]
pub fn apply_u64(a: &mut u64, o: u64, sign: i64) {
    *a = if sign >= 0 { a.wrapping_add(o) } else { a.wrapping_sub(o) };
}

/// An [`Exact`] printed as a JavaScript number.
#[derive(Debug, Clone, Copy)]
pub struct JsExact(pub Exact);

impl Serialize for JsExact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Js(self.0.value()).serialize(s)
    }
}

/// An `f64` serialized the way `JSON.stringify` prints it: integral values without a fraction,
/// non-finite values as `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Js(pub f64);

/// Largest integer a double represents exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

impl Serialize for Js {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if !v.is_finite() {
            s.serialize_none()
        } else if v == v.trunc() && v.abs() <= MAX_SAFE {
            // `-0` prints as `0` in JavaScript too.
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sums_ignore_order_and_undo_exactly() {
        let values: Vec<f64> = (0..100_000).map(|i| 0.1 + f64::from(i % 97) * 1e-7).collect();
        let mut fwd = Exact::ZERO;
        values.iter().for_each(|v| fwd.add_f64(*v));
        let mut rev = Exact::ZERO;
        values.iter().rev().for_each(|v| rev.add_f64(*v));
        assert_eq!(fwd, rev);
        let naive: f64 = values.iter().sum();
        // The true sum, from integers: every value is (1e6 + i % 97) * 1e-7.
        let exact = (0..100_000i64).map(|i| 1_000_000 + i % 97).sum::<i64>() as f64 * 1e-7;
        assert!((fwd.value() - exact).abs() <= 1e-9, "{} vs {exact}", fwd.value());
        assert!((fwd.value() - naive).abs() < 1e-6);
        let mut back = fwd;
        values.iter().for_each(|v| back.sub(Exact::of(*v)));
        assert!(back.is_zero());
        assert_eq!(Exact::of(f64::NAN), Exact::ZERO);
        assert_eq!(Exact::of(1e308).value(), 1e20);
    }

    #[test]
    fn js_numbers() {
        let j = |v| serde_json::to_string(&Js(v)).unwrap();
        assert_eq!(j(3.0), "3");
        assert_eq!(j(-0.0), "0");
        assert_eq!(j(0.5), "0.5");
        assert_eq!(j(f64::NAN), "null");
        assert_eq!(j(14531.666666666666), "14531.666666666666");
    }
}
