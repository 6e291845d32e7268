//! Short trends for the page's sparklines: a bounded ring of samples per
//! point, all taken at the same moments (one clock for all, so a sample
//! needs no time of its own).
//!
//! Invariants: memory is `points × TREND_LEN × 4` bytes, whatever the
//! rate of readings; a gap (no value, bad, stale) is a NaN sample, shown as
//! a break in the line, never bridged.

use std::fmt::Write as _;

/// Samples kept per point (at `feed::TREND_STEP`, 4 minutes).
pub const TREND_LEN: usize = 120;

#[derive(Debug, Default)]
pub struct Trends {
    /// `TREND_LEN` rows of one sample per point, time-major (a sample is
    /// one sequential write of a row); row `head` is the oldest.
    values: Vec<f32>,
    points: usize,
    head: usize,
    /// Samples taken so far, at most `TREND_LEN`.
    filled: usize,
}

impl Trends {
    /// Takes one sample for every point, in id order; points that appeared
    /// since the last sample start with gaps.
    pub fn sample(&mut self, samples: impl ExactSizeIterator<Item = f32>) {
        let n = samples.len();
        if n > self.points {
            // Rare (points named at run time): lay the rows out again.
            let mut wider = vec![f32::NAN; n * TREND_LEN];
            if self.points > 0 {
                for (old, new) in self
                    .values
                    .chunks_exact(self.points)
                    .zip(wider.chunks_exact_mut(n))
                {
                    new[..self.points].copy_from_slice(old);
                }
            }
            self.values = wider;
            self.points = n;
        }
        let row = &mut self.values[self.head * self.points..(self.head + 1) * self.points];
        let mut written = 0;
        for (slot, v) in row.iter_mut().zip(samples) {
            *slot = v;
            written += 1;
        }
        // Fewer samples than points (cannot happen today): gaps, not old values.
        for slot in &mut row[written..] {
            *slot = f32::NAN;
        }
        self.head = (self.head + 1) % TREND_LEN;
        self.filled = (self.filled + 1).min(TREND_LEN);
    }

    /// The samples of point `p`, oldest first.
    pub fn series(&self, p: usize) -> impl Iterator<Item = f32> + '_ {
        let start = (self.head + TREND_LEN - self.filled) % TREND_LEN;
        let filled = if p < self.points { self.filled } else { 0 };
        (0..filled).map(move |k| self.values[((start + k) % TREND_LEN) * self.points + p])
    }

    /// `{"step_ms":..,"series":[[..],..]}` for every point (gaps as null).
    pub fn to_json(&self, step_ms: u64) -> String {
        let mut out = String::with_capacity(16 + self.points * self.filled * 6);
        let _ = write!(out, "{{\"step_ms\":{step_ms},\"series\":[");
        for p in 0..self.points {
            if p > 0 {
                out.push(',');
            }
            out.push('[');
            for (k, v) in self.series(p).enumerate() {
                if k > 0 {
                    out.push(',');
                }
                if v.is_finite() {
                    let _ = write!(out, "{v}");
                } else {
                    out.push_str("null");
                }
            }
            out.push(']');
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_samples_oldest_first_with_gaps() {
        let mut t = Trends::default();
        for k in 0..(TREND_LEN + 5) {
            t.sample([k as f32, f32::NAN].into_iter());
        }
        let s: Vec<f32> = t.series(0).collect();
        assert_eq!(s.len(), TREND_LEN);
        assert_eq!(s[0], 5.0);
        assert_eq!(*s.last().unwrap(), (TREND_LEN + 4) as f32);
        assert!(t.series(1).all(f32::is_nan));
    }

    #[test]
    fn new_points_start_with_gaps_and_json_shows_them_as_null() {
        let mut t = Trends::default();
        t.sample([1.5].into_iter());
        t.sample([2.5, 7.0].into_iter());
        let v: serde_json::Value = serde_json::from_str(&t.to_json(2000)).unwrap();
        assert_eq!(v["step_ms"], 2000);
        assert_eq!(v["series"][0], serde_json::json!([1.5, 2.5]));
        assert_eq!(v["series"][1], serde_json::json!([null, 7]));
    }

    #[test]
    fn memory_is_bounded_by_points_not_by_samples() {
        let mut t = Trends::default();
        for _ in 0..10 * TREND_LEN {
            t.sample(std::iter::repeat_n(1.0, 100));
        }
        assert_eq!(t.values.len(), 100 * TREND_LEN);
    }
}
