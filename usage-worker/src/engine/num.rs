//! Number helpers: drift-free money sums and JavaScript-shaped JSON numbers.
//!
//! Costs are summed over hundreds of thousands of small values; a naive `f64` running sum drifts,
//! so every aggregate uses [`KSum`] (Neumaier compensated summation). OpenClaw is JavaScript, where
//! every number is a double and `JSON.stringify(3)` prints `3`, not `3.0`: [`Js`] reproduces that.

use serde::{Serialize, Serializer};

/// A compensated (Neumaier) sum. Plain data, so rollups holding it stay serializable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KSum {
    sum: f64,
    comp: f64,
}

impl KSum {
    /// Adds one value, carrying the low-order bits lost by the addition in `comp`.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// Merges another compensated sum without losing its compensation term.
    #[inline]
    pub fn merge(&mut self, other: &KSum) {
        self.add(other.sum);
        self.comp += other.comp;
    }

    /// The corrected value.
    #[inline]
    pub fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

impl Serialize for KSum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Js(self.value()).serialize(s)
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
    fn ksum_beats_naive_sum() {
        let mut k = KSum::default();
        let mut naive = 0.0f64;
        for _ in 0..1_000_000 {
            k.add(0.1);
            naive += 0.1;
        }
        assert!((k.value() - 100_000.0).abs() < 1e-9);
        assert!((naive - 100_000.0).abs() > 1e-7);
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
