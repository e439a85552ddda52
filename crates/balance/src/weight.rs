//! Weights, including fractional ones, reduced to exact integer ratios.
//!
//! The seed lets a server weigh 1.5. Floating-point shares drift, so a weight is stored as a
//! whole number of thousandths and a pool's weights are divided by their greatest common
//! divisor before a schedule is built: weights 1, 2, 3, 1.5 become 2 : 4 : 6 : 3, exactly.

use std::fmt;
use std::num::NonZeroU32;

use thiserror::Error;

/// Thousandths per unit of weight: three decimal places are as fine as a weight can be.
const SCALE: u32 = 1000;

/// The largest weight accepted. nginx has no documented limit and HAProxy stops at 256;
/// 100,000 leaves room for "one server is a thousand times bigger" while keeping every
/// schedule sum inside 64 bits with room to spare.
pub const MAX_WEIGHT: u32 = 100_000;

/// A weight that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WeightError {
    /// Zero, negative, NaN or infinite.
    #[error("weight {0} is not a positive number; weights are > 0 (e.g. 1, 2.5)")]
    NotPositive(f64),
    /// Above [`MAX_WEIGHT`].
    #[error("weight {0} is too large; the largest weight is {MAX_WEIGHT}")]
    TooLarge(f64),
    /// More than three decimal places.
    #[error("weight {0} has more than three decimal places; use e.g. 1.5 or 0.125")]
    TooPrecise(f64),
}

/// A backend's relative share of traffic: positive, at most [`MAX_WEIGHT`], with at most three
/// decimal places.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(NonZeroU32);

impl Weight {
    /// Weight 1, the default.
    pub const ONE: Weight = Weight(match NonZeroU32::new(SCALE) {
        Some(one) => one,
        None => NonZeroU32::MIN,
    });

    /// A whole-number weight.
    pub fn from_integer(units: u32) -> Result<Weight, WeightError> {
        if units == 0 {
            return Err(WeightError::NotPositive(0.0));
        }
        if units > MAX_WEIGHT {
            return Err(WeightError::TooLarge(f64::from(units)));
        }
        Ok(Weight(
            NonZeroU32::new(units * SCALE).ok_or(WeightError::NotPositive(0.0))?,
        ))
    }

    /// A weight such as `1.5`. Rejects zero, negatives, NaN, infinities, values above
    /// [`MAX_WEIGHT`] and values that need more than three decimal places.
    pub fn new(value: f64) -> Result<Weight, WeightError> {
        if !value.is_finite() || value <= 0.0 {
            return Err(WeightError::NotPositive(value));
        }
        if value > f64::from(MAX_WEIGHT) {
            return Err(WeightError::TooLarge(value));
        }
        let scaled = value * f64::from(SCALE);
        let rounded = scaled.round();
        // 1e-6 of a thousandth tolerates the binary representation of decimals like 0.1.
        if (scaled - rounded).abs() > 1e-6 || rounded < 1.0 {
            return Err(WeightError::TooPrecise(value));
        }
        // `rounded` is in 1..=MAX_WEIGHT*SCALE, which fits u32.
        let thousandths = rounded as u32;
        NonZeroU32::new(thousandths)
            .map(Weight)
            .ok_or(WeightError::NotPositive(value))
    }

    /// The weight in thousandths (weight 1.5 is 1500).
    pub fn thousandths(self) -> u32 {
        self.0.get()
    }

    /// Rebuilds a weight from [`Weight::thousandths`].
    pub fn from_thousandths(thousandths: u32) -> Result<Weight, WeightError> {
        let value = f64::from(thousandths) / f64::from(SCALE);
        match NonZeroU32::new(thousandths) {
            Some(t) if thousandths <= MAX_WEIGHT * SCALE => Ok(Weight(t)),
            Some(_) => Err(WeightError::TooLarge(value)),
            None => Err(WeightError::NotPositive(value)),
        }
    }

    /// The weight as a float, for display and statistics.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0.get()) / f64::from(SCALE)
    }
}

impl Default for Weight {
    fn default() -> Weight {
        Weight::ONE
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0.get();
        let (whole, frac) = (t / SCALE, t % SCALE);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Weight({self})")
    }
}

/// Greatest common divisor (Euclid); `gcd(0, x) == x`.
pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Divides every weight by the weights' greatest common divisor: the smallest integers with
/// the same ratios. Empty in, empty out.
pub(crate) fn reduce(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    weights.iter().map(|w| w / g).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_weights_become_exact_ratios() {
        let w: Vec<u64> = [1.0, 2.0, 3.0, 1.5]
            .iter()
            .map(|&v| u64::from(Weight::new(v).unwrap().thousandths()))
            .collect();
        assert_eq!(reduce(&w), vec![2, 4, 6, 3]);
    }

    #[test]
    fn bad_weights_are_rejected_with_a_reason() {
        assert!(matches!(Weight::new(0.0), Err(WeightError::NotPositive(_))));
        assert!(matches!(
            Weight::new(-1.0),
            Err(WeightError::NotPositive(_))
        ));
        assert!(matches!(
            Weight::new(f64::NAN),
            Err(WeightError::NotPositive(_))
        ));
        assert!(matches!(Weight::new(1e9), Err(WeightError::TooLarge(_))));
        assert!(matches!(
            Weight::new(0.0001),
            Err(WeightError::TooPrecise(_))
        ));
        assert!(matches!(
            Weight::new(1.2345),
            Err(WeightError::TooPrecise(_))
        ));
        assert!(matches!(
            Weight::from_integer(0),
            Err(WeightError::NotPositive(_))
        ));
    }

    #[test]
    fn decimals_survive_binary_floating_point() {
        assert_eq!(Weight::new(0.1).unwrap().thousandths(), 100);
        assert_eq!(Weight::new(2.675).unwrap().thousandths(), 2675);
        assert_eq!(Weight::new(1.5).unwrap().to_string(), "1.5");
        assert_eq!(Weight::new(2.05).unwrap().to_string(), "2.05");
        assert_eq!(Weight::from_integer(7).unwrap().to_string(), "7");
    }

    #[test]
    fn reduce_handles_coprime_and_single_weights() {
        assert_eq!(reduce(&[3, 5]), vec![3, 5]);
        assert_eq!(reduce(&[4000]), vec![1]);
        assert_eq!(reduce(&[]), Vec::<u64>::new());
    }
}
