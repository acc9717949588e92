//! Latency histogram: log-linear buckets over nanoseconds.
//!
//! Every round trip is recorded (no sampling), in constant memory: values below
//! 128 ns get a bucket each, above that each power of two is split into 64
//! buckets, so a reported percentile is within 1/64 (1.6 %) of the true value.

use std::time::Duration;

const SUB_BITS: u32 = 7;
const HALF: u64 = 1 << (SUB_BITS - 1);

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            // Enough buckets for any u64 value.
            counts: vec![0; ((64 - SUB_BITS as usize) + 2) * HALF as usize],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * HALF {
        return v as usize;
    }
    let shift = 64 - v.leading_zeros() - SUB_BITS;
    // `v >> shift` keeps the top SUB_BITS bits, so it lies in [HALF, 2 * HALF).
    (u64::from(shift) * HALF + (v >> shift)) as usize
}

/// The smallest and largest value of bucket `i` (inverse of `index`).
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * HALF {
        return (i, i);
    }
    let shift = i / HALF - 1;
    let mantissa = i - shift * HALF;
    // Wrapping: the top bucket ends at u64::MAX.
    (mantissa << shift, ((mantissa + 1) << shift).wrapping_sub(1))
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Adds `other`'s values to this one's.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), as the middle of its bucket.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return Duration::from_nanos((lo + (hi - lo) / 2).min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        for v in (0..1_000_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let (lo, hi) = bounds(index(v));
            assert!(lo <= v && v <= hi, "{v}: {lo}..{hi}");
            assert!((hi - lo) as f64 <= v as f64 / 64.0 + 1.0, "{v}: {lo}..{hi}");
        }
        let mut h = Histogram::default();
        for us in 1..=100 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_nanos() as f64;
        assert!((p50 - 50_000.0).abs() < 50_000.0 / 60.0, "{p50}");
        assert_eq!(h.count(), 100);
    }
}
