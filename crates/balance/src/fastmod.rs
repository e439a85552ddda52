//! Division by a run-time constant without a `div` instruction.
//!
//! Every round-robin pick maps a shared, ever-growing cursor onto a schedule: `cursor % len`.
//! A 64-bit `div` costs 25-90 cycles depending on the CPU, more than the rest of the pick
//! together. The divisor only changes when the schedule is rebuilt, so we precompute
//! `M = ceil(2^128 / d)` once and get quotient and remainder from multiplications (Lemire,
//! Kaser and Kurz, "Faster Remainder by Direct Computation", 2019), exact for every 64-bit
//! numerator.

/// A precomputed divisor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastDiv {
    /// `ceil(2^128 / d)`; zero when `d == 1`, which is special-cased.
    m: u128,
    d: u64,
}

/// `(a * b) >> 128`: the bits of the 192-bit product above the low 128.
#[inline(always)]
fn mul_hi_128_64(a: u128, b: u64) -> u64 {
    let lo = u128::from(a as u64) * u128::from(b);
    let hi = (a >> 64) * u128::from(b);
    ((hi + (lo >> 64)) >> 64) as u64
}

impl FastDiv {
    /// Precomputes division by `d`; `d` must be at least 1 (0 is treated as 1).
    pub(crate) fn new(d: u64) -> FastDiv {
        let d = d.max(1);
        let m = if d == 1 {
            0
        } else {
            (u128::MAX / u128::from(d)) + 1
        };
        FastDiv { m, d }
    }

    /// The divisor.
    #[inline(always)]
    pub(crate) fn divisor(&self) -> u64 {
        self.d
    }

    /// `n % d`, from the exact quotient: one multiplication after [`div`](Self::div)'s two,
    /// where Lemire's direct remainder takes four.
    #[inline(always)]
    pub(crate) fn rem(&self, n: u64) -> u64 {
        if self.d == 1 {
            return 0;
        }
        n - self.div(n) * self.d
    }

    /// `n / d`.
    #[inline(always)]
    pub(crate) fn div(&self, n: u64) -> u64 {
        if self.d == 1 {
            return n;
        }
        mul_hi_128_64(self.m, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_values_match_hardware_division() {
        let ds = [
            1u64,
            2,
            3,
            7,
            10,
            255,
            65_536,
            1 << 32,
            (1 << 32) + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ns = [
            0u64,
            1,
            2,
            3,
            1 << 31,
            1 << 32,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &d in &ds {
            let f = FastDiv::new(d);
            for &n in &ns {
                assert_eq!(f.rem(n), n % d, "{n} % {d}");
                assert_eq!(f.div(n), n / d, "{n} / {d}");
            }
        }
    }

    proptest! {
        #[test]
        fn matches_hardware_division(n in any::<u64>(), d in 1u64..) {
            let f = FastDiv::new(d);
            prop_assert_eq!(f.rem(n), n % d);
            prop_assert_eq!(f.div(n), n / d);
        }

        #[test]
        fn matches_hardware_division_for_small_divisors(n in any::<u64>(), d in 1u64..100_000) {
            let f = FastDiv::new(d);
            prop_assert_eq!(f.rem(n), n % d);
            prop_assert_eq!(f.div(n), n / d);
        }
    }
}
